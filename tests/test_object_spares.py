"""Large writes at memory speed: `fray.wire.objects.memory` (copies on several threads,
``bytes`` filled in place, malloc keeping freed memory) and `fray.wire.objects.spare` (a file
prepared ahead of the next write, and freed files recycled when no reader holds them), on
real files in a temporary directory."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fray_fixtures import wait_for

from fray.wire.objects import LocalStore, encode, layout, load_file, memory, spare
from fray.wire.objects.layout import open_object

MB = 1024 * 1024
SIZE = 20 * MB  # above spare.MIN_BYTES


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LocalStore]:
    (tmp_path / "shm").mkdir()
    (tmp_path / "spill").mkdir()
    made = LocalStore(
        "spare-test",
        shm_root=str(tmp_path / "shm"),
        spill_root=str(tmp_path / "spill"),
        budget_bytes=512 * MB,
    )
    yield made
    made.close()


def _spares(store: LocalStore) -> list[str]:
    if not os.path.isdir(store.shm_dir):
        return []
    return [name for name in os.listdir(store.shm_dir) if name.startswith(".spare-")]


def _write_ready(store: LocalStore, object_id: str, value: Any) -> str:
    """Write `value` once the spare is ready (so that it goes into it); its path."""
    wait_for(lambda: store.spare.ready_bytes >= SIZE, 10, "a spare ready")
    taken = store.spare.taken
    path = store.write(object_id, encode(value, "v")).path
    assert store.spare.taken == taken + 1
    return path


# ---------------------------------------------------------------------- memory


@pytest.mark.parametrize("size", [0, 1, MB, 40 * MB + 123])
def test_copy_and_filled_bytes(size: int) -> None:
    source = os.urandom(size)
    target = bytearray(size)
    memory.copy(memoryview(target), memoryview(source))
    assert target == source
    made = memory.filled_bytes(size, lambda raw: memory.copy(raw, memoryview(source)))
    assert type(made) is bytes and made == source
    with pytest.raises(ValueError, match="copy of 1 bytes into 2"):
        memory.copy(memoryview(bytearray(2)), memoryview(b"x"))


def test_in_parallel_covers_every_byte_and_raises_the_first_error() -> None:
    seen: list[tuple[int, int]] = []
    memory.in_parallel(64 * MB + 5, lambda offset, length: seen.append((offset, length)))
    seen.sort()
    assert len(seen) > 1 and seen[0][0] == 0
    assert all(a + n == b for (a, n), (b, _) in zip(seen, seen[1:], strict=False))
    assert seen[-1][0] + seen[-1][1] == 64 * MB + 5

    def fail(offset: int, length: int) -> None:
        if offset:
            raise OSError(f"piece at {offset}")

    with pytest.raises(OSError, match="piece at"):
        memory.in_parallel(64 * MB, fail)


def test_keep_freed_in_a_process_of_its_own() -> None:
    code = """
from fray.wire.objects import memory
assert memory.keep_freed(256 * 1024 * 1024)
import os
src = os.urandom(40 * 1024 * 1024)
for _ in range(3):
    got = memory.filled_bytes(len(src), lambda raw: memory.copy(raw, memoryview(src)))
    assert got == src
    del got
def rss():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) << 10 for line in status if line.startswith("VmRSS"))
kept = rss()
memory.give_back()  # what an idle executor does
assert rss() < kept - 30 * 1024 * 1024, (kept, rss())
assert not memory.keep_freed(0)
print("ok")
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


# ---------------------------------------------------------------------- spares


def test_the_first_large_write_is_fresh_the_next_go_into_a_prepared_spare(
    store: LocalStore,
) -> None:
    values = [os.urandom(SIZE) for _ in range(3)]
    first = store.write("o0", encode(values[0], "v")).path
    assert store.spare.taken == 0
    paths = [first] + [_write_ready(store, f"o{i}", values[i]) for i in (1, 2)]
    for path, value in zip(paths, values, strict=True):
        assert load_file(path) == value
        assert os.path.getsize(path) == encode(value, "v").size  # truncated to the object
    assert store.ids() == ["o0", "o1", "o2"]
    store.close()
    assert not os.path.exists(store.shm_dir)


def test_a_freed_file_no_reader_holds_becomes_the_next_spare(store: LocalStore) -> None:
    store.write("a", encode(os.urandom(SIZE), "v"))
    path = _write_ready(store, "b", os.urandom(SIZE))
    inode = os.stat(path).st_ino
    wait_for(lambda: store.spare.ready_bytes >= SIZE, 10, "the next spare")  # fresh
    assert store.delete(["b"]) == 1
    assert store.spare.recycled == 1 and not os.path.exists(path)
    with pytest.raises(FileNotFoundError):  # its old name finds nothing
        open_object(path)
    _write_ready(store, "c", os.urandom(SIZE))  # takes the fresh one
    value = np.random.default_rng(1).random(SIZE // 8)
    reused = _write_ready(store, "d", value)  # takes the recycled file
    assert os.stat(reused).st_ino == inode
    assert np.array_equal(load_file(reused), value)


def test_a_file_a_reader_still_maps_is_not_recycled(store: LocalStore) -> None:
    store.write("a", encode(os.urandom(SIZE), "v"))
    first = np.random.default_rng(2).random(SIZE // 8)
    path = _write_ready(store, "b", first)
    held = load_file(path)  # a zero-copy reader: its map holds the file
    assert np.array_equal(held, first)
    assert store.delete(["b"]) == 1
    assert store.spare.recycled == 0 and not os.path.exists(path)
    for i in range(3):  # whatever is written next, the reader's array stays as it was
        store.write(f"c{i}", encode(np.full(SIZE // 8, float(i)), "v"))
    assert np.array_equal(held, first)
    del held
    store.write("d", encode(os.urandom(SIZE), "v"))
    assert store.delete(["d"]) == 1
    assert store.spare.recycled == 1  # no reader now


def test_a_file_being_recycled_is_not_opened(store: LocalStore) -> None:
    path = store.write("a", encode(os.urandom(SIZE), "v")).path
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as `recycle` holds it
        with pytest.raises(FileNotFoundError, match="being reused"):
            open_object(path)
    finally:
        os.close(fd)
    os.close(open_object(path))  # once let go


def test_an_unused_spare_is_removed(store: LocalStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spare, "IDLE_SECONDS", 0.3)
    store.write("a", encode(os.urandom(SIZE), "v"))
    wait_for(lambda: store.spare.ready_bytes >= SIZE, 10, "a spare ready")
    assert len(_spares(store)) == 1
    wait_for(lambda: not _spares(store) and store.spare.ready_bytes == 0, 10, "no spare")
    store.delete(["a"])  # no write lately: not recycled
    assert store.spare.recycled == 0 and not _spares(store)


def test_no_spare_past_the_budget(tmp_path: Path) -> None:
    small = LocalStore("small", shm_root=str(tmp_path), budget_bytes=SIZE + SIZE // 2)
    try:
        small.write("a", encode(os.urandom(SIZE), "v"))
        time.sleep(0.3)  # (the spare's thread has looked: no room for a second one)
        assert small.spare.ready_bytes == 0 and not _spares(small)
    finally:
        small.close()


def test_spares_can_be_turned_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(spare.MAX_ENV, "0")
    off = LocalStore("off", shm_root=str(tmp_path))
    try:
        for i in range(3):
            off.write(f"o{i}", encode(os.urandom(SIZE), "v"))
        assert off.spare.taken == 0 and not _spares(off)
    finally:
        off.close()


def test_a_forked_child_does_not_use_its_parents_spare(store: LocalStore) -> None:
    store.write("a", encode(os.urandom(SIZE), "v"))
    wait_for(lambda: store.spare.ready_bytes >= SIZE, 10, "a spare ready")
    pid = os.fork()
    if pid == 0:  # the child: writes fresh, leaves the parent's spare alone
        code = 0
        try:
            store.write("child", encode(os.urandom(SIZE), "v"))
            code = 0 if store.spare.taken == 0 else 3
            store.spare.close()
        except BaseException:
            code = 4
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert store.spare.ready_bytes >= SIZE and len(_spares(store)) == 1


def test_in_parallel_waits_for_every_piece_even_when_interrupted() -> None:
    done: list[int] = []

    def work(offset: int, length: int) -> None:
        if offset == 0:
            raise KeyboardInterrupt  # the caller's piece, as Ctrl-C would
        time.sleep(0.2)
        done.append(offset)

    pieces = memory.split(64 * MB)
    with pytest.raises(KeyboardInterrupt):
        memory.in_parallel(64 * MB, work)
    assert sorted(done) == [offset for offset, _ in pieces[1:]]  # none still writing


def test_deleting_an_object_as_its_write_ends_does_not_deadlock(store: LocalStore) -> None:
    """The store's lock and the spare's are never taken in opposite orders: here the spare's
    thread asks the store for room while the object written through a spare is deleted."""
    store.write("warm", encode(os.urandom(SIZE), "v"))
    wait_for(lambda: store.spare.ready_bytes >= SIZE, 10, "a spare ready")
    spares = store.spare
    room = spares._room

    def slow_room(size: int) -> bool:
        time.sleep(0.3)  # (a wide window for the delete below)
        return room(size)

    write = spares.write

    def write_then_delete(path: str, encoded: Any) -> Any:
        kept = write(path, encoded)  # wakes the thread, which asks for room
        store.delete([os.path.basename(path)])  # deleted before the store settles it
        time.sleep(0.05)  # (the thread is asking for room now)
        return kept

    spares._room = slow_room  # type: ignore[method-assign]
    spares.write = write_then_delete  # type: ignore[method-assign]

    def write_a() -> None:
        with pytest.raises(FileNotFoundError, match="deleted while being written"):
            store.write("a", encode(os.urandom(SIZE), "v"))

    writer = threading.Thread(target=write_a, daemon=True)
    writer.start()
    writer.join(10)
    assert not writer.is_alive(), "deadlock"
    assert store.ids() == ["warm"]


def test_the_spare_thread_survives_an_error(
    store: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    prepare = spare.SpareFile._prepare
    calls: list[int] = []

    def failing_once(self: Any, capacity: int, reuse: Any) -> Any:
        calls.append(capacity)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return prepare(self, capacity, reuse)

    monkeypatch.setattr(spare.SpareFile, "_prepare", failing_once)
    store.write("a", encode(os.urandom(SIZE), "v"))
    wait_for(lambda: calls, 10, "a first try")
    started = time.monotonic()
    store.write("b", encode(os.urandom(SIZE), "v"))  # not kept waiting by a dead thread
    assert time.monotonic() - started < spare.WAIT_SECONDS
    wait_for(lambda: store.spare.ready_bytes >= SIZE, 10, "a spare after the error")


def test_a_recycled_files_padding_is_zeroed(store: LocalStore) -> None:
    store.write("a", encode(b"\xff" * SIZE, "v"))
    path = _write_ready(store, "b", [b"\xff" * SIZE, b"\xff" * 100])
    wait_for(lambda: store.spare.ready_bytes >= SIZE, 10, "the next spare")
    store.delete(["b"])
    _write_ready(store, "c", os.urandom(SIZE))  # takes the fresh one
    value = [b"\x01" * (SIZE - 4096), b"\x02" * 77]
    reused = _write_ready(store, "d", value)  # the recycled file, full of 0xff before
    assert store.spare.recycled == 1 and path != reused
    with open(reused, "rb") as file:
        data = file.read()
    fd = os.open(reused, os.O_RDONLY)
    try:
        _, p_off, p_len, entries = layout.read_header(fd, len(data), reused)
    finally:
        os.close(fd)
    used = sorted([(p_off, p_len), *((o, n) for o, n, _ in entries)])
    end = used[0][0]
    for offset, length in used:
        assert set(data[end:offset]) <= {0}, (end, offset)
        end = offset + length
    assert load_file(reused) == value
