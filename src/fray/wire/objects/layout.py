"""The object file: a pickle (protocol 5) with its out-of-band buffers, 64-byte aligned.

Layout (little endian): a header (magic, version, flags, buffer count, file size, pickle
offset and length, then (offset, length, kind) per buffer), then the pickle, then each buffer.
A reader maps the file copy-on-write and hands `pickle.loads` slices of the map as its
out-of-band buffers, so numpy arrays (anything pickled out of band) come back without a copy.

Plain ``bytes`` and ``bytearray`` are never handed to ``reducer_override`` by the C pickler, so
large ones (>= `OUT_OF_BAND_MIN`) are diverted with a persistent id naming a buffer of the
file: written with one copy, read back with one copy (``pread``, no map).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import itertools
import mmap
import os
import pickle
import struct
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from fray import errors
from fray.common.sizes import bytes_from_env
from fray.wire.objects import memory
from fray.wire.payload import PROTOCOL, _Pickler, short_repr
from fray.wire.pb import controller_pb2 as pb

INLINE_ENV = "FRAY_OBJECT_INLINE_BYTES"
INLINE_MAX_BYTES: int = bytes_from_env(INLINE_ENV, 256 * 1024)
OUT_OF_BAND_MIN = 64 * 1024  # bytes / bytearray at least this big are written out of band
ALIGN = 64
MAGIC = b"FRAYOBJ\x00"
VERSION = 1
FLAG_PERSISTENT = 1  # the pickle holds persistent ids (large bytes / bytearray)
_HEAD = struct.Struct("<8sHHIQQQ")  # magic, version, flags, nbuf, size, pickle off, pickle len
_ENTRY = struct.Struct("<QQQ")  # buffer offset, length, kind
KIND_PICKLE, KIND_BYTES, KIND_BYTEARRAY = 0, 1, 2  # a pickle buffer, or a diverted object
_PREAD_MAX = 0x7FFFF000  # Linux moves at most this much per read call
_WRITE_CHUNK = 1 << 30  # bytes per write call (Linux caps one call just under 2 GiB)
_SCAN_BUDGET = 2000  # container items looked at to decide whether to divert bytes
_DIVERTED = "fray.buffer"  # persistent id tag: (tag, buffer index)


def _align(n: int) -> int:
    return (n + ALIGN - 1) & ~(ALIGN - 1)


class Encoded:
    """A value pickled for an object file: `pickle`, out-of-band `buffers` (contiguous "B"
    memoryviews, not copies), `size` (the file's size) and `data_bytes` (pickle + buffers)."""

    __slots__ = (
        "_flags",
        "_kinds",
        "_offsets",
        "_value",
        "buffers",
        "data_bytes",
        "pickle",
        "size",
    )

    def __init__(
        self, value: Any, data: bytes, buffers: list[memoryview], kinds: list[int]
    ) -> None:
        self._value = value
        self._kinds = kinds
        self._flags = FLAG_PERSISTENT if any(kinds) else 0
        self.pickle = data
        self.buffers = buffers
        header = _HEAD.size + _ENTRY.size * len(buffers)
        offsets = [_align(header)]
        end = offsets[0] + len(data)
        for buf in buffers:
            offsets.append(_align(end))
            end = offsets[-1] + buf.nbytes
        self._offsets = offsets
        self.size = end
        self.data_bytes = len(data) + sum(b.nbytes for b in buffers)

    def header(self) -> bytes:
        """The file's header (without padding)."""
        parts = [
            _HEAD.pack(
                MAGIC,
                VERSION,
                self._flags,
                len(self.buffers),
                self.size,
                self._offsets[0],
                len(self.pickle),
            )
        ]
        parts += [
            _ENTRY.pack(o, b.nbytes, k)
            for o, b, k in zip(self._offsets[1:], self.buffers, self._kinds, strict=True)
        ]
        return b"".join(parts)

    def sections(self) -> Iterator[tuple[int, memoryview]]:
        """(file offset, bytes) of every section, header first."""
        yield 0, memoryview(self.header())
        yield self._offsets[0], memoryview(self.pickle)
        yield from zip(self._offsets[1:], self.buffers, strict=True)

    def __repr__(self) -> str:
        return f"Encoded(size={self.size}, buffers={len(self.buffers)})"


class _DivertingPickler(_Pickler):
    """`_Pickler` that also sends large bytes / bytearray out of band: each becomes a buffer
    of the file, named in the pickle by a persistent id."""

    def __init__(
        self, file: io.BytesIO, buffers: list[memoryview], kinds: list[int], **kwargs: Any
    ) -> None:
        super().__init__(file, **kwargs)
        self._buffers = buffers
        self._kinds = kinds
        self._seen: dict[int, int] = {}  # id of a diverted object -> its buffer index

    def persistent_id(self, obj: Any) -> Any:
        kind = type(obj)
        if (kind is bytes or kind is bytearray) and len(obj) >= OUT_OF_BAND_MIN:
            index = self._seen.get(id(obj))
            if index is None:
                index = self._seen[id(obj)] = len(self._buffers)
                self._buffers.append(memoryview(obj))
                self._kinds.append(KIND_BYTES if kind is bytes else KIND_BYTEARRAY)
            return (_DIVERTED, index)
        return None


class _Unpickler(pickle.Unpickler):
    """Reads what `_DivertingPickler` wrote: diverted objects are read from the file (copied
    out of `view`, the file's map, when they are large)."""

    def __init__(
        self,
        data: Any,
        fd: int,
        view: memoryview | None,
        entries: list[tuple[int, int, int]],
        **kw: Any,
    ):
        super().__init__(io.BytesIO(data), **kw)
        self._fd = fd
        self._view = view
        self._entries = entries
        self._loaded: dict[int, Any] = {}  # one object per buffer: aliasing survives

    def persistent_load(self, pid: Any) -> Any:
        tag, index = pid
        if tag != _DIVERTED or not 0 <= index < len(self._entries):
            raise pickle.UnpicklingError(f"bad persistent id {pid!r} in an object file")
        if index in self._loaded:
            return self._loaded[index]
        offset, length, kind = self._entries[index]
        if kind not in (KIND_BYTES, KIND_BYTEARRAY):
            raise pickle.UnpicklingError(f"persistent id {pid!r} names a pickle buffer")
        view = self._view
        if view is not None and length >= memory.PARALLEL_MIN:
            with view[offset : offset + length] as source:
                if kind == KIND_BYTES:
                    value: Any = memory.filled_bytes(length, lambda raw: memory.copy(raw, source))
                else:
                    value = bytearray(length)  # calloc: fresh zero pages, nothing written yet
                    with memoryview(value) as raw:
                        memory.copy(raw, source)
        elif kind == KIND_BYTES:
            value = _read_bytes(self._fd, offset, length)
        else:
            value = _read_bytearray(self._fd, offset, length)
        self._loaded[index] = value
        return value


def _read_bytes(fd: int, offset: int, length: int) -> bytes:
    """`length` bytes of the file at `offset`, one copy."""
    if length <= _PREAD_MAX:
        data = os.pread(fd, length, offset)
        if len(data) != length:
            raise ValueError("corrupt object file: shorter than its header says")
        return data
    return bytes(_read_bytearray(fd, offset, length))  # > 2 GiB: one more copy


def _read_bytearray(fd: int, offset: int, length: int) -> bytearray:
    data = bytearray(length)
    with memoryview(data) as view:
        done = 0
        while done < length:
            with view[done : done + _PREAD_MAX] as chunk:
                got = os.preadv(fd, [chunk], offset + done)
            if got <= 0:
                raise ValueError("corrupt object file: shorter than its header says")
            done += got
    return data


def _has_big_bytes(value: Any) -> bool:
    """Whether large bytes / bytearray show up among the first items of `value`'s containers
    (a bounded look: the diverting pickler costs a Python call per pickled object)."""
    queue: deque[Any] = deque([value])
    budget = _SCAN_BUDGET
    while queue and budget > 0:
        item = queue.popleft()
        budget -= 1
        kind = type(item)
        if kind is bytes or kind is bytearray:
            if len(item) >= OUT_OF_BAND_MIN:
                return True
        elif kind is list or kind is tuple or kind is set or kind is frozenset:
            queue.extend(itertools.islice(item, budget))
        elif kind is dict:
            queue.extend(itertools.islice(item.values(), budget))
    return False


def encode(value: Any, what: str) -> Encoded:
    """Pickle `value` for an object file, keeping buffers out of band (no copy of them);
    SerializationError naming `what` when it does not pickle."""
    buffers: list[memoryview] = []
    kinds: list[int] = []

    def keep(buffer: pickle.PickleBuffer) -> bool:
        try:
            buffers.append(buffer.raw())
        except BufferError:  # not contiguous: in band
            return True
        kinds.append(KIND_PICKLE)
        return False

    try:
        with io.BytesIO() as file:
            if _has_big_bytes(value):
                pickler = _DivertingPickler(
                    file, buffers, kinds, protocol=PROTOCOL, buffer_callback=keep
                )
            else:
                pickler = _Pickler(file, protocol=PROTOCOL, buffer_callback=keep)
            pickler.dump(value)
            data = file.getvalue()
    except Exception as exc:
        message = f"cannot pickle {what}: {short_repr(value)}: {exc}"
        raise errors.SerializationError(message) from exc
    return Encoded(value, data, buffers, kinds)


def inline_bytes(encoded: Encoded) -> bytes:
    """The encoded value as one ordinary pickle (buffers in band), for `pickle.loads`."""
    if not encoded.buffers and not encoded._flags:
        return encoded.pickle
    with io.BytesIO() as file:
        _Pickler(file, protocol=PROTOCOL).dump(encoded._value)
        return file.getvalue()


def _write_all(fd: int, offset: int, view: memoryview) -> None:
    while view.nbytes:
        written = os.pwrite(fd, view[:_WRITE_CHUNK], offset)
        if written <= 0:
            raise OSError(f"short write to an object file at offset {offset}")
        offset += written
        view = view[written:]


def write_file(path: str, encoded: Encoded) -> int:
    """Create `path` (it must not exist) holding `encoded`; returns the file's size."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.ftruncate(fd, encoded.size)  # padding stays a hole: reads as zeros
        for offset, view in encoded.sections():
            _write_all(fd, offset, view)
    except BaseException:
        os.close(fd)
        _unlink_quietly(path)
        raise
    os.close(fd)
    return encoded.size


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def _corrupt(path: str, why: str) -> ValueError:
    return ValueError(f"corrupt object file {path}: {why}")


def read_header(fd: int, size: int, path: str) -> tuple[int, int, int, list[tuple[int, int, int]]]:
    """(flags, pickle offset, pickle length, (offset, length, kind) per buffer) of the object
    file open as `fd`, `size` bytes long; ValueError when it is short or corrupt."""
    if size < _HEAD.size:
        raise _corrupt(path, f"{size} bytes, shorter than its header")
    magic, version, flags, nbuf, total, p_off, p_len = _HEAD.unpack(os.pread(fd, _HEAD.size, 0))
    if magic != MAGIC or version != VERSION:
        raise _corrupt(path, "not a fray object file (bad magic)")
    if total != size:
        raise _corrupt(path, f"{size} bytes, its header says {total}")
    table_end = _HEAD.size + nbuf * _ENTRY.size
    if table_end > size or p_off < table_end or p_off + p_len > size:
        raise _corrupt(path, "bad pickle section")
    table = os.pread(fd, table_end - _HEAD.size, _HEAD.size)
    entries = [e for e in _ENTRY.iter_unpack(table)]
    for off, length, kind in entries:
        if off < p_off + p_len or off + length > size or kind > KIND_BYTEARRAY:
            raise _corrupt(path, "bad buffer section")
    return flags, p_off, p_len, entries


def open_object(path: str) -> int:
    """A read-only descriptor of object file `path`, holding a shared lock on it for as long as
    it (or a map made from it) stays open: the file is not recycled meanwhile
    (`fray.wire.objects.spare`). FileNotFoundError when the object is gone."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:  # no locks on this file system: nor recycling, which needs them
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                raise
        here, now = os.fstat(fd), os.stat(path)
        if (here.st_ino, here.st_dev) != (now.st_ino, now.st_dev):
            raise FileNotFoundError(errno.ENOENT, "object file was freed and reused", path)
    except BlockingIOError:
        os.close(fd)
        raise FileNotFoundError(errno.ENOENT, "object file is being reused", path) from None
    except BaseException:
        os.close(fd)
        raise
    return fd


def load_file(path: str) -> Any:
    """The value in object file `path`. Pickle buffers (numpy arrays...) are slices of a
    private copy-on-write map of the file: no copy, writable, writes never reach the file.
    Large diverted bytes / bytearray are copied out of that map on several threads."""
    fd = open_object(path)
    try:
        size = os.fstat(fd).st_size
        flags, p_off, p_len, entries = read_header(fd, size, path)
        if any(kind == KIND_PICKLE or length >= memory.PARALLEL_MIN for _, length, kind in entries):
            with memoryview(mmap.mmap(fd, size, access=mmap.ACCESS_COPY)) as view:
                data: Any = view[p_off : p_off + p_len]
                buffers = [view[o : o + n] for o, n, kind in entries if kind == KIND_PICKLE]
                if flags & FLAG_PERSISTENT:
                    return _Unpickler(data, fd, view, entries, buffers=buffers).load()
                return pickle.loads(data, buffers=buffers)
        data = _read_bytes(fd, p_off, p_len)
        if flags & FLAG_PERSISTENT:
            return _Unpickler(data, fd, None, entries).load()
        return pickle.loads(data)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class StoredValue:
    """Travels in place of a large value (task args, results): where the object file is."""

    object_id: str
    location: bytes  # a serialised pb.ObjectLocation

    def location_pb(self) -> pb.ObjectLocation:
        return pb.ObjectLocation.FromString(self.location)
