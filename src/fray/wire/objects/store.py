"""One process's object files: in shared memory, or spilled to disk past a budget.

Files live in ``{root}/fray-objects-{pid}-{start}/s{n}/{object_id}`` (one ``s{n}`` per store of
the process; ``start`` is the process's start time, so a reused pid is told apart). A process
removes its directories at `LocalStore.close` or exit; `sweep` removes those of dead processes.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import itertools
import logging
import mmap
import os
import re
import shutil
import socket
import tempfile
import threading
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from fray.common.sizes import bytes_from_env
from fray.wire.objects.layout import Encoded, write_file
from fray.wire.objects.spare import SpareFile
from fray.wire.pb import controller_pb2 as pb

logger = logging.getLogger(__name__)

HOST_ENV = "FRAY_OBJECT_HOST"
BUDGET_ENV = "FRAY_OBJECT_STORE_BYTES"
SHM_MARGIN_BYTES = 64 * 1024 * 1024  # /dev/shm space always left free
_DIR_PREFIX = "fray-objects-"
_DIR_NAME = re.compile(r"fray-objects-(\d+)-(\d+)")
_OBJECT_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
_store_numbers = itertools.count()
_dirs_lock = threading.Lock()  # making / removing the process directories
_boot_id: str | None = None


def _read_boot_id() -> str:
    global _boot_id
    if _boot_id is None:
        try:
            with open("/proc/sys/kernel/random/boot_id") as file:
                _boot_id = file.read().strip()
        except OSError:
            _boot_id = "unknown-boot"
    return _boot_id


def host_key() -> str:
    """Which processes share files and process ids: ``$FRAY_OBJECT_HOST``, else hostname, boot
    id and pid namespace (containers on one host see other processes and files)."""
    forced = os.environ.get(HOST_ENV)
    if forced:
        return forced
    return f"{socket.gethostname()}/{_read_boot_id()}/{_pid_namespace()}"


@functools.cache
def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid").removeprefix("pid:")
    except OSError:
        return "-"


def process_start(pid: int) -> int | None:
    """Process `pid`'s start time (field 22 of /proc/PID/stat); None when there is none."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            text = file.read()
    except OSError:
        return None
    try:
        return int(text[text.rindex(b")") + 2 :].split()[19])
    except (ValueError, IndexError):
        return None


def validate_object_id(object_id: str) -> str:
    """`object_id` if it may name a file, else ValueError."""
    if (
        not isinstance(object_id, str)
        or not _OBJECT_ID.fullmatch(object_id)
        or object_id.startswith(".")  # (the store's own files: spares)
    ):
        raise ValueError(
            f"invalid object id {object_id!r} (want [A-Za-z0-9_.:-], 1-128 chars, no leading .)"
        )
    return object_id


def _default_budget(shm_root: str) -> int:
    budget = bytes_from_env(BUDGET_ENV, None)
    if budget is not None:
        return budget
    try:
        stat = os.statvfs(shm_root)
    except OSError:
        return 0
    return stat.f_blocks * stat.f_frsize // 2


def _shm_free(shm_root: str) -> int:
    try:
        stat = os.statvfs(shm_root)
    except OSError:
        return 0
    return stat.f_bavail * stat.f_frsize


def _remove_dirs(
    creator_pid: int,
    spare: SpareFile,
    files: dict[str, _File],
    lock: threading.Lock,
    store_dirs: list[str],
    process_dirs: list[str],
) -> None:
    """Remove a store's spare, maps and directories (and its process directories once
    empty)."""
    if os.getpid() != creator_pid:  # a forked child exiting: not its store
        return
    spare.close()
    with lock:
        entries = list(files.values())
        files.clear()
    for entry in entries:
        if entry.mapping is not None:
            entry.mapping.close()
    with _dirs_lock:
        for path in store_dirs:
            shutil.rmtree(path, ignore_errors=True)
        for path in process_dirs:
            with contextlib.suppress(OSError):  # still used by another store, or gone
                os.rmdir(path)


@dataclass
class _File:
    path: str
    size: int
    spilled: bool
    ready: bool = True  # False: a reservation being filled (not served, not listed)
    written: bool = False  # written by `write` (not fetched, not a child's): may be recycled
    mapping: mmap.mmap | None = None  # the spare's map it was written through, kept for reuse


class LocalStore:
    """This process's object files for `owner` (thread-safe)."""

    def __init__(
        self,
        owner: str,
        *,
        shm_root: str = "/dev/shm",
        spill_root: str | None = None,
        budget_bytes: int | None = None,
    ) -> None:
        self.owner = owner
        self.shm_root = shm_root
        self.spill_root = spill_root or tempfile.gettempdir()
        self.budget_bytes = _default_budget(shm_root) if budget_bytes is None else budget_bytes
        pid = os.getpid()
        self.pid = pid
        self.pid_start = process_start(pid) or 0
        name = f"{_DIR_PREFIX}{pid}-{self.pid_start}"
        sub = f"s{next(_store_numbers)}"
        self._process_dirs = [
            os.path.join(self.shm_root, name),
            os.path.join(self.spill_root, name),
        ]
        self.shm_dir = os.path.join(self._process_dirs[0], sub)
        self.spill_dir = os.path.join(self._process_dirs[1], sub)
        self._lock = threading.Lock()
        self._files: dict[str, _File] = {}
        self._shm_bytes = 0
        self._spill_bytes = 0
        self._closed = False
        this = weakref.ref(self)  # (the spare's thread must not keep the store alive)
        self._spare = SpareFile(lambda: _directory_of(this), lambda size: _has_room(this, size))
        self._finalizer = weakref.finalize(
            self,
            _remove_dirs,
            pid,
            self._spare,
            self._files,
            self._lock,
            [self.shm_dir, self.spill_dir],
            self._process_dirs,
        )
        sweep(self.shm_root, self.spill_root)  # leftovers of dead processes

    # ------------------------------------------------------------------ placement

    def _directory(self, spilled: bool) -> str:
        path = self.spill_dir if spilled else self.shm_dir
        with _dirs_lock:
            if self._closed:
                raise RuntimeError(f"object store of {self.owner} is closed")
            os.makedirs(path, mode=0o700, exist_ok=True)
        return path

    def directory_for_child(self) -> str:
        """The shared-memory directory (made if needed): where a child process of this one
        writes files that `register` then adopts."""
        return self._directory(spilled=False)

    def _claim(self, object_id: str, size: int) -> _File:
        """Count `size` bytes for `object_id` (a placeholder entry: where it goes)."""
        validate_object_id(object_id)
        with self._lock:
            if self._closed:
                raise RuntimeError(f"object store of {self.owner} is closed")
            if object_id in self._files:
                raise FileExistsError(f"object {object_id} is already in the store")
            spilled = self._too_much(size, size)
            claim = self._files[object_id] = _File("", size, spilled, ready=False)
            self._count(size, spilled)
        return claim

    def _too_much(self, counted: int, new: int) -> bool:
        """Whether `counted` more bytes in shared memory, `new` of them not there yet, would
        pass the budget or leave less than the margin free. Called under the lock."""
        return (
            self._shm_bytes + counted > self.budget_bytes
            or _shm_free(self.shm_root) - new < SHM_MARGIN_BYTES
        )

    def _count(self, size: int, spilled: bool) -> None:
        if spilled:
            self._spill_bytes += size
        else:
            self._shm_bytes += size

    def _settle(self, object_id: str, claim: _File, settled: _File) -> None:
        with self._lock:
            gone = self._closed or self._files.get(object_id) is not claim  # deleted meanwhile
            if not gone:
                self._count(-claim.size, claim.spilled)
                self._files[object_id] = settled
                self._count(settled.size, settled.spilled)
        if gone:
            self._let_go(settled)  # (outside our lock: the spare takes its own)

    def _forget(self, object_id: str, claim: _File) -> None:
        with self._lock:
            if self._files.get(object_id) is claim:
                del self._files[object_id]
                self._count(-claim.size, claim.spilled)

    def _place(
        self,
        object_id: str,
        size: int,
        make: Callable[[str], int],
        ready: bool = True,
        written: bool = False,
        mapping: list[mmap.mmap] | None = None,
    ) -> str:
        claim = self._claim(object_id, size)
        spilled = claim.spilled
        try:
            try:
                path = os.path.join(self._directory(spilled), object_id)
                size = make(path)
            except OSError as exc:
                if spilled or exc.errno not in (errno.ENOSPC, errno.ENOMEM):
                    raise
                logger.info("shared memory full writing object %s; spilling to disk", object_id)
                spilled = True
                path = os.path.join(self._directory(spilled), object_id)
                size = make(path)
        except BaseException:
            self._forget(object_id, claim)
            raise
        kept = mapping[0] if mapping else None
        self._settle(object_id, claim, _File(path, size, spilled, ready, written, kept))
        return path

    # ------------------------------------------------------------------ files

    def location(self, object_id: str) -> pb.ObjectLocation | None:
        """Where a stored file is (url left empty), or None."""
        with self._lock:
            entry = self._files.get(object_id)
        if entry is None or not entry.path or not entry.ready:
            return None
        return pb.ObjectLocation(
            size_bytes=entry.size,
            owner=self.owner,
            host=host_key(),
            path=entry.path,
            pid=self.pid,
            pid_start=self.pid_start,
        )

    def _location_of(self, object_id: str) -> pb.ObjectLocation:
        location = self.location(object_id)
        if location is None:
            raise FileNotFoundError(f"object {object_id} was deleted while being written")
        return location

    def _has_room(self, size: int) -> bool:
        """Whether `size` more bytes (a spare, besides those held) fit in shared memory now."""
        held = self._spare.held_bytes
        with self._lock:
            return not self._closed and not self._too_much(held + size, size)

    def _let_go(self, entry: _File) -> None:
        """Remove a forgotten entry's file: recycled as the next spare when it may be."""
        if not entry.path:
            return
        if entry.written and entry.ready and not entry.spilled:
            if self._spare.recycle(entry.path, entry.size, entry.mapping):
                return
        elif entry.mapping is not None:
            self._spare.unmap(entry.mapping)
        _unlink(entry.path)

    @property
    def spare(self) -> SpareFile:
        """The spare file prepared ahead of writes (`fray.wire.objects.spare`)."""
        return self._spare

    def write(self, object_id: str, encoded: Encoded) -> pb.ObjectLocation:
        """Write `encoded` as `object_id`'s file (into the spare prepared ahead, when one
        fits); its location (url empty)."""
        mapping: list[mmap.mmap] = []

        def make(path: str) -> int:
            if os.path.dirname(path) == self.shm_dir:
                kept = self._spare.write(path, encoded)
                if kept is not None:
                    mapping.append(kept)
                    return encoded.size
            return write_file(path, encoded)

        path = self._place(object_id, encoded.size, make, written=True, mapping=mapping)
        logger.debug("stored object %s (%d bytes) at %s", object_id, encoded.size, path)
        return self._location_of(object_id)

    def reserve(self, object_id: str, size: int, *, hidden: bool = False) -> str:
        """An empty file of `size` bytes (space allocated) for a fetch; its path. A `hidden`
        one is counted but neither listed nor served until `reveal`."""
        return self._place(object_id, size, lambda p: _allocate(p, size), ready=not hidden)

    def reveal(self, object_id: str) -> bool:
        """List and serve a hidden reservation (now filled); False if it was deleted."""
        with self._lock:
            entry = self._files.get(object_id)
            if entry is None or not entry.path:
                return False
            entry.ready = True
            return True

    def register(self, object_id: str, path: str | None = None) -> pb.ObjectLocation:
        """Count a file another process wrote into `directory_for_child()` (at `path`, by
        default named by the id there); its location (url empty). A file in shared memory
        past the budget (or leaving less than the margin free) is moved to disk first."""
        validate_object_id(object_id)
        path = path or os.path.join(self.shm_dir, object_id)
        real = os.path.realpath(path)
        if os.path.dirname(real) not in (
            os.path.realpath(self.shm_dir),
            os.path.realpath(self.spill_dir),
        ):
            raise ValueError(f"{path} is not in the object store's directories")
        size = os.stat(real).st_size
        spilled = os.path.dirname(real) == os.path.realpath(self.spill_dir)
        if not spilled and self._past_budget(size):
            try:
                real, spilled = self._move_to_disk(object_id, real), True
            except OSError as exc:  # kept where it is rather than lost
                logger.warning("could not spill object %s to disk: %s", object_id, exc)
        with self._lock:
            if self._closed:
                raise RuntimeError(f"object store of {self.owner} is closed")
            old = self._files.pop(object_id, None)
            if old is not None:
                self._count(-old.size, old.spilled)
            self._files[object_id] = _File(real, size, spilled)
            self._count(size, spilled)
        if old is not None and old.mapping is not None:
            self._spare.unmap(old.mapping)
        return self._location_of(object_id)

    def _past_budget(self, size: int) -> bool:
        """Whether a file of `size` bytes already in shared memory is one too many there."""
        with self._lock:
            return self._too_much(size, 0)

    def _move_to_disk(self, object_id: str, path: str) -> str:
        """Move a child's file from shared memory to the spill directory; its new path."""
        target = os.path.join(self._directory(spilled=True), object_id)
        try:
            shutil.copyfile(path, target)
        except OSError:
            _unlink(target)
            raise
        _unlink(path)
        logger.info("object %s past the shared-memory budget: spilled to disk", object_id)
        return os.path.realpath(target)

    def path(self, object_id: str) -> str | None:
        with self._lock:
            entry = self._files.get(object_id)
        return entry.path if entry is not None and entry.path and entry.ready else None

    def ids(self) -> list[str]:
        with self._lock:
            return [k for k, v in self._files.items() if v.path and v.ready]

    @property
    def size_bytes(self) -> int:
        with self._lock:
            return self._shm_bytes + self._spill_bytes

    @property
    def spilled_bytes(self) -> int:
        with self._lock:
            return self._spill_bytes

    def delete(self, object_ids: Iterable[str]) -> int:
        """Remove these objects' files (unknown ids are skipped); how many were removed."""
        removed = []
        with self._lock:
            for object_id in object_ids:
                entry = self._files.pop(object_id, None)
                if entry is not None:
                    self._count(-entry.size, entry.spilled)
                    removed.append(entry)
        for entry in removed:
            self._let_go(entry)
        return len(removed)

    def close(self) -> None:
        """Remove this store's directories and files (idempotent)."""
        with self._lock:
            self._closed = True
            self._shm_bytes = self._spill_bytes = 0
        self._finalizer()  # (the files' maps too)

    @property
    def closed(self) -> bool:
        return self._closed

    def __repr__(self) -> str:
        return f"LocalStore(owner={self.owner!r}, dir={self.shm_dir!r})"


def _directory_of(store: weakref.ref[LocalStore]) -> str:
    found = store()
    if found is None:
        raise RuntimeError("the object store is gone")
    return found._directory(spilled=False)


def _has_room(store: weakref.ref[LocalStore], size: int) -> bool:
    found = store()
    return found is not None and found._has_room(size)


def _allocate(path: str, size: int) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        if size:
            os.posix_fallocate(fd, 0, size)  # a full tmpfs fails here, not as SIGBUS later
    except BaseException:
        os.close(fd)
        _unlink(path)
        raise
    os.close(fd)
    return size


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        logger.debug("could not remove object file %s: %s", path, exc)


def sweep(shm_root: str = "/dev/shm", spill_root: str | None = None) -> int:
    """Remove the object directories of processes that are gone; how many were removed."""
    removed = 0
    for root in {shm_root, spill_root or tempfile.gettempdir()}:
        try:
            names = os.listdir(root)
        except OSError:
            continue
        for name in names:
            match = _DIR_NAME.fullmatch(name)
            if match is None:
                continue
            pid, start = int(match[1]), int(match[2])
            if process_start(pid) == start:
                continue
            path = os.path.join(root, name)
            try:
                shutil.rmtree(path)
            except FileNotFoundError:
                continue
            except OSError as exc:
                logger.debug("could not sweep %s: %s", path, exc)
                continue
            logger.info("removed object files of gone process %d: %s", pid, path)
            removed += 1
    return removed
