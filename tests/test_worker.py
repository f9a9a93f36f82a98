"""The `fray worker` process: registration, health check, execution, shutdown, recovery, token.

Most workers here are real `python -m fray worker` processes (started through LocalFrayCluster)
talking to a real controller process; each test stops whatever it started, even when it fails.
The last section tests pieces of the worker in process: the local queue with the direct-call
table, and `fray.wire.serving`'s plain fast path (token check, error mapping).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import httpx
import pytest
from connectrpc.code import Code
from fray_fixtures import free_port, get_task, list_workers, pid_alive, stop_process, wait_for
from fray_tasks import add, sleep_then, wait_for_file

from fray.client.context import FrayContext
from fray.errors import TaskDeserializationError
from fray.local_cluster import LocalFrayCluster
from fray.wire import payload, serving
from fray.wire.pb import controller_pb2 as pb
from fray.wire.pb import worker_pb2 as wpb
from fray.wire.pb.worker_connect import FrayWorker
from fray.worker.direct_calls import DirectCalls, WorkerBusy, WorkerDraining
from fray.worker.task_queue import TaskQueue

# Functions defined here travel by value: the workers cannot import this test module.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

HEARTBEAT_TIMEOUT = 2.0
# The controller caps a worker's LeaseTasks long poll at heartbeat_timeout / 3. Tests about what
# a worker leases while it shuts down use 2 s polls, so that the poll in flight when the signal
# arrives is reliably still open when the worker hands its task back.
LONG_POLL_HEARTBEAT_TIMEOUT = 6.0
GIB = 1024**3


# ---------------------------------------------------------------------- task functions


def where() -> tuple[str, int]:
    """The worker id the task ran under, and its executor's pid."""
    return os.environ.get("FRAY_WORKER_ID", ""), os.getpid()


def meet(directory: str, name: str, count: int) -> tuple[str, int, bool]:
    """Arrive in `directory`, then wait (at most 30 s) until `count` tasks have arrived: only
    tasks that run at the same time all meet. Returns the worker id, the pid, and whether all
    met."""
    Path(directory, name).write_text("")
    deadline = time.monotonic() + 30
    while len(list(Path(directory).iterdir())) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    met = len(list(Path(directory).iterdir())) >= count
    return os.environ.get("FRAY_WORKER_ID", ""), os.getpid(), met


# ---------------------------------------------------------------------- helpers


def healthz(worker: pb.Worker) -> httpx.Response:
    return httpx.get(f"{worker.address}/healthz", timeout=5)


def start_worker(cluster: LocalFrayCluster, worker_id: str, *args: str) -> subprocess.Popen[str]:
    """A worker process registered with the cluster's controller under `worker_id`."""
    process = cluster.add_worker("--worker-id", worker_id, *args)
    wait_for(
        lambda: worker_id in list_workers(cluster.address) or process.poll() is not None,
        30,
        f"worker {worker_id} to register",
    )
    assert process.poll() is None, f"worker {worker_id} exited with {process.returncode}"
    return process


def shutdown(cluster: LocalFrayCluster) -> None:
    for process in cluster.workers:
        stop_process(process)
    cluster.workers = []
    cluster.stop(timeout=10)


@pytest.fixture(scope="module")
def w1_cluster() -> Iterator[LocalFrayCluster]:
    """A controller and one worker `w1` (2 slots, explicit resources), shared by the module."""
    cluster = LocalFrayCluster(workers=0, heartbeat_timeout=HEARTBEAT_TIMEOUT)
    try:
        cluster.start()
        start_worker(
            cluster,
            "w1",
            "--resources",
            "cpus=2,memory=1GiB,zone=test",
            "--concurrency",
            "2",
        )
        yield cluster
    finally:
        shutdown(cluster)


@pytest.fixture
def w1_ctx(w1_cluster: LocalFrayCluster) -> Iterator[FrayContext]:
    ctx = FrayContext(w1_cluster.address, retry_timeout=10)
    try:
        yield ctx
    finally:
        ctx.close()


@pytest.fixture
def lone(request: pytest.FixtureRequest) -> Iterator[LocalFrayCluster]:
    """A controller of its own, no workers: the test adds (and may kill) its own.

    Parametrize indirectly to choose the controller's heartbeat timeout.
    """
    heartbeat_timeout = float(getattr(request, "param", HEARTBEAT_TIMEOUT))
    cluster = LocalFrayCluster(workers=0, heartbeat_timeout=heartbeat_timeout)
    try:
        cluster.start()
        yield cluster
    finally:
        shutdown(cluster)


@pytest.fixture
def lone_ctx(lone: LocalFrayCluster) -> Iterator[FrayContext]:
    """Queues every task at the controller: these tests follow tasks through its queue."""
    ctx = FrayContext(lone.address, retry_timeout=10, direct=False)
    try:
        yield ctx
    finally:
        ctx.close()


# ---------------------------------------------------------------------- a running worker


def test_worker_registers_with_its_resources_slots_and_address(
    w1_cluster: LocalFrayCluster,
) -> None:
    worker = list_workers(w1_cluster.address)["w1"]
    assert worker.resources.cpus == 2.0
    assert worker.resources.memory_bytes == GIB
    assert dict(worker.resources.labels) == {"zone": "test"}
    assert worker.slots == 2
    assert worker.address.startswith("http://127.0.0.1:")
    port = worker.address.rsplit(":", 1)[1]
    assert port.isdigit() and 0 < int(port) < 65536
    assert worker.registered_at.seconds > 0


def test_health_check_answers_ok_and_404_elsewhere(w1_cluster: LocalFrayCluster) -> None:
    worker = list_workers(w1_cluster.address)["w1"]
    response = healthz(worker)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["status"] == "ok"
    assert body["worker_id"] == "w1"
    assert body["slots"] == 2
    assert body["controller"] == w1_cluster.address
    assert httpx.get(f"{worker.address}/nope", timeout=5).status_code == 404
    assert httpx.get(f"{worker.address}/healthz/extra", timeout=5).status_code == 404


def test_task_runs_and_sees_its_worker_id(w1_ctx: FrayContext) -> None:
    assert w1_ctx.get(w1_ctx.run(add, 2, 3), timeout=30) == 5
    worker_id, pid = w1_ctx.get(w1_ctx.run(where), timeout=30)
    assert worker_id == "w1"
    assert pid != os.getpid()


def test_two_slots_run_two_tasks_at_once(w1_ctx: FrayContext, tmp_path: Path) -> None:
    # Each task waits until both have started: they meet only if both slots run at once (no
    # wall-clock measure, which a slow machine would break).
    futures = [w1_ctx.run(meet, str(tmp_path), f"task-{i}", 2) for i in range(2)]
    results = w1_ctx.get(futures, timeout=90)
    assert [met for _, _, met in results] == [True, True], "the two tasks did not run at once"
    assert [w for w, _, _ in results] == ["w1", "w1"]
    assert results[0][1] != results[1][1]  # two executor processes


def test_worker_survives_a_task_it_cannot_unpickle(
    w1_cluster: LocalFrayCluster,
    w1_ctx: FrayContext,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    module = "fray_test_worker_client_only"
    (tmp_path / f"{module}.py").write_text("def f():\n    return 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, module, raising=False)  # removed again at teardown
    client_only = __import__(module)
    process = w1_cluster.workers[0]

    with pytest.raises(TaskDeserializationError, match=module) as info:
        w1_ctx.get(w1_ctx.run(client_only.f), timeout=30)
    assert info.value.worker_id == "w1"
    assert process.poll() is None
    assert w1_ctx.get(w1_ctx.run(where), timeout=30)[0] == "w1"
    assert process.poll() is None
    # The worker reports a task sent to it directly after the client has its outcome.
    wait_for(
        lambda: list_workers(w1_cluster.address)["w1"].tasks_failed >= 1,
        10,
        "the worker to report the failed task",
    )


# ---------------------------------------------------------------------- shutdown


def test_sigterm_lets_the_running_task_finish_then_exits_0(
    lone: LocalFrayCluster, lone_ctx: FrayContext, tmp_path: Path
) -> None:
    process = start_worker(lone, "g1")  # default grace: 30 s
    worker = list_workers(lone.address)["g1"]
    marker, gate = tmp_path / "started", tmp_path / "open"
    future = lone_ctx.run(wait_for_file, str(gate), "finished", str(marker))
    wait_for(marker.exists, 20, "the task to start")

    process.send_signal(signal.SIGTERM)
    wait_for(lambda: healthz(worker).status_code == 503, 10, "the worker to report stopping")
    assert not future.done()  # the task ends only when the test says so, however slow CI is
    gate.write_text("open")
    opened = time.monotonic()
    assert future.result(timeout=20) == "finished"
    assert process.wait(20) == 0
    assert time.monotonic() - opened < 20  # it left when its task ended, not after its grace
    task = get_task(lone.address, future.task_id)
    assert task.state == pb.TASK_STATE_COMPLETED
    assert task.attempts == 1
    assert "g1" not in list_workers(lone.address)


long_polls = pytest.mark.parametrize(
    "lone", [LONG_POLL_HEARTBEAT_TIMEOUT], indirect=True, ids=["long-polls"]
)


@long_polls
def test_sigterm_past_the_grace_hands_the_task_back(
    lone: LocalFrayCluster, lone_ctx: FrayContext, tmp_path: Path
) -> None:
    process = start_worker(lone, "x1", "--shutdown-grace", "0.5")
    marker = tmp_path / "started"
    future = lone_ctx.run(sleep_then, 60, "never", str(marker))
    wait_for(marker.exists, 20, "the task to start")
    executor_pid = int(marker.read_text())
    marker.unlink()

    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    assert process.wait(20) == 0
    assert time.monotonic() - started < 20  # a 0.5 s grace, not the default 30 s
    wait_for(lambda: not pid_alive(executor_pid), 10, "the executor to be stopped")
    task = get_task(lone.address, future.task_id)
    assert task.state == pb.TASK_STATE_PENDING
    assert task.attempts == 1, "the stopping worker leased the task again after handing it back"
    assert "x1" not in list_workers(lone.address)

    start_worker(lone, "x2")
    wait_for(marker.exists, 20, "the task to start again")
    task = get_task(lone.address, future.task_id)
    assert task.state == pb.TASK_STATE_RUNNING
    assert task.worker_id == "x2"
    assert task.attempts == 2

    assert future.cancel()
    wait_for(
        lambda: get_task(lone.address, future.task_id).state == pb.TASK_STATE_CANCELLED,
        10,
        "the task to be cancelled",
    )


@long_polls
def test_a_draining_worker_leases_no_new_tasks(
    lone: LocalFrayCluster, lone_ctx: FrayContext, tmp_path: Path
) -> None:
    process = start_worker(lone, "d1")
    worker = list_workers(lone.address)["d1"]
    marker, gate = tmp_path / "started", tmp_path / "open"
    # The drain lasts until the test opens the gate, however slow the machine is.
    running = lone_ctx.run(wait_for_file, str(gate), "finished", str(marker))
    wait_for(marker.exists, 20, "the task to start")

    process.send_signal(signal.SIGTERM)
    wait_for(lambda: healthz(worker).status_code == 503, 10, "the worker to report stopping")
    late = lone_ctx.run(add, 1, 1)
    lone_ctx.wait([late], timeout=0.1)  # makes sure the controller has it
    # The worker is stopping: the task must stay in the queue (free for other workers), not sit
    # unrun in the stopping worker's queue until it has finished draining.
    wait_for(
        lambda: get_task(lone.address, late.task_id).state == pb.TASK_STATE_PENDING,
        10,
        "the task submitted during the drain to be left in the queue",
    )
    assert not running.done()  # still draining
    gate.write_text("open")
    assert running.result(timeout=20) == "finished"
    assert process.wait(10) == 0
    assert get_task(lone.address, late.task_id).state == pb.TASK_STATE_PENDING


def test_second_sigterm_skips_the_grace(
    lone: LocalFrayCluster, lone_ctx: FrayContext, tmp_path: Path
) -> None:
    process = start_worker(lone, "s1")  # default grace: 30 s
    worker = list_workers(lone.address)["s1"]
    marker = tmp_path / "started"
    future = lone_ctx.run(sleep_then, 60, "never", str(marker))
    wait_for(marker.exists, 20, "the task to start")

    process.send_signal(signal.SIGTERM)
    # Signals sent back to back may merge into one: wait until the first one was handled.
    wait_for(lambda: healthz(worker).status_code == 503, 10, "the worker to report stopping")
    body = healthz(worker).json()
    assert body["status"] == "stopping"
    assert body["running"] == 1
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    assert process.wait(15) == 0
    assert time.monotonic() - started < 15  # well before the end of the 30 s grace
    assert get_task(lone.address, future.task_id).state == pb.TASK_STATE_PENDING
    assert "s1" not in list_workers(lone.address)


# ---------------------------------------------------------------------- the controller


def test_unreachable_controller_exits_1_with_a_clear_message() -> None:
    address = f"http://127.0.0.1:{free_port()}"
    cmd = [sys.executable, "-m", "fray", "worker", "--controller", address]
    cmd += ["--connect-timeout", "1", "--concurrency", "1"]
    started = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=45)
    assert time.monotonic() - started < 25  # --connect-timeout 1, not the default 60 s
    assert done.returncode == 1, done.stderr
    assert "unreachable" in done.stderr
    assert address in done.stderr
    assert "Traceback" not in done.stderr


def test_worker_registers_again_after_the_controller_restarts(lone: LocalFrayCluster) -> None:
    process = start_worker(lone, "r1")
    port = int(lone.address.rsplit(":", 1)[1])
    old = lone.controller
    assert old is not None
    old.send_signal(signal.SIGKILL)
    old.wait(10)
    if old.stdout is not None:
        old.stdout.close()
    lone.start_controller(port=port)

    wait_for(lambda: "r1" in list_workers(lone.address), 30, "r1 to register again")
    assert process.poll() is None
    with FrayContext(lone.address, retry_timeout=10) as ctx:
        assert ctx.get(ctx.run(where), timeout=30)[0] == "r1"
        assert ctx.get([ctx.run(add, i, i) for i in range(20)], timeout=30) == [
            2 * i for i in range(20)
        ]


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback here")
def test_health_check_on_ipv6_loopback(lone: LocalFrayCluster) -> None:
    start_worker(lone, "v6", "--host", "::1")
    worker = list_workers(lone.address)["v6"]
    assert worker.address.startswith("http://[::1]:")
    assert healthz(worker).json()["worker_id"] == "v6"


# ---------------------------------------------------------------------- the token


def test_a_worker_with_a_token_answers_only_calls_that_carry_it() -> None:
    token = "t0k-worker"
    task = pb.TaskSpec(
        task_id="tok-1",
        function=payload.dumps_function(add),
        args=payload.dumps_arguments((2, 3), {}, "test"),
        owner="test",
    )
    body = wpb.RunTaskRequest(task=task, wait_ms=20_000).SerializeToString()
    binary = {"content-type": "application/proto"}
    cluster = LocalFrayCluster(
        workers=1, heartbeat_timeout=HEARTBEAT_TIMEOUT, env={"FRAY_TOKEN": token}
    )
    try:
        cluster.start()
        (worker,) = list_workers(cluster.address, token=token).values()
        url = f"{worker.address}/fray.v1.FrayWorker/RunTask"
        # The plain binary fast path and the Connect (JSON) path refuse alike.
        for headers in (binary, {**binary, "authorization": "Bearer wrong"}):
            refused = httpx.post(url, content=body, headers=headers, timeout=20)
            assert refused.status_code == 401
            assert refused.json()["code"] == "unauthenticated"
        refused = httpx.post(url, json={"task": {"taskId": "tok-2"}}, timeout=20)
        assert refused.status_code == 401
        assert refused.json()["code"] == "unauthenticated"

        answered = httpx.post(
            url, content=body, headers={**binary, "authorization": f"Bearer {token}"}, timeout=20
        )
        assert answered.status_code == 200
        response = wpb.RunTaskResponse.FromString(answered.content)
        assert response.done and payload.loads(response.result.value) == 5
        with FrayContext(cluster.address, token=token, retry_timeout=10) as ctx:
            assert ctx.get(ctx.run(add, 20, 22), timeout=30) == 42
    finally:
        shutdown(cluster)


# ---------------------------------------------------------------------- pieces, in process


class Refused(Exception):
    pass


def _post(app: serving.PlainUnary, scope: dict[str, object], body: bytes) -> tuple[int, bytes]:
    """One request through an ASGI app: (status, body)."""
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    status = sent[0]["status"]
    data = sent[1]["body"]
    assert isinstance(status, int) and isinstance(data, bytes)
    return status, data


def test_every_connect_code_has_an_http_status() -> None:
    assert set(serving.HTTP_STATUS) == set(Code)


def test_the_plain_fast_path_checks_the_token_and_maps_errors(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Service(FrayWorker):  # its other methods answer unimplemented
        async def cancel_task(
            self, request: wpb.CancelTaskRequest, ctx: Any
        ) -> wpb.CancelTaskResponse:
            if request.task_id == "refuse":
                raise Refused("no room")
            if request.task_id == "bug":
                raise RuntimeError("internal detail")
            assert isinstance(ctx, serving.PlainContext)
            return wpb.CancelTaskResponse(found=True)

    path = "/fray.v1.FrayWorker/CancelTask"
    plain = serving.PlainUnary(
        Service(),
        wpb.DESCRIPTOR.services_by_name["FrayWorker"],
        "s3cret",
        {Refused: Code.RESOURCE_EXHAUSTED},
        "test",
    )

    def scope(*headers: tuple[bytes, bytes], method: str = "POST") -> dict[str, object]:
        base = [(b"content-type", b"application/proto")]
        return {"type": "http", "path": path, "method": method, "headers": base + list(headers)}

    good = (b"authorization", b"Bearer s3cret")
    assert plain.accepts(scope(good))
    assert not plain.accepts(scope())  # left to connectrpc, which refuses with unauthenticated
    assert not plain.accepts(scope((b"authorization", b"Bearer wrong")))
    assert not plain.accepts(scope(good, (b"content-encoding", b"gzip")))
    assert not plain.accepts(scope(good, method="GET"))

    def call(task_id: str) -> tuple[int, bytes]:
        return _post(plain, scope(good), wpb.CancelTaskRequest(task_id=task_id).SerializeToString())

    status, data = call("ok")
    assert status == 200 and wpb.CancelTaskResponse.FromString(data).found
    status, data = call("refuse")
    assert (status, json.loads(data)) == (429, {"code": "resource_exhausted", "message": "no room"})
    status, data = call("bug")
    error = json.loads(data)
    assert status == 500 and error["code"] == "internal"
    assert "internal detail" not in error["message"]  # in the log, under the same reference
    assert "CancelTask" in error["message"] and "see the test log" in error["message"]
    assert any("internal error in CancelTask" in r.getMessage() for r in caplog.records)
    status, data = _post(plain, scope(good), b"\xff\xff\xff")
    assert status == 400 and json.loads(data)["code"] == "invalid_argument"
    for deadline in (b"nan", b"-1", b"12345678901"):  # not 1 to 10 digits
        request = wpb.CancelTaskRequest(task_id="ok").SerializeToString()
        status, data = _post(plain, scope(good, (b"connect-timeout-ms", deadline)), request)
        assert status == 400 and "connect-timeout-ms" in json.loads(data)["message"]


def _direct_calls(
    slots: int,
) -> tuple[DirectCalls, TaskQueue, threading.Event, list[pb.DirectTask]]:
    mutex = threading.RLock()
    stopping = threading.Event()
    queue = TaskQueue(mutex, slots, stopping)
    records: list[pb.DirectTask] = []
    direct = DirectCalls(
        mutex, "w-test", queue, stopping, report=records.append, stop_task=lambda _: False
    )
    return direct, queue, stopping, records


def _spec(task_id: str) -> pb.TaskSpec:
    return pb.TaskSpec(task_id=task_id, function=b"f", args=b"a", owner="o")


def test_a_direct_task_takes_a_free_slot_only() -> None:
    direct, queue, stopping, records = _direct_calls(slots=1)
    leased = pb.LeasedTask(task_id="leased", attempt=1)
    queue.push([leased])
    with pytest.raises(WorkerBusy):
        direct.run(_spec("d1"))  # the one slot has a task waiting for it
    assert queue.remove("leased") == leased

    call = direct.run(_spec("d1"))
    assert direct.run(_spec("d1")) is call  # a retry finds the same call
    assert queue.counts() == (0, 1)
    with pytest.raises(WorkerBusy):
        direct.run(_spec("d2"))
    claimed: list[pb.LeasedTask] = []
    task = queue.next_task(claimed.append)
    assert task is not None and claimed == [task]
    assert (task.task_id, task.attempt, task.function) == ("d1", 0, b"f")

    # A leased task's result is not the direct call's, even with the same id.
    assert not direct.complete(pb.TaskResult(task_id="d1", attempt=1, value=b"x"))
    assert direct.complete(pb.TaskResult(task_id="d1", attempt=0, value=b"v"))
    assert call.future.result(timeout=0).value == b"v"
    assert [(r.task_id, r.state) for r in records] == [("d1", pb.TASK_STATE_COMPLETED)]
    assert direct.running == 0

    stopping.set()
    with pytest.raises(WorkerDraining):
        direct.run(_spec("d3"))
    assert queue.next_task(claimed.append) is None  # slots stop too


def test_a_direct_task_cancelled_before_it_arrives_is_refused_as_cancelled() -> None:
    direct, queue, _, records = _direct_calls(slots=1)
    assert direct.cancel("early") is False
    call = direct.run(_spec("early"))
    result = call.future.result(timeout=0)
    assert result.error.kind == pb.ERROR_KIND_CANCELLED
    assert queue.counts() == (0, 0)  # never queued
    assert [(r.task_id, r.state) for r in records] == [("early", pb.TASK_STATE_CANCELLED)]
