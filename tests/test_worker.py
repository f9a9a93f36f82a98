"""The `fray worker` process: registration, health check, execution, shutdown, recovery.

Every worker here is a real `python -m fray worker` process (started through LocalFrayCluster)
talking to a real controller process; each test stops whatever it started, even when it fails.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import cloudpickle
import httpx
import pytest
from fray_fixtures import free_port, get_task, list_workers, pid_alive, stop_process, wait_for
from fray_tasks import sleep_then, wait_for_file

from fray.client.context import FrayContext
from fray.errors import TaskDeserializationError
from fray.local_cluster import LocalFrayCluster
from fray.wire.pb import controller_pb2 as pb

# Functions defined here travel by value: the workers cannot import this test module.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

HEARTBEAT_TIMEOUT = 2.0
# The controller caps a worker's LeaseTasks long poll at heartbeat_timeout / 3. Tests about what
# a worker leases while it shuts down use 2 s polls, so that the poll in flight when the signal
# arrives is reliably still open when the worker hands its task back.
LONG_POLL_HEARTBEAT_TIMEOUT = 6.0
GIB = 1024**3


# ---------------------------------------------------------------------- task functions


def add(a: int, b: int) -> int:
    return a + b


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
