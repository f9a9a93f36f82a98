"""Resource-aware placement of tasks and actors at the controller (`fray.controller.placement`,
the per-need queues of `tasks`, `TaskLifecycle.lease`, `ActorLifecycle.place`).

Most tests drive a `ControllerState` alone (fake clock, no processes); one saves and restores
it through its state file; the last one calls a real controller over HTTP/JSON the way curl
would, with two hand-made workers.
"""

from __future__ import annotations

import base64
import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fray_fixtures import wait_for

from fray.controller import convert
from fray.controller.journal import Journal
from fray.controller.placement import NOTHING, Need, free, unplaceable_reason
from fray.controller.records import (
    ActorSpec,
    ActorState,
    ErrorKind,
    InvalidRequest,
    TaskFailure,
    TaskOutcome,
    TaskSpec,
    TaskState,
)
from fray.controller.server import ControllerServer
from fray.controller.state import ControllerState
from fray.wire.pb import controller_pb2 as pb

T0 = 1_000.0
GPU1 = Need.of({"gpus": 1})


# ---------------------------------------------------------------------- helpers


@pytest.fixture
def now() -> list[float]:
    return [T0]


@pytest.fixture
def state(now: list[float]) -> ControllerState:
    return ControllerState(heartbeat_timeout=10.0, clock=lambda: now[0])


def spec(task_id: str, need: Need = NOTHING, **kwargs: Any) -> TaskSpec:
    return TaskSpec(function=b"fn", args=b"a", task_id=task_id, owner="c", need=need, **kwargs)


def lease(state: ControllerState, worker_id: str, **kwargs: Any) -> list[str]:
    return [t.task_id for t in state.lease(worker_id, **kwargs)[0]]


def done(state: ControllerState, worker_id: str, *task_ids: str) -> None:
    outcomes = [TaskOutcome(t, state.tasks[t].attempts, value=b"v") for t in task_ids]
    assert state.report(worker_id, outcomes) == len(task_ids)


def worker(
    state: ControllerState,
    worker_id: str,
    slots: int = 8,
    labels: dict[str, str] | None = None,
    **capacities: float,
) -> None:
    state.register_worker(
        worker_id=worker_id, slots=slots, labels=labels, capacities=capacities or None
    )


def actor(name: str, need: Need = NOTHING, **kwargs: Any) -> ActorSpec:
    return ActorSpec(cls=b"cls", args=b"a", name=name, need=need, **kwargs)


# ---------------------------------------------------------------------- fit, hold, release


def test_float_amounts_fit_exactly_and_come_back(state: ControllerState) -> None:
    worker(state, "w", cpus=1.0)
    quarter = Need.of({"cpus": 0.25})
    state.submit([spec(f"t{i}", quarter) for i in range(5)])
    assert lease(state, "w") == ["t0", "t1", "t2", "t3"]  # 4 x 0.25 = 1 exactly
    assert free(state.workers["w"]) == {"cpus": 0.0}
    assert lease(state, "w") == []
    done(state, "w", "t0")
    assert lease(state, "w") == ["t4"]
    done(state, "w", "t1", "t2", "t3", "t4")
    assert state.workers["w"].used == {}  # nothing left over by float sums


def test_labels_and_alternatives(state: ControllerState) -> None:
    worker(state, "w", labels={"zone": "b", "gpu_type": "H100"}, cpus=4)
    state.submit(
        [
            spec("either", Need.of(labels={"zone": "a|b"})),
            spec("other", Need.of(labels={"zone": "c"})),
            spec("both", Need.of({"cpus": 1}, {"zone": "b", "gpu_type": "H100"})),
        ]
    )
    assert lease(state, "w") == ["either", "both"]
    assert state.tasks["other"].state is TaskState.PENDING
    assert state.pending_reason(state.tasks["other"]) == "no worker has label zone=c"


def test_empty_capacities_come_from_cpus_and_memory(state: ControllerState) -> None:
    state.register_worker(worker_id="old", cpus=4.0, memory_bytes=1 << 30)
    state.register_worker(worker_id="curl")
    assert state.workers["old"].capacities == {"cpus": 4.0, "memory": float(1 << 30)}
    assert state.workers["curl"].capacities == {"cpus": 0.0}
    with pytest.raises(InvalidRequest, match="gpus"):
        state.register_worker(worker_id="bad", capacities={"gpus": -1.0})
    message = convert.worker_to_pb(state.workers["old"])
    assert message.resources.capacities["cpus"] == 4.0 and message.free["cpus"] == 4.0


def test_a_bad_need_names_the_task() -> None:
    bad = pb.TaskSpec(
        task_id="t9", function=b"f", requirements=pb.Requirements(resources={"gpus": -2})
    )
    with pytest.raises(InvalidRequest, match="task t9: requirements: resource gpus"):
        convert.task_spec_from_pb(bad)
    plain = convert.task_spec_from_pb(pb.TaskSpec(task_id="p", function=b"f"))
    assert plain.need is NOTHING
    zero = pb.TaskSpec(function=b"f", requirements=pb.Requirements(resources={"gpus": 0}))
    assert convert.task_spec_from_pb(zero).need is NOTHING  # asking for 0 is asking for nothing


# ---------------------------------------------------------------------- the queues


def test_no_head_of_line_blocking(state: ControllerState) -> None:
    worker(state, "cpu", cpus=8)
    state.submit([spec("gpu", GPU1), spec("a"), spec("b"), spec("c", Need.of({"cpus": 2}))])
    assert lease(state, "cpu") == ["a", "b", "c"]
    assert state.tasks["gpu"].state is TaskState.PENDING
    assert state.queue_depth == 1


def test_oldest_fitting_task_first_and_requeue_keeps_its_place(state: ControllerState) -> None:
    worker(state, "g", slots=1, gpus=2, cpus=4)
    state.submit([spec("g1", GPU1), spec("p1"), spec("g2", GPU1), spec("p2")])
    order = []
    for _ in range(4):
        (task_id,) = lease(state, "g")
        order.append(task_id)
        done(state, "g", task_id)
    assert order == ["g1", "p1", "g2", "p2"]
    state.submit([spec("g3", GPU1), spec("p3")])
    assert lease(state, "g") == ["g3"]
    hand_back = TaskOutcome("g3", 1, handed_back=True)
    assert state.report("g", [hand_back]) == 1
    assert state.workers["g"].used == {}
    assert lease(state, "g") == ["g3"]  # back in its place: before p3, submitted after it


def test_plain_tasks_queued_alone_stay_older_than_later_work(state: ControllerState) -> None:
    worker(state, "g", slots=1, gpus=1)
    state.submit([spec("p0"), spec("p1")])  # no other queue yet: no numbers needed
    state.submit([spec("g0", GPU1), spec("p2")])
    order = []
    while task_ids := lease(state, "g"):
        order += task_ids
        done(state, "g", *task_ids)
    assert order == ["p0", "p1", "g0", "p2"]


def test_cancelled_tasks_leave_no_queue_behind(state: ControllerState) -> None:
    worker(state, "cpu", slots=2, cpus=2)
    state.submit([spec("g0", GPU1), spec("g1", GPU1), spec("p0")])
    state.cancel(["g0", "g1"])
    assert state.unplaceable() == {}
    assert lease(state, "cpu") == ["p0"]
    state.submit([spec("p1")])
    assert lease(state, "cpu") == ["p1"]
    assert not state._tasks._queues  # back to the one plain FIFO


def test_cancelled_tasks_are_skipped_in_every_queue(state: ControllerState) -> None:
    worker(state, "g", slots=4, gpus=4)
    state.submit([spec("g0", GPU1), spec("p0"), spec("g1", GPU1), spec("p1"), spec("g2", GPU1)])
    state.cancel(["g0", "p0", "g2"])
    assert state.unplaceable() == {}
    assert lease(state, "g") == ["g1", "p1"]
    assert state.workers["g"].used == {"gpus": 1.0}


def test_fair_share_counts_the_tasks_a_worker_could_take(state: ControllerState) -> None:
    state.register_worker(worker_id="cpu", slots=1, prefetch=100, capacities={"cpus": 8})
    state.register_worker(worker_id="other", slots=1, prefetch=100, capacities={"cpus": 8})
    state.submit([spec(f"g{i}", GPU1) for i in range(40)] + [spec("p0"), spec("p1")])
    # 42 queued but only 2 fit: a share of 1 (2 over 2 workers), not 21
    assert lease(state, "cpu") == ["p0"]


def test_capacity_comes_back_on_every_exit(state: ControllerState, now: list[float]) -> None:
    worker(state, "g", gpus=1)
    worker(state, "g2", gpus=1)
    state.submit([spec("t", GPU1, max_retries=1)])
    exits = [
        ("user error, retried", TaskOutcome("t", 1, error=TaskFailure(ErrorKind.USER, "E", "x"))),
        ("executor lost", TaskOutcome("t", 2, error=TaskFailure(ErrorKind.WORKER_LOST, "E", "x"))),
        ("handed back", TaskOutcome("t", 3, handed_back=True)),
    ]
    for what, outcome in exits:
        assert lease(state, "g") == ["t"], what
        assert state.workers["g"].used == {"gpus": 1.0}
        state.report("g", [outcome])
        assert state.workers["g"].used == {}, what
        assert state.tasks["t"].state is TaskState.PENDING
    assert lease(state, "g") == ["t"]
    assert lease(state, "g", held=[]) == ["t"]  # a lost lease answer: back, then leased again
    assert state.workers["g"].used == {"gpus": 1.0}
    state.cancel(["t"])
    state.report("g", [TaskOutcome("t", 5, error=TaskFailure(ErrorKind.CANCELLED, "C", "c"))])
    assert state.tasks["t"].state is TaskState.CANCELLED and state.workers["g"].used == {}

    state.submit([spec("u", GPU1)])
    assert lease(state, "g") == ["u"]
    now[0] += 5
    state.heartbeat("g2")
    now[0] += 6
    assert state.expire_workers() == ["g"]  # lost: the task goes to the other GPU worker
    assert lease(state, "g2") == ["u"] and state.workers["g2"].used == {"gpus": 1.0}
    done(state, "g2", "u")
    assert state.workers["g2"].used == {}


def test_a_worker_registering_later_picks_up_waiting_work(state: ControllerState) -> None:
    worker(state, "cpu", cpus=2)
    state.submit([spec("gpu", GPU1)])
    assert lease(state, "cpu") == []
    assert state.pending_reason(state.tasks["gpu"]) == "no worker offers gpus=1"
    worker(state, "g", gpus=1)
    assert state.pending_reason(state.tasks["gpu"]) == ""
    assert lease(state, "g") == ["gpu"]
    assert state.pending_reason(state.tasks["gpu"]) == ""  # not pending any more


# ---------------------------------------------------------------------- actors


def test_actors_are_placed_by_resources_and_wait_for_room(state: ControllerState) -> None:
    worker(state, "cpu", cpus=8)
    worker(state, "g", gpus=1, cpus=8)
    first, _ = state.create_actor(actor("first", GPU1))
    second, _ = state.create_actor(actor("second", GPU1))
    plain, _ = state.create_actor(actor("plain"))
    assert first.worker_id == "g" and first.state is ActorState.CREATING
    assert second.state is ActorState.PENDING
    assert state.actor_pending_reason(second) == ""  # busy, not impossible
    assert plain.worker_id == "cpu"  # fewest actors among those that fit
    assert state.workers["g"].used == {"gpus": 1.0}
    # A GPU task waits too while the actor holds the GPU.
    state.submit([spec("t", GPU1)])
    assert lease(state, "g") == []
    state.kill_actor(first.actor_id)
    assert second.worker_id == "g" and second.state is ActorState.CREATING  # took the room
    state.report_actor("g", second.actor_id, 1, ActorState.FAILED)
    assert state.workers["g"].used == {}
    assert lease(state, "g") == ["t"]


def test_a_restarting_actor_waits_for_a_worker_that_fits(state: ControllerState) -> None:
    worker(state, "g", gpus=1)
    worker(state, "cpu", cpus=8)
    keeper, _ = state.create_actor(actor("keeper", GPU1, max_restarts=1))
    assert keeper.worker_id == "g"
    state.unregister_worker("g")
    assert keeper.state is ActorState.RESTARTING  # not placed on the CPU worker
    assert state.actor_pending_reason(keeper) == "no worker offers gpus=1"
    worker(state, "g3", gpus=1)
    assert keeper.state is ActorState.CREATING and keeper.worker_id == "g3"


# ---------------------------------------------------------------------- reasons


def test_reasons_name_what_is_missing(state: ControllerState) -> None:
    worker(state, "a", labels={"zone": "a"}, gpus=2, cpus=4)
    worker(state, "b", labels={"zone": "b"}, cpus=16)
    offers = list(state.workers.values())
    assert unplaceable_reason(Need.of({"gpus": 4}), offers) == (
        "no worker offers gpus=4 (the most is 2)"
    )
    assert unplaceable_reason(Need.of({"tpus": 1}), offers) == "no worker offers tpus=1"
    assert unplaceable_reason(Need.of(labels={"zone": "c|d"}), offers) == (
        "no worker has label zone=c|d"
    )
    assert unplaceable_reason(Need.of({"gpus": 1}, {"zone": "b"}), offers) == (
        "no worker offers gpus=1 with zone=b"
    )
    assert unplaceable_reason(Need.of({"gpus": 2, "cpus": 0.5}, {"zone": "a|b"}), offers) == ""


def test_unplaceable_counts_tasks_and_actors_by_reason(state: ControllerState) -> None:
    worker(state, "cpu", cpus=8)
    state.submit(
        [spec(f"g{i}", GPU1) for i in range(3)] + [spec("p"), spec("tpu", Need.of({"tpus": 8}))]
    )
    state.create_actor(actor("a", GPU1))
    state.cancel(["g2"])
    assert state.unplaceable() == {"no worker offers gpus=1": 3, "no worker offers tpus=8": 1}
    listed = {t.task_id: state.pending_reason(t) for t in state.list_tasks(TaskState.PENDING)}
    assert listed == {
        "g0": "no worker offers gpus=1",
        "g1": "no worker offers gpus=1",
        "p": "",
        "tpu": "no worker offers tpus=8",
    }
    assert [a.spec.name for a in state.list_actors(name_prefix="a")] == ["a"]
    assert state.list_actors(name_prefix="zzz") == []


# ---------------------------------------------------------------------- durable state


@contextlib.contextmanager
def journaled(path: Path, now: list[float]) -> Iterator[ControllerState]:
    state = ControllerState(heartbeat_timeout=10.0, clock=lambda: now[0])
    journal = Journal.open(state, path)
    try:
        yield state
        journal.save_now()
    finally:
        journal.close_now()


def test_needs_and_capacities_survive_a_restart(tmp_path: Path, now: list[float]) -> None:
    path = tmp_path / "state.db"
    with journaled(path, now) as state:
        worker(state, "g", labels={"zone": "a"}, gpus=2, cpus=4)
        state.submit(
            [spec("held", Need.of({"gpus": 1, "cpus": 0.5})), spec("big", Need.of({"gpus": 4}))]
        )
        assert lease(state, "g") == ["held"]
        kept, _ = state.create_actor(
            actor("kept", Need.of({"gpus": 1}, {"zone": "a"}), detached=True)
        )
        state.report_actor("g", kept.actor_id, 1, ActorState.READY)
        assert state.workers["g"].used == {"gpus": 2.0, "cpus": 0.5}
    with journaled(path, now) as state:
        w = state.workers["g"]
        assert w.capacities == {"gpus": 2.0, "cpus": 4.0} and w.labels == {"zone": "a"}
        assert w.used == {"gpus": 2.0, "cpus": 0.5}  # rebuilt from what holds
        assert state.tasks["big"].spec.need == Need.of({"gpus": 4})
        assert state.tasks["held"].spec.need == Need.of({"gpus": 1, "cpus": 0.5})
        assert state.actors[kept.actor_id].spec.need == Need.of({"gpus": 1}, {"zone": "a"})
        assert state.unplaceable() == {"no worker offers gpus=4 (the most is 2)": 1}
        done(state, "g", "held")
        assert state.workers["g"].used == {"gpus": 1.0}


def test_an_old_state_file_gets_the_new_columns(tmp_path: Path, now: list[float]) -> None:
    path = tmp_path / "state.db"
    with journaled(path, now) as state:
        state.register_worker(worker_id="w", cpus=2.0, memory_bytes=1000)
        state.submit([spec("t")])
        state.create_actor(actor("x"))
    with contextlib.closing(sqlite3.connect(path)) as db:  # as a file from before needs
        for table, column in (("tasks", "need"), ("workers", "capacities"), ("actors", "need")):
            db.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
        db.commit()
    with journaled(path, now) as state:
        assert state.workers["w"].capacities == {"cpus": 2.0, "memory": 1000.0}
        assert state.tasks["t"].spec.need is NOTHING
        assert lease(state, "w") == ["t"]
        state.submit([spec("g", GPU1)])
    with journaled(path, now) as state:
        assert state.tasks["g"].spec.need == GPU1


# ---------------------------------------------------------------------- over the wire


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _call(http: httpx.Client, method: str, body: dict[str, Any]) -> dict[str, Any]:
    response = http.post(method, json=body)
    assert response.status_code == 200, (method, response.text)
    answer: dict[str, Any] = response.json()
    return answer


def test_gpu_work_goes_to_the_gpu_worker_over_json() -> None:
    server = ControllerServer("127.0.0.1", 0, heartbeat_timeout=60.0).start()
    base = server.address + "/fray.v1.FrayController/"
    try:
        with httpx.Client(base_url=base, timeout=20.0) as http:
            _run_gpu_scenario(http)
    finally:
        server.stop()


def _run_gpu_scenario(http: httpx.Client) -> None:
    for worker_id, capacities in (("cpu", {"cpus": 4}), ("gpu", {"cpus": 4, "gpus": 1})):
        resources = {"capacities": capacities, "labels": {"zone": "a"}}
        _call(http, "RegisterWorker", {"workerId": worker_id, "slots": 4, "resources": resources})

    def task(task_id: str, **requirements: Any) -> dict[str, Any]:
        body: dict[str, Any] = {"taskId": task_id, "function": _b64(b"f"), "args": _b64(b"a")}
        if requirements:
            body["requirements"] = {"resources": requirements}
        return body

    tasks = [task("gpu1", gpus=1), task("gpu2", gpus=1), task("huge", gpus=4)]
    tasks += [task(f"cpu{i}") for i in range(6)]
    _call(http, "SubmitTasks", {"tasks": tasks})

    def lease(worker_id: str, wait_ms: int = 0) -> list[dict[str, Any]]:
        body = {"workerId": worker_id, "waitMs": wait_ms, "prefetch": 0}
        leased: list[dict[str, Any]] = _call(http, "LeaseTasks", body).get("tasks", [])
        return leased

    assert [t["taskId"] for t in lease("cpu")] == ["cpu0", "cpu1", "cpu2", "cpu3"]
    assert [t["taskId"] for t in lease("gpu")] == ["gpu1", "cpu4", "cpu5"]  # one GPU: one task
    workers = {w["workerId"]: w for w in _call(http, "ListWorkers", {})["workers"]}
    assert (
        workers["gpu"]["free"]["gpus"] == 0
        and workers["gpu"]["resources"]["capacities"]["gpus"] == 1
    )

    gpu1 = _call(http, "GetTask", {"taskId": "gpu1"})["task"]
    assert gpu1["workerId"] == "gpu" and gpu1["requirements"]["resources"] == {"gpus": 1}
    huge = _call(http, "GetTask", {"taskId": "huge"})["task"]
    reason = "no worker offers gpus=4 (the most is 1)"
    assert huge["state"] == "TASK_STATE_PENDING" and huge["pendingReason"] == reason
    pending = _call(http, "ListTasks", {"state": "TASK_STATE_PENDING"})["tasks"]
    assert {t["taskId"]: t.get("pendingReason", "") for t in pending} == {
        "gpu2": "",
        "huge": reason,
    }
    summary = _call(http, "GetClusterSummary", {})
    assert summary["unplaceable"] == {reason: 1}

    # The GPU worker waits for work; the first GPU task's end frees the GPU and wakes it.
    def heard_from() -> str:
        workers = _call(http, "ListWorkers", {})["workers"]
        return str(next(w["lastHeartbeat"] for w in workers if w["workerId"] == "gpu"))

    out: dict[str, Any] = {}
    poller = threading.Thread(target=lambda: out.update(tasks=lease("gpu", wait_ms=15_000)))
    with httpx.Client(base_url=http.base_url, timeout=20.0) as other:
        before = heard_from()
        poller.start()
        wait_for(lambda: heard_from() != before, 20, "the GPU worker's lease poll")
        result = {"taskId": "gpu1", "attempt": 1, "value": _b64(b"v")}
        _call(other, "ReportResults", {"workerId": "gpu", "results": [result]})
        poller.join(20)
    assert [t["taskId"] for t in out["tasks"]] == ["gpu2"]
