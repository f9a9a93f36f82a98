"""A shared-memory file made ready ahead of the next large write.

Writing 100 MB into a new ``/dev/shm`` file costs ~40 ms, nearly all of it the kernel handing
out fresh zeroed pages and mapping them; into pages already allocated and mapped for writing
it is a memory copy (~9 ms on two threads). `SpareFile` keeps one file ready for the next large
write: space allocated (``posix_fallocate``) and mapped for writing (``MADV_POPULATE_WRITE``) by
a background thread while the caller does other work. The next write that fits takes it: the
file is renamed to the object's name, the object is copied into the map and the file is
truncated to the object's size. Then the next spare is prepared.

Recycling: a freed object's file becomes the next spare when no reader holds it, so its pages
(already allocated) are reused: mapping them again takes ~7 ms instead of ~30 for fresh ones.
Readers hold a shared ``flock`` on an object file for as long as they use it, maps included
(`layout.open_object`); `recycle` takes the file only with an exclusive lock, renaming it away
first, and a reader that opened the old name checks it still names its file once locked.

A spare not taken within `IDLE_SECONDS` is removed, so a process that stopped writing large
objects holds no memory for them.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import itertools
import logging
import mmap
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from fray.common.sizes import bytes_from_env
from fray.wire.objects import memory
from fray.wire.objects.layout import Encoded

logger = logging.getLogger(__name__)

MAX_ENV = "FRAY_OBJECT_SPARE_BYTES"
DEFAULT_MAX_BYTES = 512 * 1024 * 1024
MIN_BYTES = memory.PARALLEL_MIN  # smaller objects are cheap to write fresh
IDLE_SECONDS = 30.0
WAIT_SECONDS = 2.0  # longest a write waits for a spare being prepared
_ROUND = 1 << 20  # fresh spares are whole MiB
_MADV_POPULATE_WRITE = 23  # Linux >= 5.14; older kernels fault pages in during the copy
_PREFIX = ".spare-"
_numbers = itertools.count()
_madvise = ctypes.CDLL(None, use_errno=True).madvise
_madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
_madvise.restype = ctypes.c_int


def max_bytes_from_env() -> int:
    """The largest spare (``$FRAY_OBJECT_SPARE_BYTES``, default 512 MiB; 0: no spares)."""
    return bytes_from_env(MAX_ENV, DEFAULT_MAX_BYTES)


@dataclass
class _Spare:
    """A spare file, open (and locked exclusively when recycled); `map` once prepared."""

    path: str
    fd: int
    capacity: int
    since: float
    map: mmap.mmap | None = None


class SpareFile:
    """The spare of one store: files in the directory `directory()` gives, of at most
    `max_bytes`; `room(n)` says whether n more bytes of shared memory may be taken now.
    Holds at most one prepared spare and one recycled file waiting to be prepared.
    Thread-safe."""

    def __init__(
        self,
        directory: Callable[[], str],
        room: Callable[[int], bool],
        max_bytes: int | None = None,
    ) -> None:
        self._directory = directory
        self._room = room
        self.max_bytes = max_bytes_from_env() if max_bytes is None else max_bytes
        self._cond = threading.Condition()
        self._ready: _Spare | None = None  # prepared: mapped for writing
        self._recycled: _Spare | None = None  # a freed object's file, to prepare next
        self._preparing = 0  # capacity of the spare being prepared
        self._wanted = 0  # size of the latest large write (0: none lately)
        self._retired: list[_Spare] = []  # to close (and unmap) on the thread
        self._thread: threading.Thread | None = None
        self._closed = False
        self._pid = os.getpid()
        self.taken = 0  # writes that went into a spare
        self.recycled = 0  # freed files that became spares

    # ------------------------------------------------------------------ writing

    def write(self, path: str, encoded: Encoded) -> mmap.mmap | None:
        """Write `encoded` as the new file `path` using the spare: its map, which the caller
        keeps with the object and hands back to `recycle` or `unmap`; None when no spare fits
        (the caller writes a fresh file). A spare for the next write is prepared either way."""
        size = encoded.size
        if size < MIN_BYTES or size > self.max_bytes or os.getpid() != self._pid:
            return None
        spare = self._take(size)
        if spare is None:
            return None
        if spare.map is None:  # (not prepared: never handed out)
            self._retire(spare)
            return None
        try:
            os.link(spare.path, path)  # (fails if `path` exists, like O_EXCL)
            old_name, spare.path = spare.path, path
            os.unlink(old_name)
            with memoryview(spare.map) as target:
                end = 0
                for offset, section in encoded.sections():
                    if offset > end:  # padding: no bytes of a recycled file's last object
                        target[end:offset] = bytes(offset - end)
                    with target[offset : offset + section.nbytes] as into:
                        memory.copy(into, section)
                    end = offset + section.nbytes
            if spare.capacity > size:
                os.ftruncate(spare.fd, size)
            fcntl.flock(spare.fd, fcntl.LOCK_UN)  # (a recycled file's; its map holds it open)
        except BaseException:
            self._retire(spare)  # (removes `path`, once renamed)
            raise
        os.close(spare.fd)
        with self._cond:
            self._cond.notify_all()  # prepare the next one now
        return spare.map

    def unmap(self, mapping: mmap.mmap) -> None:
        """Close a map `write` gave (on the thread: munmap of 100 MB takes ~6 ms)."""
        self._retire(_Spare("", -1, 0, 0.0, mapping))

    def _take(self, size: int) -> _Spare | None:
        deadline = time.monotonic() + WAIT_SECONDS
        with self._cond:
            if self._closed:
                return None
            self._wanted = size
            while self._ready is None and self._preparing >= size:
                remaining = deadline - time.monotonic()  # it will take less than a fresh write
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            spare, self._ready = self._ready, None
            if spare is not None and spare.capacity < size:  # replaced by one that fits
                self._retired.append(spare)
                spare = None
            if spare is not None:
                self.taken += 1  # (the next is prepared after the copy: it would slow it down)
            else:
                self._cond.notify_all()
            self._start()
        return spare

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="fray-spare", daemon=True)
            self._thread.start()

    def _retire(self, spare: _Spare) -> None:
        """Close a spare on the thread, removing its file (if it has a path)."""
        if os.getpid() != self._pid:  # a forked child: its parent's thread and lock
            _close(spare)
            return
        with self._cond:
            if not self._closed:
                self._retired.append(spare)
                self._cond.notify_all()
                self._start()
                return
        _close(spare)

    @property
    def ready_bytes(self) -> int:
        """The capacity of the spare ready for the next write (0: none is)."""
        with self._cond:
            return self._ready.capacity if self._ready is not None else 0

    @property
    def held_bytes(self) -> int:
        """Shared memory held by spares now (ready, or recycled and waiting)."""
        with self._cond:
            return sum(s.capacity for s in (self._ready, self._recycled) if s is not None)

    # ------------------------------------------------------------------ recycling

    def recycle(self, path: str, size: int, mapping: mmap.mmap | None = None) -> bool:
        """Take a freed object's file (`size` bytes at `path`, mapped for writing as `mapping`
        when `write` made it) as the next spare: True when it is taken (renamed away), False
        when the caller removes it as usual (a reader still holds it, none is needed, or one
        is waiting already). `mapping` is this object's from now on, either way."""
        spare = _Spare("", -1, size, time.monotonic(), mapping)
        if os.getpid() != self._pid or size < MIN_BYTES or size > self.max_bytes:
            wanted = False
        else:
            with self._cond:
                wanted = not self._closed and bool(self._wanted) and self._recycled is None
        if not wanted or not self._lock_away(path, spare):
            if mapping is not None:
                self._retire(spare)
            return False
        with self._cond:
            taken = not self._closed and self._recycled is None
            fits = spare.capacity >= self._wanted
            if taken and self._ready is None and spare.map is not None and fits:
                self._ready = spare  # still mapped for writing: nothing to prepare
            elif taken:
                self._recycled = spare
            self.recycled += taken
            self._cond.notify_all()
        if not taken:  # (lost a race: removed all the same)
            self._retire(spare)
        return True

    @staticmethod
    def _lock_away(path: str, spare: _Spare) -> bool:
        """Lock the file at `path` exclusively (no reader holds it) and rename it to a spare's
        name: readers opening `path` from now on find nothing."""
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            name = os.path.join(os.path.dirname(path), f"{_PREFIX}{next(_numbers)}")
            os.rename(path, name)
        except OSError:  # (BlockingIOError: a reader holds it)
            os.close(fd)
            return False
        spare.path, spare.fd = name, fd
        if spare.map is not None and len(spare.map) > spare.capacity:
            try:  # as long as its map again (the write truncated it), for a larger object
                # (the tail only: over the whole file this takes ~4 ms per 100 MB on tmpfs)
                os.posix_fallocate(fd, spare.capacity, len(spare.map) - spare.capacity)
                spare.capacity = len(spare.map)
            except OSError:
                pass
        return True

    # ------------------------------------------------------------------ the thread

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._closed and not self._retired and not self._next_job():
                    self._expire()
                    if not self._retired:
                        self._cond.wait(IDLE_SECONDS if self._ready or self._recycled else None)
                if self._closed:
                    return
                job = self._next_job()
                reuse = None
                if job:
                    reuse, self._recycled = self._recycled, None
                    self._preparing = job
            prepared = None
            try:
                # (the store's lock is taken here, never under ours)
                if job and (reuse is not None or self._room(job)):
                    prepared = self._prepare(job, reuse)
                elif reuse is not None:
                    _close(reuse)
            except Exception:  # the thread must go on: writes wait for it
                logger.exception("preparing a spare object file failed")
            with self._cond:
                self._preparing = 0
                if prepared is None:
                    pass
                elif self._closed:
                    self._retired.append(prepared)
                elif self._ready is None:
                    self._ready = prepared
                elif self._recycled is None:  # (a recycled file became ready meanwhile)
                    self._recycled = prepared
                else:
                    self._retired.append(prepared)
                if prepared is None and job:
                    self._wanted = 0  # none made (no room, or it failed): again at the next write
                self._cond.notify_all()
                retired, self._retired = self._retired, []
            for spare in retired:  # (after preparing: a write may be waiting for that)
                try:
                    _close(spare)
                except Exception:
                    logger.exception("closing a spare object file failed")

    def _next_job(self) -> int:
        """The capacity to prepare now (0: nothing to do). Called under the lock; whether a
        new file has room is asked after (`room` takes the store's lock)."""
        wanted = self._wanted
        if not wanted or self._ready is not None or self._closed:
            return 0
        capacity = min(-(-wanted // _ROUND) * _ROUND, self.max_bytes)
        if self._recycled is not None:
            return max(capacity, self._recycled.capacity)
        return capacity

    def _expire(self) -> None:
        """Remove spares unused for IDLE_SECONDS. Called under the lock."""
        now = time.monotonic()
        for name in ("_ready", "_recycled"):
            spare = getattr(self, name)
            if spare is not None and now - spare.since >= IDLE_SECONDS:
                setattr(self, name, None)
                self._wanted = 0
                self._retired.append(spare)

    def _prepare(self, capacity: int, reuse: _Spare | None) -> _Spare | None:
        """A spare of `capacity` bytes, mapped for writing: `reuse` (a recycled file, grown
        if needed) or a new file."""
        if reuse is not None:
            spare = reuse
            if spare.map is not None and spare.capacity >= capacity:
                spare.since = time.monotonic()
                return spare  # still mapped by the write that made it
            if spare.map is not None:
                spare.map.close()
                spare.map = None
        else:
            try:
                path = os.path.join(self._directory(), f"{_PREFIX}{next(_numbers)}")
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            except (OSError, RuntimeError) as exc:
                logger.debug("no spare object file: %s", exc)
                return None
            spare = _Spare(path, fd, 0, 0.0)
        try:
            if spare.capacity < capacity:  # a full tmpfs fails here, not as SIGBUS later
                os.posix_fallocate(spare.fd, spare.capacity, capacity - spare.capacity)
                spare.capacity = capacity
            spare.map = mmap.mmap(spare.fd, capacity, mmap.MAP_SHARED)
        except OSError as exc:
            logger.debug("no spare object file of %d bytes: %s", capacity, exc)
            _close(spare)
            return None
        address = ctypes.addressof(ctypes.c_char.from_buffer(spare.map))
        try:  # page tables filled now, on two threads, not by faults during the copy
            memory.in_parallel(
                capacity,
                lambda start, length: _madvise(address + start, length, _MADV_POPULATE_WRITE),
            )
        except Exception as exc:  # (best effort: e.g. no threads at interpreter exit)
            logger.debug("spare object file not populated: %s", exc)
        spare.since = time.monotonic()
        return spare

    def close(self) -> None:
        """Remove the spares and stop the thread (idempotent; nothing in a forked child, whose
        spares are its parent's)."""
        if os.getpid() != self._pid:
            return
        with self._cond:
            self._closed = True
            left = [s for s in (self._ready, self._recycled) if s is not None] + self._retired
            self._ready = self._recycled = None
            self._retired = []
            thread = self._thread
            self._cond.notify_all()
        if thread is not None and thread is not threading.current_thread():
            thread.join(5.0)
        for spare in left:
            _close(spare)


def _close(spare: _Spare) -> None:
    """Unmap and close a spare, removing its file unless its path was cleared."""
    if spare.map is not None:
        spare.map.close()
    if spare.fd >= 0:
        with contextlib.suppress(OSError):
            os.close(spare.fd)
    if spare.path:
        with contextlib.suppress(OSError):
            os.unlink(spare.path)
