"""The fray.v2 cluster contract, run against every backend (local, Ray and fray).

Jobs, worker pools and actors all run for real: jobs in their own processes, pool work in
worker processes (local), Ray actors or fray actors, actors behind cloudpickle (local), as
named Ray actors or as named fray actors. The fray backend runs on a controller and two worker
processes started by this module (:class:`fray.local_cluster.LocalFrayCluster`). The module is
pickled by value so job processes, Ray workers and fray workers need not import it.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import fray_tasks
import pytest
from fray_fixtures import process_gone, wait_for
from fray_tasks import square

from fray.local_cluster import LocalFrayCluster
from fray.v2 import (
    ActorPool,
    ActorServer,
    BroadcastResult,
    Cluster,
    Entrypoint,
    EnvironmentSpec,
    Job,
    JobFailedError,
    JobId,
    JobStatus,
    NoActorError,
    Resolver,
    ResourceSpec,
    UnknownJobError,
    WorkerPool,
    create_cluster,
)

cloudpickle.register_pickle_by_value(sys.modules[__name__])

BACKENDS = ["local", "ray", "fray"]
SMALL = ResourceSpec(cpu=0.25)  # leaves room on the 2-CPU test Ray instance


class CustomError(Exception):
    """An exception type only this module knows."""


# --- job entrypoints -----------------------------------------------------------------------


def say(marker: str) -> None:
    print(f"out {marker}")
    print(f"err {marker}", file=sys.stderr)


def fail(message: str) -> None:
    raise CustomError(message)


def tick_forever(path: str) -> None:
    """Write this process's pid, then append a tick every 20 ms until killed."""
    Path(path + ".pid").write_text(str(os.getpid()))
    with open(path, "a") as f:
        while True:
            f.write(".")
            f.flush()
            time.sleep(0.02)


def write_env(path: str, names: list[str]) -> None:
    Path(path).write_text("\n".join(f"{n}={os.environ.get(n, '')}" for n in names))


def write_task_index(directory: str) -> None:
    Path(directory, os.environ["FRAY_TASK_INDEX"]).write_text(os.environ["FRAY_NUM_TASKS"])


def fail_once_the_other_runs(path: str) -> None:
    """Replica 0 fails once replica 1 is ticking; replica 1 ticks until stopped."""
    if os.environ["FRAY_TASK_INDEX"] == "1":
        tick_forever(path)
    deadline = time.monotonic() + 60
    while not Path(path + ".pid").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    raise CustomError("replica 0 failed")


def raise_custom(message: str) -> None:
    raise CustomError(message)


def pid_and_env(name: str) -> tuple[int, str | None]:
    return os.getpid(), os.environ.get(name)


# --- actors --------------------------------------------------------------------------------


class Counter:
    def __init__(self, start: int = 0) -> None:
        self.total = start

    def add(self, n: int) -> int:
        self.total += n
        return self.total

    def fail(self, message: str) -> None:
        raise CustomError(message)


class Named:
    """Answers with its own name; ``work`` fails on the actor built with ``broken=True``."""

    def __init__(self, name: str, broken: bool = False) -> None:
        self.name = name
        self.broken = broken

    def whoami(self) -> str:
        return self.name

    def work(self, x: int) -> str:
        if self.broken:
            raise CustomError(f"{self.name} is broken")
        return f"{self.name}:{x}"


# --- fixtures and helpers ------------------------------------------------------------------


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def fray_controller() -> Iterator[LocalFrayCluster]:
    """A fray controller with two workers, shared by the module's fray-backend tests."""
    with LocalFrayCluster(workers=2, concurrency=2, heartbeat_timeout=5.0) as cluster:
        yield cluster


@pytest.fixture
def v2_cluster(
    backend: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Cluster]:
    namespace = f"test-{uuid.uuid4().hex[:8]}"
    if backend == "fray":
        controller: LocalFrayCluster = request.getfixturevalue("fray_controller")
        # create_cluster("fray?namespace=...") (no address) finds the same controller.
        monkeypatch.setenv("FRAY_CONTROLLER_ADDRESS", controller.address)
        with create_cluster(f"fray?namespace={namespace}") as cluster:  # type: ignore[attr-defined]
            yield cluster
        return
    if backend == "ray":
        ray = request.getfixturevalue("ray_session")
        ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
        ray.cloudpickle.register_pickle_by_value(fray_tasks)
        yield create_cluster(f"ray?namespace={namespace}")
        return
    cluster = create_cluster(f"local?namespace={namespace}")
    yield cluster
    cluster.shutdown()  # type: ignore[attr-defined]


def submit(cluster: Cluster, fn: Any, *args: Any, name: str = "job", **kw: Any) -> Job:
    return cluster.submit(Entrypoint.from_callable(fn, args=args), name, SMALL, **kw)


# --- jobs ----------------------------------------------------------------------------------


def test_protocols(v2_cluster: Cluster) -> None:
    assert isinstance(v2_cluster, Cluster)
    assert isinstance(v2_cluster.resolver(), Resolver)
    assert isinstance(v2_cluster.resolver().lookup("nobody"), ActorPool)
    with v2_cluster.worker_pool(1, SMALL) as pool:
        assert isinstance(pool, WorkerPool)


def test_job_succeeds(v2_cluster: Cluster) -> None:
    job = submit(v2_cluster, say, "fine", name="ok")
    assert isinstance(job, Job)
    assert job.job_id.startswith("ok-")
    assert job.status() in (JobStatus.PENDING, JobStatus.RUNNING, JobStatus.SUCCEEDED)
    assert job.wait(timeout=60) == JobStatus.SUCCEEDED
    assert job.status() == JobStatus.SUCCEEDED
    assert job.job_id in [j.job_id for j in v2_cluster.list_jobs()]


def test_job_failure_carries_the_traceback(v2_cluster: Cluster) -> None:
    job = submit(v2_cluster, fail, "it went wrong: 42", name="bad")
    with pytest.raises(JobFailedError) as info:
        job.wait(timeout=60)
    assert info.value.job_id == job.job_id
    assert info.value.status == JobStatus.FAILED
    assert "CustomError: it went wrong: 42" in str(info.value)
    assert "Traceback" in info.value.error
    assert job.status() == JobStatus.FAILED
    assert job.wait(timeout=5, raise_on_failure=False) == JobStatus.FAILED


def test_terminate_stops_the_code(v2_cluster: Cluster, tmp_path: Path) -> None:
    ticks = str(tmp_path / "ticks")
    job = submit(v2_cluster, tick_forever, ticks, name="ticker")
    wait_for(lambda: Path(ticks).exists() and len(Path(ticks).read_text()) > 5, 60, "ticks")
    pid = int(Path(ticks + ".pid").read_text())
    assert job.status() == JobStatus.RUNNING
    v2_cluster.terminate(job.job_id)
    assert job.status() == JobStatus.KILLED
    wait_for(lambda: process_gone(pid), 10, f"pid {pid} to end")
    size = len(Path(ticks).read_text())
    time.sleep(0.3)
    assert len(Path(ticks).read_text()) == size  # no more ticks
    assert job.wait(timeout=5) == JobStatus.KILLED  # killed is not a failure


def test_terminating_an_unknown_job_names_it(v2_cluster: Cluster) -> None:
    with pytest.raises(UnknownJobError, match="no job 'missing-123'") as info:
        v2_cluster.terminate(JobId("missing-123"))
    assert isinstance(info.value, KeyError) and info.value.job_id == "missing-123"


def test_wait_times_out_and_the_job_keeps_running(v2_cluster: Cluster, tmp_path: Path) -> None:
    ticks = str(tmp_path / "ticks")
    job = submit(v2_cluster, tick_forever, ticks, name="slow")
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        job.wait(timeout=0.5)
    assert time.monotonic() - started < 5
    assert not job.status().is_finished()
    job.terminate()
    assert job.status() == JobStatus.KILLED


def test_job_logs_are_captured_per_job(
    v2_cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    first = submit(v2_cluster, say, "alpha", name="first")
    second = submit(v2_cluster, say, "beta", name="second")
    assert first.wait(timeout=60, stream_logs=True) == JobStatus.SUCCEEDED
    assert second.wait(timeout=60) == JobStatus.SUCCEEDED
    streamed = capsys.readouterr().out.splitlines()
    assert f"[{first.job_id}] out alpha" in streamed
    assert f"[{first.job_id}] err alpha" in streamed
    assert not any("beta" in line for line in streamed)  # only the streamed job's output
    logs = {job.job_id: job.logs() for job in (first, second)}  # type: ignore[attr-defined]
    assert logs[first.job_id].splitlines() == ["out alpha", "err alpha"]
    assert logs[second.job_id].splitlines() == ["out beta", "err beta"]


def test_job_environment(v2_cluster: Cluster, backend: str, tmp_path: Path) -> None:
    out = str(tmp_path / "env")
    names = ["FRAY_TEST_VALUE", "FRAY_JOB_ID", "FRAY_CLUSTER_SPEC"]
    job = v2_cluster.submit(
        Entrypoint.from_callable(write_env, args=(out, names)),
        "env",
        SMALL,
        EnvironmentSpec(env_vars={"FRAY_TEST_VALUE": "hello"}),
    )
    job.wait(timeout=60)
    env = dict(line.split("=", 1) for line in Path(out).read_text().splitlines())
    assert env["FRAY_TEST_VALUE"] == "hello"
    assert env["FRAY_JOB_ID"] == job.job_id
    # A job's current_cluster() reaches the same kind of cluster, in the same namespace.
    assert env["FRAY_CLUSTER_SPEC"].startswith(f"{backend}?")
    assert f"namespace={v2_cluster.namespace}" in env["FRAY_CLUSTER_SPEC"]


def test_replicas_run_as_separate_tasks(v2_cluster: Cluster, tmp_path: Path) -> None:
    job = v2_cluster.submit(
        Entrypoint.from_callable(write_task_index, args=(str(tmp_path),)),
        "gang",
        ResourceSpec(cpu=0.25, replicas=2),
    )
    assert job.wait(timeout=60) == JobStatus.SUCCEEDED
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == {"0": "2", "1": "2"}


def test_a_failed_replica_fails_the_job_and_stops_the_others(
    v2_cluster: Cluster, tmp_path: Path
) -> None:
    ticks = str(tmp_path / "ticks")
    job = v2_cluster.submit(
        Entrypoint.from_callable(fail_once_the_other_runs, args=(ticks,)),
        "gang",
        ResourceSpec(cpu=0.25, replicas=2),
    )
    with pytest.raises(JobFailedError, match="replica 0 failed"):
        job.wait(timeout=60)
    pid = int(Path(ticks + ".pid").read_text())
    wait_for(lambda: process_gone(pid), 10, f"replica 1 (pid {pid}) to be stopped")


@pytest.mark.parametrize("name", ["a/b", "/", ""])
def test_bad_job_names(v2_cluster: Cluster, name: str) -> None:
    with pytest.raises(ValueError):
        v2_cluster.submit(Entrypoint.from_callable(print), name, SMALL)
    assert v2_cluster.list_jobs() == []


# --- worker pools --------------------------------------------------------------------------


def test_worker_pool(v2_cluster: Cluster) -> None:
    with v2_cluster.worker_pool(num_workers=2, resources=SMALL) as pool:
        futures = [pool.submit(lambda x: x * x, i) for i in range(5)]
        assert all(type(f) is cf.Future for f in futures)
        assert [f.result(timeout=60) for f in futures] == [0, 1, 4, 9, 16]
        assert list(pool.map(square, range(10), timeout=60)) == [i * i for i in range(10)]
        failed = pool.submit(raise_custom, "pool task broke")
        with pytest.raises(CustomError, match="pool task broke"):
            failed.result(timeout=60)
        pid, value = pool.submit(pid_and_env, "FRAY_NOT_SET").result(timeout=60)
        assert pid != os.getpid() and value is None  # ran in another process
    with pytest.raises(RuntimeError):
        pool.submit(square, 2)


def test_worker_pool_environment(v2_cluster: Cluster) -> None:
    env = EnvironmentSpec(env_vars={"FRAY_POOL_VALUE": "42"})
    with v2_cluster.worker_pool(1, SMALL, env) as pool:
        assert pool.submit(pid_and_env, "FRAY_POOL_VALUE").result(timeout=60)[1] == "42"


# --- actors --------------------------------------------------------------------------------


def test_actor_round_trip(v2_cluster: Cluster) -> None:
    server = ActorServer(v2_cluster)
    server.register("counter", Counter(10))
    pool = v2_cluster.resolver().lookup("counter")
    assert pool.size == 0  # not served yet
    server.serve_background()
    pool.wait_for_size(1, timeout=60)
    assert pool.call().add(5) == 15
    assert pool.call().add(1) == 16  # state kept between calls
    with pytest.raises(CustomError, match="actor broke"):
        pool.call().fail("actor broke")
    assert pool.call().add(0) == 16  # the actor survives its exception
    server.shutdown()
    wait_for(lambda: pool.size == 0, 30, "the actor to be withdrawn")


def test_round_robin(v2_cluster: Cluster) -> None:
    server = ActorServer(v2_cluster)
    for i in range(3):
        server.register("named", Named(f"n{i}"))
    server.serve_background()
    try:
        pool = v2_cluster.resolver().lookup("named")
        pool.wait_for_size(3, timeout=60)
        assert pool.size == 3
        answers = [pool.call().whoami() for _ in range(6)]
        assert sorted(answers) == ["n0", "n0", "n1", "n1", "n2", "n2"]
        assert answers[:3] == answers[3:]  # the same rotation twice
    finally:
        server.shutdown()


def test_broadcast_with_one_failing_actor(v2_cluster: Cluster) -> None:
    server = ActorServer(v2_cluster)
    server.register("bcast", Named("good-0"))
    server.register("bcast", Named("bad", broken=True))
    server.register("bcast", Named("good-1"))
    server.serve_background()
    try:
        pool = v2_cluster.resolver().lookup("bcast")
        pool.wait_for_size(3, timeout=60)
        result = pool.broadcast().work(7)
        assert isinstance(result, BroadcastResult)
        outcomes = result.wait_all(timeout=60)
        assert len(outcomes) == 3
        errors = [o for o in outcomes if isinstance(o, BaseException)]
        assert len(errors) == 1 and isinstance(errors[0], CustomError)
        assert "bad is broken" in str(errors[0])
        assert sorted(o for o in outcomes if isinstance(o, str)) == ["good-0:7", "good-1:7"]
        assert pool.broadcast().work(1).wait_any(timeout=60) in ("good-0:1", "good-1:1")
    finally:
        server.shutdown()


def test_lookup_of_an_unknown_name(v2_cluster: Cluster) -> None:
    pool = v2_cluster.resolver().lookup(f"nobody-{uuid.uuid4().hex}")
    assert pool.size == 0
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        pool.wait_for_size(1, timeout=0.3)
    assert time.monotonic() - started < 10  # its timeout, not wait_for_size's default 60 s
    with pytest.raises(NoActorError):
        pool.call().whoami()
    assert pool.broadcast().whoami().wait_all(timeout=1) == []


def test_actors_are_found_only_in_their_namespace(v2_cluster: Cluster, backend: str) -> None:
    server = ActorServer(v2_cluster)
    server.register("private", Named("p"))
    server.serve_background()
    try:
        spec = f"{backend}?namespace=elsewhere-{uuid.uuid4().hex[:6]}"
        assert create_cluster(spec).resolver().lookup("private").size == 0
        assert v2_cluster.resolver().lookup("private").size == 1
    finally:
        server.shutdown()
