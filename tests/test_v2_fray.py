"""Tests of what is particular to fray.v2's fray backend (the shared contract is
tests/test_v2_cluster.py).

Spec parsing and the resource mapping are plain functions; the rest runs on a real controller
with two worker processes (:class:`fray.local_cluster.LocalFrayCluster`), shared by the module.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import cloudpickle
import pytest
from fray_fixtures import free_port, process_gone, wait_for
from fray_tasks import square

from fray.errors import ControllerUnavailableError, FrayError
from fray.local_cluster import LocalFrayCluster
from fray.v2 import (
    ActorServer,
    Entrypoint,
    EnvironmentSpec,
    JobFailedError,
    Namespace,
    ResourceSpec,
    create_cluster,
)
from fray.v2.backends.fray.cluster import FrayCluster, job_namespace
from fray.v2.backends.fray.jobs import build_job_spec
from fray.v2.backends.fray.resources import resources_and_labels
from fray.v2.factory import parse_cluster_spec
from fray.wire.controller_client import ControllerClient
from fray.wire.pb import controller_pb2 as pb

cloudpickle.register_pickle_by_value(sys.modules[__name__])

SMALL = ResourceSpec(cpu=0.25)


# --- specs and mappings (no controller) ----------------------------------------------------


def test_a_fray_spec_needs_an_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FRAY_CONTROLLER_ADDRESS", raising=False)
    with pytest.raises(ValueError, match="FRAY_CONTROLLER_ADDRESS"):
        create_cluster("fray")
    with pytest.raises(ValueError, match="FRAY_CONTROLLER_ADDRESS"):
        create_cluster("fray?namespace=x")
    monkeypatch.setenv("FRAY_CONTROLLER_ADDRESS", "127.0.0.1:1")
    cluster = create_cluster("fray?namespace=x")  # nothing is contacted yet
    assert isinstance(cluster, FrayCluster)
    assert cluster.address == "http://127.0.0.1:1" and cluster.namespace == "x"
    with pytest.raises(ValueError):
        create_cluster("fray?address=http://[nonsense")


def test_the_spec_reaches_the_same_controller_and_namespace() -> None:
    cluster = create_cluster("fray?address=http://10.0.0.5:7625&namespace=team a/b")
    assert isinstance(cluster, FrayCluster)
    backend, options = parse_cluster_spec(cluster.spec)
    assert backend == "fray"
    assert options == {"address": "http://10.0.0.5:7625", "namespace": "team a/b"}
    again = create_cluster(cluster.spec)
    assert isinstance(again, FrayCluster)
    assert (again.address, again.namespace) == (cluster.address, cluster.namespace)


@pytest.mark.parametrize(
    ("spec", "resources", "labels"),
    [
        (ResourceSpec(), {"cpus": 1.0}, {}),
        (ResourceSpec(cpu=0), {}, {}),
        (
            ResourceSpec(cpu=2, memory="1g", disk="2g"),
            {"cpus": 2.0, "memory": float(2**30), "disk": float(2**31)},
            {},
        ),
        (ResourceSpec.with_gpu("H100", count=2), {"cpus": 1.0, "gpus": 2.0}, {"gpu_type": "H100"}),
        (ResourceSpec.with_gpu(), {"cpus": 1.0, "gpus": 1.0}, {}),
        (ResourceSpec.with_tpu("v5litepod-4"), {"cpus": 1.0, "tpus": 4.0}, {"tpu": "v5litepod-4"}),
        (
            ResourceSpec(regions=["us-east1", "us-west1"], preemptible=False),
            {"cpus": 1.0},
            {"region": "us-east1|us-west1"},
        ),
    ],
)
def test_resource_mapping(
    spec: ResourceSpec, resources: dict[str, float], labels: dict[str, str]
) -> None:
    assert resources_and_labels(spec) == (resources, labels)


def test_job_namespaces_travel_in_the_owner() -> None:
    assert job_namespace("fray.v2/team%2Fa/abc") == "team/a"
    assert job_namespace("fray.v2/x/abc") == "x"
    assert job_namespace("client-123") == "fray"  # `fray job submit`, curl: the default


def test_job_specs() -> None:
    env = {"A": "1"}
    spec = build_job_spec(
        "j-1", "j", Entrypoint.from_callable(print, args=("hi",)), SMALL, env, "/w", "me"
    )
    assert spec.entrypoint and not spec.command
    assert cloudpickle.loads(spec.entrypoint) == (print, ("hi",), {})
    assert (spec.job_id, spec.name, spec.replicas, spec.working_dir, spec.owner) == (
        "j-1",
        "j",
        1,
        "/w",
        "me",
    )
    assert dict(spec.env) == env and dict(spec.requirements.resources) == {"cpus": 0.25}
    binary = Entrypoint.from_binary("echo", ["hi"])
    spec = build_job_spec("j-2", "j", binary, ResourceSpec(replicas=3), {}, None, "me")
    assert list(spec.command) == ["echo", "hi"] and not spec.entrypoint
    assert spec.replicas == 3 and spec.working_dir == ""


# --- on a controller -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def controller() -> Iterator[LocalFrayCluster]:
    with LocalFrayCluster(workers=2, concurrency=2, heartbeat_timeout=5.0) as cluster:
        yield cluster


@pytest.fixture
def fray_cluster(controller: LocalFrayCluster) -> Iterator[FrayCluster]:
    address = controller.address
    with FrayCluster(address, namespace=Namespace(f"test-{uuid.uuid4().hex[:8]}")) as cluster:
        yield cluster


def wait_for_file(path: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(path)
        time.sleep(0.02)
    return Path(path).read_text()


def die() -> None:
    os._exit(3)


class Pid:
    def pid(self) -> int:
        return os.getpid()


def call_through_another_cluster(spec: str, name: str) -> int:
    """Runs in a pool worker: reach the actor ``name`` from there."""
    return int(create_cluster(spec).resolver().lookup(name).call().pid())


def test_a_long_call_does_not_hold_up_the_others(fray_cluster: FrayCluster, tmp_path: Path) -> None:
    gate = str(tmp_path / "gate")
    with fray_cluster.worker_pool(2, SMALL) as pool:
        slow = pool.submit(wait_for_file, gate)
        assert [pool.submit(square, i).result(timeout=60) for i in range(5)] == [
            0,
            1,
            4,
            9,
            16,
        ]
        assert not slow.done()
        Path(gate).write_text("open")
        assert slow.result(timeout=60) == "open"


def test_a_pool_actor_that_dies_fails_its_call_and_is_replaced(fray_cluster: FrayCluster) -> None:
    with fray_cluster.worker_pool(1, SMALL) as pool:
        first = pool.submit(os.getpid).result(timeout=60)
        with pytest.raises(RuntimeError, match="died"):
            pool.submit(die).result(timeout=60)
        assert pool.submit(square, 3).result(timeout=60) == 9
        assert pool.submit(os.getpid).result(timeout=60) != first


def test_shutdown_kills_the_pool_actors(fray_cluster: FrayCluster, tmp_path: Path) -> None:
    env = EnvironmentSpec(workspace=str(tmp_path))
    pool = fray_cluster.worker_pool(2, SMALL, env)
    assert pool.submit(os.getcwd).result(timeout=60) == str(tmp_path)
    assert str(tmp_path) in pool.submit(lambda: sys.path[:2]).result(timeout=60)
    pids = {pool.submit(os.getpid).result(timeout=60) for _ in range(4)}
    pool.shutdown()
    wait_for(lambda: all(process_gone(pid) for pid in pids), 30, f"pool actors {pids} to end")


def test_an_actor_whose_process_dies_drops_out(fray_cluster: FrayCluster) -> None:
    server = ActorServer(fray_cluster)
    server.register("pids", Pid())
    server.register("pids", Pid())
    server.serve_background()
    try:
        pool = fray_cluster.resolver().lookup("pids")
        pool.wait_for_size(2, timeout=60)
        pids = sorted(r for r in pool.broadcast().pid().wait_all(timeout=60))
        os.kill(pids[0], signal.SIGKILL)
        wait_for(lambda: pool.size == 1, 30, "the dead actor to leave its pool")
        assert {pool.call().pid() for _ in range(3)} == {pids[1]}
    finally:
        server.shutdown()


def test_actors_are_found_from_other_processes(fray_cluster: FrayCluster) -> None:
    server = ActorServer(fray_cluster)
    server.register("shared", Pid())
    server.serve_background()
    try:
        actor_pid = fray_cluster.resolver().lookup("shared").call().pid()
        with fray_cluster.worker_pool(1, SMALL) as pool:
            future = pool.submit(call_through_another_cluster, fray_cluster.spec, "shared")
            assert future.result(timeout=60) == actor_pid
    finally:
        server.shutdown()


def current_spec() -> str:
    from fray.v2 import current_cluster

    return str(current_cluster().spec)  # type: ignore[attr-defined]


class SpecReporter:
    def spec(self) -> str:
        return current_spec()


def test_current_cluster_in_pool_tasks_and_actors(fray_cluster: FrayCluster) -> None:
    with fray_cluster.worker_pool(1, SMALL) as pool:
        assert pool.submit(current_spec).result(timeout=60) == fray_cluster.spec
    with ActorServer(fray_cluster) as server:
        server.register("spec", SpecReporter())
        server.serve_background()
        assert fray_cluster.resolver().lookup("spec").call().spec() == fray_cluster.spec


def pending_reasons(address: str) -> str:
    """The pending reasons of the controller's actors, joined."""
    client = ControllerClient(address, retry_timeout=5)
    try:
        actors = client.call(client.rpc.list_actors, pb.ListActorsRequest()).actors
    finally:
        client.close()
    return " ".join(a.pending_reason for a in actors)


def env_value(name: str) -> str | None:
    return os.environ.get(name)


def test_pool_workers_hold_the_pools_resources() -> None:
    """A GPU pool waits on a cluster without GPUs, then runs on the worker that offers one;
    its second actor, for which there is no GPU, takes no call meanwhile."""
    cpu_only = LocalFrayCluster(workers=1, worker_args=("--resources", "cpus=2"))
    with cpu_only as cluster, FrayCluster(cluster.address) as fray_cluster:
        pool = fray_cluster.worker_pool(2, ResourceSpec.with_gpu("H100", cpu=1))
        try:
            future = pool.submit(env_value, "FRAY_TEST_WORKER")
            wait_for(lambda: "gpu" in pending_reasons(cluster.address), 30, "a pending reason")
            assert not future.done()
            cluster.env["FRAY_TEST_WORKER"] = "gpu"
            cluster.add_worker("--resources", "cpus=2,gpus=1,gpu_type=H100")
            assert future.result(timeout=60) == "gpu"
            futures = [pool.submit(env_value, "FRAY_TEST_WORKER") for _ in range(4)]
            assert [f.result(timeout=30) for f in futures] == ["gpu"] * 4
        finally:
            started = time.monotonic()
            pool.shutdown()
            assert time.monotonic() - started < 15  # the unplaced actor holds nothing up


def test_the_token_comes_from_fray_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FRAY_TOKEN", raising=False)
    with LocalFrayCluster(workers=1, env={"FRAY_TOKEN": "s3cret"}) as cluster:
        with FrayCluster(cluster.address) as without, pytest.raises(FrayError, match="unauth"):
            without.list_jobs()
        monkeypatch.setenv("FRAY_TOKEN", "s3cret")
        with create_cluster(f"fray?address={cluster.address}") as fray_cluster:  # type: ignore[attr-defined]
            job = fray_cluster.submit(Entrypoint.from_callable(print), "tok", SMALL)
            assert job.wait(timeout=60) == "succeeded"
            with fray_cluster.worker_pool(1, SMALL) as pool:
                assert pool.submit(square, 4).result(timeout=60) == 16


def test_no_controller_at_the_address() -> None:
    cluster = create_cluster(f"fray?address=127.0.0.1:{free_port()}")
    started = time.monotonic()
    with pytest.raises(ControllerUnavailableError, match="no fray controller"):
        cluster.list_jobs()
    with pytest.raises(ControllerUnavailableError):
        cluster.worker_pool(1, SMALL)
    assert time.monotonic() - started < 20


# --- jobs ----------------------------------------------------------------------------------


def say_from(marker: str) -> None:
    print(f"{marker} from {os.environ['FRAY_TASK_INDEX']}")


def write_spec(path: str) -> None:
    Path(path).write_text(current_spec())


def test_list_jobs_lists_the_namespaces_jobs_from_any_client(
    fray_cluster: FrayCluster, controller: LocalFrayCluster
) -> None:
    job = fray_cluster.submit(Entrypoint.from_callable(print), "listed", SMALL)
    job.wait(timeout=60)
    same = FrayCluster(controller.address, namespace=fray_cluster.namespace)
    other = FrayCluster(controller.address, namespace=Namespace("elsewhere"))
    try:
        assert [j.job_id for j in same.list_jobs()] == [job.job_id]
        assert job.job_id not in [j.job_id for j in other.list_jobs()]
        other.terminate(job.job_id)  # any client may stop a job; a finished one stays so
        assert same.list_jobs()[0].status() == "succeeded"
    finally:
        same.shutdown()
        other.shutdown()


def test_streamed_replicas_are_prefixed_with_their_index(
    fray_cluster: FrayCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    job = fray_cluster.submit(
        Entrypoint.from_callable(say_from, args=("hello",)),
        "pair",
        ResourceSpec(cpu=0.25, replicas=2),
    )
    assert job.wait(timeout=60, stream_logs=True) == "succeeded"
    lines = capsys.readouterr().out.splitlines()
    assert f"[{job.job_id}/0] hello from 0" in lines
    assert f"[{job.job_id}/1] hello from 1" in lines
    assert job.logs().splitlines() == ["hello from 0", "hello from 1"]


def test_a_job_reaches_the_same_cluster(fray_cluster: FrayCluster, tmp_path: Path) -> None:
    out = str(tmp_path / "spec")
    job = fray_cluster.submit(Entrypoint.from_callable(write_spec, args=(out,)), "spec", SMALL)
    assert job.wait(timeout=60) == "succeeded"
    assert Path(out).read_text() == fray_cluster.spec


def test_binary_entrypoints(fray_cluster: FrayCluster, tmp_path: Path) -> None:
    ok = fray_cluster.submit(
        Entrypoint.from_binary(sys.executable, ["-c", "import os; print(os.getcwd())"]),
        "binary",
        SMALL,
        EnvironmentSpec(workspace=str(tmp_path)),
    )
    assert ok.wait(timeout=60) == "succeeded"
    assert ok.logs() == f"{tmp_path}\n"
    bad = fray_cluster.submit(
        Entrypoint.from_binary(sys.executable, ["-c", "raise SystemExit(3)"]), "binary", SMALL
    )
    with pytest.raises(JobFailedError, match="code 3"):
        bad.wait(timeout=60)


def test_an_unfittable_job_waits_and_can_be_stopped(fray_cluster: FrayCluster) -> None:
    job = fray_cluster.submit(Entrypoint.from_callable(print), "huge", ResourceSpec(cpu=1000))
    with pytest.raises(TimeoutError):
        job.wait(timeout=0.5)
    assert job.status() == "pending"
    assert "cpus" in job.describe().pending_reason
    job.terminate()
    assert job.wait(timeout=10) == "killed"


def test_leaving_a_pool_runs_the_work_whose_actors_are_placed_late(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`with pool:` waits for submitted work (concurrent.futures semantics) even when no
    actor was placed yet; the pool says once why its actor waits."""
    from fray.v2.backends.fray import pool as pool_module

    monkeypatch.setattr(pool_module, "_WARN_AFTER", 1.0)
    with (
        LocalFrayCluster(workers=1, worker_args=("--resources", "cpus=2")) as cluster,
        FrayCluster(cluster.address) as fray_cluster,
    ):
        with caplog.at_level("WARNING", logger="fray.v2.backends.fray.pool"):
            with fray_cluster.worker_pool(1, ResourceSpec(cpu=1, regions=("mars",))) as pool:
                futures = [pool.submit(square, i) for i in range(3)]
                wait_for(lambda: "region=mars" in caplog.text, 30, "the pool's warning")
                # The worker that fits joins only after the pool is left.
                joiner = threading.Timer(
                    1.0, cluster.add_worker, args=("--resources", "cpus=2,region=mars")
                )
                joiner.start()
            assert [f.result(timeout=0) for f in futures] == [0, 1, 4]  # done when `with` ends
            joiner.join()
        assert caplog.text.count("no worker has label region=mars") == 1


def test_a_call_after_an_idle_pool_actor_died_runs_on_its_replacement(
    fray_cluster: FrayCluster, controller: LocalFrayCluster
) -> None:
    with fray_cluster.worker_pool(1, SMALL) as pool:
        first = pool.submit(os.getpid).result(timeout=60)
        os.kill(first, signal.SIGKILL)  # idle: no call is running
        client = ControllerClient(controller.address)
        try:

            def dead() -> bool:
                request = pb.ListActorsRequest(state=pb.ACTOR_STATE_DEAD)
                actors = client.call(client.rpc.list_actors, request).actors
                return any(a.class_name.endswith("PoolWorker") for a in actors)

            wait_for(dead, 30, "the controller to see the pool actor dead")
        finally:
            client.close()
        second = pool.submit(os.getpid).result(timeout=60)  # not failed: it never ran before
        assert second != first


def test_current_cluster_after_leaving_it(
    controller: LocalFrayCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fray.v2 import current_cluster

    monkeypatch.setenv("FRAY_CLUSTER_SPEC", f"fray?address={controller.address}")
    with current_cluster() as cluster:  # type: ignore[attr-defined]
        assert cluster.list_jobs() is not None
    again = current_cluster()
    assert again is not cluster and isinstance(again, FrayCluster)
    assert again.list_jobs() is not None
    again.shutdown()
