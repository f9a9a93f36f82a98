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

import bisect
import itertools
import threading
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from fray.wire.metrics import RpcTimer
from fray.wire.pb import controller_pb2 as pb

OUTCOMES = ("completed", "failed", "cancelled", "handed_back")
TASK_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800, 3600)

# health() key -> (metric name, help)
_GAUGES = {
    "slots": ("fray_worker_slots", "Task slots (concurrency)."),
    "running": ("fray_worker_tasks_running", "Tasks running in a slot."),
    "queued": ("fray_worker_tasks_queued", "Tasks held here waiting for a slot."),
    "direct": ("fray_worker_direct_tasks", "Direct tasks running or waiting here."),
    "actors": ("fray_worker_actors", "Actors hosted."),
    "cached_objects": ("fray_worker_objects", "Objects in the worker's cache."),
    "cached_object_bytes": ("fray_worker_object_bytes", "Bytes of the cached objects."),
}


class WorkerMetrics:
    """The worker's registry: task counters and durations, RPC latency, gauges from `health`."""

    def __init__(self, health: Callable[[], dict[str, Any]]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.rpc = RpcTimer(self.registry, "worker", "/fray.v1.FrayWorker/")
        self._tasks = _TaskCollector()
        self.registry.register(self._tasks)
        self.registry.register(_HealthCollector(health))

    def task_finished(self, result: pb.TaskResult, seconds: float) -> None:
        """A slot's task ended with `result` after `seconds`."""
        which = result.WhichOneof("outcome")
        if which == "value":
            outcome = 0  # completed
        elif which == "handed_back":
            outcome = 3
        elif result.error.kind == pb.ERROR_KIND_CANCELLED:
            outcome = 2
        else:
            outcome = 1  # failed
        self._tasks.add(outcome, max(0.0, seconds))


class _TaskCollector(Collector):
    """``fray_worker_tasks_total`` and ``fray_worker_task_duration_seconds`` by outcome, kept
    as plain counts and exposed when scraped. prometheus_client's Counter and Histogram cost
    ~5 µs a task together (locks and lookups per sample), a tenth of a no-op task's time in
    the worker; this costs well under one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = [0] * len(OUTCOMES)
        self._sums = [0.0] * len(OUTCOMES)
        # per outcome, how many fell in each bucket (not cumulative; the last is +Inf)
        self._buckets = [[0] * (len(TASK_BUCKETS) + 1) for _ in OUTCOMES]

    def add(self, outcome: int, seconds: float) -> None:
        bucket = bisect.bisect_left(TASK_BUCKETS, seconds)  # le: seconds <= bound
        with self._lock:
            self._counts[outcome] += 1
            self._sums[outcome] += seconds
            self._buckets[outcome][bucket] += 1

    def collect(self) -> Iterator[Any]:
        with self._lock:
            counts, sums = list(self._counts), list(self._sums)
            buckets = [list(b) for b in self._buckets]
        tasks = CounterMetricFamily(
            "fray_worker_tasks", "Tasks this worker ended, by outcome.", labels=["outcome"]
        )
        durations = HistogramMetricFamily(
            "fray_worker_task_duration_seconds",
            "Time tasks spent in a slot, by outcome.",
            labels=["outcome"],
        )
        bounds = [*(floatToGoString(b) for b in TASK_BUCKETS), "+Inf"]
        for i, outcome in enumerate(OUTCOMES):
            tasks.add_metric([outcome], counts[i])
            cumulative = list(itertools.accumulate(buckets[i]))
            durations.add_metric([outcome], list(zip(bounds, cumulative, strict=True)), sums[i])
        yield tasks
        yield durations


class _HealthCollector(Collector):
    def __init__(self, health: Callable[[], dict[str, Any]]) -> None:
        self._health = health

    def collect(self) -> Iterator[Any]:
        health = self._health()
        for key, (name, text) in _GAUGES.items():
            yield GaugeMetricFamily(name, text, float(health.get(key, 0)))
