"""Durable controller state without processes: the journal writes a `ControllerState` to SQLite
(`fray.controller.store`), and a new state restored from the file (`recovery`) is the same
state, reconciled with the workers that come back and those that do not.

Time comes from a fake clock; files live in pytest's tmp_path. See test_durable.py for the real
thing (a controller process SIGKILLed and restarted).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fray.controller import store as store_module
from fray.controller.journal import Journal, JournalError
from fray.controller.records import (
    ActorSpec,
    ActorState,
    DirectTaskRecord,
    ErrorKind,
    NotFound,
    TaskFailure,
    TaskOutcome,
    TaskSpec,
    TaskState,
)
from fray.controller.state import ControllerState
from fray.controller.store import StateStore, StoreError

T0 = 1_000.0
HEARTBEAT_TIMEOUT = 10.0


class Files:
    """Opens states journaled to one database file; closes them all at the end."""

    def __init__(self, path: Path, now: list[float]) -> None:
        self.path = path
        self.now = now
        self.journals: list[Journal] = []

    def open(self, **kwargs: Any) -> tuple[ControllerState, Journal]:
        for journal in self.journals:  # one controller at a time holds the file
            journal.close_now()
        self.journals.clear()
        kwargs.setdefault("heartbeat_timeout", HEARTBEAT_TIMEOUT)
        state = ControllerState(clock=lambda: self.now[0], **kwargs)
        journal = Journal.open(state, self.path)
        self.journals.append(journal)
        return state, journal

    def reopen(self, journal: Journal, **kwargs: Any) -> tuple[ControllerState, Journal]:
        """Save, close, and restore into a new state (a restart without losses)."""
        journal.save_now()
        return self.open(**kwargs)

    def rows(self, table: str) -> int:
        """Rows in `table`, read with a connection of its own (the file must be closed)."""
        for journal in self.journals:
            journal.close_now()
        self.journals.clear()
        with contextlib.closing(sqlite3.connect(self.path)) as db:
            return int(db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


@pytest.fixture
def now() -> list[float]:
    return [T0]


@pytest.fixture
def files(tmp_path: Path, now: list[float]) -> Iterator[Files]:
    f = Files(tmp_path / "state.db", now)
    yield f
    for journal in f.journals:
        journal.close_now()


def spec(task_id: str, owner: str = "client", **kwargs: Any) -> TaskSpec:
    return TaskSpec(
        function=b"fn-" + task_id.encode(), args=b"args", task_id=task_id, owner=owner, **kwargs
    )


def lease(state: ControllerState, worker_id: str, held: list[str] | None = None) -> list[str]:
    return [t.task_id for t in state.lease(worker_id, held)[0]]


def user_error(message: str = "boom") -> TaskFailure:
    return TaskFailure(
        ErrorKind.USER, "builtins.ValueError", message, traceback="tb", pickled_exception=b"exc"
    )


# ---------------------------------------------------------------------- round trip


def test_everything_saved_comes_back_the_same(files: Files, now: list[float]) -> None:
    state, journal = files.open()
    state.register_worker(worker_id="w1", address="http://a:1", slots=2, labels={"zone": "a"})
    state.register_worker(worker_id="w2", slots=1, cpus=4.0, memory_bytes=1 << 30)
    object_id = state.put_object(b"object bytes")
    state.submit([spec("done"), spec("failed"), spec("retried", max_retries=1)])
    state.submit([spec("running", object_ids=(object_id,), timeout_seconds=2.5), spec("queued")])
    assert lease(state, "w1") == ["done", "failed"]
    now[0] += 1
    state.report("w1", [TaskOutcome("done", 1, value=b"the value")])
    state.report("w1", [TaskOutcome("failed", 1, error=user_error())])
    assert lease(state, "w1") == ["retried", "running"]
    state.report("w1", [TaskOutcome("retried", 1, error=user_error("once"))])  # queued again
    state.cancel(["running"])  # asked of its worker, which has not answered yet
    state.record_direct(
        "w2",
        [
            DirectTaskRecord(
                spec=TaskSpec(function=b"", args=b"", task_id="direct", owner="client"),
                state=TaskState.COMPLETED,
                started_at=T0,
                finished_at=T0 + 0.5,
            )
        ],
    )
    ready, _ = state.create_actor(
        ActorSpec(cls=b"cls", args=b"a", name="keeper", detached=True, max_restarts=2)
    )
    dead, _ = state.create_actor(ActorSpec(cls=b"cls", args=b"b", name="gone"))
    state.report_actor(ready.worker_id, ready.actor_id, 1, ActorState.READY)
    state.kill_actor(dead.actor_id)
    tasks, _, _ = state.read_finished("client", 0, 10)
    assert [t.task_id for t in tasks] == ["done", "failed"]
    state.read_finished("client", 1, 10)  # acknowledges "done"

    before = {
        "tasks": {i: (t, t.spec) for i, t in state.tasks.items()},
        "counts": dict(state.counts),
        "actors": {
            i: (a.state, a.worker_id, a.incarnation, a.spec) for i, a in state.actors.items()
        },
        "workers": {
            i: (
                w.address,
                w.slots,
                w.labels,
                w.cpus,
                w.memory_bytes,
                w.tasks_completed,
                dict(w.task_ids),
            )
            for i, w in state.workers.items()
        },
        "objects": dict(state.objects.by_id),
        "log": state.read_finished("client", 1, 10)[:2],
    }
    controller_id = journal.controller_id
    state, journal = files.reopen(journal)

    assert journal.controller_id == controller_id
    assert {i: (t, t.spec) for i, t in state.tasks.items()} == before["tasks"]
    assert dict(state.counts) == before["counts"]
    assert {
        i: (a.state, a.worker_id, a.incarnation, a.spec) for i, a in state.actors.items()
    } == before["actors"]
    assert {
        i: (
            w.address,
            w.slots,
            w.labels,
            w.cpus,
            w.memory_bytes,
            w.tasks_completed,
            dict(w.task_ids),
        )
        for i, w in state.workers.items()
    } == before["workers"]
    assert dict(state.objects.by_id) == before["objects"]
    assert state.read_finished("client", 1, 10)[:2] == before["log"]
    assert state.tasks["done"].result == b"the value"
    error = state.tasks["failed"].error
    assert error is not None and (error.worker_id, error.pickled_exception) == ("w1", b"exc")
    assert state.tasks["running"].cancel_requested
    assert state.heartbeat("w1") == ["running"]  # the cancellation is sent again
    assert state.get_actor(name="keeper").actor_id == ready.actor_id
    with pytest.raises(NotFound):
        state.get_actor(name="gone")  # dead: its name is free
    assert [t.task_id for t in state.lease("w2")[0]] == ["retried"]  # queue order kept


def test_a_finished_task_keeps_no_function_or_arguments(files: Files) -> None:
    state, journal = files.open()
    state.register_worker(worker_id="w")
    state.submit([spec("t")])
    lease(state, "w")
    state.report("w", [TaskOutcome("t", 1, value=b"v")])
    assert (state.tasks["t"].spec.function, state.tasks["t"].spec.args) == (b"", b"")
    state, journal = files.reopen(journal)
    assert (state.tasks["t"].spec.function, state.tasks["t"].spec.args) == (b"", b"")
    assert state.tasks["t"].result == b"v"


def test_a_function_is_saved_once_for_all_its_tasks(files: Files) -> None:
    """Tasks of one function share one row of `functions` (their rows hold its digest); it
    goes once no unfinished task names it."""
    state, journal = files.open()
    state.register_worker(worker_id="w", slots=2)
    shared, other = b"fn-shared" * 50, b"fn-other" * 50
    state.submit([TaskSpec(function=shared, args=b"a", task_id=f"s{i}") for i in range(5)])
    journal.save_now()
    state.submit([TaskSpec(function=shared, args=b"a", task_id="s5")])  # a later batch
    state.submit([TaskSpec(function=other, args=b"a", task_id="o")])
    state, journal = files.reopen(journal)
    assert [state.tasks[f"s{i}"].spec.function for i in range(6)] == [shared] * 6
    assert state.tasks["o"].spec.function == other
    leased = lease(state, "w")
    state.report("w", [TaskOutcome(task_id, 1, value=b"v") for task_id in leased])
    finished = [task_id for task_id in state.tasks if state.tasks[task_id].state.finished]
    state, journal = files.reopen(journal)  # at load: functions no unfinished task names go
    for journal in files.journals:
        journal.close_now()
    with contextlib.closing(sqlite3.connect(files.path)) as db:
        saved = dict(db.execute("SELECT data, digest FROM functions"))
        nulls = db.execute("SELECT COUNT(*) FROM tasks WHERE function IS NULL").fetchone()[0]
    assert len(finished) == 2 and set(saved) <= {shared, other}
    assert nulls == 7 - len(finished)  # the unfinished ones hold a digest only
    assert shared in saved and (other in saved) == ("o" not in finished)
    state, journal = files.open()
    unfinished = [t for t in state.tasks.values() if not t.state.finished]
    assert len(unfinished) == 5
    assert all(t.spec.function in (shared, other) for t in unfinished)


def test_another_file_is_another_controller(tmp_path: Path, files: Files) -> None:
    _, journal = files.open()
    other_state = ControllerState()
    other = Journal.open(other_state, tmp_path / "other.db")
    try:
        assert other.controller_id != journal.controller_id
    finally:
        other.close_now()


def test_a_file_in_use_is_refused(files: Files) -> None:
    files.open()
    with pytest.raises(StoreError, match="in use by another controller"):
        StateStore(files.path, wait=0)


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="cannot use the state file"):
        StateStore(path)


# ---------------------------------------------------------------------- reconciling


def test_a_worker_that_comes_back_keeps_its_tasks_and_actors(
    files: Files, now: list[float]
) -> None:
    state, journal = files.open()
    state.register_worker(worker_id="w", slots=2)
    actor, _ = state.create_actor(ActorSpec(cls=b"c", args=b"", name="a"))
    state.report_actor("w", actor.actor_id, 1, ActorState.READY)
    state.submit([spec("a"), spec("b"), spec("c")])
    assert lease(state, "w") == ["a", "b"]
    state, journal = files.reopen(journal)

    now[0] += HEARTBEAT_TIMEOUT / 2
    assert not state.reconcile_actors("w", [(actor.actor_id, 1, ActorState.READY)])
    assert lease(state, "w", held=["a", "b"]) == []  # both still held: no room for "c"
    assert state.expire_workers() == []
    assert (
        state.report("w", [TaskOutcome("a", 1, value=b"A"), TaskOutcome("b", 1, value=b"B")]) == 2
    )
    assert (state.tasks["a"].result, state.tasks["b"].result) == (b"A", b"B")
    assert state.actors[actor.actor_id].state is ActorState.READY
    assert state.tasks["a"].attempts == 1


def test_a_worker_that_does_not_come_back_loses_its_work_after_the_timeout(
    files: Files, now: list[float]
) -> None:
    state, journal = files.open()
    state.register_worker(worker_id="gone", slots=1)
    actor, _ = state.create_actor(ActorSpec(cls=b"c", args=b"", max_restarts=1))
    state.report_actor("gone", actor.actor_id, 1, ActorState.READY)
    state.submit([spec("t")])
    assert lease(state, "gone") == ["t"]
    now[0] += 3 * HEARTBEAT_TIMEOUT  # down for long: the timeout counts from the restart
    state, journal = files.reopen(journal)
    assert state.expire_workers() == []
    now[0] += HEARTBEAT_TIMEOUT + 1
    state.register_worker(worker_id="new", slots=1)
    assert state.expire_workers() == ["gone"]
    task = state.tasks["t"]
    assert (task.state, task.infra_failures) == (TaskState.PENDING, 1)
    restarted = state.actors[actor.actor_id]
    assert (restarted.state, restarted.worker_id, restarted.restarts) == (
        ActorState.CREATING,
        "new",
        1,
    )
    state, journal = files.reopen(journal)  # and the reconciled state is saved
    assert state.tasks["t"].infra_failures == 1
    assert state.actors[actor.actor_id].incarnation == 2


def test_a_lease_the_worker_never_got_is_queued_again(files: Files) -> None:
    state, journal = files.open()
    state.register_worker(worker_id="w", slots=1)
    state.submit([spec("t")])
    lease(state, "w")
    state, journal = files.reopen(journal)
    assert lease(state, "w", held=[]) == ["t"]  # requeued, and leased again: attempt 2
    assert state.tasks["t"].attempts == 2


def test_a_creating_actor_is_ordered_again_if_its_worker_does_not_list_it(files: Files) -> None:
    state, journal = files.open()
    state.register_worker(worker_id="w", slots=1)
    actor, _ = state.create_actor(ActorSpec(cls=b"c", args=b""))
    state, journal = files.reopen(journal)
    assert state.reconcile_actors("w", [])
    starts, _ = state.take_actor_orders("w")
    assert [a.actor_id for a in starts] == [actor.actor_id]


def test_a_saved_cursor_stays_valid(files: Files, now: list[float]) -> None:
    state, journal = files.open()
    state.register_worker(worker_id="w", slots=4)
    state.submit([spec(f"t{i}") for i in range(4)])
    lease(state, "w")
    state.report("w", [TaskOutcome(f"t{i}", 1, value=b"%d" % i) for i in range(4)])
    tasks, cursor, _ = state.read_finished("client", 0, 2)
    assert cursor == 2
    state, journal = files.reopen(journal)
    tasks, cursor, dropped = state.read_finished("client", 2, 10)
    assert ([t.task_id for t in tasks], cursor, dropped) == (["t2", "t3"], 4, False)
    with pytest.raises(NotFound):
        state.read_finished("client", 5, 10)  # past the end: still not found
    state.read_finished("client", 4, 10)  # acknowledges everything
    state, journal = files.reopen(journal)
    assert state.read_finished("client", 4, 10)[:2] == ([], 4)
    assert files.rows("finished_entries") == 0


# ---------------------------------------------------------------------- retention and files


def test_evicted_tasks_leave_the_database(files: Files) -> None:
    state, journal = files.open(max_finished_tasks=3)
    state.register_worker(worker_id="w", slots=1)
    for i in range(10):
        state.submit([spec(f"t{i}", owner="")])
        lease(state, "w")
        state.report("w", [TaskOutcome(f"t{i}", 1, value=b"v")])
        if i % 3 == 0:
            journal.save_now()  # some saved before being evicted, some never
    state, journal = files.reopen(journal, max_finished_tasks=3)
    assert sorted(state.tasks) == ["t7", "t8", "t9"]
    assert files.rows("tasks") == 3


def test_big_values_live_in_files_that_go_with_their_rows(
    files: Files, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "SPILL_BYTES", 64)
    big = bytes(range(256)) * 4
    state, journal = files.open(max_finished_tasks=1)
    blobs = files.path.with_name(files.path.name + ".blobs")
    state.register_worker(worker_id="w", slots=1)
    object_id = state.put_object(big)
    state.submit([TaskSpec(function=big, args=big, task_id="t")])
    journal.save_now()
    assert len(list(blobs.iterdir())) == 3  # the object, the function, the arguments
    (blobs / "stray").write_bytes(b"written, never committed")
    state, journal = files.reopen(journal, max_finished_tasks=1)
    assert state.tasks["t"].spec.function == big and state.objects.by_id[object_id] == big
    assert not (blobs / "stray").exists()
    lease(state, "w")
    state.report("w", [TaskOutcome("t", 1, value=big)])
    journal.save_now()
    assert len(list(blobs.iterdir())) == 2  # the object, the result
    state, journal = files.reopen(journal, max_finished_tasks=1)
    assert state.tasks["t"].result == big
    state.delete_objects([object_id])
    state.submit([spec("next", owner="")])
    lease(state, "w")
    state.report("w", [TaskOutcome("next", 1, value=b"small")])  # evicts "t"
    journal.save_now()
    assert list(blobs.iterdir()) == []


# ---------------------------------------------------------------------- group commit


def test_concurrent_changes_share_commits(files: Files) -> None:
    state, journal = files.open()

    async def submitter(i: int) -> None:
        state.submit([spec(f"t{i}")])
        await journal.durable()

    async def main() -> None:
        await asyncio.gather(*(submitter(i) for i in range(200)))
        await journal.durable()  # nothing pending: returns at once

    asyncio.run(main())
    assert 1 <= journal.batches < 20
    state, journal = files.open()  # without save_now: everything was committed already
    assert len(state.tasks) == 200


def test_a_failed_write_refuses_every_later_call(
    files: Files, monkeypatch: pytest.MonkeyPatch
) -> None:
    failures: list[BaseException] = []
    state = ControllerState()
    journal = Journal.open(state, files.path, failures.append)
    files.journals.append(journal)

    def full(batch: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(journal._store, "write", full)

    async def main() -> None:
        state.submit([spec("t")])
        with pytest.raises(JournalError, match="No space left"):
            await journal.durable()
        with pytest.raises(JournalError):
            await journal.durable()

    asyncio.run(main())
    assert len(failures) == 1


# ---------------------------------------------------------------------- located objects


def test_a_large_objects_location_survives_a_restart_and_its_deletion_too(
    files: Files,
) -> None:
    from fray.wire.pb import controller_pb2 as pb

    state, journal = files.open()
    where = pb.ObjectLocation(
        size_bytes=5 << 20, owner="client-1", host="h", path="/dev/shm/x/o1", pid=7, pid_start=9
    )
    kept = state.put_object(b"", "o1", where)
    freed = state.put_object(
        b"", "o2", pb.ObjectLocation(size_bytes=1, owner="c", host="h", url="u")
    )
    small = state.put_object(b"inline")
    state, journal = files.reopen(journal)
    assert state.get_object(kept) == where
    assert state.get_object(small) == b"inline"
    assert state.objects.size_bytes == (5 << 20) + 1 + len(b"inline")
    assert state.delete_objects([freed]) == 1
    state, journal = files.reopen(journal)
    assert sorted(state.objects.located) == [kept]
    assert state.missing_objects([kept, freed, small]) == [freed]


def test_a_state_file_without_the_location_column_gets_it(files: Files) -> None:
    state, journal = files.open()
    object_id = state.put_object(b"old")
    journal.save_now()
    journal.close_now()
    with contextlib.closing(sqlite3.connect(files.path)) as db:  # as files before locations
        db.execute("ALTER TABLE objects DROP COLUMN location")
        db.commit()
    state, journal = files.open()
    assert state.get_object(object_id) == b"old"
