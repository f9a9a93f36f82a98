"""A worker's metrics (``GET /metrics`` on the worker), in a `CollectorRegistry` of its own.

Counted as things happen (once per task, by `Worker`, or per RPC served):
``fray_worker_tasks_total{outcome}`` (completed, failed, cancelled, handed_back) and
``fray_worker_task_duration_seconds{outcome}`` (time in a slot), and
``fray_rpc_duration_seconds{server="worker", method}`` (`fray.wire.metrics.RpcTimer`).

Read when scraped, from the worker's health (nothing on the hot path): ``fray_worker_slots``,
``fray_worker_tasks_running``, ``fray_worker_tasks_queued``, ``fray_worker_direct_tasks``,
``fray_worker_actors``, ``fray_worker_objects`` and ``fray_worker_object_bytes`` (the cache of
``ctx.put`` objects).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from fray.wire.metrics import Counts, Durations, RpcTimer
from fray.wire.pb import controller_pb2 as pb

OUTCOMES = ("completed", "failed", "cancelled", "handed_back")
TASK_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800, 3600)

# health() key -> (metric name, help)
_GAUGES = {
    "slots": ("fray_worker_slots", "Task slots (concurrency)."),
    "running": ("fray_worker_tasks_running", "Tasks running in a slot."),
    "queued": ("fray_worker_tasks_queued", "Tasks held here waiting for a slot."),
    "direct": ("fray_worker_direct_tasks", "Direct tasks running or waiting here."),
    "batched_tasks": (
        "fray_worker_batched_tasks",
        "Tasks that went to their executor with others in one message (short tasks).",
    ),
    "actors": ("fray_worker_actors", "Actors hosted."),
    "cached_objects": ("fray_worker_objects", "Objects in the worker's cache."),
    "cached_object_bytes": ("fray_worker_object_bytes", "Bytes of the cached objects."),
}


class WorkerMetrics:
    """The worker's registry: task counters and durations, RPC latency, gauges from `health`."""

    def __init__(self, health: Callable[[], dict[str, Any]]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.rpc = RpcTimer(self.registry, "worker", "/fray.v1.FrayWorker/")
        self._tasks = Counts(
            "fray_worker_tasks", "Tasks this worker ended, by outcome.", "outcome", OUTCOMES
        )
        self._durations = Durations(
            "fray_worker_task_duration_seconds",
            "Time tasks spent in a slot, by outcome.",
            TASK_BUCKETS,
            "outcome",
            OUTCOMES,
        )
        for collector in (self._tasks, self._durations, _HealthCollector(health)):
            self.registry.register(collector)

    def task_finished(self, result: pb.TaskResult, seconds: float) -> None:
        """A slot's task ended with `result` after `seconds`."""
        which = result.WhichOneof("outcome")
        if which == "value":
            outcome = "completed"
        elif which == "handed_back":
            outcome = "handed_back"
        elif result.error.kind == pb.ERROR_KIND_CANCELLED:
            outcome = "cancelled"
        else:
            outcome = "failed"
        self._tasks.inc(outcome)
        self._durations.observe(max(0.0, seconds), outcome)


class _HealthCollector(Collector):
    def __init__(self, health: Callable[[], dict[str, Any]]) -> None:
        self._health = health

    def collect(self) -> Iterator[Any]:
        health = self._health()
        for key, (name, text) in _GAUGES.items():
            yield GaugeMetricFamily(name, text, float(health.get(key, 0)))
