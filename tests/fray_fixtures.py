"""Fixtures for fray's RPC layer: real controllers and real worker processes on loopback.

- `controller`: a ControllerServer on a free loopback port, served by uvicorn in a thread
  (for RPC-level tests; no workers: the tests register them by hand, so its heartbeat timeout is
  long enough that a stalled test never sees them expire).
- `cluster`: a LocalFrayCluster (controller process + 2 worker processes), shared by a test module.
- `fray_ctx`: a FrayContext connected to `cluster`, once with the direct path and once without.
Everything is stopped at the end, whatever the test did. Also small helpers the test modules
import (`from fray_fixtures import get_task, ...`; `free_port` is `fray.common.net`'s).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from connectrpc.code import Code
from connectrpc.errors import ConnectError

from fray.client.context import FrayContext
from fray.common import processes
from fray.common.net import free_port as free_port  # the test modules import it from here
from fray.controller.server import ControllerServer
from fray.local_cluster import LocalFrayCluster
from fray.wire.controller_client import ControllerClient
from fray.wire.pb import controller_pb2 as pb

HEARTBEAT_TIMEOUT = 2.0
RPC_HEARTBEAT_TIMEOUT = 60.0


@pytest.fixture
def controller() -> Iterator[ControllerServer]:
    server = ControllerServer("127.0.0.1", 0, heartbeat_timeout=RPC_HEARTBEAT_TIMEOUT).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalFrayCluster]:
    with LocalFrayCluster(workers=2, concurrency=2, heartbeat_timeout=HEARTBEAT_TIMEOUT) as c:
        yield c


@pytest.fixture(params=["direct", "queued"])
def fray_ctx(cluster: LocalFrayCluster, request: pytest.FixtureRequest) -> Iterator[FrayContext]:
    """A FrayContext on `cluster`: each test runs with the direct path on, and with every task
    queued at the controller."""
    ctx = FrayContext(cluster.address, retry_timeout=10, direct=request.param == "direct")
    try:
        yield ctx
    finally:
        ctx.close()


# ---------------------------------------------------------------------- helpers for the tests


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> None:
    """Poll `predicate` (for test set-up only) until true, or fail naming `what`."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.02)


def get_task(address: str, task_id: str, token: str | None = None) -> pb.Task:
    client = ControllerClient(address, token=token, retry_timeout=5)
    try:
        return client.call(client.rpc.get_task, pb.GetTaskRequest(task_id=task_id)).task
    finally:
        client.close()


def find_task(address: str, task_id: str, token: str | None = None) -> pb.Task | None:
    """The controller's view of a task; None while it does not know it (a task on the direct
    path is reported by its worker once finished, within about a second)."""
    try:
        return get_task(address, task_id, token)
    except ConnectError as exc:
        if exc.code != Code.NOT_FOUND:
            raise
        return None


def task_state(address: str, task_id: str, token: str | None = None) -> int | None:
    task = find_task(address, task_id, token)
    return None if task is None else task.state


def recorded_task(
    address: str, task_id: str, timeout: float = 10, token: str | None = None
) -> pb.Task:
    """The task once the controller knows it and it is finished."""
    finished = (pb.TASK_STATE_COMPLETED, pb.TASK_STATE_FAILED, pb.TASK_STATE_CANCELLED)
    wait_for(lambda: task_state(address, task_id, token) in finished, timeout, f"task {task_id}")
    return get_task(address, task_id, token)


def list_workers(address: str, token: str | None = None) -> dict[str, pb.Worker]:
    client = ControllerClient(address, token=token, retry_timeout=5)
    try:
        response = client.call(client.rpc.list_workers, pb.ListWorkersRequest())
    finally:
        client.close()
    return {w.worker_id: w for w in response.workers}


def process_gone(pid: int) -> bool:
    """True once ``pid`` runs no code: it exited (a zombie counts) or never was."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def file_text(path: Path) -> str:
    """The text of ``path`` ('' while it does not exist): for files a process writes."""
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def children_of(pid: int) -> list[int]:
    """Direct child processes of `pid` (from /proc)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


def stop_process(process: subprocess.Popen[Any]) -> None:
    """SIGTERM, then a second SIGTERM (no grace), then SIGKILL: never waits long."""
    processes.stop_process(process, grace=(0.5, 10.0))
