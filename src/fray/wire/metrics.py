"""Prometheus metrics that the controller and the workers serve alike (``GET /metrics``).

Each server owns its own `prometheus_client.CollectorRegistry` (never the global one), so that
several servers in one process (tests, local clusters) do not collide.

- `RpcTimer`: the latency of every RPC served, as a histogram by method
  (``fray_rpc_duration_seconds``); long polls count their wait;
- `Counts` and `Durations`: a counter and a histogram by one label, for what happens once per
  task (plain numbers, exposed when scraped);
- `send_metrics`: answers ``GET /metrics`` in the Prometheus text format;
- `send_json`: a small JSON answer (``/healthz`` and the like);
- `authorized`: whether a plain HTTP request carries the server's token (``/metrics`` and the
  dashboard's data need it when the server has one, like every RPC).
"""

from __future__ import annotations

import bisect
import itertools
import json
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from fray.wire import auth

# No ``*_created`` series next to every counter and histogram: they double the output and fray's
# servers have no use for them (a process-wide setting of prometheus_client).
disable_created_metrics()

__all__ = [
    "RPC_BUCKETS",
    "Counts",
    "Durations",
    "RpcTimer",
    "authorized",
    "send_json",
    "send_metrics",
    "send_text",
    "send_unauthorized",
]

# Seconds: from sub-millisecond calls to 30 s long polls.
RPC_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Counts(Collector):
    """A counter (``<name>_total``), by the values of one label (none: `label` is None), kept
    as plain numbers and exposed when scraped. prometheus_client's Counter and Histogram take a
    lock and several lookups per sample (a few µs); on paths that count every task these cost a
    fraction of that. `values` are the label's values, known in advance."""

    def __init__(
        self, name: str, documentation: str, label: str | None = None, values: Sequence[str] = ()
    ) -> None:
        self._name, self._documentation, self._label = name, documentation, label
        self._values = list(values) if label is not None else [""]
        self._counts = dict.fromkeys(self._values, 0.0)
        self._lock = threading.Lock()

    def inc(self, value: str = "", amount: float = 1.0) -> None:
        with self._lock:
            self._counts[value] += amount

    def collect(self) -> Iterator[Any]:
        labels = [self._label] if self._label is not None else []
        family = CounterMetricFamily(self._name, self._documentation, labels=labels)
        with self._lock:
            counts = dict(self._counts)
        for value in self._values:
            family.add_metric([value] if labels else [], counts[value])
        yield family


class Durations(Collector):
    """A histogram of seconds (``<name>_bucket``, ``_count``, ``_sum``) by the values of one
    label (none: `label` is None), kept like `Counts`."""

    def __init__(
        self,
        name: str,
        documentation: str,
        buckets: Sequence[float],
        label: str | None = None,
        values: Sequence[str] = (),
    ) -> None:
        self._name, self._documentation, self._label = name, documentation, label
        self._values = list(values) if label is not None else [""]
        self._bounds = list(buckets)
        # per value: how many fell in each bucket (not cumulative; the last one is +Inf), sum
        self._buckets = {v: [0] * (len(self._bounds) + 1) for v in self._values}
        self._sums = dict.fromkeys(self._values, 0.0)
        self._lock = threading.Lock()

    def observe(self, seconds: float, value: str = "") -> None:
        bucket = bisect.bisect_left(self._bounds, seconds)  # le: seconds <= bound
        with self._lock:
            self._buckets[value][bucket] += 1
            self._sums[value] += seconds

    def collect(self) -> Iterator[Any]:
        labels = [self._label] if self._label is not None else []
        family = HistogramMetricFamily(self._name, self._documentation, labels=labels)
        bounds = [*(floatToGoString(b) for b in self._bounds), "+Inf"]
        with self._lock:
            buckets = {v: list(b) for v, b in self._buckets.items()}
            sums = dict(self._sums)
        for value in self._values:
            cumulative = itertools.accumulate(buckets[value])
            family.add_metric(
                [value] if labels else [], list(zip(bounds, cumulative, strict=True)), sums[value]
            )
        yield family


class RpcTimer:
    """Times RPCs into ``fray_rpc_duration_seconds{server, method}``.

    Only the methods of `service` (a path prefix such as ``/fray.v1.FrayWorker/``) get a
    label of their own; other paths are not timed (they cannot multiply the series).
    """

    def __init__(self, registry: CollectorRegistry, server: str, service: str) -> None:
        self._service = service
        self._histogram = Histogram(
            "fray_rpc_duration_seconds",
            "Time to answer an RPC (long polls include their wait), by method.",
            ["server", "method"],
            buckets=RPC_BUCKETS,
            registry=registry,
        )
        self._server = server
        self._children: dict[str, Any] = {}  # path -> labelled child, looked up once

    def child(self, path: str) -> Any | None:
        """The histogram to observe for `path` (None: not an RPC of the service)."""
        child = self._children.get(path)
        if child is None and path.startswith(self._service):
            method = path[len(self._service) :]
            if method and "/" not in method and len(self._children) < 100:
                child = self._children[path] = self._histogram.labels(self._server, method)
        return child

    @staticmethod
    def now() -> float:
        return time.perf_counter()


def authorized(check: auth.TokenCheck, scope: Mapping[str, Any]) -> bool:
    """Whether the request's ``Authorization`` header carries the token (True without one)."""
    return check.accepts_raw(dict(scope["headers"]))


async def send_text(send: Any, status: int, body: bytes, content_type: bytes) -> None:
    headers = [
        (b"content-type", content_type),
        (b"content-length", b"%d" % len(body)),
        (b"cache-control", b"no-store"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def send_json(send: Any, status: int, body: Any) -> None:
    data = json.dumps(body, separators=(",", ":")).encode()
    await send_text(send, status, data, b"application/json")


async def send_metrics(send: Any, registry: CollectorRegistry) -> None:
    """Answer with the registry's metrics in the Prometheus text format."""
    await send_text(send, 200, generate_latest(registry), CONTENT_TYPE_LATEST.encode())


async def send_unauthorized(send: Any) -> None:
    """401, as the RPCs answer a missing or wrong token."""
    await send_json(send, 401, {"code": "unauthenticated", "message": "missing or wrong token"})
