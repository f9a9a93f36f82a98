"""Unit tests of `ControllerState`, the controller's pure state machine (no server, no threads).

Time comes from a fake clock (`now[0]`) so heartbeat expiry is exact and instant. Every test's
state is checked for internal consistency at teardown (counts by state, worker holdings).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from fray.controller.records import (
    ActorSpec,
    ActorState,
    AlreadyExists,
    DirectTaskRecord,
    ErrorKind,
    InvalidRequest,
    NotFound,
    TaskFailure,
    TaskOutcome,
    TaskRecord,
    TaskSpec,
    TaskState,
)
from fray.controller.state import ControllerState
from fray.wire.limits import MAX_ID_LENGTH

T0 = 1_000.0
HEARTBEAT_TIMEOUT = 10.0


# ---------------------------------------------------------------------- helpers


def spec(task_id: str = "", **kwargs: object) -> TaskSpec:
    return TaskSpec(function=b"fn", args=b"args", task_id=task_id, **kwargs)  # type: ignore[arg-type]


def user_error(message: str = "boom") -> TaskFailure:
    return TaskFailure(ErrorKind.USER, "builtins.ValueError", message)


def lost_error(worker_id: str) -> TaskFailure:
    return TaskFailure(
        ErrorKind.WORKER_LOST, "ExecutorDied", "executor died (exit code -9)", worker_id=worker_id
    )


def check_consistent(state: ControllerState) -> None:
    """Counts match the tasks; RUNNING tasks and worker holdings agree with each other."""
    assert sum(state.counts.values()) == len(state.tasks)
    for s in TaskState:
        assert state.counts[s] == sum(t.state is s for t in state.tasks.values()), s
    assert state.queue_depth == state.counts[TaskState.PENDING]
    for worker in state.workers.values():
        for task_id in worker.task_ids:
            task = state.tasks[task_id]
            assert task.state is TaskState.RUNNING
            assert task.worker_id == worker.worker_id
    for task in state.tasks.values():
        if task.state is TaskState.RUNNING:
            assert task.task_id in state.workers[task.worker_id].task_ids
        else:
            assert task.worker_id == "" or task.state.finished


@pytest.fixture
def now() -> list[float]:
    return [T0]


MakeState = Callable[..., ControllerState]


@pytest.fixture
def make_state(now: list[float]) -> Iterator[MakeState]:
    """Builds states on the fake clock; each is checked for consistency at teardown."""
    made: list[ControllerState] = []

    def make(**kwargs: Any) -> ControllerState:
        kwargs.setdefault("heartbeat_timeout", HEARTBEAT_TIMEOUT)
        kwargs.setdefault("max_infra_attempts", 3)
        made.append(ControllerState(clock=lambda: now[0], **kwargs))
        return made[-1]

    yield make
    for s in made:
        check_consistent(s)


@pytest.fixture
def state(make_state: MakeState) -> ControllerState:
    return make_state()


def lease_ids(
    state: ControllerState,
    worker_id: str,
    held: list[str] | None = None,
    prefetch: int | None = None,
) -> list[str]:
    leased, _ = state.lease(worker_id, held, prefetch)
    return [t.task_id for t in leased]


def run_one(state: ControllerState, worker_id: str, task_id: str) -> TaskRecord:
    """Lease `task_id` (it must be next in the queue) to `worker_id`; returns the task."""
    assert lease_ids(state, worker_id) == [task_id]
    return state.tasks[task_id]


# ---------------------------------------------------------------------- construction


@pytest.mark.parametrize(
    "kwargs",
    [{"heartbeat_timeout": 0}, {"max_infra_attempts": 0}, {"max_finished_tasks": 0}],
)
def test_constructor_rejects_non_positive_limits(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        ControllerState(**kwargs)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- submit


def test_submit_assigns_ids_and_keeps_client_ids(state: ControllerState, now: list[float]) -> None:
    ids = state.submit([spec(), spec("mine"), spec()])
    assert ids[1] == "mine"
    assert len(set(ids)) == 3
    for generated in (ids[0], ids[2]):
        assert len(generated) == 32 and all(c in "0123456789abcdef" for c in generated)
    for task_id in ids:
        task = state.get_task(task_id)
        assert task.state is TaskState.PENDING
        assert task.submitted_at == now[0]
        assert task.attempts == 0
    assert state.counts[TaskState.PENDING] == 3
    assert state.queue_depth == 3
    check_consistent(state)


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        (TaskSpec(function=b"", args=b""), "function is empty"),
        (spec(timeout_seconds=-1.0), "timeout_seconds"),
        (spec(timeout_seconds=math.nan), "timeout_seconds"),
        (spec(timeout_seconds=math.inf), "timeout_seconds"),
        (spec(max_retries=-1), "max_retries"),
        (spec("x" * (MAX_ID_LENGTH + 1)), "longer than"),
    ],
    ids=["empty-function", "negative-timeout", "nan-timeout", "inf-timeout", "neg-retries", "id"],
)
def test_submit_is_all_or_none_on_invalid_spec(
    state: ControllerState, bad: TaskSpec, words: str
) -> None:
    with pytest.raises(InvalidRequest) as info:
        state.submit([spec("good"), bad, spec("also-good")])
    assert words in str(info.value)
    assert "task 1" in str(info.value)  # names the offending task by position
    assert state.tasks == {}
    assert state.queue_depth == 0
    # The valid ids were not taken: they can be submitted afterwards.
    assert state.submit([spec("good"), spec("also-good")]) == ["good", "also-good"]


def test_submit_rejects_empty_batch(state: ControllerState) -> None:
    with pytest.raises(InvalidRequest, match="no tasks"):
        state.submit([])


def test_submit_duplicate_ids_already_exist(state: ControllerState) -> None:
    with pytest.raises(AlreadyExists, match="dup"):
        state.submit([spec("a"), spec("dup"), spec("dup")])
    assert state.tasks == {}
    state.submit([spec("dup")])
    with pytest.raises(AlreadyExists, match="dup"):
        state.submit([spec("b"), spec("dup")])
    assert set(state.tasks) == {"dup"}
    assert state.queue_depth == 1


def test_submit_unknown_object_ids_not_found(state: ControllerState) -> None:
    object_id = state.put_object(b"payload")
    with pytest.raises(NotFound, match="nope"):
        state.submit([spec("a", object_ids=(object_id,)), spec("b", object_ids=("nope",))])
    assert state.tasks == {}
    assert state.submit([spec("a", object_ids=(object_id,))]) == ["a"]


# ---------------------------------------------------------------------- lease


def test_lease_is_fifo(state: ControllerState) -> None:
    state.submit([spec("a"), spec("b")])
    state.submit([spec("c"), spec("d")])
    state.register_worker(worker_id="w", slots=1)
    order = []
    for _ in range(4):
        (task,), _ = state.lease("w")
        order.append(task.task_id)
        assert task.attempts == 1
        assert state.report("w", [TaskOutcome(task.task_id, 1, value=b"r")]) == 1
    assert order == ["a", "b", "c", "d"]
    assert state.lease("w") == ([], [])


def test_lease_respects_slots_plus_prefetch(state: ControllerState, now: list[float]) -> None:
    state.submit([spec(str(i)) for i in range(10)])
    state.register_worker(worker_id="w", slots=2, prefetch=1)
    now[0] += 1
    assert lease_ids(state, "w") == ["0", "1", "2"]
    assert state.tasks["0"].started_at == now[0]
    assert state.tasks["0"].worker_id == "w"
    assert lease_ids(state, "w") == []  # full
    assert state.busy_slots() == 2
    state.report("w", [TaskOutcome("1", 1, value=b"")])
    assert lease_ids(state, "w") == ["3"]
    assert state.counts[TaskState.RUNNING] == 3
    assert state.counts[TaskState.PENDING] == 6


def test_lease_prefetch_asked_for_is_capped_by_the_registered_one(
    state: ControllerState,
) -> None:
    state.submit([spec(str(i)) for i in range(10)])
    state.register_worker(worker_id="w", slots=1, prefetch=2)
    assert lease_ids(state, "w", prefetch=0) == ["0"]  # slots only
    assert lease_ids(state, "w", prefetch=0) == []
    assert lease_ids(state, "w", prefetch=-3) == []  # negative: as 0
    assert lease_ids(state, "w", prefetch=1) == ["1"]
    assert lease_ids(state, "w", prefetch=100) == ["2"]  # capped at the registered 2
    assert lease_ids(state, "w") == []  # None: the registered prefetch
    assert len(state.workers["w"].task_ids) == 3


def test_lease_fair_share_between_workers(state: ControllerState) -> None:
    state.submit([spec(str(i)) for i in range(4)])
    state.register_worker(worker_id="w1", slots=1, prefetch=8)
    state.register_worker(worker_id="w2", slots=1, prefetch=8)
    # 4 queued / 2 workers: w1 gets its fair share (2), not all it has room for (9).
    assert lease_ids(state, "w1") == ["0", "1"]
    assert lease_ids(state, "w2") == ["2"]  # ceil(2 queued / 2 workers)
    assert state.queue_depth == 1


def test_lease_free_slots_beyond_fair_share(state: ControllerState) -> None:
    state.submit([spec(str(i)) for i in range(4)])
    state.register_worker(worker_id="w1", slots=4)
    state.register_worker(worker_id="w2", slots=4)
    # Free slots are always filled, whatever the fair share (2).
    assert lease_ids(state, "w1") == ["0", "1", "2", "3"]
    assert lease_ids(state, "w2") == []


def test_lease_unknown_worker_not_found(state: ControllerState) -> None:
    state.submit([spec("a")])
    with pytest.raises(NotFound, match="ghost"):
        state.lease("ghost")
    assert state.tasks["a"].state is TaskState.PENDING


def test_lease_held_reconciliation_requeues_missing(state: ControllerState) -> None:
    state.submit([spec("a"), spec("b"), spec("c")])
    state.register_worker(worker_id="w", slots=2)
    assert lease_ids(state, "w") == ["a", "b"]
    # held=None: the worker did not say; nothing is reconciled.
    assert lease_ids(state, "w", None) == []
    assert state.tasks["b"].state is TaskState.RUNNING
    # The worker only has "a" (the answer that carried "b" was lost): "b" goes back to the queue,
    # ahead of "c", without using any retry budget, and is leased again at once.
    leased, _ = state.lease("w", ["a", "unknown-id"])
    assert [t.task_id for t in leased] == ["b"]
    b = state.tasks["b"]
    assert b.attempts == 2
    assert b.infra_failures == 0 and b.user_failures == 0
    assert state.tasks["a"].state is TaskState.RUNNING
    assert state.tasks["c"].state is TaskState.PENDING
    # A report for the lost attempt is now stale.
    assert state.report("w", [TaskOutcome("b", 1, value=b"old")]) == 0
    assert state.report("w", [TaskOutcome("b", 2, value=b"new")]) == 1
    assert state.tasks["b"].result == b"new"


def test_lease_held_reconciliation_with_empty_held_list(state: ControllerState) -> None:
    state.submit([spec("a")])
    state.register_worker(worker_id="w1", slots=1)
    state.register_worker(worker_id="w2", slots=1)
    state.register_worker(worker_id="w3", slots=1)
    assert lease_ids(state, "w1") == ["a"]
    state.submit([spec("b")])
    assert lease_ids(state, "w2") == ["b"]
    # w2 says it holds nothing (it lost the answer that carried "b"): "b" goes back to the
    # queue without using any budget; w2 has room again and gets it back in the same call.
    assert lease_ids(state, "w2", []) == ["b"]
    b = state.tasks["b"]
    assert b.attempts == 2 and b.infra_failures == 0 and b.worker_id == "w2"
    assert state.tasks["a"].worker_id == "w1"  # other workers' leases are untouched


# ---------------------------------------------------------------------- report


def test_report_value_completes(state: ControllerState, now: list[float]) -> None:
    state.submit([spec("a")])
    state.register_worker(worker_id="w")
    run_one(state, "w", "a")
    now[0] += 5
    assert state.report("w", [TaskOutcome("a", 1, value=b"result")]) == 1
    task = state.get_task("a")
    assert task.state is TaskState.COMPLETED
    assert task.result == b"result"
    assert task.error is None
    assert task.finished_at == now[0]
    assert task.worker_id == "w"  # who ran it is kept
    worker = state.workers["w"]
    assert worker.task_ids == {}
    assert worker.tasks_completed == 1 and worker.tasks_failed == 0
    assert worker.last_heartbeat == now[0]  # a report counts as a heartbeat
    assert state.counts[TaskState.COMPLETED] == 1
    assert state.busy_slots() == 0


def test_user_error_without_retries_fails(state: ControllerState) -> None:
    state.submit([spec("a")])
    state.register_worker(worker_id="w")
    run_one(state, "w", "a")
    assert state.report("w", [TaskOutcome("a", 1, error=user_error("bad input"))]) == 1
    task = state.get_task("a")
    assert task.state is TaskState.FAILED
    assert task.error is not None and task.error.kind is ErrorKind.USER
    assert task.error.message == "bad input"
    assert task.user_failures == 1
    assert state.workers["w"].tasks_failed == 1


def test_user_error_with_one_retry(state: ControllerState) -> None:
    state.submit([spec("a", max_retries=1), spec("b")])
    state.register_worker(worker_id="w")
    run_one(state, "w", "a")
    state.report("w", [TaskOutcome("a", 1, error=user_error("first"))])
    task = state.get_task("a")
    assert task.state is TaskState.PENDING
    assert task.error is not None and task.error.message == "first"  # kept while retried
    check_consistent(state)
    # The retried task goes ahead of "b" (it is older).
    run_one(state, "w", "a")
    assert task.attempts == 2
    state.report("w", [TaskOutcome("a", 2, error=user_error("second"))])
    assert task.state is TaskState.FAILED
    assert task.error is not None and task.error.message == "second"
    assert task.user_failures == 2
    assert task.infra_failures == 0


def test_user_retry_then_success(state: ControllerState) -> None:
    state.submit([spec("a", max_retries=2)])
    state.register_worker(worker_id="w")
    run_one(state, "w", "a")
    state.report("w", [TaskOutcome("a", 1, error=user_error())])
    run_one(state, "w", "a")
    state.report("w", [TaskOutcome("a", 2, value=b"ok")])
    task = state.get_task("a")
    assert task.state is TaskState.COMPLETED
    assert task.result == b"ok"
    assert task.error is None


@pytest.mark.parametrize("kind", [ErrorKind.TIMEOUT, ErrorKind.DESERIALIZATION])
def test_timeout_and_deserialization_errors_fail(state: ControllerState, kind: ErrorKind) -> None:
    state.submit([spec("a")])
    state.register_worker(worker_id="w")
    run_one(state, "w", "a")
    state.report("w", [TaskOutcome("a", 1, error=TaskFailure(kind, "T", "m"))])
    task = state.get_task("a")
    assert task.state is TaskState.FAILED
    assert task.error is not None and task.error.kind is kind


def test_worker_lost_errors_retried_until_budget(state: ControllerState) -> None:
    assert state.max_infra_attempts == 3
    state.submit([spec("task-a")])
    state.register_worker(worker_id="w1")
    for attempt in (1, 2):
        run_one(state, "w1", "task-a")
        state.report("w1", [TaskOutcome("task-a", attempt, error=lost_error("w1"))])
        task = state.get_task("task-a")
        assert task.state is TaskState.PENDING
        assert task.infra_failures == attempt
        assert task.user_failures == 0
        check_consistent(state)
    run_one(state, "w1", "task-a")
    state.report("w1", [TaskOutcome("task-a", 3, error=lost_error("w1"))])
    task = state.get_task("task-a")
    assert task.state is TaskState.FAILED
    assert task.infra_failures == 3
    assert task.error is not None and task.error.kind is ErrorKind.WORKER_LOST
    assert "task-a" in task.error.message
    assert "w1" in task.error.message
    assert "executor died" in task.error.message  # the original cause is kept


def test_worker_lost_report_without_worker_id_names_the_reporting_worker(
    make_state: MakeState,
) -> None:
    """A WORKER_LOST report whose TaskError leaves worker_id empty (it is optional on the wire,
    e.g. a curl user or another worker implementation): the final message must still name the
    worker, which the controller knows (it is the reporter and the task's holder)."""
    state = make_state(max_infra_attempts=1)
    state.submit([spec("task-a")])
    state.register_worker(worker_id="w1")
    run_one(state, "w1", "task-a")
    failure = TaskFailure(ErrorKind.WORKER_LOST, "ExecutorDied", "executor died")
    state.report("w1", [TaskOutcome("task-a", 1, error=failure)])
    task = state.get_task("task-a")
    assert task.state is TaskState.FAILED
    assert task.error is not None
    assert "task-a" in task.error.message
    assert "w1" in task.error.message, task.error.message


def test_stale_reports_are_ignored(state: ControllerState) -> None:
    state.submit([spec("a"), spec("b")])
    state.register_worker(worker_id="w1", slots=1)
    state.register_worker(worker_id="w2", slots=1)
    run_one(state, "w1", "a")
    run_one(state, "w2", "b")
    outcomes = [
        TaskOutcome("a", 2, value=b"wrong attempt"),
        TaskOutcome("a", 0, value=b"wrong attempt"),
        TaskOutcome("b", 1, value=b"wrong worker"),  # b is w2's
        TaskOutcome("nope", 1, value=b"unknown task"),
    ]
    assert state.report("w1", outcomes) == 0
    assert state.tasks["a"].state is TaskState.RUNNING
    assert state.tasks["b"].state is TaskState.RUNNING
    assert state.report("w1", [TaskOutcome("a", 1, value=b"x")]) == 1
    # A second report of the same (now finished) attempt is stale too.
    assert state.report("w1", [TaskOutcome("a", 1, error=user_error())]) == 0
    assert state.tasks["a"].state is TaskState.COMPLETED
    assert state.tasks["a"].result == b"x"
    assert state.workers["w1"].tasks_failed == 0


def test_report_from_unknown_worker_not_found(state: ControllerState) -> None:
    with pytest.raises(NotFound, match="ghost"):
        state.report("ghost", [])


def test_handed_back_requeues_without_using_budget(state: ControllerState) -> None:
    state.submit([spec("a"), spec("b")])
    state.register_worker(worker_id="w")
    run_one(state, "w", "a")
    assert state.report("w", [TaskOutcome("a", 1, handed_back=True)]) == 1
    task = state.get_task("a")
    assert task.state is TaskState.PENDING
    assert task.user_failures == 0 and task.infra_failures == 0
    assert task.error is None
    assert state.workers["w"].tasks_failed == 0
    run_one(state, "w", "a")  # ahead of b
    assert task.attempts == 2


def test_many_handbacks_never_fail_the_task(make_state: MakeState) -> None:
    state = make_state(max_infra_attempts=1)
    state.submit([spec("a")])
    state.register_worker(worker_id="w")
    for attempt in range(1, 6):
        run_one(state, "w", "a")
        state.report("w", [TaskOutcome("a", attempt, handed_back=True)])
        assert state.tasks["a"].state is TaskState.PENDING
    check_consistent(state)


# ---------------------------------------------------------------------- cancel


def test_cancel_pending_is_immediate(state: ControllerState) -> None:
    state.submit([spec("a"), spec("b")])
    (task,) = state.cancel(["a"])
    assert task.state is TaskState.CANCELLED
    assert task.cancel_requested
    assert task.error is not None and task.error.kind is ErrorKind.CANCELLED
    assert task.finished_at is not None
    assert state.queue_depth == 1
    state.register_worker(worker_id="w", slots=4)
    assert lease_ids(state, "w") == ["b"]  # the stale queue entry is skipped


def test_cancel_unknown_task_changes_nothing(state: ControllerState) -> None:
    state.submit([spec("a")])
    with pytest.raises(NotFound, match="nope"):
        state.cancel(["a", "nope"])
    assert state.tasks["a"].state is TaskState.PENDING
    assert not state.tasks["a"].cancel_requested


def test_cancel_finished_task_is_a_no_op(state: ControllerState) -> None:
    state.submit([spec("a")])
    state.register_worker(worker_id="w")
    run_one(state, "w", "a")
    state.report("w", [TaskOutcome("a", 1, value=b"v")])
    (task,) = state.cancel(["a"])
    assert task.state is TaskState.COMPLETED
    assert task.result == b"v"
    assert state.heartbeat("w") == []


def test_cancel_running_is_sent_until_the_task_ends(state: ControllerState) -> None:
    """Every heartbeat (and lease answer) carries the cancellation until the worker reports the
    task's end: an answer lost on the way loses no cancellation."""
    state.submit([spec("a")])
    state.register_worker(worker_id="w")
    run_one(state, "w", "a")
    (task,) = state.cancel(["a"])
    assert task.state is TaskState.RUNNING
    assert task.cancel_requested
    state.cancel(["a"])  # asking twice asks once
    assert state.heartbeat("w") == ["a"]
    assert state.heartbeat("w") == ["a"]  # the first answer may have been lost
    assert state.lease("w", held=["a"])[1] == ["a"]
    assert state.report(
        "w", [TaskOutcome("a", 1, error=TaskFailure(ErrorKind.CANCELLED, "C", "c"))]
    )
    assert task.state is TaskState.CANCELLED
    assert task.error is not None and task.error.kind is ErrorKind.CANCELLED
    assert state.workers["w"].task_ids == {}
    assert state.heartbeat("w") == []  # ended: nothing more to cancel


def test_cancel_running_delivered_via_lease(state: ControllerState) -> None:
    state.submit([spec("a"), spec("b")])
    state.register_worker(worker_id="w", slots=1)
    run_one(state, "w", "a")
    state.cancel(["a"])
    leased, cancels = state.lease("w")
    assert (leased, cancels) == ([], ["a"])  # no room for b; the cancel is delivered
    assert state.lease("w") == ([], ["a"])  # and again, until the worker reports a's end
    state.report("w", [TaskOutcome("a", 1, error=TaskFailure(ErrorKind.CANCELLED, "C", "c"))])
    leased, cancels = state.lease("w")
    assert [t.task_id for t in leased] == ["b"] and cancels == []


def test_value_report_of_cancel_requested_task_is_cancelled(state: ControllerState) -> None:
    state.submit([spec("a")])
    state.register_worker(worker_id="w")
    run_one(state, "w", "a")
    state.cancel(["a"])
    assert state.report("w", [TaskOutcome("a", 1, value=b"finished anyway")]) == 1
    task = state.get_task("a")
    assert task.state is TaskState.CANCELLED
    assert task.result is None
    assert task.error is not None and task.error.kind is ErrorKind.CANCELLED


def test_user_error_of_cancel_requested_task_is_cancelled_not_retried(
    state: ControllerState,
) -> None:
    state.submit([spec("a", max_retries=5)])
    state.register_worker(worker_id="w")
    run_one(state, "w", "a")
    state.cancel(["a"])
    state.report("w", [TaskOutcome("a", 1, error=user_error())])
    assert state.tasks["a"].state is TaskState.CANCELLED


def test_handed_back_cancel_requested_task_is_cancelled(state: ControllerState) -> None:
    state.submit([spec("a")])
    state.register_worker(worker_id="w")
    run_one(state, "w", "a")
    state.cancel(["a"])
    state.report("w", [TaskOutcome("a", 1, handed_back=True)])
    assert state.tasks["a"].state is TaskState.CANCELLED


def test_cancel_requested_task_of_lost_worker_is_cancelled(
    state: ControllerState, now: list[float]
) -> None:
    state.submit([spec("a")])
    state.register_worker(worker_id="w")
    run_one(state, "w", "a")
    state.cancel(["a"])
    now[0] += HEARTBEAT_TIMEOUT + 1
    assert state.expire_workers() == ["w"]
    assert state.tasks["a"].state is TaskState.CANCELLED
    assert state.queue_depth == 0


# ---------------------------------------------------------------------- workers


def test_register_worker_validation_and_ids(state: ControllerState, now: list[float]) -> None:
    with pytest.raises(InvalidRequest, match="slots"):
        state.register_worker(slots=0)
    with pytest.raises(InvalidRequest, match="prefetch"):
        state.register_worker(prefetch=-1)
    with pytest.raises(InvalidRequest, match="worker_id"):
        state.register_worker(worker_id="w" * (MAX_ID_LENGTH + 1))
    assert state.workers == {}
    worker = state.register_worker(slots=2, cpus=4, memory_bytes=8, labels={"gpu": "no"})
    assert worker.worker_id and worker.worker_id in state.workers
    assert worker.registered_at == worker.last_heartbeat == now[0]
    assert worker.labels == {"gpu": "no"}


def test_heartbeat_unknown_worker_not_found(state: ControllerState) -> None:
    with pytest.raises(NotFound, match="ghost"):
        state.heartbeat("ghost")


def test_expire_workers_after_timeout_requeues_then_fails(
    make_state: MakeState, now: list[float]
) -> None:
    state = make_state(max_infra_attempts=2)
    state.submit([spec("task-a"), spec("task-b")])
    state.register_worker(worker_id="w1", slots=1)
    state.register_worker(worker_id="live", slots=1)
    run_one(state, "w1", "task-a")
    run_one(state, "live", "task-b")

    now[0] += HEARTBEAT_TIMEOUT / 2
    state.heartbeat("live")
    now[0] += HEARTBEAT_TIMEOUT / 2
    assert state.expire_workers() == []  # silent exactly the timeout: not yet
    now[0] += 0.5
    assert state.expire_workers() == ["w1"]
    assert "w1" not in state.workers and "live" in state.workers
    task = state.get_task("task-a")
    assert task.state is TaskState.PENDING
    assert task.infra_failures == 1
    assert task.error is not None and task.error.kind is ErrorKind.WORKER_LOST
    assert "w1" in task.error.message and "heartbeat" in task.error.message
    assert state.tasks["task-b"].state is TaskState.RUNNING
    check_consistent(state)

    # Lost a second time: the budget (2) is used up.
    state.register_worker(worker_id="w2", slots=1)
    run_one(state, "w2", "task-a")
    state.heartbeat("live")
    now[0] += HEARTBEAT_TIMEOUT + 1
    state.heartbeat("live")
    assert state.expire_workers() == ["w2"]
    assert task.state is TaskState.FAILED
    assert task.error is not None and task.error.kind is ErrorKind.WORKER_LOST
    assert "task-a" in task.error.message and "w2" in task.error.message
    assert task.infra_failures == 2
    check_consistent(state)


def test_lease_and_report_count_as_heartbeats(state: ControllerState, now: list[float]) -> None:
    state.submit([spec("a")])
    state.register_worker(worker_id="w")
    now[0] += HEARTBEAT_TIMEOUT
    state.lease("w")
    now[0] += HEARTBEAT_TIMEOUT
    state.report("w", [])
    now[0] += HEARTBEAT_TIMEOUT
    assert state.expire_workers() == []


def test_unregister_requeues_held_tasks(state: ControllerState) -> None:
    state.submit([spec("a"), spec("b"), spec("c")])
    state.register_worker(worker_id="w", slots=2)
    assert lease_ids(state, "w") == ["a", "b"]
    assert state.unregister_worker("w") == ["a", "b"]
    assert "w" not in state.workers
    for task_id in "abc":
        task = state.tasks[task_id]
        assert task.state is TaskState.PENDING
        assert task.infra_failures == 0 and task.worker_id == ""
    with pytest.raises(NotFound):
        state.unregister_worker("w")
    with pytest.raises(NotFound):
        state.heartbeat("w")


def test_requeued_tasks_keep_their_order(state: ControllerState) -> None:
    """Tasks going back to the queue together (a worker leaving with several) must keep their
    relative order: the queue is documented as "oldest first"."""
    state.submit([spec("a"), spec("b"), spec("c")])
    state.register_worker(worker_id="w", slots=2)
    assert lease_ids(state, "w") == ["a", "b"]
    state.unregister_worker("w")
    state.register_worker(worker_id="w2", slots=3)
    assert lease_ids(state, "w2") == ["a", "b", "c"]


def test_reregister_same_id_drops_tasks_as_lost(state: ControllerState) -> None:
    state.submit([spec("a"), spec("b")])
    state.register_worker(worker_id="w", slots=1)
    run_one(state, "w", "a")
    worker = state.register_worker(worker_id="w", slots=3)
    assert worker.task_ids == {}
    assert worker.slots == 3
    task = state.get_task("a")
    assert task.state is TaskState.PENDING
    assert task.infra_failures == 1
    assert task.error is not None and task.error.kind is ErrorKind.WORKER_LOST
    assert "re-registered" in task.error.message
    # A late report from the old incarnation is stale.
    assert state.report("w", [TaskOutcome("a", 1, value=b"late")]) == 0
    assert lease_ids(state, "w") == ["a", "b"]
    assert task.attempts == 2


def test_reregister_with_invalid_request_keeps_old_worker(state: ControllerState) -> None:
    state.submit([spec("a")])
    state.register_worker(worker_id="w")
    run_one(state, "w", "a")
    with pytest.raises(InvalidRequest):
        state.register_worker(worker_id="w", slots=0)
    assert state.tasks["a"].state is TaskState.RUNNING
    assert "a" in state.workers["w"].task_ids


def test_counts_stay_consistent_through_a_mixed_history(
    state: ControllerState, now: list[float]
) -> None:
    state.submit([spec(str(i), max_retries=1) for i in range(12)])
    check_consistent(state)
    state.register_worker(worker_id="w1", slots=2, prefetch=1)
    state.register_worker(worker_id="w2", slots=2)
    state.lease("w1")
    state.lease("w2")
    check_consistent(state)
    w1 = list(state.workers["w1"].task_ids)
    w2 = list(state.workers["w2"].task_ids)
    state.report("w1", [TaskOutcome(w1[0], 1, value=b"")])
    state.report("w1", [TaskOutcome(w1[1], 1, error=user_error())])  # retried
    state.report("w2", [TaskOutcome(w2[0], 1, handed_back=True)])
    check_consistent(state)
    state.cancel(["11", w1[2]])
    check_consistent(state)
    state.unregister_worker("w2")
    check_consistent(state)
    state.lease("w1", held=[w1[2]])
    check_consistent(state)
    now[0] += HEARTBEAT_TIMEOUT + 1
    state.expire_workers()
    check_consistent(state)
    state.register_worker(worker_id="w3", slots=20)
    leased, _ = state.lease("w3")
    state.report("w3", [TaskOutcome(t.task_id, t.attempts, value=b"") for t in leased])
    check_consistent(state)
    assert state.counts[TaskState.PENDING] == 0
    assert state.counts[TaskState.RUNNING] == 0
    assert sum(state.counts.values()) == 12


# ---------------------------------------------------------------------- list / overview


def test_list_tasks_filters(state: ControllerState) -> None:
    state.submit([spec("a"), spec("b"), spec("c")])
    state.register_worker(worker_id="w", slots=2)
    lease_ids(state, "w")
    assert [t.task_id for t in state.list_tasks()] == ["a", "b", "c"]
    assert [t.task_id for t in state.list_tasks(TaskState.RUNNING)] == ["a", "b"]
    assert [t.task_id for t in state.list_tasks(TaskState.PENDING)] == ["c"]
    assert [t.task_id for t in state.list_tasks(worker_id="w")] == ["a", "b"]
    assert [t.task_id for t in state.list_tasks(limit=1)] == ["a"]
    with pytest.raises(NotFound):
        state.list_tasks(worker_id="ghost")


# ---------------------------------------------------------------------- finished log


def _finish(state: ControllerState, worker_id: str, task_ids: list[str]) -> None:
    for task_id in task_ids:
        task = state.tasks[task_id]
        assert state.report(
            worker_id, [TaskOutcome(task_id, task.attempts, value=task_id.encode())]
        )


def test_read_finished_in_finishing_order(state: ControllerState) -> None:
    state.submit([spec(t, owner="me") for t in "abcd"])
    state.submit([spec("other", owner="you")])
    state.register_worker(worker_id="w", slots=10)
    state.lease("w")
    assert state.read_finished("me", 0, 10) == ([], 0, False)
    _finish(state, "w", ["c", "other", "a"])
    state.cancel(["b"])  # cancellation finishes a task too
    tasks, cursor, _ = state.read_finished("me", 0, 10)
    assert [t.task_id for t in tasks] == ["c", "a"]
    assert cursor == 2
    assert [t.result for t in tasks] == [b"c", b"a"]
    assert state.finished_count("me") == 2
    assert state.finished_count("you") == 1
    assert state.finished_count("nobody") == 0
    # b is RUNNING with a cancel requested; it finishes when its worker reports.
    _finish(state, "w", ["b", "d"])
    tasks, cursor, _ = state.read_finished("me", 2, 10)
    assert [t.task_id for t in tasks] == ["b", "d"]
    assert tasks[0].state is TaskState.CANCELLED
    assert cursor == 4


def test_read_finished_limit_and_acknowledgement(state: ControllerState) -> None:
    state.submit([spec(t, owner="me") for t in "abc"])
    state.register_worker(worker_id="w", slots=10)
    state.lease("w")
    _finish(state, "w", ["a", "b", "c"])
    tasks, cursor, _ = state.read_finished("me", 0, 2)
    assert [t.task_id for t in tasks] == ["a", "b"] and cursor == 2
    # Reading the same cursor again (a lost answer) gives the same tasks.
    tasks, cursor, _ = state.read_finished("me", 0, 2)
    assert [t.task_id for t in tasks] == ["a", "b"] and cursor == 2
    tasks, cursor, _ = state.read_finished("me", 2, 2)
    assert [t.task_id for t in tasks] == ["c"] and cursor == 3
    # Reading from 2 acknowledged a and b: the log forgot them, the positions stay.
    assert state._finished_logs.kept("me") == (2, ["c"])
    assert state.finished_count("me") == 3
    assert state.read_finished("me", 3, 2) == ([], 3, False)
    assert state.finished_count("me") == 3
    # limit <= 0 is treated as 1
    state.submit([spec("d", owner="me"), spec("e", owner="me")])
    state.lease("w")
    _finish(state, "w", ["d", "e"])
    tasks, cursor, _ = state.read_finished("me", 3, 0)
    assert [t.task_id for t in tasks] == ["d"] and cursor == 4


def test_read_finished_cursor_past_end_not_found(state: ControllerState) -> None:
    with pytest.raises(NotFound, match="cursor 1"):
        state.read_finished("me", 1, 10)
    with pytest.raises(NotFound):
        state.read_finished("me", -1, 10)
    with pytest.raises(InvalidRequest, match="owner"):
        state.read_finished("", 0, 10)
    state.submit([spec("a", owner="me")])
    state.cancel(["a"])
    assert [t.task_id for t in state.read_finished("me", 0, 10)[0]] == ["a"]
    assert state.read_finished("me", 1, 10) == ([], 1, False)
    with pytest.raises(NotFound):
        state.read_finished("me", 2, 10)


def test_read_finished_cursor_before_acknowledged_entries(state: ControllerState) -> None:
    """Once entries 0..1 were acknowledged (a read from cursor 2), a read from cursor 0 reads
    from the oldest entry kept, under its right position (not "c" with next cursor 1, which
    would make the reader see "c" again and again)."""
    state.submit([spec(t, owner="me") for t in "abc"])
    state.register_worker(worker_id="w", slots=10)
    state.lease("w")
    _finish(state, "w", ["a", "b", "c"])
    tasks, cursor, _ = state.read_finished("me", 2, 10)
    assert [t.task_id for t in tasks] == ["c"] and cursor == 3
    tasks, cursor, _ = state.read_finished("me", 0, 10)
    assert [t.task_id for t in tasks] == ["c"] and cursor == 3


def test_max_finished_tasks_evicts_oldest(make_state: MakeState) -> None:
    state = make_state(max_finished_tasks=2)
    state.submit([spec(t, owner="me") for t in "abcd"])
    state.register_worker(worker_id="w", slots=10)
    state.lease("w")
    _finish(state, "w", ["b", "a"])
    assert set(state.tasks) == {"a", "b", "c", "d"}
    _finish(state, "w", ["c"])
    assert set(state.tasks) == {"a", "c", "d"}  # b finished first, so it went first
    with pytest.raises(NotFound):
        state.get_task("b")
    check_consistent(state)
    assert state.counts[TaskState.COMPLETED] == 2
    assert state.counts[TaskState.RUNNING] == 1
    # The owner's log keeps its positions; an evicted task it had not read reads as lost.
    tasks, cursor, _ = state.read_finished("me", 0, 10)
    assert [t.task_id for t in tasks] == ["b", "a", "c"]
    assert [t.state for t in tasks] == [TaskState.FAILED, TaskState.COMPLETED, TaskState.COMPLETED]
    evicted = tasks[0].error
    assert evicted is not None and evicted.kind is ErrorKind.WORKER_LOST
    assert "dropped before it was read" in evicted.message
    assert cursor == 3
    state.cancel(["d"])
    _finish(state, "w", ["d"])
    assert set(state.tasks) == {"c", "d"}
    check_consistent(state)
    # A freed id can be submitted again.
    assert state.submit([spec("b")]) == ["b"]
    check_consistent(state)


def test_finished_logs_of_owners_that_stopped_reading_expire(
    make_state: MakeState, now: list[float]
) -> None:
    """An owner that never reads its log (a client that went away, or a curl user setting
    `owner`) must not make the controller keep ids forever: idle logs are emptied, keeping
    their positions, and a reader that comes back is told it missed entries."""
    state = make_state(max_finished_tasks=5)
    state.register_worker(worker_id="w", slots=1)
    state.submit([spec(str(i), owner="gone") for i in range(20)])
    state.submit([spec("x", owner="reader")])
    for _ in range(21):
        (task,), _ = state.lease("w")
        state.report("w", [TaskOutcome(task.task_id, 1, value=b"")])
    assert len(state.tasks) == 5
    now[0] += 100
    state.read_finished("reader", 0, 10)
    assert state.expire_finished_logs(max_idle=50) == 1
    assert state._finished_logs.kept("gone")[1] == []
    assert state.expire_finished_logs(max_idle=50) == 0
    # The idle owner comes back: nothing to read, but it learns that it missed 20 entries.
    assert state.read_finished("gone", 0, 10) == ([], 20, True)
    assert state.read_finished("gone", 20, 10) == ([], 20, False)
    # New entries continue at the old positions.
    state.submit([spec("late", owner="gone")])
    (task,), _ = state.lease("w")
    state.report("w", [TaskOutcome(task.task_id, 1, value=b"")])
    tasks, cursor, dropped = state.read_finished("gone", 20, 10)
    assert [t.task_id for t in tasks] == ["late"] and cursor == 21 and not dropped


# ---------------------------------------------------------------------- objects


def test_objects_put_get_delete(state: ControllerState) -> None:
    a = state.put_object(b"alpha")
    b = state.put_object(b"")
    assert a != b
    assert state.get_object(a) == b"alpha"
    assert state.get_object(b) == b""  # an empty object is still an object
    with pytest.raises(NotFound, match="nope"):
        state.get_object("nope")
    assert state.delete_objects([a, "nope", a]) == 1
    with pytest.raises(NotFound):
        state.get_object(a)
    assert state.delete_objects([b]) == 1
    assert len(state.objects) == 0


# ---------------------------------------------------------------------- transitions


def test_illegal_transitions_raise(state: ControllerState) -> None:
    state.submit([spec("a"), spec("b")])
    state.register_worker(worker_id="w")
    run_one(state, "w", "a")
    state.report("w", [TaskOutcome("a", 1, value=b"")])
    done, pending = state.tasks["a"], state.tasks["b"]
    before = dict(state.counts)
    for to in TaskState:
        with pytest.raises(AssertionError, match="illegal move"):
            state.transitions.move(done, to)
    with pytest.raises(AssertionError, match="PENDING"):
        state.transitions.move(pending, TaskState.COMPLETED)
    with pytest.raises(AssertionError):
        state.transitions.move(pending, TaskState.PENDING)
    assert state.counts == before
    assert done.state is TaskState.COMPLETED and pending.state is TaskState.PENDING


# ---------------------------------------------------------------------- the direct path


def direct(task_id: str, state: TaskState = TaskState.COMPLETED, **kwargs: Any) -> DirectTaskRecord:
    spec = TaskSpec(function=b"", args=b"", task_id=task_id, owner="me", name="f")
    return DirectTaskRecord(spec=spec, state=state, started_at=T0 - 1, finished_at=T0, **kwargs)


def test_direct_tasks_are_recorded_finished_and_counted(state: ControllerState) -> None:
    state.register_worker(worker_id="w", slots=1)
    failure = user_error()
    recorded = state.record_direct("w", [direct("a"), direct("b", TaskState.FAILED, error=failure)])
    assert recorded == 2
    a, b = state.get_task("a"), state.get_task("b")
    assert (a.state, a.direct, a.worker_id, a.attempts, a.result) == (
        TaskState.COMPLETED,
        True,
        "w",
        1,
        None,
    )
    assert (b.state, b.error) == (TaskState.FAILED, failure)
    assert (state.workers["w"].tasks_completed, state.workers["w"].tasks_failed) == (1, 1)
    assert state.counts[TaskState.COMPLETED] == 1 and state.counts[TaskState.FAILED] == 1
    # Their owner got them from the worker: they are not in its finished log.
    assert state.read_finished("me", 0, 10)[0] == []


def test_direct_records_for_known_ids_or_unfinished_states_are_ignored(
    state: ControllerState,
) -> None:
    state.submit([spec("queued")])
    records = [direct("queued"), direct("running", TaskState.RUNNING), direct("")]
    assert state.record_direct("gone-worker", records) == 0
    assert state.get_task("queued").state is TaskState.PENDING
    assert state.record_direct("gone-worker", [direct("x"), direct("x")]) == 1


def test_a_queued_task_replaces_the_direct_record_of_the_same_id(state: ControllerState) -> None:
    state.record_direct("w", [direct("a")])
    state.submit([spec("a", infra_failures=1)])  # its client lost the worker's answer
    task = state.get_task("a")
    assert (task.state, task.direct, task.attempts) == (TaskState.PENDING, False, 1)
    assert state.counts[TaskState.COMPLETED] == 0
    with pytest.raises(AlreadyExists):
        state.submit([spec("a")])


def test_infra_failures_on_the_direct_path_count_against_the_budget(
    state: ControllerState,
) -> None:
    state.register_worker(worker_id="w", slots=1)
    state.submit([spec("a", infra_failures=1), spec("b", infra_failures=99)])
    (a,), _ = state.lease("w")
    assert a.attempts == 2
    state.report("w", [TaskOutcome("a", 2, error=lost_error("w"))])
    (a_again,), _ = state.lease("w")  # 2 of 3 failures: one more try
    assert a_again.task_id == "a"
    state.report("w", [TaskOutcome("a", 3, error=lost_error("w"))])
    assert state.get_task("a").state is TaskState.FAILED
    # More failures than the budget: it still gets one try here.
    (b,), _ = state.lease("w")
    assert (b.task_id, b.attempts) == ("b", 3)
    with pytest.raises(InvalidRequest, match="infra_failures"):
        state.submit([spec("c", infra_failures=-1)])


def test_busy_slots_include_direct_tasks(state: ControllerState) -> None:
    state.register_worker(worker_id="w", slots=2)
    state.heartbeat("w", direct_running=1)
    assert state.busy_slots() == 1
    state.heartbeat("w", direct_running=5)
    assert state.busy_slots() == 2
    state.heartbeat("w")  # not told: unchanged
    assert state.workers["w"].direct_running == 5


def test_a_replaced_direct_record_does_not_shorten_the_queued_tasks_stay(
    make_state: MakeState,
) -> None:
    state = make_state(max_finished_tasks=2)
    state.register_worker(worker_id="w", slots=1)
    state.record_direct("w", [direct("a")])
    state.submit([spec("a")])
    (task,), _ = state.lease("w")
    state.report("w", [TaskOutcome("a", task.attempts, value=b"v")])
    state.record_direct("w", [direct("b")])  # two finished tasks: within the limit
    assert state.get_task("a").state is TaskState.COMPLETED
    assert state.get_task("b").direct


# ---------------------------------------------------------------------- actors


def actor_spec(name: str = "", **kwargs: Any) -> ActorSpec:
    return ActorSpec(cls=b"cls", args=b"args", name=name, **kwargs)


def test_an_actor_waits_for_a_worker_then_is_placed_and_ready(state: ControllerState) -> None:
    actor, existed = state.create_actor(actor_spec("a"))
    assert (actor.state, existed, actor.worker_id) == (ActorState.PENDING, False, "")
    state.register_worker(worker_id="w", slots=1)
    assert (actor.state, actor.worker_id, actor.incarnation) == (ActorState.CREATING, "w", 1)
    starts, stops = state.take_actor_orders("w")
    assert ([a.actor_id for a in starts], stops) == ([actor.actor_id], [])
    assert state.take_actor_orders("w") == ([], [])  # handed out once
    assert state.report_actor("w", actor.actor_id, 1, ActorState.READY)
    assert actor.state is ActorState.READY


def test_illegal_actor_transitions_raise(state: ControllerState) -> None:
    state.register_worker(worker_id="w", slots=1)
    dead, _ = state.create_actor(actor_spec())
    state.kill_actor(dead.actor_id)
    creating, _ = state.create_actor(actor_spec("kept"))
    for to in ActorState:
        with pytest.raises(AssertionError, match="illegal move of actor"):
            state.transitions.move_actor(dead, to)
    with pytest.raises(AssertionError, match="CREATING"):
        state.transitions.move_actor(creating, ActorState.PENDING)
    assert (dead.state, creating.state) == (ActorState.DEAD, ActorState.CREATING)
    assert state.workers["w"].actor_ids == {creating.actor_id: None}
    assert state.get_actor(name="kept") is creating


def test_actors_spread_over_workers(state: ControllerState) -> None:
    for worker_id in ("w1", "w2"):
        state.register_worker(worker_id=worker_id, slots=1)
    placed = [state.create_actor(actor_spec())[0].worker_id for _ in range(4)]
    assert sorted(placed) == ["w1", "w1", "w2", "w2"]


def test_actor_names_are_unique_among_live_actors(state: ControllerState) -> None:
    first, _ = state.create_actor(actor_spec("n"))
    with pytest.raises(AlreadyExists):
        state.create_actor(actor_spec("n"))
    same, existed = state.create_actor(actor_spec("n"), get_if_exists=True)
    assert (same, existed) == (first, True)
    assert state.get_actor(name="n") is first
    state.kill_actor(first.actor_id)
    with pytest.raises(NotFound):
        state.get_actor(name="n")
    second, existed = state.create_actor(actor_spec("n"))
    assert second is not first and not existed


def test_a_constructor_error_fails_the_actor_for_good(state: ControllerState) -> None:
    state.register_worker(worker_id="w", slots=1)
    actor, _ = state.create_actor(actor_spec("f", max_restarts=3))
    assert state.report_actor("w", actor.actor_id, 1, ActorState.FAILED, user_error("ctor"))
    assert actor.state is ActorState.FAILED and actor.error == user_error("ctor")
    assert state.create_actor(actor_spec("f"))[0] is not actor  # its name is free


def test_a_lost_worker_restarts_its_actors_elsewhere_within_budget(
    state: ControllerState, now: list[float]
) -> None:
    state.register_worker(worker_id="w1", slots=1)
    keeper, _ = state.create_actor(actor_spec("k", max_restarts=1))
    mortal, _ = state.create_actor(actor_spec("m"))
    for actor in (keeper, mortal):
        state.report_actor("w1", actor.actor_id, 1, ActorState.READY)
    state.register_worker(worker_id="w2", slots=1)
    now[0] += HEARTBEAT_TIMEOUT + 1
    state.heartbeat("w2")
    assert state.expire_workers() == ["w1"]
    assert (keeper.state, keeper.worker_id, keeper.incarnation) == (ActorState.CREATING, "w2", 2)
    assert keeper.restarts == 1 and keeper.error is not None
    assert mortal.state is ActorState.DEAD
    assert "w1" in mortal.error.message  # type: ignore[union-attr]
    # A late report from the old incarnation changes nothing.
    assert not state.report_actor("w1", keeper.actor_id, 1, ActorState.DEAD)
    state.report_actor("w2", keeper.actor_id, 2, ActorState.READY)
    state.report_actor("w2", keeper.actor_id, 2, ActorState.DEAD)  # its process died
    assert keeper.state is ActorState.DEAD  # no restarts left


def test_killing_an_actor_tells_its_worker(state: ControllerState) -> None:
    state.register_worker(worker_id="w", slots=1)
    placed, _ = state.create_actor(actor_spec())
    state.take_actor_orders("w")
    unplaced, _ = state.create_actor(actor_spec())  # its start order not sent yet
    for actor in (placed, unplaced):
        assert state.kill_actor(actor.actor_id).state is ActorState.DEAD
    assert state.take_actor_orders("w") == ([], [placed.actor_id])
    assert state.kill_actor(placed.actor_id).state is ActorState.DEAD  # idempotent


def test_a_lost_start_order_is_sent_again(state: ControllerState) -> None:
    state.register_worker(worker_id="w", slots=1)
    actor, _ = state.create_actor(actor_spec())
    told_later, _ = state.create_actor(actor_spec())
    first, _ = state.take_actor_orders("w")
    assert [a.actor_id for a in first] == [actor.actor_id, told_later.actor_id]
    # The lease answer with both orders was lost: the worker's next lease lists neither.
    assert state.reconcile_actors("w", [])
    starts, _ = state.take_actor_orders("w")
    assert [a.actor_id for a in starts] == [actor.actor_id, told_later.actor_id]
    # Now it builds them: nothing to repair.
    hosted = [(a.actor_id, 1, ActorState.CREATING) for a in (actor, told_later)]
    assert not state.reconcile_actors("w", hosted)
    assert state.take_actor_orders("w") == ([], [])
    assert actor.state is ActorState.CREATING


def test_an_order_not_sent_yet_is_not_sent_twice(state: ControllerState) -> None:
    state.register_worker(worker_id="w", slots=1)
    actor, _ = state.create_actor(actor_spec())
    assert not state.reconcile_actors("w", [])  # not told yet: not missing
    starts, _ = state.take_actor_orders("w")
    assert [a.actor_id for a in starts] == [actor.actor_id]


def test_ready_in_a_lease_stands_for_a_lost_report(state: ControllerState) -> None:
    state.register_worker(worker_id="w", slots=1)
    actor, _ = state.create_actor(actor_spec())
    state.take_actor_orders("w")
    assert state.reconcile_actors("w", [(actor.actor_id, 1, ActorState.READY)])
    assert actor.state is ActorState.READY
    assert not state.report_actor("w", actor.actor_id, 1, ActorState.READY)  # a late report
    assert actor.state is ActorState.READY


def test_a_ready_actor_its_worker_no_longer_has_is_lost(state: ControllerState) -> None:
    state.register_worker(worker_id="w", slots=1)
    keeper, _ = state.create_actor(actor_spec(max_restarts=1))
    mortal, _ = state.create_actor(actor_spec())
    state.take_actor_orders("w")
    for actor in (keeper, mortal):
        state.report_actor("w", actor.actor_id, 1, ActorState.READY)
    assert state.reconcile_actors("w", [])  # its DEAD reports were lost
    assert (keeper.state, keeper.incarnation) == (ActorState.CREATING, 2)  # placed again
    assert mortal.state is ActorState.DEAD
    assert mortal.error is not None and "no longer hosts it" in mortal.error.message
    starts, _ = state.take_actor_orders("w")
    assert [a.actor_id for a in starts] == [keeper.actor_id]


def test_a_worker_is_told_to_stop_actors_it_should_not_host(state: ControllerState) -> None:
    state.register_worker(worker_id="w", slots=1)
    killed, _ = state.create_actor(actor_spec())
    state.take_actor_orders("w")
    state.kill_actor(killed.actor_id)
    assert state.take_actor_orders("w") == ([], [killed.actor_id])
    # Its stop order was lost: it still lists the actor, and one the controller never knew.
    hosted = [(killed.actor_id, 1, ActorState.READY), ("stranger", 1, ActorState.READY)]
    assert state.reconcile_actors("w", hosted)
    assert state.reconcile_actors("w", hosted) is False  # each stop is queued once
    assert state.take_actor_orders("w") == ([], [killed.actor_id, "stranger"])


def test_bad_actor_specs_are_invalid(state: ControllerState) -> None:
    with pytest.raises(InvalidRequest, match="cls"):
        state.create_actor(ActorSpec(cls=b"", args=b""))
    with pytest.raises(InvalidRequest, match="max_restarts"):
        state.create_actor(actor_spec(max_restarts=-1))
    with pytest.raises(NotFound):
        state.create_actor(actor_spec(object_ids=("missing",)))
    with pytest.raises(NotFound):
        state.get_actor("nope")


def test_a_repeated_registration_of_the_same_process_changes_nothing(
    state: ControllerState,
) -> None:
    """RegisterWorker is safe to repeat: the same worker id and instance again (a retry whose
    answer was lost) keeps the worker's tasks and actors; another instance is a new process."""
    actor, _ = state.create_actor(actor_spec())
    state.submit([spec("a")])
    state.register_worker(worker_id="w", instance="one")
    run_one(state, "w", "a")
    assert actor.state is ActorState.CREATING and actor.worker_id == "w"
    state.register_worker(worker_id="w", instance="one")
    assert actor.state is ActorState.CREATING and actor.worker_id == "w"
    assert state.get_task("a").state is TaskState.RUNNING
    state.register_worker(worker_id="w", instance="two")  # restarted: what it held is lost
    assert actor.state is ActorState.DEAD
    assert state.get_task("a").state is TaskState.PENDING


def test_located_objects_keep_only_where_they_are_and_go_with_their_owner(
    state: ControllerState,
) -> None:
    from fray.controller.objects import owner_key
    from fray.wire.pb import controller_pb2 as pb

    def where(owner: str, size: int = 10) -> pb.ObjectLocation:
        return pb.ObjectLocation(size_bytes=size, owner=owner, host="h", path="/p", pid=1)

    a = state.put_object(b"", "a", where("client"))
    state.put_object(b"", "b", where("client", 20))
    state.put_object(b"", "c", where("worker"))
    assert state.put_object(b"", "a", where("client")) == a  # a repeated put
    with pytest.raises(AlreadyExists):
        state.put_object(b"", "a", where("client", 11))
    with pytest.raises(InvalidRequest, match="either data or a location"):
        state.put_object(b"x", "d", where("client"))
    with pytest.raises(InvalidRequest, match="size_bytes"):
        state.put_object(b"", "d", where("client", 0))
    assert state.get_object("a") == where("client")
    assert state.objects.size_bytes == 40 and state.objects.held_bytes == 0
    owners = state.object_owners()
    assert sorted(k[0] for k in owners) == ["client", "worker"]
    assert sorted(state.drop_object_owner(owner_key(where("client")))) == ["a", "b"]
    assert state.missing_objects(["a", "b", "c"]) == ["a", "b"]


def test_a_large_result_nobody_will_read_is_freed(state: ControllerState) -> None:
    """A value standing for a large object the worker holds (stored_object_id): a stale
    attempt's, or one of a task cancelled as it finished, frees that object; a kept one not."""
    from fray.wire.pb import controller_pb2 as pb

    def stored(object_id: str) -> str:
        where = pb.ObjectLocation(size_bytes=9, owner="w", host="h", path="/p", pid=1)
        return state.put_object(b"", object_id, where)

    state.register_worker(worker_id="w", slots=3)
    state.submit([spec("kept"), spec("cancelled"), spec("stale")])
    assert lease_ids(state, "w") == ["kept", "cancelled", "stale"]
    state.cancel(["cancelled"])  # running: asked of the worker, which finishes it meanwhile
    state.report(
        "w",
        [
            TaskOutcome("kept", 1, value=b"v", stored_object_id=stored("o-kept")),
            TaskOutcome("cancelled", 1, value=b"v", stored_object_id=stored("o-cancelled")),
            TaskOutcome("stale", 7, value=b"v", stored_object_id=stored("o-stale")),
        ],
    )
    assert state.missing_objects(["o-kept", "o-cancelled", "o-stale"]) == [
        "o-cancelled",
        "o-stale",
    ]
