"""A truthful status: RUNNING means a slot runs the task (tasks waiting in a worker's local queue
are ASSIGNED, without `startedAt`), busy slots are slots running something, and `fray status`
/ `fray tasks` print that for people."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fray_fixtures import get_task, wait_for
from fray_tasks import wait_for_file

from fray.client.context import FrayContext
from fray.controller.records import TaskSpec, TaskState
from fray.controller.state import ControllerState
from fray.controller.transitions import TASK_TRANSITIONS
from fray.local_cluster import LocalFrayCluster
from fray.wire.controller_client import ControllerClient
from fray.wire.pb import controller_pb2 as pb


def summary(address: str) -> pb.GetClusterSummaryResponse:
    client = ControllerClient(address, retry_timeout=5)
    try:
        return client.call(client.rpc.get_cluster_summary, pb.GetClusterSummaryRequest())
    finally:
        client.close()


def fray(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fray", *args], capture_output=True, text=True, timeout=60
    )


@pytest.fixture(scope="module")
def two_slots() -> Iterator[LocalFrayCluster]:
    with LocalFrayCluster(workers=1, concurrency=2) as cluster:
        yield cluster


# ---------------------------------------------------------------------- the state machine


def test_a_leased_task_is_assigned_until_its_worker_says_a_slot_started_it() -> None:
    now = [100.0]
    state = ControllerState(clock=lambda: now[0])
    state.register_worker(worker_id="w", slots=1, prefetch=1)
    state.submit([pb_spec("a"), pb_spec("b")])
    leased, _ = state.lease("w", held=[], reports_started=True)
    assert [t.task_id for t in leased] == ["a", "b"]
    assert {t.state for t in leased} == {TaskState.ASSIGNED}
    assert state.tasks["a"].started_at is None
    assert state.busy_slots() == 0 and state.counts[TaskState.ASSIGNED] == 2

    now[0] = 110.0
    assert state.started("w", [("a", 1, 2.5), ("b", 7, 0.0), ("zz", 1, 0.0)]) == 1  # stale: no
    assert state.tasks["a"].state is TaskState.RUNNING
    assert state.tasks["a"].started_at == 107.5  # back-dated by what the worker measured
    assert state.tasks["b"].state is TaskState.ASSIGNED
    assert state.busy_slots() == 1
    assert state.started("w", [("a", 1, 0.0)]) == 0  # a repeated report changes nothing


def test_a_worker_that_does_not_report_starts_has_its_tasks_running_at_the_lease() -> None:
    state = ControllerState(clock=lambda: 5.0)
    state.register_worker(worker_id="w", slots=1, prefetch=0)
    state.submit([pb_spec("a")])
    (task,), _ = state.lease("w")
    assert task.state is TaskState.RUNNING and task.started_at == 5.0


def test_assigned_tasks_finish_fail_and_go_back_like_running_ones() -> None:
    assert TASK_TRANSITIONS[TaskState.PENDING] == {TaskState.ASSIGNED, TaskState.CANCELLED}
    assert TaskState.RUNNING in TASK_TRANSITIONS[TaskState.ASSIGNED]
    assert (
        TASK_TRANSITIONS[TaskState.ASSIGNED] - {TaskState.RUNNING}
        == (TASK_TRANSITIONS[TaskState.RUNNING])
    )
    state = ControllerState(clock=lambda: 1.0)
    state.register_worker(worker_id="w", slots=1, prefetch=2)
    state.submit([pb_spec("a"), pb_spec("b"), pb_spec("c")])
    state.lease("w", held=[], reports_started=True)
    state.cancel(["a"])  # asked of the worker, as for a running task
    assert state.tasks["a"].cancel_requested and state.tasks["a"].state is TaskState.ASSIGNED
    state.lease("w", held=["a", "c"], reports_started=True)  # it lost b: queued, leased again
    assert state.tasks["b"].state is TaskState.ASSIGNED and state.tasks["b"].attempts == 2
    state.unregister_worker("w")
    assert state.tasks["c"].state is TaskState.PENDING
    assert state.tasks["a"].state is TaskState.CANCELLED


def pb_spec(task_id: str) -> TaskSpec:
    return TaskSpec(function=b"f", args=b"", task_id=task_id)


# ---------------------------------------------------------------------- real processes


def test_tasks_waiting_in_a_worker_queue_are_assigned_not_running(
    two_slots: LocalFrayCluster, tmp_path: Path
) -> None:
    """The issue's case, small: direct tasks fill both slots, queued ones wait on the worker."""
    gate = str(tmp_path / "open")
    with (
        FrayContext(two_slots.address) as direct,
        FrayContext(two_slots.address, direct=False) as queued,
    ):
        busy = [direct.run(wait_for_file, gate, i) for i in range(2)]
        wait_for(lambda: summary(two_slots.address).busy_slots == 2, 30, "both slots to be busy")
        waiting = [queued.run(wait_for_file, gate, i) for i in range(2)]
        wait_for(
            lambda: summary(two_slots.address).tasks_by_state["ASSIGNED"] == 2,
            30,
            "the queued tasks to be leased to the worker",
        )
        for future in waiting:
            task = get_task(two_slots.address, future.task_id)
            assert task.state == pb.TASK_STATE_ASSIGNED and not task.HasField("started_at")
        status = summary(two_slots.address)
        assert status.busy_slots == 2 and status.tasks_by_state["RUNNING"] == 0

        text = fray("status", "--controller", two_slots.address)
        assert text.returncode == 0, text.stderr
        assert "slots busy 2/2" in text.stdout and "(+2 waiting)" in text.stdout
        assert "assigned 2" in text.stdout and "running 0" in text.stdout
        listed = fray("tasks", "--controller", two_slots.address, "--state", "assigned")
        assert listed.returncode == 0, listed.stderr
        assert sorted(line.split()[0] for line in listed.stdout.splitlines()[1:]) == sorted(
            f.task_id for f in waiting
        )

        opened = time.time()
        Path(gate).write_text("open")
        assert direct.get(busy, timeout=60) == [0, 1]
        assert queued.get(waiting, timeout=60) == [0, 1]
        for future in waiting:
            task = get_task(two_slots.address, future.task_id)
            assert task.state == pb.TASK_STATE_COMPLETED
            # started when a slot took it, after the gate opened, not when it was leased
            assert task.started_at.ToNanoseconds() / 1e9 >= opened - 0.5


def test_fray_status_and_tasks_on_an_idle_cluster(two_slots: LocalFrayCluster) -> None:
    with FrayContext(two_slots.address, direct=False) as ctx:
        future = ctx.run(sum, [1, 2])
        assert future.result(60) == 3
    # direct tasks of the test before count until the worker's next heartbeat says they ended
    wait_for(lambda: summary(two_slots.address).busy_slots == 0, 30, "the slots to be free")
    text = fray("status", "--controller", two_slots.address)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0].startswith(f"controller {two_slots.address} (id ")
    assert lines[1] == "workers: 1, slots busy 0/2"
    assert "HEARTBEAT" in lines[2] and "cpus=" in lines[3] and "ago" in lines[3]
    assert any(
        line.startswith("tasks: pending 0, assigned 0, running 0, completed") for line in lines
    )
    assert "actors: 0 live" in lines and "jobs: 0 with unfinished tasks" in lines

    listed = fray(
        "tasks", "--controller", two_slots.address, "--state", "COMPLETED", "--limit", "1"
    )
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()
    assert header.split() == ["TASK", "NAME", "STATE", "WORKER", "ATTEMPTS", "AGE"]
    assert row.split()[2] == "COMPLETED"


def test_fray_status_into_a_closed_pipe_ends_quietly(two_slots: LocalFrayCluster) -> None:
    """`fray status | head`: the reader is gone before fray writes."""
    code = (
        "import os, sys\n"
        "r, w = os.pipe(); os.close(r); os.dup2(w, 1)\n"
        "from fray.cli import main\n"
        f"sys.exit(main(['status', '--controller', {two_slots.address!r}]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


# ---------------------------------------------------------------------- no workers


def test_a_client_whose_tasks_wait_with_no_worker_is_warned(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from fray.client import no_workers
    from fray.controller.server import ControllerServer

    monkeypatch.setattr(no_workers, "CHECK_SECONDS", 0.2)
    caplog.set_level(logging.WARNING, logger="fray.client.no_workers")
    with ControllerServer("127.0.0.1", 0) as server, FrayContext(server.address) as ctx:
        future = ctx.run(sum, [1, 2])
        wait_for(
            lambda: any("no fray worker is registered" in r.getMessage() for r in caplog.records),
            30,
            "the warning",
        )
        (record,) = [r for r in caplog.records if r.name == "fray.client.no_workers"]
        assert record.getMessage().startswith("1 task(s) have waited ")
        assert f"start one with `fray worker --controller {server.address}`" in record.getMessage()
        assert not future.done()
