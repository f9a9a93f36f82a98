"""End to end: FrayContext -> controller process -> worker processes -> results."""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import sys
import threading
import time
from pathlib import Path

import cloudpickle
import pytest
from fray_fixtures import (
    children_of,
    find_task,
    free_port,
    get_task,
    pid_alive,
    recorded_task,
    task_state,
    wait_for,
)
from fray_tasks import add, sleep_then, wait_for_file

from fray.client.context import FrayContext
from fray.controller.server import ControllerServer
from fray.errors import (
    ControllerError,
    ControllerUnavailableError,
    FrayError,
    SerializationError,
    TaskDeserializationError,
    TaskLostError,
    TaskTimeoutError,
)
from fray.job import create_job_ctx
from fray.local_cluster import LocalFrayCluster
from fray.wire.pb import controller_pb2 as pb

# Functions defined here travel by value: the workers cannot import this test module.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


class CustomError(Exception):
    pass


def where() -> tuple[str, int]:
    return os.environ.get("FRAY_WORKER_ID", ""), os.getpid()


def fail(message: str) -> None:
    raise CustomError(message)


def die() -> None:
    os._exit(3)


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text for you")


def raise_unprintable() -> None:
    raise Unprintable()


def raise_unencodable() -> None:
    raise ValueError("bad \udcff name")  # a lone surrogate, as from a surrogateescape'd path


class Counter:
    def __init__(self) -> None:
        self.n = 0

    def __call__(self) -> int:
        return self.n


def fail_first_time(marker: str) -> str:
    path = Path(marker)
    if not path.exists():
        path.write_text("1")
        raise CustomError("first attempt fails")
    return "second attempt worked"


# ---------------------------------------------------------------------- the shared cluster


def test_create_job_ctx_fray_runs_a_task(cluster: LocalFrayCluster) -> None:
    ctx = create_job_ctx("fray", controller_address=cluster.address)
    assert isinstance(ctx, FrayContext)
    try:
        assert ctx.get(ctx.run(add, 1, 2)) == 3
        assert ctx.get(ctx.run(add, a=2, b=5)) == 7
    finally:
        ctx.close()


def test_many_concurrent_tasks_use_every_worker(fray_ctx: FrayContext) -> None:
    futures = [fray_ctx.run(add, i, i) for i in range(2000)]
    assert fray_ctx.get(futures) == [2 * i for i in range(2000)]
    # Slow enough tasks spread over both workers.
    places = fray_ctx.get([fray_ctx.run(sleep_then, 0.2, None) for _ in range(8)])
    assert places == [None] * 8
    # Batches of tasks until both workers have run some: one batch normally does it, but a
    # worker the machine left unscheduled for a moment may miss a whole batch of short tasks.
    workers: set[str] = set()
    for _ in range(10):
        workers |= {w for w, _ in fray_ctx.get([fray_ctx.run(where) for _ in range(200)])}
        if len(workers) == 2:
            break
    assert len(workers) == 2


def test_concurrent_clients(cluster: LocalFrayCluster) -> None:
    results: dict[int, list[int]] = {}

    def client(n: int) -> None:
        with FrayContext(cluster.address) as ctx:
            results[n] = ctx.get([ctx.run(add, n, i) for i in range(100)])

    threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == {n: [n + i for i in range(100)] for n in range(4)}


def test_user_exception_keeps_its_type_and_remote_traceback(fray_ctx: FrayContext) -> None:
    with pytest.raises(CustomError, match="boom") as info:
        fray_ctx.get(fray_ctx.run(fail, "boom"))
    assert "in fail" in str(info.value.__cause__)  # the remote traceback


def test_user_exceptions_are_not_retried_unless_asked(
    fray_ctx: FrayContext, tmp_path: Path
) -> None:
    marker = str(tmp_path / "attempt")
    with pytest.raises(CustomError):
        fray_ctx.get(fray_ctx.run(fail_first_time, marker))
    os.unlink(marker)
    future = fray_ctx.options(max_retries=1).run(fail_first_time, marker)
    assert fray_ctx.get(future) == "second attempt worked"


def test_unpicklable_argument_fails_at_submit(fray_ctx: FrayContext) -> None:
    with pytest.raises(SerializationError, match="argument 1 of .*add.*lock"):
        fray_ctx.run(add, 1, threading.Lock())
    with pytest.raises(SerializationError, match="keyword argument 'b'"):
        fray_ctx.run(add, a=1, b=threading.Lock())
    with pytest.raises(SerializationError, match="function functools.partial"):
        fray_ctx.run(functools.partial(add, threading.Lock()), 1)
    with pytest.raises(SerializationError, match="the object given to put"):
        fray_ctx.put(threading.Lock())


def test_task_timeout_stops_the_task_and_the_worker_keeps_serving(
    fray_ctx: FrayContext, tmp_path: Path
) -> None:
    marker = tmp_path / "pid"
    started = time.monotonic()
    future = fray_ctx.options(timeout=1.0).run(sleep_then, 60, "late", str(marker))
    with pytest.raises(TaskTimeoutError, match="timeout"):
        future.result(timeout=30)
    assert time.monotonic() - started < 20
    wait_for(lambda: not pid_alive(int(marker.read_text())), 10, "the executor to be killed")
    assert fray_ctx.get([fray_ctx.run(add, i, 1) for i in range(10)]) == list(range(1, 11))


def test_cancel_stops_a_running_task(
    cluster: LocalFrayCluster, fray_ctx: FrayContext, tmp_path: Path
) -> None:
    marker = tmp_path / "pid"
    future = fray_ctx.run(sleep_then, 60, "never", str(marker))
    wait_for(marker.exists, 20, "the task to start")
    assert future.cancel()
    assert future.cancelled()
    wait_for(
        lambda: task_state(cluster.address, future.task_id) == pb.TASK_STATE_CANCELLED,
        10,
        "the controller to mark the task cancelled",
    )
    wait_for(lambda: not pid_alive(int(marker.read_text())), 10, "the executor to be killed")
    assert fray_ctx.get(fray_ctx.run(add, 2, 2)) == 4


def test_cancel_a_queued_task(
    cluster: LocalFrayCluster, fray_ctx: FrayContext, tmp_path: Path
) -> None:
    gate = tmp_path / "open"
    blockers = [fray_ctx.run(wait_for_file, str(gate), i) for i in range(8)]  # 4 slots, held
    queued = fray_ctx.run(add, 1, 1)
    fray_ctx.wait([queued], timeout=0.1)  # makes sure the controller has it
    assert queued.cancel()
    assert queued.cancelled()
    gate.write_text("open")
    assert fray_ctx.get(blockers) == list(range(8))
    assert recorded_task(cluster.address, queued.task_id).state == pb.TASK_STATE_CANCELLED


def test_task_that_kills_its_executor_fails_after_the_retry_budget(
    fray_ctx: FrayContext,
) -> None:
    future = fray_ctx.run(die)
    with pytest.raises(TaskLostError) as info:
        future.result(timeout=60)
    message = str(info.value)
    assert future.task_id in message and "worker-" in message and "exit code 3" in message
    assert fray_ctx.get(fray_ctx.run(add, 3, 3)) == 6


def test_task_needing_a_missing_module_fails_clearly(
    fray_ctx: FrayContext, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "only_on_the_client.py").write_text("def f():\n    return 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import only_on_the_client  # type: ignore[import-not-found]

    with pytest.raises(TaskDeserializationError, match="only_on_the_client"):
        fray_ctx.get(fray_ctx.run(only_on_the_client.f))
    assert fray_ctx.get(fray_ctx.run(add, 4, 4)) == 8


def test_an_unprintable_exception_is_still_a_user_error(fray_ctx: FrayContext) -> None:
    future = fray_ctx.run(raise_unprintable)
    with pytest.raises(Unprintable):
        future.result(timeout=30)
    assert recorded_task(fray_ctx.controller_address, future.task_id).attempts == 1  # not retried


def test_an_unencodable_exception_message_is_still_a_user_error(fray_ctx: FrayContext) -> None:
    future = fray_ctx.run(raise_unencodable)
    with pytest.raises(ValueError, match="bad"):
        future.result(timeout=30)
    assert recorded_task(fray_ctx.controller_address, future.task_id).attempts == 1


def test_cancelling_an_argument_cancels_the_dependent_task(fray_ctx: FrayContext) -> None:
    upstream = fray_ctx.run(sleep_then, 30, 1)
    downstream = fray_ctx.run(add, upstream, 1)
    assert upstream.cancel()
    wait_for(downstream.done, 10, "the dependent task to end")
    assert downstream.cancelled()


def test_callable_objects_are_sent_with_their_current_state(fray_ctx: FrayContext) -> None:
    counter = Counter()
    first = fray_ctx.get(fray_ctx.run(counter))
    counter.n = 5
    assert (first, fray_ctx.get(fray_ctx.run(counter))) == (0, 5)


def test_a_done_callback_may_call_back_into_the_context(fray_ctx: FrayContext) -> None:
    """Callbacks run on fray's own threads; cancelling or waiting from one must not deadlock."""
    seen: list[object] = []
    later = fray_ctx.run(sleep_then, 30, "never")
    first = fray_ctx.run(add, 1, 1)
    first.add_done_callback(lambda f: seen.append((f.result(), later.cancel())))
    wait_for(lambda: seen, 20, "the callback")
    assert seen == [(2, True)]
    assert later.cancelled()


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "queued"])
def test_closing_a_context_cancels_its_unfinished_tasks(
    cluster: LocalFrayCluster, tmp_path: Path, direct: bool
) -> None:
    ctx = FrayContext(cluster.address, direct=direct)
    marker = tmp_path / "pid"
    running = ctx.run(sleep_then, 30, "never", str(marker))
    wait_for(marker.exists, 20, "the task to run")
    ctx.close()
    with pytest.raises(FrayError, match="closed"):
        running.result(timeout=5)
    wait_for(
        lambda: task_state(cluster.address, running.task_id) == pb.TASK_STATE_CANCELLED,
        10,
        "the controller to record the task cancelled",
    )
    wait_for(lambda: not pid_alive(int(marker.read_text())), 10, "the executor to be killed")


def test_a_refused_request_is_a_fray_error() -> None:
    with ControllerServer("127.0.0.1", 0, token="right") as server:
        ctx = FrayContext(server.address, token="wrong", retry_timeout=2)
        try:
            with pytest.raises(ControllerError, match="bearer token") as info:
                ctx.put(1)
            assert info.value.code == "unauthenticated"
        finally:
            ctx.close()


def test_put_stores_once_and_refs_arrive_as_values(fray_ctx: FrayContext) -> None:
    blob = os.urandom(8 << 20)
    ref = fray_ctx.put(blob)
    assert ref.size_bytes >= len(blob)
    assert fray_ctx.get([fray_ctx.run(len, ref) for _ in range(4)]) == [len(blob)] * 4
    assert fray_ctx.get(fray_ctx.run(add, b=fray_ctx.put(5), a=1)) == 6
    assert fray_ctx.get(ref) == blob
    assert fray_ctx.free([ref]) == 1


def test_wait_returns_exactly_num_returns(fray_ctx: FrayContext, tmp_path: Path) -> None:
    gate = tmp_path / "open"  # the last task ends only when the test says so, however slow CI is
    futures = [fray_ctx.run(add, i, 0) for i in range(3)]
    futures.append(fray_ctx.run(wait_for_file, str(gate), "last"))
    ready, pending = fray_ctx.wait(futures, num_returns=2, timeout=20)
    assert len(ready) == 2 and len(pending) == 2
    assert futures[3] in pending
    ready, pending = fray_ctx.wait(futures[3:], num_returns=1, timeout=0.2)
    assert ready == [] and pending == futures[3:]
    gate.write_text("open")
    ready, pending = fray_ctx.wait(futures, num_returns=4, timeout=30)
    assert (len(ready), pending) == (4, [])
    assert fray_ctx.get(futures) == [0, 1, 2, "last"]


# ---------------------------------------------------------------------- failures of the pieces


def test_unreachable_controller_gives_a_clear_error_in_bounded_time() -> None:
    address = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(ControllerUnavailableError, match="no fray controller at http://"):
        FrayContext(address)  # the context's first call: a few seconds, not retry_timeout
    assert time.monotonic() - started < 10
    ctx = FrayContext(address, retry_timeout=1.0, probe_timeout=None)  # one that went away
    try:
        started = time.monotonic()
        with pytest.raises(ControllerUnavailableError, match="unreachable"):
            ctx.put(1)
        future = ctx.run(add, 1, 2)
        with pytest.raises(ControllerUnavailableError):
            future.result(timeout=30)
        assert time.monotonic() - started < 15
    finally:
        ctx.close()


def test_sigkilled_worker_task_finishes_on_another_worker(tmp_path: Path) -> None:
    with LocalFrayCluster(workers=1, concurrency=1, heartbeat_timeout=1.5) as cluster:
        ctx = FrayContext(cluster.address)
        try:
            marker, gate = tmp_path / "started", tmp_path / "open"
            # The first attempt cannot finish before the kill, however slow the machine is.
            future = ctx.run(wait_for_file, str(gate), "done", str(marker))
            wait_for(marker.exists, 20, "the task to start")
            victim = cluster.workers[0]
            victim.send_signal(signal.SIGKILL)
            victim.wait(10)
            os.kill(int(marker.read_text()), signal.SIGKILL)  # its executor too
            marker.unlink()
            gate.write_text("open")
            cluster.add_worker()
            assert future.result(timeout=60) == "done"
            task = recorded_task(cluster.address, future.task_id)
            assert task.attempts == 2
            assert task.error.kind == pb.ERROR_KIND_UNSPECIFIED  # completed: no error left
        finally:
            ctx.close()


def test_controller_restart_fails_lost_futures_and_workers_come_back() -> None:
    with LocalFrayCluster(workers=1, concurrency=1, heartbeat_timeout=1.5) as cluster:
        ctx = FrayContext(cluster.address, retry_timeout=20, direct=False)  # queued tasks
        try:
            future = ctx.run(sleep_then, 60, "never")
            ctx.wait([future], timeout=0.1)  # makes sure the controller has it
            wait_for(
                lambda: get_task(cluster.address, future.task_id).state == pb.TASK_STATE_RUNNING,
                20,
                "the task to run",
            )
            port = int(cluster.address.rsplit(":", 1)[1])
            assert cluster.controller is not None
            cluster.controller.send_signal(signal.SIGKILL)
            cluster.controller.wait(10)
            cluster.start_controller(port=port)
            with pytest.raises(TaskLostError, match="controller"):
                future.result(timeout=60)
            cluster.wait_for_workers(1, timeout=30)
            assert ctx.get(ctx.run(add, 20, 22), timeout=60) == 42
        finally:
            ctx.close()


def test_no_task_is_lost_when_workers_are_killed_repeatedly() -> None:
    """Chaos: SIGKILL two workers (and their executors) while 300 short tasks run; every
    future still ends with its right result, none hangs, none is lost."""
    with LocalFrayCluster(workers=3, concurrency=2, heartbeat_timeout=1.5) as cluster:
        ctx = FrayContext(cluster.address)
        try:
            futures = [ctx.run(sleep_then, 0.02, i) for i in range(300)]
            for victim, progress in zip(list(cluster.workers[:2]), (50, 150), strict=True):
                wait_for(lambda: sum(f.done() for f in futures) > progress, 30, "progress")  # noqa: B023
                children = children_of(victim.pid)
                victim.send_signal(signal.SIGKILL)
                for pid in children:  # its executors (and forkserver) die with it
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                victim.wait(10)
                cluster.add_worker()
            assert [f.result(timeout=60) for f in futures] == list(range(300))

            def retried() -> bool:  # direct tasks are recorded by their workers within ~0.5 s
                tasks = [find_task(cluster.address, f.task_id) for f in futures]
                return any(t is not None and t.attempts > 1 for t in tasks)

            wait_for(retried, 20, "a task retried after a kill (the kills hit tasks in flight)")
        finally:
            ctx.close()
