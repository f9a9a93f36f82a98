"""Large objects without copies: files in shared memory owned by the process that made them,
mapped by readers on the same host and streamed raw to readers on other hosts."""

from fray.wire.objects.fetch import fetch_to_file, owner_alive
from fray.wire.objects.layout import (
    INLINE_MAX_BYTES,
    OUT_OF_BAND_MIN,
    Encoded,
    StoredValue,
    encode,
    inline_bytes,
    load_file,
    write_file,
)
from fray.wire.objects.plane import ObjectPlane
from fray.wire.objects.server import ObjectServer
from fray.wire.objects.store import LocalStore, host_key, process_start, sweep

__all__ = [
    "INLINE_MAX_BYTES",
    "OUT_OF_BAND_MIN",
    "Encoded",
    "LocalStore",
    "ObjectPlane",
    "ObjectServer",
    "StoredValue",
    "encode",
    "fetch_to_file",
    "host_key",
    "inline_bytes",
    "load_file",
    "owner_alive",
    "process_start",
    "sweep",
    "write_file",
]
