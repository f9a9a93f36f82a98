"""A truthful status: RUNNING means a slot runs the task (tasks waiting in a worker's local queue
are ASSIGNED, without `startedAt`), busy slots are slots running something, and `fray status`
/ `fray tasks` print that for people."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fray_fixtures import get_task, wait_for
from fray_tasks import wait_for_file
from google.protobuf.timestamp_pb2 import Timestamp

from fray.cli_status import job_text, jobs_text, render_status, tasks_text
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
    assert "HEARTBEAT" in lines[2] and "FREE/TOTAL" in lines[2]
    assert re.search(r"cpus [\d.]+/[\d.]+", lines[3]) and "ago" in lines[3]
    assert any(
        line.startswith("tasks: pending 0, assigned 0, running 0, completed") for line in lines
    )
    assert "actors: 0 live" in lines and "clients: 0 with unfinished tasks" in lines
    assert "jobs: pending 0, running 0, succeeded 0, failed 0, killed 0" in lines
    assert not any(line.startswith("waiting:") for line in lines)

    listed = fray(
        "tasks", "--controller", two_slots.address, "--state", "COMPLETED", "--limit", "1"
    )
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()
    assert header.split() == ["TASK", "NAME", "STATE", "WORKER", "ATTEMPTS", "AGE", "NEEDS"]
    assert row.split()[2] == "COMPLETED" and row.split()[-1] == "-"


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


# ---------------------------------------------------------------------- rendering


GIB = 1024**3
NOW = 1_000_000.0


def stamp(seconds_ago: float) -> Timestamp:
    out = Timestamp()
    out.FromNanoseconds(int((NOW - seconds_ago) * 1e9))
    return out


def test_status_shows_free_and_total_capacities_labels_waiting_work_and_jobs() -> None:
    gpu = pb.Worker(
        worker_id="w-gpu",
        slots=2,
        busy_slots=1,
        last_heartbeat=stamp(1),
        resources=pb.Resources(
            cpus=2,
            memory_bytes=8 * GIB,
            capacities={"cpus": 2, "memory": 8 * GIB, "gpus": 1},
            labels={"gpu_type": "H100", "zone": "a"},
        ),
        free={"cpus": 1.5, "memory": 7 * GIB, "gpus": 0},
        job_replicas=["train-1/0"],
    )
    old = pb.Worker(  # from a controller that knows only cpus and memory_bytes
        worker_id="w-old", slots=1, last_heartbeat=stamp(2), resources=pb.Resources(cpus=4)
    )
    summary = pb.GetClusterSummaryResponse(
        controller_id="c1",
        workers=2,
        total_slots=3,
        busy_slots=1,
        unplaceable={"no worker offers gpus=4 (the most is 1)": 1, "no worker offers tpus=8": 3},
        jobs_by_state={"RUNNING": 1, "PENDING": 1, "SUCCEEDED": 4},
    )
    running = pb.Job(
        job_id="train-1",
        name="train",
        state=pb.JOB_STATE_RUNNING,
        replicas=1,
        submitted_at=stamp(30),
        replica_states=[pb.JobReplica(index=0, state=pb.JOB_STATE_RUNNING, worker_id="w-gpu")],
    )
    pending = pb.Job(
        job_id="big-2",
        name="big",
        state=pb.JOB_STATE_PENDING,
        replicas=2,
        submitted_at=stamp(5),
        pending_reason="no worker offers tpus=8",
    )
    text = render_status(
        "http://c:1",
        summary,
        pb.ListWorkersResponse(workers=[gpu, old]),
        pb.ListActorsResponse(),
        [pending, running],
        now=NOW,
    )
    lines = text.splitlines()
    assert lines[0] == "controller http://c:1 (id c1)"
    (gpu_line,) = [line for line in lines if "w-gpu" in line and "ago" in line]
    assert "cpus 1.5/2, memory 7GiB/8GiB, gpus 0/1" in gpu_line
    assert "gpu_type=H100,zone=a" in gpu_line
    (old_line,) = [line for line in lines if "w-old" in line]
    assert "cpus 4/4" in old_line and " - " in old_line  # no labels
    assert "waiting: 3 (tasks, actors, job replicas): no worker offers tpus=8" in lines
    assert "waiting: 1 (tasks, actors, job replicas): no worker offers gpus=4 (the most is 1)" in (
        lines
    )
    assert "jobs: pending 1, running 1, succeeded 4, failed 0, killed 0" in lines
    job_lines = lines[lines.index("jobs: pending 1, running 1, succeeded 4, failed 0, killed 0") :]
    assert job_lines[1].split() == ["JOB", "NAME", "STATE", "REPLICAS", "AGE", "WHERE/WHY"]
    assert job_lines[2].split()[:5] == ["train-1", "train", "RUNNING", "1", "30s"]
    assert job_lines[2].endswith("on w-gpu")
    assert job_lines[3].split()[:3] == ["big-2", "big", "PENDING"]
    assert job_lines[3].endswith("no worker offers tpus=8")


def test_status_of_a_controller_without_jobs_leaves_the_table_out() -> None:
    text = render_status(
        "http://c:1",
        pb.GetClusterSummaryResponse(controller_id="c1"),
        pb.ListWorkersResponse(),
        pb.ListActorsResponse(),
        None,
        now=NOW,
    )
    assert "jobs: pending 0, running 0, succeeded 0, failed 0, killed 0" in text.splitlines()
    assert "JOB" not in text


def test_tasks_show_what_they_need_and_why_a_pending_one_waits() -> None:
    waiting = pb.Task(
        task_id="t1",
        name="train",
        state=pb.TASK_STATE_PENDING,
        submitted_at=stamp(3),
        requirements=pb.Requirements(
            resources={"gpus": 1, "cpus": 2, "memory": 512 * 1024**2}, labels={"zone": "a|b"}
        ),
        pending_reason="no worker offers gpus=1",
    )
    plain = pb.Task(task_id="t2", state=pb.TASK_STATE_COMPLETED, submitted_at=stamp(1))
    header, first, second = tasks_text([waiting, plain], now=NOW).splitlines()
    assert header.split()[-1] == "NEEDS"
    assert first.endswith("cpus=2,memory=512MiB,gpus=1,zone=a|b (waiting: no worker offers gpus=1)")
    assert second.split()[2] == "COMPLETED" and second.endswith("-")


def test_jobs_table_and_one_job_in_words() -> None:
    failed = pb.Job(
        job_id="j-1",
        name="j",
        state=pb.JOB_STATE_FAILED,
        replicas=2,
        command=["python", "-c", "import sys; sys.exit(3)"],
        requirements=pb.Requirements(resources={"cpus": 1}),
        submitted_at=stamp(100),
        started_at=stamp(90),
        finished_at=stamp(80),
        owner="me",
        error="the job's process exited with code 3",
        replica_states=[
            pb.JobReplica(
                index=0,
                state=pb.JOB_STATE_FAILED,
                worker_id="w1",
                pid=42,
                exit_code=3,
                error="the job's process exited with code 3",
            ),
            pb.JobReplica(
                index=1, state=pb.JOB_STATE_KILLED, worker_id="w2", pid=43, exit_code=-15
            ),
        ],
    )
    header, row = jobs_text([failed], now=NOW).splitlines()
    assert row.split()[:5] == ["j-1", "j", "FAILED", "2", "1m40s"]
    assert row.endswith("the job's process exited with code 3")
    assert jobs_text([], now=NOW) == "no jobs"
    text = job_text(failed, now=NOW).splitlines()
    assert text[0] == "job j-1 (j): FAILED"
    assert text[1] == "command: python -c 'import sys; sys.exit(3)'"
    assert text[2] == "replicas: 2, each needs: cpus=1"
    assert text[3] == "submitted 1m40s ago, started 1m30s ago, finished 1m20s ago (owner me)"
    assert "error: the job's process exited with code 3" in text
    assert "replica 0: FAILED on w1, pid 42, exit code 3: the job's process exited with code 3" in (
        text
    )
    assert "replica 1: KILLED on w2, pid 43, exit code -15" in text
    pending = pb.Job(
        job_id="p-1",
        name="p",
        state=pb.JOB_STATE_PENDING,
        replicas=1,
        pending_reason="no worker has label zone=mars",
    )
    assert "waiting: no worker has label zone=mars" in job_text(pending, now=NOW).splitlines()


def test_worker_resources_and_a_task_nothing_can_run_in_status_and_tasks() -> None:
    """`fray worker --resources` reaches the controller as capacities and labels; `fray status`
    shows them free/total, `fray tasks` and `fray status` why a task waits."""
    with LocalFrayCluster(workers=0) as cluster:
        cluster.add_worker(
            "--resources", "cpus=2,memory=1GiB,gpus=1,gpu_type=T4,zone=z1", "--worker-id", "w-gpu"
        )
        cluster.wait_for_workers(1)
        with FrayContext(cluster.address) as ctx:
            future = ctx.options(resources={"gpus": 2}, name="greedy").run(sum, [1])

            def status() -> list[str]:
                done = fray("status", "--controller", cluster.address)
                assert done.returncode == 0, done.stderr
                return done.stdout.splitlines()

            reason = "no worker offers gpus=2 (the most is 1)"
            wait_for(
                lambda: f"waiting: 1 (tasks, actors, job replicas): {reason}" in status(),
                30,
                "the reason",
            )
            (worker_line,) = [line for line in status() if "w-gpu" in line]
            assert "cpus 2/2, memory 1GiB/1GiB, disk " in worker_line  # disk: the machine's
            assert ", gpus 1/1" in worker_line
            assert "gpu_type=T4,zone=z1" in worker_line
            listed = fray("tasks", "--controller", cluster.address, "--state", "pending")
            assert listed.returncode == 0, listed.stderr
            (row,) = listed.stdout.splitlines()[1:]
            assert row.split()[1:3] == ["greedy", "PENDING"]
            assert row.endswith(f"gpus=2 (waiting: {reason})")
            future.cancel()
