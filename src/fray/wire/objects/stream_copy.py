"""A large copy that writes around the CPU caches (non-temporal stores), on x86-64 Linux.

glibc's ``memcpy`` switches to such stores only above a share of the last-level cache (3/4 of
it divided among the threads sharing it, in glibc 2.36), and virtual machines often report a
large one: 480 MB of L3 here, so 190 MB before it switches. A 100 MB object was copied with
ordinary stores, which first read every destination line into the cache: ~16 ms on one core,
~8 ms on two. This routine takes ~9.5 and ~5 ms, as glibc's own non-temporal path does when
forced (``GLIBC_TUNABLES``, which is read only when a program starts: fray cannot set it for
the user's process that calls ``put``). The price: what it writes is not left in the cache,
which matters little for objects of 16 MiB and more, the only ones `fray.wire.objects.memory`
copies this way.

The routine is 46 SSE2 instructions (every x86-64 CPU has SSE2), assembled from
``stream_copy_x86_64.S`` beside this file: four pages copied side by side, as glibc's
``large_memcpy_4x`` does. It is written into a page of its own, which is then made executable
(never writable and executable at once), and called through ctypes, which lets go of the GIL
for the call. Elsewhere (another CPU or system, a 32-bit Python, a host that refuses
executable pages) `stream_copy` is ``ctypes.memmove``.
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
_MAP_FAILED = ctypes.c_void_p(-1).value
refused: str | None = None  # why this host gave no executable page, when it refused


def _load() -> Any:
    """The routine, callable from Python; None where it cannot run. Its page is mapped with
    libc's ``mmap``, owned by nothing in Python: it is never unmapped, not even while the
    interpreter shuts down under a thread that is still copying."""
    global refused
    if (
        sys.platform != "linux"
        or platform.machine() not in ("x86_64", "AMD64")  # (the kernel's: check the process's)
        or ctypes.sizeof(ctypes.c_void_p) != 8
        or sys.implementation.name != "cpython"
    ):
        return None
    code = bytes.fromhex(_X86_64_CODE)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, *[ctypes.c_int] * 3, ctypes.c_long)
        libc.mmap.restype = ctypes.c_void_p
        libc.mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
        libc.mprotect.restype = ctypes.c_int
        private = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
        writable, executable = mmap.PROT_READ | mmap.PROT_WRITE, mmap.PROT_READ | mmap.PROT_EXEC
        address = libc.mmap(None, mmap.PAGESIZE, writable, private, -1, 0)
        if address in (None, _MAP_FAILED):
            raise OSError(ctypes.get_errno(), "mmap refused")
        ctypes.memmove(address, code, len(code))
        if libc.mprotect(address, mmap.PAGESIZE, executable) != 0:  # never writable and exec
            raise OSError(ctypes.get_errno(), "mprotect(PROT_EXEC) refused")
    except (OSError, AttributeError) as exc:  # (the page, if any, stays: one page, once)
        refused = str(exc)
        logger.info("large copies use memmove: no executable page for stream_copy (%s)", exc)
        return None
    return _Routine(address)


_routine = _load()
AVAILABLE = _routine is not None  # large copies go around the caches


def stream_copy(destination: int, source: int, size: int) -> None:
    """Copy `size` bytes from address `source` to address `destination`: around the caches
    for large copies where the routine runs, else (and for overlapping ranges) ``memmove``."""
    routine = _routine
    if routine is None or size < STREAM_MIN or abs(destination - source) < size:
        ctypes.memmove(destination, source, size)
        return
    head = -destination % _LINE
    groups = (size - head) // GROUP
    ctypes.memmove(destination, source, head)
    routine(destination + head, source + head, groups)
    done = head + groups * GROUP
    ctypes.memmove(destination + done, source + done, size - done)
