"""Resource requests, the client side: `ctx.options(resources=..., labels=...)` and
`ctx.create_actor(..., resources=..., labels=...)`.

The checks at the call, the Ray mapping, the routing rule (tasks with requirements never take
the direct path) and the unplaceable warning run without a cluster; the rest runs on a real
LocalFrayCluster with one CPU-only worker and one worker offering `gpus=1` (and the label
`gpu_type=T4`): GPU work lands only there, one GPU task at a time, while plain tasks keep
flowing, and work that no worker could run waits with its reason.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
from connectrpc.code import Code
from connectrpc.errors import ConnectError
from fray_fixtures import get_task, list_workers, wait_for
from fray_tasks import wait_for_file

from fray.client import no_workers
from fray.client.context import FrayContext
from fray.client.futures import FrayFuture
from fray.client.no_workers import NoWorkerWarning
from fray.client.routing import TaskRouter
from fray.job import SyncContext, ThreadPoolContext
from fray.job.context import validate_requirements
from fray.local_cluster import LocalFrayCluster
from fray.wire.controller_client import ControllerClient
from fray.wire.pb import controller_pb2 as pb

cloudpickle.register_pickle_by_value(sys.modules[__name__])

GIB = 1024**3


def worker_id(gate: str = "", marker: str = "") -> str:
    """The id of the worker running this (after the test creates `gate`, when given)."""
    if gate:
        wait_for_file(gate, None, marker)
    return os.environ["FRAY_WORKER_ID"]


class WhereAmI:
    """An actor that says which worker hosts it."""

    def worker(self) -> str:
        return os.environ["FRAY_WORKER_ID"]


# ---------------------------------------------------------------------- checks at the call


def test_requirements_are_normalised() -> None:
    resources, labels = validate_requirements(
        {"cpus": 2, "gpus": 0.5, "memory": "8GiB", "disk": 1024, "tpu": 0},
        {"gpu_type": "T4|A100", "zone": "us-east1"},
    )
    assert resources == {"cpus": 2.0, "gpus": 0.5, "memory": 8.0 * GIB, "disk": 1024.0}
    assert all(type(v) is float for v in resources.values())
    assert labels == {"gpu_type": "T4|A100", "zone": "us-east1"}
    assert validate_requirements(None, None) == ({}, {})
    assert validate_requirements({"gpus": 0}, {}) == ({}, {})  # zero asks for nothing


@pytest.mark.parametrize(
    ("resources", "labels", "match"),
    [
        ({"gpus": -1}, None, "finite amount >= 0"),
        ({"gpus": math.nan}, None, "finite amount >= 0"),
        ({"gpus": math.inf}, None, "finite amount >= 0"),
        ({"gpus": 10**400}, None, "finite amount >= 0"),
        ({"gpus": "1"}, None, "must be a number"),
        ({"gpus": True}, None, "must be a number"),
        ({"gpus": None}, None, "must be a number"),
        ({"memory": "lots"}, None, "cannot parse 'lots' as a size"),
        ({"memory": "-1g"}, None, "negative"),
        ({"": 1}, None, "names must be strings"),
        ({3: 1}, None, "names must be strings"),
        ({f"r{i}": 1 for i in range(65)}, None, "at most 64 resources"),
        (["gpus"], None, "resources must be a mapping"),
        (None, {"zone": 3}, "label 'zone' must be a string"),
        (None, {"zone": ""}, "label 'zone' must be a string"),
        (None, {"zone": "x" * 129}, "label 'zone' must be a string"),
        (None, {"": "a"}, "names must be strings"),
        (None, "zone=a", "labels must be a mapping"),
    ],
)
def test_bad_requirements_fail_at_the_call(resources: Any, labels: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        validate_requirements(resources, labels)
    for ctx in (SyncContext(), ThreadPoolContext(1)):
        with ctx:
            with pytest.raises(ValueError, match=match):
                ctx.options(resources=resources, labels=labels)
            with pytest.raises(ValueError, match=match):
                ctx.create_actor(WhereAmI, resources=resources, labels=labels)


def test_local_contexts_accept_requirements_and_ignore_them() -> None:
    for ctx in (SyncContext(), ThreadPoolContext(2)):
        with ctx:
            options = ctx.options(resources={"gpus": 8, "memory": "1TiB"}, labels={"zone": "a"})
            assert options.resources == {"gpus": 8.0, "memory": 1024.0 * GIB}
            assert options.labels == {"zone": "a"}
            assert ctx.get(options.run(sum, [1, 2])) == 3
            actor = ctx.create_actor(WhereAmI, resources={"gpus": 8}, labels={"zone": "a"})
            assert actor.worker is not None


def test_ray_options_from_requirements() -> None:
    pytest.importorskip("ray")
    from fray.job.ray_ctx import RayContext, _merged, ray_requirements

    resources, labels = validate_requirements(
        {"cpus": 2, "gpus": 1, "memory": "1GiB", "disk": 10, "tpu": 4},
        {"gpu_type": "T4|A100", "zone": "a"},
    )
    assert ray_requirements(resources, labels) == {
        "num_cpus": 2.0,
        "num_gpus": 1.0,
        "memory": GIB,
        "resources": {"disk": 10.0, "tpu": 4.0},
        "label_selector": {"gpu_type": "in(T4,A100)", "zone": "a"},
    }
    assert ray_requirements({}, {}) == {}
    base = {"num_cpus": 1, "resources": {"a": 1.0}, "label_selector": {"x": "y"}}
    extra = ray_requirements({"cpus": 3, "b": 2}, {"zone": "z"})
    assert _merged(base, extra) == {
        "num_cpus": 3,
        "resources": {"a": 1.0, "b": 2.0},
        "label_selector": {"x": "y", "zone": "z"},
    }
    # Checked at the call, before Ray is asked anything (no ray.init needed).
    with pytest.raises(ValueError, match="finite amount"):
        RayContext().options(resources={"gpus": -1})
    options = RayContext(ray_options={"num_cpus": 1}).options(resources={"gpus": 1})
    assert options.requirements == {"num_gpus": 1.0}


# ---------------------------------------------------------------------- routing


class _Table:
    def add(self, future: object) -> bool:
        return True


class _Submitter:
    def __init__(self) -> None:
        self.queued: list[str] = []

    def has_backlog(self) -> bool:
        return False

    def queue(self, spec: pb.TaskSpec, future: object) -> None:
        self.queued.append(spec.task_id)


class _Direct:
    def __init__(self) -> None:
        self.offered: list[str] = []

    def try_send(self, spec: pb.TaskSpec, future: object) -> bool:
        self.offered.append(spec.task_id)
        return True


def test_tasks_with_requirements_never_take_the_direct_path() -> None:
    submitter, direct = _Submitter(), _Direct()
    router = TaskRouter(_Table(), submitter, direct, None, lambda: False)  # type: ignore[arg-type]
    needs = pb.Requirements(resources={"gpus": 1.0})
    router.send(pb.TaskSpec(task_id="plain"), FrayFuture(router, "plain"))
    router.send(pb.TaskSpec(task_id="gpu", requirements=needs), FrayFuture(router, "gpu"))
    labelled = pb.Requirements(labels={"zone": "a"})
    router.send(pb.TaskSpec(task_id="zone", requirements=labelled), FrayFuture(router, "zone"))
    assert direct.offered == ["plain"]
    assert submitter.queued == ["gpu", "zone"]


# ---------------------------------------------------------------------- the warning


class _Controller:
    address = "http://controller"


def test_one_warning_per_unplaceable_reason(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="fray.client.no_workers")
    warning = NoWorkerWarning(_Controller(), lambda: 1, lambda: False)  # type: ignore[arg-type]
    gpus = "no worker offers gpus=4 (the most is 1)"
    zone = "no worker has label zone=b"
    for unplaceable in ({gpus: 2}, {gpus: 3}, {gpus: 3, zone: 1}, {zone: 1}, {zone: 1}):
        warning._check(pb.GetClusterSummaryResponse(workers=2, unplaceable=unplaceable), 1, 5.0)
    warning._check(pb.GetClusterSummaryResponse(workers=2, unplaceable={gpus: 1}), 1, 5.0)
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        f"2 task(s), actor(s) or job replica(s) wait at http://controller: {gpus}; they stay "
        "pending until a worker that offers it registers (`fray worker --resources ...`)",
        f"1 task(s), actor(s) or job replica(s) wait at http://controller: {zone}; they stay "
        "pending until a worker that offers it registers (`fray worker --resources ...`)",
        # gone, then back: warned again
        f"1 task(s), actor(s) or job replica(s) wait at http://controller: {gpus}; they stay "
        "pending until a worker that offers it registers (`fray worker --resources ...`)",
    ]


# ---------------------------------------------------------------------- on a cluster


@pytest.fixture(scope="module")
def gpu_cluster() -> Iterator[tuple[LocalFrayCluster, str, str]]:
    """A cluster with a CPU-only worker and a worker offering gpus=1 (label gpu_type=T4), each
    with 2 slots; yields (cluster, CPU worker id, GPU worker id)."""
    with LocalFrayCluster(workers=0, concurrency=2, heartbeat_timeout=5.0) as cluster:
        cluster.add_worker()
        cluster.add_worker("--resources", "gpus=1,gpu_type=T4")
        cluster.wait_for_workers(2)
        workers = list_workers(cluster.address)
        (gpu,) = [w for w, info in workers.items() if info.resources.labels.get("gpu_type")]
        (cpu,) = [w for w in workers if w != gpu]
        assert workers[gpu].resources.capacities.get("gpus") == 1.0, workers[gpu].resources
        yield cluster, cpu, gpu


@pytest.fixture
def ctx(gpu_cluster: tuple[LocalFrayCluster, str, str]) -> Iterator[FrayContext]:
    with FrayContext(gpu_cluster[0].address, retry_timeout=10) as context:  # direct path on
        yield context


def test_requirements_travel_to_the_controller_and_place_the_task(
    ctx: FrayContext, gpu_cluster: tuple[LocalFrayCluster, str, str]
) -> None:
    cluster, _, gpu = gpu_cluster
    options = ctx.options(resources={"gpus": 1, "cpus": 0.5}, labels={"gpu_type": "A100|T4"})
    future = options.run(worker_id)
    assert future.result(60) == gpu
    assert future.controller_id  # queued at the controller, not sent directly
    task = get_task(cluster.address, future.task_id)
    assert dict(task.requirements.resources) == {"gpus": 1.0, "cpus": 0.5}
    assert dict(task.requirements.labels) == {"gpu_type": "A100|T4"}
    assert task.worker_id == gpu


def test_a_gpu_task_holds_the_gpu_while_plain_tasks_flow(
    ctx: FrayContext, gpu_cluster: tuple[LocalFrayCluster, str, str], tmp_path: Path
) -> None:
    cluster, _, gpu = gpu_cluster
    gate, started = tmp_path / "gate", tmp_path / "started"
    gpu_options = ctx.options(resources={"gpus": 1})
    first = gpu_options.run(worker_id, str(gate), str(started))
    wait_for(started.exists, 60, "the first GPU task to start")
    assert get_task(cluster.address, first.task_id).worker_id == gpu
    second = gpu_options.run(worker_id)
    # Plain tasks keep running on both workers' free slots meanwhile.
    assert ctx.get([ctx.run(pow, i, 2) for i in range(200)], timeout=60) == [
        i * i for i in range(200)
    ]
    # ... while the second GPU task waits for the GPU, placeable but busy (no reason).
    assert not second.done()
    waiting = get_task(cluster.address, second.task_id)
    assert waiting.state == pb.TASK_STATE_PENDING
    assert waiting.pending_reason == ""
    gate.touch()
    assert first.result(60) == gpu
    assert second.result(60) == gpu


def test_unplaceable_work_waits_with_its_reason_and_is_warned_of_once(
    gpu_cluster: tuple[LocalFrayCluster, str, str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    cluster, _, _ = gpu_cluster
    monkeypatch.setattr(no_workers, "CHECK_SECONDS", 0.1)
    caplog.set_level(logging.WARNING, logger="fray.client.no_workers")
    with FrayContext(cluster.address, retry_timeout=10) as ctx:
        too_big = ctx.options(resources={"gpus": 4}).run(worker_id)
        elsewhere = ctx.options(labels={"zone": "mars"}).run(worker_id)
        gpus_reason = "no worker offers gpus=4 (the most is 1)"
        zone_reason = "no worker has label zone=mars"

        def reason(task_id: str) -> str:
            try:
                return get_task(cluster.address, task_id).pending_reason
            except ConnectError as exc:  # not sent by the submitter thread yet
                if exc.code != Code.NOT_FOUND:
                    raise
                return ""

        wait_for(lambda: reason(too_big.task_id) == gpus_reason, 30, "the gpus reason")
        wait_for(lambda: reason(elsewhere.task_id) == zone_reason, 30, "the zone reason")
        client = ControllerClient(cluster.address, retry_timeout=5)
        try:
            listed = client.call(client.rpc.list_tasks, pb.ListTasksRequest()).tasks
            summary = client.call(client.rpc.get_cluster_summary, pb.GetClusterSummaryRequest())
        finally:
            client.close()
        reasons = {t.task_id: t.pending_reason for t in listed}
        assert reasons[too_big.task_id] == gpus_reason
        assert reasons[elsewhere.task_id] == zone_reason
        assert summary.unplaceable[gpus_reason] >= 1
        assert summary.unplaceable[zone_reason] >= 1
        checker = ctx._collector.no_workers

        def warnings() -> list[str]:
            return [r.getMessage() for r in caplog.records if r.name == no_workers.__name__]

        wait_for(lambda: len(warnings()) >= 2, 30, "the warnings")
        seen = checker.summaries
        wait_for(lambda: checker.summaries >= seen + 3, 30, "three more checks")
        (gpus_warning,) = [m for m in warnings() if gpus_reason in m]
        (zone_warning,) = [m for m in warnings() if zone_reason in m]
        assert gpus_warning.startswith("1 task(s), actor(s) or job replica(s) wait at ")
        assert len(warnings()) == 2
        assert not too_big.done() and not elsewhere.done()
    assert too_big.cancelled() or too_big.exception(5) is not None  # closing ended them


def test_an_actor_with_resources_lands_on_the_gpu_worker(
    ctx: FrayContext, gpu_cluster: tuple[LocalFrayCluster, str, str]
) -> None:
    cluster, cpu, gpu = gpu_cluster
    actor = ctx.create_actor(WhereAmI, resources={"gpus": 1}, labels={"gpu_type": "T4"})
    assert ctx.get(actor.worker.remote(), timeout=60) == gpu
    client = ControllerClient(cluster.address, retry_timeout=5)
    try:
        info = client.call(client.rpc.get_actor, pb.GetActorRequest(actor_id=actor.actor_id))
    finally:
        client.close()
    assert dict(info.actor.requirements.resources) == {"gpus": 1.0}
    # Plain actors still go anywhere; the GPU actor holds the GPU until killed.
    plain = ctx.create_actor(WhereAmI)
    assert ctx.get(plain.worker.remote(), timeout=60) in (cpu, gpu)
    ctx.kill_actor(actor)  # gives the GPU back
    assert ctx.options(resources={"gpus": 1}).run(worker_id).result(60) == gpu


@pytest.mark.timeout(360)
def test_ray_tasks_and_actors_get_the_label_selector(ray_session: Any) -> None:
    from fray.job.ray_ctx import RayContext

    ray_session.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    node = ray_session.get_runtime_context().get_node_id()
    ctx = RayContext()
    # A node id Ray does not know inside "in(...)" crashes Ray 2.60's driver (its locality
    # policy parses every value as a node id): "a|b" -> "in(a,b)" is checked without Ray above.
    here = {"ray.io/node-id": node}
    future = ctx.options(resources={"cpus": 1}, labels=here).run(sum, [1, 2])
    assert ctx.get(future, timeout=120) == 3
    counter = ctx.create_actor(WhereAmI, resources={"cpus": 0.5}, labels=here)
    ready, _ = ray_session.wait([counter.__ray_ready__.remote()], timeout=120)
    assert ready
    ray_session.kill(counter)
