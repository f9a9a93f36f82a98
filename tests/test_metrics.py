"""GET /metrics on the controller and on workers (Prometheus text, parsed back), GET /healthz on
the controller, the token rule for both, and the throughput ring the dashboard draws."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator

import cloudpickle
import pytest
from fray_tasks import add
from prometheus_client.parser import text_string_to_metric_families

from fray.client.context import FrayContext
from fray.controller.metrics import THROUGHPUT_SECONDS, ControllerMetrics
from fray.controller.records import TaskOutcome, TaskSpec, TaskState
from fray.controller.server import ControllerServer
from fray.controller.state import ControllerState
from fray.local_cluster import LocalFrayCluster

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def fail() -> None:
    raise RuntimeError("counted as failed")


def get(url: str, token: str | None = None) -> tuple[int, str, str]:
    """(status, content type, body) of a GET."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
            return r.status, r.headers["content-type"], r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["content-type"], exc.read().decode()


def scrape(url: str, token: str | None = None) -> Samples:
    status, content_type, body = get(url + "/metrics", token)
    assert status == 200 and content_type.startswith("text/plain"), (status, body)
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalFrayCluster]:
    with LocalFrayCluster(workers=2, concurrency=1) as c:
        yield c


def test_controller_metrics_count_what_happened(cluster: LocalFrayCluster) -> None:
    before = scrape(cluster.address)
    ctx = FrayContext(cluster.address, direct=False)
    try:
        assert ctx.get([ctx.run(add, i, 1) for i in range(20)]) == list(range(1, 21))
        with pytest.raises(RuntimeError):
            ctx.get(ctx.run(fail))
        ref = ctx.put(b"x" * 1000)
        after = scrape(cluster.address)
    finally:
        ctx.close()

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("fray_tasks_submitted_total") == 21
    assert grew("fray_tasks_finished_total", state="COMPLETED") == 20
    assert grew("fray_tasks_finished_total", state="FAILED") == 1
    assert grew("fray_task_duration_seconds_count", state="COMPLETED") == 20
    assert grew("fray_task_queue_wait_seconds_count") >= 21  # one per lease
    assert grew("fray_rpc_duration_seconds_count", server="controller", method="SubmitTasks") >= 1
    assert value(after, "fray_workers_alive") == 2
    assert value(after, "fray_slots", kind="total") == 2
    assert value(after, "fray_queue_depth") == 0
    assert value(after, "fray_tasks", state="COMPLETED") >= 20
    assert value(after, "fray_objects") >= 1
    assert value(after, "fray_object_bytes") >= 1000
    del ref


def test_worker_metrics_count_the_tasks_they_ran(cluster: LocalFrayCluster) -> None:
    status, _, body = get(cluster.address + "/api/dashboard")
    assert status == 200
    addresses = [w["address"] for w in json.loads(body)["workers"]]
    assert len(addresses) == 2
    before = [scrape(a) for a in addresses]
    ctx = FrayContext(cluster.address)  # the direct path, then the queue
    try:
        assert ctx.get([ctx.run(add, i, i) for i in range(30)]) == [2 * i for i in range(30)]
    finally:
        ctx.close()
    after = [scrape(a) for a in addresses]
    ran = sum(
        value(a, "fray_worker_tasks_total", outcome="completed")
        - value(b, "fray_worker_tasks_total", outcome="completed")
        for a, b in zip(after, before, strict=True)
    )
    assert ran == 30
    for samples in after:
        assert value(samples, "fray_worker_slots") == 1
        assert value(samples, "fray_worker_tasks_running") == 0
        name = "fray_worker_task_duration_seconds_count"
        assert value(samples, name, outcome="completed") == value(
            samples, "fray_worker_tasks_total", outcome="completed"
        )
    rpcs = sum(
        value(a, "fray_rpc_duration_seconds_count", server="worker", method="RunTask")
        for a in after
    )
    assert rpcs >= 1  # some went by the direct path


def test_healthz_and_the_token() -> None:
    server = ControllerServer("127.0.0.1", 0, token="tok").start()
    try:
        status, content_type, body = get(server.address + "/healthz")
        assert (status, content_type) == (200, "application/json")
        assert json.loads(body) == {
            "status": "ok",
            "controller_id": server.service.controller_id,
            "workers": 0,
        }
        assert get(server.address + "/")[0] == 200  # the page holds no data
        for path in ("/metrics", "/api/dashboard"):
            assert get(server.address + path)[0] == 401
            assert get(server.address + path, "wrong")[0] == 401
            assert get(server.address + path, "tok")[0] == 200
        assert value(scrape(server.address, "tok"), "fray_workers_alive") == 0
        server.service.begin_shutdown()
        status, _, body = get(server.address + "/healthz")
        assert status == 503 and json.loads(body)["status"] == "stopping"
    finally:
        server.stop()


def test_two_servers_in_one_process_keep_their_own_metrics() -> None:
    with ControllerServer("127.0.0.1", 0) as one, ControllerServer("127.0.0.1", 0) as two:
        get(one.address + "/fray.v1.FrayController/GetClusterSummary?encoding=json&message={}")
        name, labels = (
            "fray_rpc_duration_seconds_count",
            {
                "server": "controller",
                "method": "GetClusterSummary",
            },
        )
        assert value(scrape(one.address), name, **labels) == 1
        assert value(scrape(two.address), name, **labels) == 0


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_throughput_ring_counts_finishes_per_second_once() -> None:
    clock = Clock()
    state = ControllerState(clock=clock)
    metrics = ControllerMetrics(state)
    state.register_worker(worker_id="w", slots=10)
    ids = state.submit([TaskSpec(function=b"f", args=b"a", task_id=f"t{i}") for i in range(6)])
    leased, _ = state.lease("w", None, None)
    metrics.leased(leased)
    assert len(leased) == 6

    def report(task_ids: list[str], error: bool = False) -> None:
        watched = metrics.unfinished(task_ids)
        outcomes = [TaskOutcome(task_id=i, attempt=1, value=b"v") for i in task_ids]
        state.report("w", outcomes)
        metrics.settle(watched)

    report(ids[:2])
    report(ids[:2])  # repeated: not counted again
    clock.now += 3
    report(ids[2:5])
    watched = metrics.unfinished(ids)
    state.cancel([ids[5]])  # a running task: cancelled once its worker says so
    metrics.settle(watched)
    bins = metrics.throughput(10, 1)["COMPLETED"]
    assert bins == [0] * 6 + [2, 0, 0, 3]
    assert sum(metrics.throughput(THROUGHPUT_SECONDS, 60)["COMPLETED"]) == 5
    clock.now += THROUGHPUT_SECONDS  # all of it out of the window
    assert sum(metrics.throughput(THROUGHPUT_SECONDS, 60)["COMPLETED"]) == 0
    assert state.tasks[ids[0]].state is TaskState.COMPLETED
