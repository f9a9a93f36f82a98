"""Large memory copies at memory speed: split over a few threads (`stream_copy` runs without
the GIL), and ``bytes`` objects filled in place before anyone else sees them.

A 100 MB copy between pages that are already mapped takes ~16 ms on one thread and ~8 ms on
two with ``memmove``, ~9.5 and ~5 ms with `stream_copy`; a copy into fresh pages is dominated
by the kernel's page faults, which also run in parallel (reading 100 MB into a new ``bytes``:
~53 ms on one thread, ~31 ms on two).
Everything here falls back to one plain copy off CPython.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from fray.common.sizes import bytes_from_env
from fray.wire.objects.stream_copy import stream_copy

PARALLEL_MIN = 16 * 1024 * 1024  # smaller copies stay on the calling thread
_CHUNK_MIN = 8 * 1024 * 1024  # no thread copies less than this
_PAGE = 4096
COPY_THREADS = max(1, min(4, os.cpu_count() or 1))

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _after_fork() -> None:  # a forked child has none of its parent's threads
    global _pool, _pool_lock, _malloc_lock
    _pool, _pool_lock, _malloc_lock = None, threading.Lock(), threading.Lock()


os.register_at_fork(after_in_child=_after_fork)


def _threads() -> ThreadPoolExecutor:
    global _pool
    pool = _pool
    if pool is None:
        with _pool_lock:
            pool = _pool
            if pool is None:
                pool = _pool = ThreadPoolExecutor(COPY_THREADS, thread_name_prefix="fray-copy")
    return pool


def split(size: int) -> list[tuple[int, int]]:
    """(offset, length) pieces of `size` bytes, page-aligned, one per copying thread."""
    parts = 1 if size < PARALLEL_MIN else max(1, min(COPY_THREADS, size // _CHUNK_MIN))
    step = -(-size // parts)
    step = (step + _PAGE - 1) & ~(_PAGE - 1) or _PAGE
    return [(offset, min(step, size - offset)) for offset in range(0, size, step)]


def in_parallel(size: int, work: Callable[[int, int], object]) -> None:
    """Run `work(offset, length)` over pieces of `size` bytes, on several threads when large;
    returns (or raises the first error) only once every piece is done, even when interrupted
    (the pieces may be writing into buffers the caller frees next)."""
    pieces = split(size)
    if len(pieces) == 1:
        work(*pieces[0])
        return
    futures: list[Future[object]] = []
    interrupted: BaseException | None = None
    try:
        pool = _threads()
        for offset, length in pieces[1:]:  # (one by one: those submitted are waited for)
            futures.append(pool.submit(work, offset, length))
        work(*pieces[0])
    except BaseException as exc:  # (KeyboardInterrupt too: wait for the others first)
        interrupted = exc
    while True:
        try:
            concurrent.futures.wait(futures)
            break
        except BaseException as exc:
            interrupted = interrupted or exc
    if interrupted is not None:
        raise interrupted
    for future in futures:
        error = future.exception()
        if error is not None:
            raise error


# ---------------------------------------------------------------------- CPython buffers

_CPYTHON = sys.implementation.name == "cpython"


class _Py_buffer(ctypes.Structure):  # noqa: N801 (the C struct's name)
    _fields_ = [
        ("buf", ctypes.c_void_p),
        ("obj", ctypes.c_void_p),
        ("len", ctypes.c_ssize_t),
        ("itemsize", ctypes.c_ssize_t),
        ("readonly", ctypes.c_int),
        ("ndim", ctypes.c_int),
        ("format", ctypes.c_char_p),
        ("shape", ctypes.c_void_p),
        ("strides", ctypes.c_void_p),
        ("suboffsets", ctypes.c_void_p),
        ("internal", ctypes.c_void_p),
    ]


if _CPYTHON:
    _get_buffer = ctypes.pythonapi.PyObject_GetBuffer
    _get_buffer.argtypes = (ctypes.py_object, ctypes.POINTER(_Py_buffer), ctypes.c_int)
    _get_buffer.restype = ctypes.c_int
    _release_buffer = ctypes.pythonapi.PyBuffer_Release
    _release_buffer.argtypes = (ctypes.POINTER(_Py_buffer),)
    _release_buffer.restype = None
    _new_bytes = ctypes.pythonapi.PyBytes_FromStringAndSize
    _new_bytes.argtypes = (ctypes.c_void_p, ctypes.c_ssize_t)
    _new_bytes.restype = ctypes.py_object
    _PyBUF_SIMPLE, _PyBUF_WRITABLE = 0, 1
    _BYTES_DATA = bytes.__basicsize__ - 1  # where a bytes object's data starts (ob_sval)


class _Address:
    """The address of a contiguous buffer's first byte, held (not moved, not freed) while in
    the `with` block."""

    def __init__(self, obj: object, writable: bool = False) -> None:
        self._obj = obj
        self._flags = _PyBUF_WRITABLE if writable else _PyBUF_SIMPLE
        self._view = _Py_buffer()

    def __enter__(self) -> int:
        if _get_buffer(self._obj, ctypes.byref(self._view), self._flags) != 0:
            raise BufferError("no contiguous buffer")  # (ctypes raises the real error first)
        return int(self._view.buf or 0)

    def __exit__(self, *exc: object) -> None:
        _release_buffer(ctypes.byref(self._view))


def copy(destination: memoryview, source: memoryview) -> None:
    """``destination[:] = source`` (contiguous byte views of one length, not overlapping), on
    several threads when large."""
    size = source.nbytes
    if size != destination.nbytes:
        raise ValueError(f"copy of {size} bytes into {destination.nbytes}")
    if not _CPYTHON or size < PARALLEL_MIN:
        destination[:] = source
        return
    with _Address(destination, writable=True) as dst, _Address(source) as src:
        in_parallel(size, lambda offset, length: stream_copy(dst + offset, src + offset, length))


def filled_bytes(size: int, fill: Callable[[memoryview], object]) -> bytes:
    """A new ``bytes`` of `size` whose content `fill` writes into the writable view it is
    given (the object is not seen by anyone else before `fill` returns). After `keep_freed`,
    one that fits is taken from memory kept from earlier ones (no fresh pages)."""
    if not _CPYTHON:
        data = bytearray(size)
        fill(memoryview(data))
        return bytes(data)
    if 0 < size <= _kept:
        with _malloc_lock:  # (`mallopt` itself takes malloc's lock)
            _mallopt(_M_MMAP_THRESHOLD, _kept + 1)  # from the heap, not a new mapping
            try:
                value: bytes = _new_bytes(None, size)
            finally:
                _mallopt(_M_MMAP_THRESHOLD, _GLIBC_MMAP_MAX)
    else:
        value = _new_bytes(None, size)  # uninitialised, as C code fills it
    with memoryview((ctypes.c_char * size).from_address(id(value) + _BYTES_DATA)) as raw:
        fill(raw.cast("B"))
    return value


# ---------------------------------------------------------------------- keeping freed memory

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
_GLIBC_MMAP_MAX = 32 * 1024 * 1024  # the most glibc's own (dynamic) mmap threshold grows to
KEEP_FREED_ENV = "FRAY_EXECUTOR_KEEP_FREED_BYTES"
DEFAULT_KEEP_FREED = 256 * 1024 * 1024
IDLE_GIVE_BACK_SECONDS = 1.0  # an executor idle this long gives kept memory back
_kept = 0
_malloc_lock = threading.Lock()


def _libc_function(name: str, argtypes: tuple[Any, ...]) -> Any:
    """glibc's `name` (returning int), or None where there is none."""
    try:
        function = getattr(ctypes.CDLL(None), name)
    except (AttributeError, OSError):  # not glibc
        return None
    function.argtypes, function.restype = argtypes, ctypes.c_int
    return function


_mallopt = _libc_function("mallopt", (ctypes.c_int, ctypes.c_int))
_malloc_trim = _libc_function("malloc_trim", (ctypes.c_size_t,))


def keep_freed(limit: int) -> bool:
    """Have malloc keep up to `limit` bytes freed at the top of its main heap for reuse,
    instead of handing them back to the kernel at once; `filled_bytes` of at most `limit`
    called from the main thread then come from that heap. For processes that read large
    objects again and again on their main thread (executors): the next 100 MB ``bytes`` is a
    copy into pages already there (~17 ms) instead of into fresh ones (~31 ms, most of it page
    faults). glibc's mmap threshold is fixed at the 32 MiB its own dynamic threshold grows to.
    The limit bounds the free top of the heap only: a large block freed below one still in
    use stays with the process (for its next allocations) until that one is freed too.
    False (nothing changed) off glibc, or for `limit` 0."""
    global _kept
    if _mallopt is None or not _CPYTHON or limit <= 0:
        return False
    limit = min(limit, 2**31 - 2)  # (an int parameter)
    if not (_mallopt(_M_TRIM_THRESHOLD, limit) and _mallopt(_M_MMAP_THRESHOLD, _GLIBC_MMAP_MAX)):
        return False
    _kept = limit
    return True


def keeps_freed() -> bool:
    """Whether `keep_freed` is in effect in this process."""
    return _kept > 0


def give_back() -> None:
    """Hand the freed memory malloc keeps (after `keep_freed`, up to its limit at the top of
    the heap, more below blocks in use) back to the kernel now: for a process that goes idle,
    so that what it kept for its next large object is not held while nothing comes."""
    if _kept and _malloc_trim is not None:
        _malloc_trim(0)


def keep_freed_from_env() -> bool:
    """`keep_freed` with ``$FRAY_EXECUTOR_KEEP_FREED_BYTES`` (default 256 MiB; 0: off)."""
    return keep_freed(bytes_from_env(KEEP_FREED_ENV, DEFAULT_KEEP_FREED))
