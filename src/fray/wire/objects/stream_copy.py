"""A large copy that writes around the CPU caches (non-temporal stores), on x86-64 Linux.

glibc's ``memcpy`` switches to such stores only above three quarters of the shared cache,
and virtual machines often report a large one (480 MB of L3 here: 190 MB before it
switches), so a 100 MB object was copied with ordinary stores, which first read every
destination line into the cache: ~16 ms on one core, ~8 ms on two. This routine takes
~9.5 and ~5 ms. It is 46 instructions of SSE2 (every x86-64 CPU has it), assembled from
``stream_copy_x86_64.S`` beside this file, written into a page of its own that is then made
executable (never writable and executable at once) and called through ctypes, which lets go
of the GIL for the call. Elsewhere (another CPU, another system, a page that cannot be made
executable) `stream_copy` is ``ctypes.memmove``.
"""

from __future__ import annotations

import ctypes
import logging
import mmap
import platform
import sys
from typing import Any

logger = logging.getLogger(__name__)

GROUP = 16 * 1024  # the routine copies whole groups of four 4 KiB pages
STREAM_MIN = 1024 * 1024  # smaller copies are better cached: memmove
_LINE = 64  # destinations are aligned to a cache line (the stores need 16)

# `as` + `objcopy -O binary` of stream_copy_x86_64.S (the test suite checks that they match).
_X86_64_CODE = (
    "f30f1efa4885d20f8415010000b940000000f30f6f06f30f6f4e10f30f6f5620f30f6f5e30f30f6fa6"
    "00100000f30f6fae10100000f30f6fb620100000f30f6fbe30100000660fe707660fe74f10660fe757"
    "20660fe75f30660fe7a700100000660fe7af10100000660fe7b720100000660fe7bf30100000f30f6f"
    "8600200000f30f6f8e10200000f30f6f9620200000f30f6f9e30200000f30f6fa600300000f30f6fae"
    "10300000f30f6fb620300000f30f6fbe30300000660fe78700200000660fe78f10200000660fe79720"
    "200000660fe79f30200000660fe7a700300000660fe7af10300000660fe7b720300000660fe7bf3030"
    "00004883c6404883c740ffc90f850affffff4881c6003000004881c70030000048ffca0f85eefeffff"
    "0faef8c3"
)

_Routine = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)
_page: mmap.mmap | None = None  # the routine's page, kept for the life of the process


def _load() -> Any:
    """The routine, callable from Python; None where it cannot run."""
    global _page
    if (
        sys.platform != "linux"
        or platform.machine() not in ("x86_64", "AMD64")
        or sys.implementation.name != "cpython"
    ):
        return None
    code = bytes.fromhex(_X86_64_CODE)
    try:
        page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        page.write(code)
        address = ctypes.addressof(ctypes.c_char.from_buffer(page))
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
        libc.mprotect.restype = ctypes.c_int
        if libc.mprotect(address, mmap.PAGESIZE, mmap.PROT_READ | mmap.PROT_EXEC) != 0:
            raise OSError(ctypes.get_errno(), "mprotect(PROT_EXEC) refused")
    except (OSError, ValueError, AttributeError) as exc:
        logger.info("large copies use memmove: no executable page for stream_copy (%s)", exc)
        return None
    _page = page
    return _Routine(address)


_routine = _load()
AVAILABLE = _routine is not None  # large copies go around the caches


def stream_copy(destination: int, source: int, size: int) -> None:
    """Copy `size` bytes from address `source` to address `destination` (the two must not
    overlap): around the caches for large copies where the routine runs, else ``memmove``."""
    routine = _routine
    if routine is None or size < STREAM_MIN:
        ctypes.memmove(destination, source, size)
        return
    head = -destination % _LINE
    groups = (size - head) // GROUP
    ctypes.memmove(destination, source, head)
    routine(destination + head, source + head, groups)
    done = head + groups * GROUP
    ctypes.memmove(destination + done, source + done, size - done)
