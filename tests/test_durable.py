"""A controller restart loses nothing: real controller and worker processes, the controller
SIGKILLed mid-run and started again on the same port with the same state file (`--state`).

The controller journals its state to SQLite before it answers; at the restart it loads it and
the workers, which kept running, carry on with what they held. See test_state_store.py for the
rules without processes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
from fray_fixtures import free_port, get_task, list_workers, wait_for
from fray_tasks import add, wait_for_file

from fray.client.context import FrayContext
from fray.common.processes import read_line, start_python, stop_process
from fray.errors import TaskLostError
from fray.local_cluster import READY_PREFIX, LocalFrayCluster
from fray.wire import payload
from fray.wire.controller_client import ControllerClient
from fray.wire.pb import controller_pb2 as pb

cloudpickle.register_pickle_by_value(sys.modules[__name__])

HEARTBEAT_TIMEOUT = 5.0
SLOTS = 4  # 2 workers x concurrency 2, no prefetch: exactly 4 tasks are leased while gated
BLOB = bytes(range(256)) * 8192  # 2 MiB: big enough to live in a file beside the database


class Counter:
    def __init__(self, start: int) -> None:
        self.n = start

    def add(self, k: int) -> int:
        self.n += k
        return self.n


def gated(gate: str, markers: str, i: int, blob: bytes) -> tuple[int, int]:
    """Says it started (a file in `markers`), waits for `gate`, returns (i*i, len(blob))."""
    Path(markers, str(i)).write_text(str(os.getpid()))
    deadline = time.monotonic() + 120
    while not Path(gate).exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return i * i, len(blob)


def call(address: str, method: str, request: Any) -> Any:
    client = ControllerClient(address, retry_timeout=30)
    try:
        return client.call(getattr(client.rpc, method), request)
    finally:
        client.close()


def summary(address: str) -> pb.GetClusterSummaryResponse:
    return call(address, "get_cluster_summary", pb.GetClusterSummaryRequest())


@pytest.mark.timeout(240)
def test_a_sigkilled_controller_restarted_on_its_state_loses_nothing(tmp_path: Path) -> None:
    gate, markers = tmp_path / "gate", tmp_path / "started"
    markers.mkdir()
    with LocalFrayCluster(
        workers=2,
        concurrency=2,
        heartbeat_timeout=HEARTBEAT_TIMEOUT,
        worker_args=("--prefetch", "0"),
        state=str(tmp_path / "state.db"),
        port=free_port(),
    ) as cluster:
        ctx = FrayContext(cluster.address, retry_timeout=60, direct=False)  # all queued
        try:
            ref = ctx.put(BLOB)
            actor = ctx.create_actor(Counter, 10, name="keeper", lifetime="detached")
            assert ctx.get(actor.add.remote(5), timeout=60) == 15
            early = [ctx.run(add, i, 1) for i in range(20)]
            assert ctx.get(early, timeout=60) == [i + 1 for i in range(20)]
            before = summary(cluster.address)

            # 200 tasks: 4 run (held at their gate), 196 queued, when the controller dies.
            futures = [ctx.run(gated, str(gate), str(markers), i, ref) for i in range(200)]
            wait_for(lambda: len(list(markers.iterdir())) == SLOTS, 60, "4 tasks to start")
            wait_for(
                lambda: summary(cluster.address).queue_depth == 200 - SLOTS, 30, "the rest queued"
            )
            started = sorted(int(p.name) for p in markers.iterdir())
            holders = {i: get_task(cluster.address, futures[i].task_id).worker_id for i in started}

            cluster.controller.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
            late = [ctx.run(add, i, 2) for i in range(50)]  # submitted while it is down
            cluster.restart_controller()
            gate.write_text("open")

            assert [f.result(timeout=120) for f in futures] == [
                (i * i, len(BLOB)) for i in range(200)
            ]
            assert ctx.get(late, timeout=60) == [i + 2 for i in range(50)]
            after = summary(cluster.address)
            assert after.controller_id == before.controller_id  # cursors stayed valid
            assert after.tasks_by_state["FAILED"] == 0
            # The running tasks stayed with their workers: nothing ran twice.
            for i in started:
                task = get_task(cluster.address, futures[i].task_id)
                assert (task.worker_id, task.attempts) == (holders[i], 1)
            assert all(get_task(cluster.address, f.task_id).attempts == 1 for f in futures)

            # Results of tasks finished before the kill are still there.
            for i, future in enumerate(early):
                request = pb.GetTaskRequest(task_id=future.task_id, include_result=True)
                task = call(cluster.address, "get_task", request).task
                assert payload.loads(task.result) == i + 1
            # So is the object, and the actor, with its state.
            # (A large object: the controller kept where it is; its bytes stayed with us.)
            data = call(cluster.address, "get_object", pb.GetObjectRequest(object_id=ref.object_id))
            assert data.location.size_bytes > len(BLOB) and not data.data
            assert ctx.get(ref) == BLOB
            assert ctx.get(actor.add.remote(1), timeout=60) == 16
            found = call(cluster.address, "get_actor", pb.GetActorRequest(name="keeper")).actor
            assert (found.state, found.incarnation) == (pb.ACTOR_STATE_READY, 1)
            assert len(list_workers(cluster.address)) == 2
            ctx.kill_actor(actor)
        finally:
            gate.write_text("open")
            ctx.close()


@pytest.mark.timeout(120)
def test_what_the_controller_acknowledged_survives_a_kill_right_after(tmp_path: Path) -> None:
    """SIGKILL the instant an answer arrives: what it acknowledged was saved before."""
    with LocalFrayCluster(workers=0, state=str(tmp_path / "state.db"), port=free_port()) as cluster:
        client = ControllerClient(cluster.address, retry_timeout=30)
        try:
            for round_ in range(3):
                tasks = [
                    pb.TaskSpec(function=b"f", args=b"%d" % i, task_id=f"r{round_}-{i}", owner="o")
                    for i in range(500)
                ]
                client.call(client.rpc.submit_tasks, pb.SubmitTasksRequest(tasks=tasks))
                cancelled = client.call(
                    client.rpc.cancel_tasks, pb.CancelTasksRequest(task_ids=[f"r{round_}-0"])
                ).tasks[0]
                put = client.call(client.rpc.put_object, pb.PutObjectRequest(data=b"%d" % round_))
                spec = pb.ActorSpec(cls=b"c", args=b"", name=f"a{round_}")
                actor = client.call(client.rpc.create_actor, pb.CreateActorRequest(actor=spec))
                cluster.controller.kill()  # type: ignore[union-attr]
                cluster.restart_controller()
                for i in range(1, 500):
                    assert (
                        get_task(cluster.address, f"r{round_}-{i}").state == pb.TASK_STATE_PENDING
                    )
                assert cancelled.state == pb.TASK_STATE_CANCELLED
                assert get_task(cluster.address, f"r{round_}-0").state == pb.TASK_STATE_CANCELLED
                got = client.call(
                    client.rpc.get_object, pb.GetObjectRequest(object_id=put.object_id)
                )
                assert got.data == b"%d" % round_
                found = client.call(client.rpc.get_actor, pb.GetActorRequest(name=f"a{round_}"))
                assert found.actor.actor_id == actor.actor.actor_id
        finally:
            client.close()


@pytest.mark.timeout(120)
def test_another_state_file_is_another_controller(tmp_path: Path) -> None:
    with LocalFrayCluster(
        workers=1,
        concurrency=1,
        heartbeat_timeout=HEARTBEAT_TIMEOUT,
        state=str(tmp_path / "first.db"),
        port=free_port(),
    ) as cluster:
        ctx = FrayContext(cluster.address, retry_timeout=30, direct=False)
        try:
            gate, marker = tmp_path / "gate", tmp_path / "started"
            future = ctx.run(wait_for_file, str(gate), "never seen", str(marker))
            wait_for(marker.exists, 30, "the task to start")
            cluster.state = str(tmp_path / "second.db")
            cluster.restart_controller()
            with pytest.raises(TaskLostError, match="controller"):
                future.result(timeout=60)
            cluster.wait_for_workers(1, timeout=30)  # registered again: it was unknown there
            assert ctx.get(ctx.run(add, 20, 22), timeout=60) == 42
        finally:
            gate.write_text("open")
            ctx.close()


@pytest.mark.timeout(120)
def test_fray_controller_keeps_its_state_per_port_by_default(tmp_path: Path) -> None:
    """No --state: one file per port under $XDG_STATE_HOME; a graceful stop and a start on the
    same port find the same controller, its finished tasks and its objects."""
    port = free_port()
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state-home")}
    address = f"http://127.0.0.1:{port}"

    def start() -> subprocess.Popen[str]:
        process = start_python(
            "-m",
            "fray",
            "controller",
            "--port",
            str(port),
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert process.stdout is not None
        assert read_line(process.stdout, 60).startswith(READY_PREFIX)
        return process

    controller = start()
    try:
        task_id = call(
            address,
            "submit_tasks",
            pb.SubmitTasksRequest(tasks=[pb.TaskSpec(function=b"f", args=b"", task_id="kept")]),
        ).task_ids[0]
        object_id = call(address, "put_object", pb.PutObjectRequest(data=b"xyz")).object_id
        first = summary(address).controller_id
    finally:
        assert stop_process(controller) == 0
    path = tmp_path / "state-home" / "fray" / f"controller-{port}.db"
    with contextlib.closing(sqlite3.connect(path)) as db:  # closed cleanly: no lock left
        assert db.execute("SELECT value FROM meta WHERE key = 'controller_id'").fetchone() == (
            first,
        )
    assert oct(path.stat().st_mode & 0o777) == oct(0o600)

    controller = start()
    try:
        assert summary(address).controller_id == first
        assert get_task(address, task_id).state == pb.TASK_STATE_PENDING
        data = call(address, "get_object", pb.GetObjectRequest(object_id=object_id)).data
        assert data == b"xyz"
        # A second controller on the same state is refused (exit status 2, a clear message).
        other = start_python(
            "-m",
            "fray",
            "controller",
            "--port",
            "0",
            "--state",
            str(path),
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        _, err = other.communicate(timeout=60)
        assert other.returncode == 2 and "in use by another controller" in err
    finally:
        stop_process(controller)
