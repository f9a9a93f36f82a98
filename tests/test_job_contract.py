"""The JobContext contract, checked against every backend.

Every test taking ``job_ctx`` runs once per backend: sync, threadpool, ray and fray. The
functions and classes they use live at module level and the module is pickled by value, so
remote workers need not import this file.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import fray_tasks
import pytest
from fray_tasks import add, sleep_then, square, wait_for_file

from fray.client.context import FrayContext
from fray.errors import ActorCreationError, RemoteTraceback, TaskTimeoutError
from fray.job import (
    JobContext,
    SyncContext,
    ThreadPoolContext,
    create_job_ctx,
    default_job_ctx,
    get_default_job_ctx,
)

cloudpickle.register_pickle_by_value(sys.modules[__name__])

# "fray" sends tasks to free worker slots directly when it can; "fray-queued" queues them all at
# the controller.
BACKENDS = ["sync", "threadpool", "ray", "fray", "fray-queued"]
# Ray starts a process per actor: its tests take several times longer on a loaded machine (the
# 20 actors of test_many_actors: ~35 s here, ~100 s next to 3 busy loops), close to the default
# pytest timeout (120 s), which is there to catch hangs.
RAY_TIMEOUT = pytest.mark.timeout(360)


class CustomError(Exception):
    """An exception type only this module knows."""


class Counter:
    """A small stateful actor."""

    def __init__(self, start: int = 0) -> None:
        self.total = start
        self.seen: list[int] = []

    def add(self, n: int) -> int:
        self.total += n
        self.seen.append(n)
        return self.total

    def history(self) -> list[int]:
        return self.seen

    def fail(self, message: str) -> None:
        raise CustomError(message)


class Recorder:
    """Records calls and the most calls it ever saw running at once."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []
        self.running = 0
        self.most_running = 0

    def record(self, caller: int, seq: int) -> int:
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        time.sleep(0.001)
        self.calls.append((caller, seq))
        self.running -= 1
        return seq

    def report(self) -> tuple[list[tuple[int, int]], int]:
        return self.calls, self.most_running


class BrokenActor:
    """An actor whose constructor raises."""

    def __init__(self, message: str) -> None:
        raise CustomError(message)

    def ping(self) -> str:
        return "pong"


class Nester:
    """An actor whose method runs a task through the default context it finds."""

    def square_nested(self, x: int) -> tuple[str, int]:
        return square_nested(x)


def combine(a: int, b: int = 0, *, c: int = 0) -> tuple[int, int, int]:
    return a, b, c


def echo(x: Any) -> Any:
    return x


def describe(x: Any, *, y: Any) -> tuple[str, Any, str, Any]:
    return type(x).__name__, x, type(y).__name__, y


def square_nested(x: int) -> tuple[str, int]:
    """Square ``x`` in a task run through the default context; also name that context."""
    ctx = get_default_job_ctx()
    return type(ctx).__name__, ctx.get(ctx.run(square, x))


def raise_custom(message: str) -> None:
    raise CustomError(message)


def raise_value_error(message: str) -> None:
    raise ValueError(message)


@pytest.fixture(params=[pytest.param(b, marks=RAY_TIMEOUT) if b == "ray" else b for b in BACKENDS])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def job_ctx(backend: str, request: pytest.FixtureRequest) -> Iterator[JobContext]:
    if backend == "ray":
        ray = request.getfixturevalue("ray_session")
        ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
        ray.cloudpickle.register_pickle_by_value(fray_tasks)
        yield create_job_ctx("ray")
    elif backend.startswith("fray"):
        cluster = request.getfixturevalue("cluster")
        ctx = FrayContext(cluster.address, retry_timeout=10, direct=backend == "fray")
        try:
            yield ctx
        finally:
            ctx.close()
    else:
        ctx = create_job_ctx(backend, max_workers=4)
        assert isinstance(ctx, SyncContext | ThreadPoolContext)
        yield ctx
        ctx.shutdown(wait=False, cancel_futures=True)


def run_slow(ctx: JobContext, gate: Path, value: Any) -> Any:
    """A task that runs until the test creates `gate` (a fixed sleep would end too early on a
    slow machine). The sync backend runs a task inside run(): for it the gate is open already."""
    if isinstance(ctx, SyncContext):
        gate.write_text("open")
    return ctx.run(wait_for_file, str(gate), value)


def positions(part: list[Any], whole: list[Any]) -> list[int]:
    """Where each item of ``part`` sits in ``whole`` (compared with ``==``, as Ray refs are)."""
    return [next(i for i, w in enumerate(whole) if w == p) for p in part]


# --- tasks and results ---------------------------------------------------------------------


def test_is_a_job_context(job_ctx: JobContext) -> None:
    assert isinstance(job_ctx, JobContext)


def test_run_and_get(job_ctx: JobContext) -> None:
    assert job_ctx.get(job_ctx.run(add, 1, 2)) == 3


def test_run_with_kwargs(job_ctx: JobContext) -> None:
    assert job_ctx.get(job_ctx.run(combine, 1, b=2, c=3)) == (1, 2, 3)
    assert job_ctx.get(job_ctx.run(combine, a=4)) == (4, 0, 0)


def test_run_lambda(job_ctx: JobContext) -> None:
    assert job_ctx.get(job_ctx.run(lambda x: x * 10, 4)) == 40


def test_get_list_keeps_order(job_ctx: JobContext) -> None:
    # Later tasks finish first on the asynchronous backends.
    futures = [job_ctx.run(sleep_then, 0.05 * (4 - i), i) for i in range(5)]
    assert job_ctx.get(futures) == [0, 1, 2, 3, 4]


def test_get_plain_value_unchanged(job_ctx: JobContext) -> None:
    value = {"plain": 1}
    assert job_ctx.get(value) is value


@pytest.mark.parametrize("obj", [{"a": [1, 2], "b": {"c": None}}, b"\x00\xffbytes"])
def test_put_get_round_trip(job_ctx: JobContext, obj: Any) -> None:
    assert job_ctx.get(job_ctx.put(obj)) == obj


def test_refs_as_arguments_arrive_as_values(job_ctx: JobContext) -> None:
    x = job_ctx.put([1, 2, 3])
    y = job_ctx.put({"k": "v"})
    assert job_ctx.get(job_ctx.run(describe, x, y=y)) == ("list", [1, 2, 3], "dict", {"k": "v"})


def test_futures_as_arguments_arrive_as_values(job_ctx: JobContext) -> None:
    first = job_ctx.run(add, 1, 2)
    assert job_ctx.get(job_ctx.run(add, first, b=job_ctx.run(add, 3, 4))) == 10


def test_a_failed_argument_fails_the_dependent_task(job_ctx: JobContext) -> None:
    broken = job_ctx.run(raise_value_error, "upstream broke")
    with pytest.raises(ValueError, match="upstream broke"):
        job_ctx.get(job_ctx.run(add, broken, 1))


def test_many_tasks(job_ctx: JobContext) -> None:
    futures = [job_ctx.run(square, i) for i in range(200)]
    assert job_ctx.get(futures) == [i * i for i in range(200)]


@pytest.mark.parametrize(
    ("fn", "exc_type"), [(raise_custom, CustomError), (raise_value_error, ValueError)]
)
def test_task_exception_keeps_type_and_message(
    job_ctx: JobContext, fn: Any, exc_type: type[Exception]
) -> None:
    future = job_ctx.run(fn, "it went wrong: 42")
    with pytest.raises(exc_type, match="it went wrong: 42"):
        job_ctx.get(future)
    # Other tasks are unaffected.
    assert job_ctx.get(job_ctx.run(add, 2, 2)) == 4


def test_get_timeout(job_ctx: JobContext, tmp_path: Path) -> None:
    if isinstance(job_ctx, SyncContext):
        # Sync tasks finish inside run(), so get() never waits: a timeout cannot trigger.
        done = job_ctx.run(sleep_then, 0.01, "done")
        assert job_ctx.get(done, timeout=0.0) == "done"
        return
    gate = tmp_path / "open"
    slow = run_slow(job_ctx, gate, "slow")
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        job_ctx.get(slow, timeout=0.1)
    with pytest.raises(TimeoutError):
        job_ctx.get([slow], timeout=0.1)
    assert time.monotonic() - started < 30  # the timeouts held: no wait for the task (60 s)
    gate.write_text("open")
    assert job_ctx.get(slow) == "slow"


# --- wait ----------------------------------------------------------------------------------


def test_wait_returns_the_fast_one(job_ctx: JobContext, tmp_path: Path) -> None:
    gate = tmp_path / "open"
    slow = run_slow(job_ctx, gate, "slow")
    fast = job_ctx.run(echo, "fast")
    ready, pending = job_ctx.wait([slow, fast], num_returns=1)
    if isinstance(job_ctx, SyncContext):
        # Both finished already: exactly one is ready, the other stays pending.
        assert len(ready) == 1 and len(pending) == 1
        assert sorted(positions(ready + pending, [slow, fast])) == [0, 1]
    else:
        assert ready == [fast]
        assert pending == [slow]
    gate.write_text("open")
    assert sorted(job_ctx.get(ready + pending)) == ["fast", "slow"]


def test_wait_returns_exactly_num_returns(job_ctx: JobContext) -> None:
    futures = [job_ctx.run(echo, i) for i in range(3)]
    assert job_ctx.get(futures) == [0, 1, 2]  # all three are finished now
    ready, pending = job_ctx.wait(futures, num_returns=2)
    assert len(ready) == 2
    assert len(pending) == 1
    ready_at = positions(ready, futures)
    assert ready_at == sorted(ready_at)  # input order kept
    assert sorted(ready_at + positions(pending, futures)) == [0, 1, 2]
    assert job_ctx.get(ready) == ready_at


def test_wait_timeout_returns_fewer(job_ctx: JobContext, tmp_path: Path) -> None:
    gate = tmp_path / "open"
    slow = run_slow(job_ctx, gate, "slow")
    fast = job_ctx.run(echo, "fast")
    assert job_ctx.get(fast) == "fast"
    started = time.monotonic()
    ready, pending = job_ctx.wait([slow, fast], num_returns=2, timeout=0.1)
    if isinstance(job_ctx, SyncContext):
        assert ready == [slow, fast] and pending == []
    else:
        assert time.monotonic() - started < 30  # the timeout held: no wait for the task (60 s)
        assert ready == [fast]
        assert pending == [slow]
    gate.write_text("open")
    assert job_ctx.get(slow) == "slow"


def test_wait_accepts_put_refs(job_ctx: JobContext) -> None:
    ref = job_ctx.put("stored")
    ready, pending = job_ctx.wait([ref], num_returns=1, timeout=5)
    assert ready == [ref] and pending == []


def test_wait_argument_checks(job_ctx: JobContext) -> None:
    futures = [job_ctx.run(echo, i) for i in range(2)]
    assert job_ctx.wait([]) == ([], [])
    with pytest.raises(ValueError):
        job_ctx.wait(futures, num_returns=0)
    with pytest.raises(ValueError):
        job_ctx.wait(futures, num_returns=3)
    with pytest.raises(ValueError):
        job_ctx.wait(futures, timeout=-1)
    assert job_ctx.get(futures) == [0, 1]


# --- actors --------------------------------------------------------------------------------


def test_actor_calls_run_in_order(job_ctx: JobContext, backend: str) -> None:
    counter = job_ctx.create_actor(Counter, 10)
    futures = [counter.add.remote(i) for i in range(200)]
    assert job_ctx.get(futures) == [10 + sum(range(i + 1)) for i in range(200)]
    assert job_ctx.get(counter.add.remote(job_ctx.put(100))) == 10 + sum(range(200)) + 100
    assert job_ctx.get(counter.history.remote()) == [*range(200), 100]


def test_actor_runs_one_call_at_a_time_in_each_callers_order(
    job_ctx: JobContext, backend: str
) -> None:
    recorder = job_ctx.create_actor(Recorder)
    results: dict[int, list[int]] = {}

    def caller(n: int) -> None:
        results[n] = job_ctx.get([recorder.record.remote(n, seq) for seq in range(25)])

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    calls, most_running = job_ctx.get(recorder.report.remote())
    assert most_running == 1
    assert results == {n: list(range(25)) for n in range(4)}
    for n in range(4):
        assert [seq for caller_n, seq in calls if caller_n == n] == list(range(25))


def test_actor_names_are_unique(job_ctx: JobContext, backend: str) -> None:
    name = f"counter-{uuid.uuid4().hex}"
    first = job_ctx.create_actor(Counter, 5, name=name)
    with pytest.raises(ValueError):
        job_ctx.create_actor(Counter, name=name)
    assert job_ctx.get(first.add.remote(1)) == 6


def test_get_if_exists_returns_the_named_actor(job_ctx: JobContext, backend: str) -> None:
    name = f"counter-{uuid.uuid4().hex}"
    created = job_ctx.create_actor(Counter, 5, name=name, get_if_exists=True)  # creates it
    assert job_ctx.get(created.add.remote(1)) == 6
    same = job_ctx.create_actor(Counter, 1000, name=name, get_if_exists=True)
    assert job_ctx.get(same.add.remote(1)) == 7  # shared state; the new start is ignored
    assert job_ctx.get(created.history.remote()) == [1, 1]
    with pytest.raises(ValueError):
        job_ctx.create_actor(Counter, get_if_exists=True)  # needs a name


def test_actor_reserved_arguments(job_ctx: JobContext, backend: str) -> None:
    # Counter takes no such keywords: a reserved argument passed on to it would fail.
    counter = job_ctx.create_actor(
        Counter, start=3, lifetime="non_detached", preemptible=False, max_restarts=1
    )
    assert job_ctx.get(counter.add.remote(1)) == 4
    name = f"detached-{uuid.uuid4().hex}"
    detached = job_ctx.create_actor(Counter, 7, name=name, lifetime="detached")
    assert job_ctx.get(detached.add.remote(1)) == 8
    if backend == "ray":
        import ray

        ray.kill(detached)
    with pytest.raises(ValueError, match="lifetime"):
        job_ctx.create_actor(Counter, lifetime="forever")


def test_actor_exception_keeps_type(job_ctx: JobContext, backend: str) -> None:
    counter = job_ctx.create_actor(Counter)
    with pytest.raises(TypeError):
        job_ctx.get(counter.add.remote("not a number"))
    with pytest.raises(CustomError, match="it went wrong: 42"):
        job_ctx.get(counter.fail.remote("it went wrong: 42"))
    assert job_ctx.get(counter.add.remote(5)) == 5  # the actor survives, state intact
    assert job_ctx.get(counter.history.remote()) == [5]


def test_actor_constructor_error(job_ctx: JobContext, backend: str) -> None:
    broken = job_ctx.create_actor(BrokenActor, "no constructing today")
    futures = [broken.ping.remote() for _ in range(3)]
    ready, pending = job_ctx.wait(futures, num_returns=3, timeout=60)
    assert pending == []
    for future in ready:
        with pytest.raises(ActorCreationError) as info:
            job_ctx.get(future, timeout=60)
        assert info.value.actor_id
        cause = info.value.__cause__
        if backend == "ray":  # Ray ships only the constructor's traceback text
            assert isinstance(cause, RemoteTraceback)
            assert "CustomError" in str(cause) and "no constructing today" in str(cause)
        else:
            assert isinstance(cause, CustomError)
            assert str(cause) == "no constructing today"
    with pytest.raises(ActorCreationError):
        job_ctx.get(futures)


def test_many_actors(job_ctx: JobContext, backend: str) -> None:
    counters = [job_ctx.create_actor(Counter, i) for i in range(20)]
    futures = [[counter.add.remote(n) for n in range(1, 6)] for counter in counters]
    assert [job_ctx.get(calls) for calls in futures] == [
        [i + 1, i + 3, i + 6, i + 10, i + 15] for i in range(20)
    ]


def test_nested_work_through_the_default_context(job_ctx: JobContext, backend: str) -> None:
    nester = job_ctx.create_actor(Nester)
    kinds, values = zip(
        *job_ctx.get([job_ctx.run(square_nested, 3), nester.square_nested.remote(4)]),
        strict=True,
    )
    assert values == (9, 16)
    if backend == "ray":
        assert kinds == ("RayContext", "RayContext")  # Ray is initialised in Ray workers
        return
    if backend.startswith("fray"):  # fray workers give their own controller's context
        assert kinds == ("FrayContext", "FrayContext")
        return
    # Local tasks and actor calls see the caller's default context.
    with default_job_ctx(job_ctx):
        nested = [job_ctx.run(square_nested, 5), nester.square_nested.remote(5)]
        assert job_ctx.get(nested) == [(type(job_ctx).__name__, 25)] * 2


@RAY_TIMEOUT
def test_ray_non_preemptible_actors_avoid_spot_nodes() -> None:
    """preemptible=False keeps an actor off a node labelled as a spot instance."""
    pytest.importorskip("ray")
    code = """
import ray
from fray.job import create_job_ctx

class Pinger:
    def ping(self):
        return "pong"

ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
assert ray.nodes()[0]["Labels"].get("ray.io/market-type") == "spot"
ctx = create_job_ctx("ray")
assert ctx.get(ctx.create_actor(Pinger).ping.remote(), timeout=60) == "pong"
pinned = ctx.create_actor(Pinger, preemptible=False).ping.remote()
assert ctx.wait([pinned], timeout=2) == ([], [pinned]), "placed on a spot node"
ray.shutdown()
"""
    env = {**os.environ, "RAY_NODE_MARKET_TYPE": "spot", "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)  # start a Ray of its own
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=240)


# --- the factory and the default context ---------------------------------------------------


def test_create_job_ctx_local_types() -> None:
    assert isinstance(create_job_ctx("sync"), SyncContext)
    pool = create_job_ctx("threadpool", max_workers=2)
    assert isinstance(pool, ThreadPoolContext)
    pool.shutdown()


def test_create_job_ctx_rejects_unknown_type() -> None:
    with pytest.raises(ValueError, match="unknown context type"):
        create_job_ctx("unknown")


def test_create_job_ctx_fray_reads_the_address_from_the_environment(
    cluster: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FRAY_CONTROLLER_ADDRESS", cluster.address)
    for kind in ("fray", "auto"):  # "auto" picks fray when the variable is set
        with create_job_ctx(kind) as ctx:
            assert isinstance(ctx, FrayContext) and ctx.controller_address == cluster.address
            assert ctx.get(ctx.run(square, 4)) == 16


def test_create_job_ctx_fray_without_a_controller_fails_fast_and_clearly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from fray.common.net import free_port
    from fray.errors import ControllerUnavailableError

    monkeypatch.delenv("FRAY_CONTROLLER_ADDRESS", raising=False)
    address = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(ControllerUnavailableError) as info:
        create_job_ctx("fray", controller_address=address)
    assert time.monotonic() - started < 10
    assert str(info.value) == (
        f"no fray controller at {address} (connection refused); start one with `fray controller`"
    )
    with pytest.raises(ValueError, match="the port must be 0-65535"):
        create_job_ctx("fray", controller_address="http://127.0.0.1:123456")
    with pytest.raises(ValueError, match="not a URL"):
        create_job_ctx("fray", controller_address="http://exa mple:1")


def test_a_missing_ray_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(ImportError, match=r"pip install 'fray\[ray\]'"):
        create_job_ctx("ray")


def test_create_job_ctx_local_types_take_no_options() -> None:
    with pytest.raises(ValueError):
        create_job_ctx("threadpool", num_cpus=1)


def test_auto_without_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "ray", raising=False)
    ctx = create_job_ctx("auto", max_workers=2)
    assert isinstance(ctx, ThreadPoolContext)
    ctx.shutdown()
    assert "ray" not in sys.modules  # auto never imports Ray just to check


def test_auto_with_ray_imported_but_not_initialised(monkeypatch: pytest.MonkeyPatch) -> None:
    ray = pytest.importorskip("ray")
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    ctx = create_job_ctx("auto", max_workers=2)
    assert isinstance(ctx, ThreadPoolContext)
    ctx.shutdown()


def test_auto_with_ray_initialised(ray_session: Any) -> None:
    from fray.job.ray_ctx import RayContext

    ctx = create_job_ctx("auto", num_cpus=1)
    assert isinstance(ctx, RayContext)
    assert ctx.ray_options == {"num_cpus": 1}


def test_importing_fray_job_imports_neither_ray_nor_rpc() -> None:
    code = (
        "import sys, fray.job; "
        "assert 'ray' not in sys.modules, 'ray'; "
        "assert not {'fray.job.rpc', 'fray.client', 'fray.wire'} & set(sys.modules), 'rpc'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_default_job_ctx_sets_and_restores() -> None:
    outer = get_default_job_ctx()
    assert get_default_job_ctx() is outer  # the fallback is cached
    first, second = SyncContext(), SyncContext()
    with default_job_ctx(first) as entered:
        assert entered is first
        assert get_default_job_ctx() is first
        with default_job_ctx(second):
            assert get_default_job_ctx() is second
        assert get_default_job_ctx() is first

        seen_in_thread: list[JobContext] = []
        thread = threading.Thread(target=lambda: seen_in_thread.append(get_default_job_ctx()))
        thread.start()
        thread.join()
        assert seen_in_thread[0] is not first  # the default is per thread
    assert get_default_job_ctx() is outer


def test_default_job_ctx_is_restored_after_an_error() -> None:
    outer = get_default_job_ctx()
    with pytest.raises(RuntimeError), default_job_ctx(SyncContext()):
        raise RuntimeError("boom")
    assert get_default_job_ctx() is outer


def test_threadpool_tasks_see_the_callers_default() -> None:
    marker = SyncContext()
    with ThreadPoolContext(2) as pool, default_job_ctx(marker):
        assert pool.get(pool.run(get_default_job_ctx)) is marker


# --- the same API everywhere: options, close, with ----------------------------------------


def fail_once(marker: str) -> str:
    """Raises the first time (it leaves `marker` behind), returns "ok" after."""
    if not os.path.exists(marker):
        Path(marker).write_text("failed once")
        raise ValueError("first try")
    return "ok"


def test_options_retry_a_failing_task_and_check_their_values(
    job_ctx: JobContext, tmp_path: Path
) -> None:
    future = job_ctx.options(max_retries=1, name="flaky").run(fail_once, str(tmp_path / "m"))
    assert job_ctx.get(future, timeout=60) == "ok"
    again = job_ctx.options(max_retries=0).run(fail_once, str(tmp_path / "other"))
    with pytest.raises(ValueError, match="first try"):
        job_ctx.get(again, timeout=60)
    for bad in ({"timeout": 0}, {"max_retries": -1}):
        with pytest.raises(ValueError):
            job_ctx.options(**bad)


def test_options_timeout_ends_the_future(job_ctx: JobContext, backend: str, tmp_path: Path) -> None:
    expected: tuple[type[BaseException], ...] = (TaskTimeoutError,)
    if backend == "ray":  # the timeout cancels the Ray task: Ray's own error (documented)
        import ray

        expected = (TaskTimeoutError, ray.exceptions.TaskCancelledError)
    gate = tmp_path / "open"
    if backend == "sync":  # runs in run() itself: only a task that overran can be caught
        future = job_ctx.options(timeout=0.05).run(sleep_then, 0.3, "late")
    else:
        future = job_ctx.options(timeout=0.5).run(wait_for_file, str(gate), "late")
    try:
        with pytest.raises(expected):
            job_ctx.get(future, timeout=60)
    finally:
        gate.write_text("open")


def test_options_and_actors_accept_resources_and_labels(job_ctx: JobContext) -> None:
    # What every backend's workers offer (one CPU); the local backends ignore it (documented).
    future = job_ctx.options(resources={"cpus": 1, "gpus": 0}, labels={}).run(square, 4)
    assert job_ctx.get(future, timeout=60) == 16
    counter = job_ctx.create_actor(Counter, 2, resources={"cpus": 0.5}, labels=None)
    assert job_ctx.get(counter.add.remote(1), timeout=60) == 3
    for bad in ({"resources": {"gpus": -1}}, {"labels": {"zone": 1}}):
        with pytest.raises(ValueError):
            job_ctx.options(**bad)
        with pytest.raises(ValueError):
            job_ctx.create_actor(Counter, **bad)


@pytest.mark.parametrize("kind", ["sync", "threadpool"])
def test_local_contexts_close_and_work_as_context_managers(kind: str) -> None:
    with create_job_ctx(kind) as ctx:
        assert ctx.get(ctx.run(square, 3)) == 9
    ctx.close()  # again: nothing happens


def test_progress_waits_for_every_future_and_draws_a_bar(job_ctx: JobContext) -> None:
    import io

    from fray.job import progress

    futures = [job_ctx.run(square, i) for i in range(20)]
    futures.append(job_ctx.run(raise_value_error, "counted as done"))
    out = io.StringIO()
    progress(futures, job_ctx, file=out)
    ready, pending = job_ctx.wait(futures, num_returns=len(futures), timeout=0)
    assert len(ready) == 21 and pending == []
    assert "21/21" in out.getvalue()
    assert job_ctx.get(futures[:20]) == [i * i for i in range(20)]
