"""The Iris backend of fray.v2 (``create_cluster("iris?...")``), against the Iris stand-in.

Iris is not installable here: ``tests/iris_standin`` is a small package named ``iris`` that
follows the part of Iris's client interface the backend uses (its README says what it models).
The fixture puts it on ``sys.path`` for one test at a time and removes it afterwards, so the
rest of the suite still sees no ``iris`` (``test_v2_types`` checks the missing-package error).

The cluster contract of ``test_v2_cluster`` runs here too, with its tests imported and a
``v2_cluster`` fixture of this module's; the tests below it are the Iris-specific ones.
"""

from __future__ import annotations

import importlib.util
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fray_fixtures import wait_for
from test_v2_cluster import (  # the contract, run against Iris (see the module docstring)
    Counter,
    Named,
    test_a_failed_replica_fails_the_job_and_stops_the_others,
    test_actor_round_trip,
    test_actors_are_found_only_in_their_namespace,
    test_bad_job_names,
    test_broadcast_with_one_failing_actor,
    test_job_environment,
    test_job_failure_carries_the_traceback,
    test_job_logs_are_captured_per_job,
    test_job_succeeds,
    test_lookup_of_an_unknown_name,
    test_protocols,
    test_replicas_run_as_separate_tasks,
    test_round_robin,
    test_terminate_stops_the_code,
    test_terminating_an_unknown_job_names_it,
    test_wait_times_out_and_the_job_keeps_running,
    test_worker_pool,
    test_worker_pool_environment,
)

from fray.v2 import (
    ActorServer,
    Cluster,
    Entrypoint,
    EnvironmentSpec,
    JobFailedError,
    JobStatus,
    ResourceSpec,
    create_cluster,
)

CONTRACT = [
    test_a_failed_replica_fails_the_job_and_stops_the_others,
    test_actor_round_trip,
    test_actors_are_found_only_in_their_namespace,
    test_bad_job_names,
    test_broadcast_with_one_failing_actor,
    test_job_environment,
    test_job_failure_carries_the_traceback,
    test_job_logs_are_captured_per_job,
    test_job_succeeds,
    test_lookup_of_an_unknown_name,
    test_protocols,
    test_replicas_run_as_separate_tasks,
    test_round_robin,
    test_terminate_stops_the_code,
    test_terminating_an_unknown_job_names_it,
    test_wait_times_out_and_the_job_keeps_running,
    test_worker_pool,
    test_worker_pool_environment,
]

STANDIN = Path(__file__).resolve().parent / "iris_standin"
SMALL = ResourceSpec(cpu=0.25)


def _forget_iris() -> None:
    for name in [m for m in sys.modules if m == "iris" or m.startswith("iris.")]:
        del sys.modules[name]


@pytest.fixture
def iris_standin(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The stand-in on ``sys.path``; yields a fresh controller address for it."""
    monkeypatch.syspath_prepend(str(STANDIN))
    monkeypatch.setenv("IRIS_STANDIN_ROOT", str(tmp_path_factory.mktemp("iris")))
    yield f"http://iris-standin-{uuid.uuid4().hex[:8]}:10000"
    standin = sys.modules.get("iris.cluster.client.standin_cluster")
    if standin is not None:
        standin.kill_all()
    _forget_iris()


@pytest.fixture
def backend() -> str:
    return "iris"


@pytest.fixture
def v2_cluster(iris_standin: str) -> Iterator[Cluster]:
    cluster = create_cluster(f"iris?address={iris_standin}&namespace=test-{uuid.uuid4().hex[:8]}")
    yield cluster
    cluster.shutdown()  # type: ignore[attr-defined]


# --- the package and the spec ------------------------------------------------------------------


def test_the_missing_package_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    _forget_iris()
    monkeypatch.setattr(sys, "path", [p for p in sys.path if Path(p or ".") != STANDIN])
    assert importlib.util.find_spec("iris") is None
    with pytest.raises(ValueError, match="needs Marin's 'iris' package, which is not installed"):
        create_cluster("iris?address=http://controller:10000")


def test_spec_options(iris_standin: str) -> None:
    cluster = create_cluster(f"iris?address={iris_standin}&namespace=team&workspace=/srv/ws")
    assert type(cluster).__name__ == "IrisCluster"
    assert cluster.namespace == "team"
    assert cluster.spec == (  # type: ignore[attr-defined]
        f"iris?address={iris_standin}&namespace=team&workspace=/srv/ws"
    )
    local = create_cluster("iris")  # no address: IrisClient.local()
    assert local.namespace == "fray"
    local.shutdown()  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="unknown option 'colour' for 'iris'"):
        create_cluster("iris?colour=blue")


# --- conversions -----------------------------------------------------------------------------


def test_resources_become_iris_resources_and_constraints(iris_standin: str) -> None:
    from iris.cluster.types import ConstraintOp

    from fray.v2.backends.iris import iris_resources

    res, constraints = iris_resources(ResourceSpec(cpu=0.5, memory="2g", disk="10g"))
    assert (res.cpu, res.memory, res.disk, res.device) == (1, 2 * 2**30, 10 * 2**30, None)
    assert constraints == []

    res, constraints = iris_resources(
        ResourceSpec.with_gpu("H100", count=8, cpu=16, preemptible=False, regions=["us-east1"])
    )
    assert (res.device.gpu.variant, res.device.gpu.count, res.cpu) == ("H100", 8, 16)
    assert [(c.key, c.op, c.value) for c in constraints] == [
        ("preemptible", ConstraintOp.EQ, "false"),
        ("region", ConstraintOp.EQ, "us-east1"),
    ]
    res, constraints = iris_resources(ResourceSpec.with_gpu("auto", regions=["a", "b"]))
    assert res.device.gpu.variant == ""  # any kind
    assert [(c.key, c.op, c.values) for c in constraints] == [
        ("region", ConstraintOp.IN, ("a", "b"))
    ]

    res, _ = iris_resources(ResourceSpec.with_tpu("v4-8", replicas=2))
    assert (res.device.tpu.variant, res.device.tpu.count) == ("v4-8", 4)


def test_environment_becomes_an_iris_environment(iris_standin: str) -> None:
    from fray.v2.backends.iris import iris_environment

    env = iris_environment(
        EnvironmentSpec(pip_packages=["numpy"], env_vars={"A": "1"}, extras=["gpu"]),
        {"FRAY_JOB_ID": "j-1"},
    )
    assert env.pip_packages == ["numpy"]
    assert env.extras == ["gpu"]
    assert env.env_vars == {"A": "1", "FRAY_JOB_ID": "j-1"}


def test_the_iris_job_gets_fray_resources_and_replicas(v2_cluster: Cluster) -> None:
    job: Any = v2_cluster.submit(
        Entrypoint.from_callable(print, args=("x",)), "sized", ResourceSpec(cpu=2, replicas=2)
    )
    assert job.wait(timeout=60) == JobStatus.SUCCEEDED
    assert str(job.iris_job.job_id) == job.job_id  # the Iris job is named with fray's id
    assert job.iris_job.status().num_tasks == 2
    assert job.logs() == "x\nx\n"


# --- jobs --------------------------------------------------------------------------------------


def write_cwd(path: str) -> None:
    import os

    Path(path).write_text(os.getcwd())


def test_a_job_runs_in_its_workspace(v2_cluster: Cluster, tmp_path: Path) -> None:
    out = tmp_path / "cwd"
    job = v2_cluster.submit(
        Entrypoint.from_callable(write_cwd, args=(str(out),)),
        "ws",
        SMALL,
        EnvironmentSpec(workspace=str(tmp_path)),
    )
    assert job.wait(timeout=60) == JobStatus.SUCCEEDED
    assert out.read_text() == str(tmp_path)


def test_a_binary_job_exits_as_its_program(v2_cluster: Cluster) -> None:
    job: Any = v2_cluster.submit(
        Entrypoint.from_binary("sh", ["-c", "echo from sh; exit 3"]), "bin", SMALL
    )
    with pytest.raises(JobFailedError) as info:
        job.wait(timeout=60)
    assert "task 0 failed (exit code 3)" in info.value.error
    assert job.logs() == "from sh\n"
    assert job.status() == JobStatus.FAILED


def test_list_and_terminate_through_the_cluster(v2_cluster: Cluster, tmp_path: Path) -> None:
    from test_v2_cluster import tick_forever

    job = v2_cluster.submit(
        Entrypoint.from_callable(tick_forever, args=(str(tmp_path / "t"),)), "t", SMALL
    )
    assert [j.job_id for j in v2_cluster.list_jobs()] == [job.job_id]
    v2_cluster.terminate(job.job_id)
    assert job.status() == JobStatus.KILLED
    v2_cluster.terminate(job.job_id)  # again: nothing left to stop


# --- actors and pools ---------------------------------------------------------------------------


def call_counter(namespace_check: str) -> None:
    """A job that finds the test's actor through its own current_cluster()."""
    from fray.v2 import current_cluster

    cluster = current_cluster()
    assert cluster.namespace == namespace_check
    print("total", cluster.resolver().lookup("counter").call().add(5))


def test_a_job_reaches_an_actor_through_its_cluster(v2_cluster: Cluster) -> None:
    server = ActorServer(v2_cluster)
    server.register("counter", Counter(100))
    server.serve_background()
    try:
        job: Any = v2_cluster.submit(
            Entrypoint.from_callable(call_counter, args=(v2_cluster.namespace,)), "caller", SMALL
        )
        assert job.wait(timeout=60) == JobStatus.SUCCEEDED
        assert job.logs() == "total 105\n"
        assert v2_cluster.resolver().lookup("counter").call().add(0) == 105
    finally:
        server.shutdown()


def test_namespaces_on_one_controller(iris_standin: str) -> None:
    spec = f"iris?address={iris_standin}&namespace="
    mine, same, other = (create_cluster(spec + ns) for ns in ("ns-a", "ns-a", "ns-b"))
    server = ActorServer(mine)
    server.register("svc", Named("a"))
    server.serve_background()
    try:
        assert same.resolver().lookup("svc").call().whoami() == "a"  # another object, same ns
        assert other.resolver().lookup("svc").size == 0
    finally:
        server.shutdown()
    pool = mine.resolver().lookup("svc")
    wait_for(lambda: pool.size == 0, 30, "the actor's job to end")
    for cluster in (mine, same, other):
        cluster.shutdown()  # type: ignore[attr-defined]


def test_an_actor_that_cannot_start_says_why(v2_cluster: Cluster) -> None:
    class Unpicklable:
        def __reduce__(self) -> Any:
            return (_boom, ())

    server = ActorServer(v2_cluster)
    server.register("broken", Unpicklable())
    with pytest.raises(RuntimeError, match="(?s)the actor's Iris job .* ended.*cannot build"):
        server.serve_background()
    server.shutdown()


def _boom() -> None:
    raise ValueError("cannot build this actor")


def test_shutdown_stops_pools_and_actors(iris_standin: str) -> None:
    cluster: Any = create_cluster(f"iris?address={iris_standin}&namespace=gone")
    pool = cluster.worker_pool(1, SMALL)
    assert pool.submit(sum, [1, 2]).result(timeout=60) == 3
    ActorServer(cluster).register("x", Named("x"))  # queued only: not served
    hosted = cluster.host_actor("y", Named("y"))
    hosted.wait_ready(60)
    cluster.shutdown()
    assert cluster.is_shut_down
    assert _job_status_of(hosted.iris_job) == JobStatus.KILLED
    with pytest.raises(RuntimeError):
        pool.submit(sum, [1])


def _job_status_of(iris_job: Any) -> JobStatus:
    from fray.v2.backends.iris import _job_status

    return _job_status(iris_job.status().state)
