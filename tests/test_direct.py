"""The direct path: clients sending tasks straight to workers' free slots (FrayWorker).

The JobContext semantics on the direct path (results, errors, cancel, timeouts, worker death)
are covered by test_e2e.py, whose `fray_ctx` runs every test with and without it. Here: the
worker's RPCs over the wire, falling back to the queue, and what the controller records.
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cloudpickle
import httpx
import pytest
from connectrpc.code import Code
from connectrpc.errors import ConnectError
from fray_fixtures import (
    list_workers,
    pid_alive,
    recorded_task,
    stop_process,
    task_state,
    wait_for,
)
from fray_tasks import add, wait_for_file

from fray.client import direct
from fray.client.context import FrayContext
from fray.local_cluster import LocalFrayCluster
from fray.wire import payload
from fray.wire.pb import controller_pb2 as pb
from fray.wire.pb import worker_pb2 as wpb
from fray.wire.pb.worker_connect import FrayWorkerClientSync
from fray.worker.worker import Worker

cloudpickle.register_pickle_by_value(sys.modules[__name__])

WORKER_PATH = "/fray.v1.FrayWorker/"


def where() -> str:
    return os.environ.get("FRAY_WORKER_ID", "")


def spec(task_id: str, fn: object = add, *args: object) -> pb.TaskSpec:
    return pb.TaskSpec(
        task_id=task_id,
        function=payload.dumps_function(fn),  # type: ignore[arg-type]
        args=payload.dumps_arguments(args, {}, "test"),
        owner="test",
    )


@pytest.fixture(scope="module")
def one_slot() -> Iterator[LocalFrayCluster]:
    """A controller and one worker with a single slot."""
    with LocalFrayCluster(workers=1, concurrency=1, heartbeat_timeout=2.0) as cluster:
        yield cluster


@pytest.fixture
def worker(one_slot: LocalFrayCluster) -> pb.Worker:
    (only,) = list_workers(one_slot.address).values()
    return only


def wait_until_idle(cluster: LocalFrayCluster) -> None:
    """Until the controller sees every worker's slots free. Clients send a task directly only
    to a worker with a free slot in that view, which counts a worker's direct tasks as of its
    last heartbeat: a task of the previous test may still show there for a moment."""
    wait_for(
        lambda: all(
            not w.task_ids and w.direct_running == 0 for w in list_workers(cluster.address).values()
        ),
        10,
        "the controller to see the workers idle",
    )


@pytest.fixture
def worker_rpc(worker: pb.Worker) -> Iterator[FrayWorkerClientSync]:
    with FrayWorkerClientSync(worker.address, send_compression=None) as client:
        yield client


def test_run_task_answers_with_the_result(worker_rpc: FrayWorkerClientSync) -> None:
    response = worker_rpc.run_task(wpb.RunTaskRequest(task=spec("rt-1", add, 2, 3), wait_ms=10_000))
    assert response.done
    assert payload.loads(response.result.value) == 5
    again = worker_rpc.wait_task(wpb.WaitTaskRequest(task_id="rt-1"))  # kept for a while
    assert again.done and payload.loads(again.result.value) == 5


def test_run_task_with_json_as_curl_would(worker: pb.Worker) -> None:
    task = spec("rt-json", add, 20, 22)
    body = {
        "task": {
            "taskId": task.task_id,
            "function": base64.b64encode(task.function).decode(),
            "args": base64.b64encode(task.args).decode(),
        },
        "waitMs": 10_000,
    }
    response = httpx.post(f"{worker.address}{WORKER_PATH}RunTask", json=body, timeout=20)
    assert response.status_code == 200
    answer = response.json()
    assert answer["done"] is True
    assert payload.loads(base64.b64decode(answer["result"]["value"])) == 42


@pytest.mark.parametrize(
    ("method", "body", "status", "code"),
    [
        ("RunTask", {"task": {"taskId": "no-function"}}, 400, "invalid_argument"),
        ("RunTask", {"task": {"function": "eA=="}}, 400, "invalid_argument"),
        ("RunTask", {"task": {"taskId": "x"}, "bogus": 1}, 400, "invalid_argument"),
        ("WaitTask", {"taskId": "never-sent"}, 404, "not_found"),
    ],
)
def test_bad_requests_get_connect_errors(
    worker: pb.Worker, method: str, body: dict[str, object], status: int, code: str
) -> None:
    response = httpx.post(f"{worker.address}{WORKER_PATH}{method}", json=body, timeout=20)
    assert response.status_code == status
    assert response.json()["code"] == code


def test_a_malformed_binary_request_is_invalid_argument(worker: pb.Worker) -> None:
    response = httpx.post(
        f"{worker.address}{WORKER_PATH}RunTask",
        content=b"\xff\xff\xff",
        headers={"content-type": "application/proto"},
        timeout=20,
    )
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_argument"


def test_a_busy_worker_refuses_and_the_task_goes_through_the_queue(
    one_slot: LocalFrayCluster, worker_rpc: FrayWorkerClientSync, tmp_path: Path
) -> None:
    gate = tmp_path / "open"
    wait_until_idle(one_slot)  # the blocker must go directly
    with FrayContext(one_slot.address) as ctx:
        blocker = ctx.run(wait_for_file, str(gate), "blocker", str(tmp_path / "started"))
        wait_for((tmp_path / "started").exists, 20, "the blocker to start")
        with pytest.raises(ConnectError) as info:
            worker_rpc.run_task(wpb.RunTaskRequest(task=spec("refused", add, 1, 1)))
        assert info.value.code == Code.RESOURCE_EXHAUSTED
        with FrayContext(one_slot.address) as other:  # another client: it cannot know
            queued = other.run(add, 1, 2)
            # Its direct try (refused: the slot is busy) may still be on its way: the slot must
            # stay busy until the task is queued at the controller, or that try may succeed.
            # (The controller knows a direct task only once it finished, which it cannot yet.)
            wait_for(
                lambda: task_state(one_slot.address, queued.task_id) is not None,
                20,
                "the task to be queued at the controller",
            )
            gate.write_text("open")
            assert queued.result(timeout=30) == 3
            assert blocker.result(timeout=30) == "blocker"
            assert recorded_task(one_slot.address, blocker.task_id).direct
            assert not recorded_task(one_slot.address, queued.task_id).direct


def test_a_task_cancelled_before_it_arrives_is_not_run(worker_rpc: FrayWorkerClientSync) -> None:
    found = worker_rpc.cancel_task(wpb.CancelTaskRequest(task_id="early")).found
    assert not found
    response = worker_rpc.run_task(wpb.RunTaskRequest(task=spec("early", add, 1, 1)))
    assert response.done
    assert response.result.error.kind == pb.ERROR_KIND_CANCELLED


def test_the_controller_records_direct_tasks(one_slot: LocalFrayCluster, worker: pb.Worker) -> None:
    wait_until_idle(one_slot)  # the task must go directly
    with FrayContext(one_slot.address) as ctx:
        future = ctx.run(where)
        assert future.result(timeout=30) == worker.worker_id
    task = recorded_task(one_slot.address, future.task_id)
    assert task.direct
    assert (task.state, task.worker_id, task.attempts) == (
        pb.TASK_STATE_COMPLETED,
        worker.worker_id,
        1,
    )
    assert task.name.endswith("where")
    listed = httpx.post(
        f"{one_slot.address}/fray.v1.FrayController/ListTasks", json={}, timeout=20
    ).json()["tasks"]
    assert any(t["taskId"] == future.task_id and t["direct"] for t in listed)
    assert list_workers(one_slot.address)[worker.worker_id].tasks_completed >= 1


def test_a_worker_off_loopback_needs_a_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FRAY_TOKEN", raising=False)
    with pytest.raises(ValueError, match="token"):
        Worker("http://127.0.0.1:1", host="0.0.0.0")


def test_a_worker_with_a_token_refuses_calls_without_it() -> None:
    with LocalFrayCluster(workers=1, concurrency=1, env={"FRAY_TOKEN": "s3cret"}) as cluster:
        (only,) = list_workers(cluster.address, token="s3cret").values()
        for headers in ({}, {"authorization": "Bearer wrong"}):
            response = httpx.post(
                f"{only.address}{WORKER_PATH}RunTask",
                content=wpb.RunTaskRequest(task=spec("t", add, 1, 1)).SerializeToString(),
                headers={"content-type": "application/proto", **headers},
                timeout=20,
            )
            assert response.status_code == 401
            assert response.json()["code"] == "unauthenticated"
        with FrayContext(cluster.address, token="s3cret") as ctx:
            future = ctx.run(add, 2, 2)
            assert future.result(timeout=30) == 4
            assert recorded_task(cluster.address, future.task_id, token="s3cret").direct


def test_a_direct_task_outlives_a_controller_restart(tmp_path: Path) -> None:
    with LocalFrayCluster(workers=1, concurrency=1, heartbeat_timeout=1.5) as cluster:
        gate, marker = tmp_path / "open", tmp_path / "started"
        with FrayContext(cluster.address, retry_timeout=20) as ctx:
            future = ctx.run(wait_for_file, str(gate), "survived", str(marker))
            wait_for(marker.exists, 20, "the task to start")
            port = int(cluster.address.rsplit(":", 1)[1])
            assert cluster.controller is not None
            cluster.controller.send_signal(signal.SIGKILL)
            cluster.controller.wait(10)
            cluster.start_controller(port=port)
            gate.write_text("open")
            assert future.result(timeout=30) == "survived"
            cluster.wait_for_workers(1, timeout=30)
            assert ctx.get(ctx.run(add, 1, 1), timeout=30) == 2


def test_a_draining_worker_gives_a_direct_task_back_and_it_runs_elsewhere(
    tmp_path: Path,
) -> None:
    with LocalFrayCluster(workers=0, heartbeat_timeout=2.0) as cluster:
        first = cluster.add_worker("--worker-id", "first", "--shutdown-grace", "0.5")
        cluster.wait_for_workers(1, timeout=30)
        gate, marker = tmp_path / "open", tmp_path / "started"
        with FrayContext(cluster.address) as ctx:
            future = ctx.run(wait_for_file, str(gate), "done", str(marker))
            wait_for(marker.exists, 20, "the task to start")
            executor_pid = int(marker.read_text())
            marker.unlink()
            first.send_signal(signal.SIGTERM)
            assert first.wait(15) == 0
            assert not pid_alive(executor_pid)
            # Given back: it waits in the controller's queue for a worker.
            cluster.add_worker("--worker-id", "second")
            wait_for(marker.exists, 30, "the task to start again")
            gate.write_text("open")
            assert future.result(timeout=30) == "done"
            task = recorded_task(cluster.address, future.task_id)
            assert (task.worker_id, task.direct) == ("second", False)
        for process in cluster.workers:
            stop_process(process)


def sleep_marker(seconds: float, marker: str) -> str:
    Path(marker).write_text(str(os.getpid()))
    time.sleep(seconds)
    return "slept"


def test_a_dead_worker_is_not_offered_more_tasks(tmp_path: Path) -> None:
    # A long heartbeat timeout: the controller lists the dead worker for the whole test.
    with LocalFrayCluster(workers=0, heartbeat_timeout=60) as cluster:
        doomed = cluster.add_worker("--worker-id", "doomed", "--concurrency", "1")
        cluster.add_worker("--worker-id", "alive", "--concurrency", "1")
        cluster.wait_for_workers(2)
        with FrayContext(cluster.address) as ctx:
            assert sorted(ctx.get([ctx.run(where), ctx.run(where)])) == ["alive", "doomed"]
            doomed.send_signal(signal.SIGKILL)
            doomed.wait(10)
            started = time.monotonic()
            futures = []
            for _ in range(20):
                futures.append(ctx.run(where))
                assert futures[-1].result(timeout=30) == "alive"
            assert time.monotonic() - started < 15
            tasks = [recorded_task(cluster.address, f.task_id) for f in futures]
            # At most the first one tried the dead worker; no other lost an attempt to it.
            assert sum(t.attempts > 1 for t in tasks) <= 1


def test_idle_call_threads_end(one_slot: LocalFrayCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(direct, "IDLE_SECONDS", 0.2)

    def call_threads() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "fray-direct"]

    wait_until_idle(one_slot)  # the task must go directly
    with FrayContext(one_slot.address) as ctx:
        wait_for(lambda: not call_threads(), 10, "earlier contexts' call threads to end")
        future = ctx.run(add, 1, 2)
        assert call_threads()  # a direct call: a thread was started for it
        assert future.result(timeout=30) == 3
        wait_for(lambda: not call_threads(), 10, "the idle call thread to end")
        wait_until_idle(one_slot)
        assert ctx.run(add, 2, 2).result(timeout=30) == 4  # a thread again when needed


def _blocked_in_result(thread_id: int) -> bool:
    """Whether the thread is inside `FrayFuture.result()` (waiting, or making the call)."""
    frame = sys._current_frames().get(thread_id)
    while frame is not None:
        code = frame.f_code
        if code.co_name == "result" and code.co_filename.endswith("client/futures.py"):
            return True
        frame = frame.f_back
    return False


def test_ctrl_c_while_waiting_leaves_the_future_working(
    one_slot: LocalFrayCluster, tmp_path: Path
) -> None:
    gate = tmp_path / "open"
    main = threading.main_thread().ident
    assert main == threading.get_ident()

    def ctrl_c() -> None:
        # Like Ctrl-C: SIGINT to the main thread once it waits (a real signal interrupts a
        # blocking wait; _thread.interrupt_main only sets a flag that a blocked thread does not
        # see until the wait ends).
        wait_for(lambda: _blocked_in_result(main), 30, "the caller to wait for the result")
        time.sleep(0.2)  # well into its wait
        signal.pthread_kill(main, signal.SIGINT)

    interrupter = threading.Thread(target=ctrl_c, daemon=True)
    with FrayContext(one_slot.address) as ctx:
        future = ctx.run(wait_for_file, str(gate), "finished")  # runs until the test says so
        interrupter.start()
        with pytest.raises(KeyboardInterrupt):
            future.result()  # the caller (often) makes the direct call itself, and is interrupted
        interrupter.join(30)
        gate.write_text("open")
        assert future.result(timeout=30) == "finished"  # a pool thread finished the call


def test_closing_with_a_stuck_worker_is_bounded(one_slot: LocalFrayCluster, tmp_path: Path) -> None:
    (process,) = one_slot.workers
    marker = tmp_path / "started"
    wait_until_idle(one_slot)  # the task must go directly
    ctx = FrayContext(one_slot.address)
    futures = [ctx.run(sleep_marker, 30, str(marker))]
    wait_for(marker.exists, 20, "the task to start")
    process.send_signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        ctx.close()
        assert time.monotonic() - started < 15  # a hang check: normally ~2 s (cancel timeout)
        assert all(f.done() for f in futures)
    finally:
        process.send_signal(signal.SIGCONT)
    wait_for(lambda: not pid_alive(int(marker.read_text())), 20, "the task to be stopped")


def test_a_direct_task_of_a_killed_client_is_stopped(
    one_slot: LocalFrayCluster, tmp_path: Path
) -> None:
    marker = tmp_path / "started"
    code = f"""
import sys, time
sys.path.insert(0, {str(Path(__file__).parent)!r})
import test_direct
from fray.client.context import FrayContext
ctx = FrayContext({one_slot.address!r})
ctx.run(test_direct.sleep_marker, 120, {str(marker)!r})
time.sleep(120)
"""
    wait_until_idle(one_slot)  # the task must go directly
    client = subprocess.Popen([sys.executable, "-c", code])
    try:
        wait_for(marker.exists, 30, "the task to start")
        client.send_signal(signal.SIGKILL)
        client.wait(10)
        # Nobody polls for it any more: its worker stops it (ORPHAN_SECONDS + a heartbeat).
        wait_for(lambda: not pid_alive(int(marker.read_text())), 60, "the orphan to be stopped")
    finally:
        stop_process(client)
