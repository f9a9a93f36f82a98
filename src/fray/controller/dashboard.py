"""What the controller serves besides its RPCs: the dashboard, its data, metrics and health.

`ControllerRoutes` sits between `fray.wire.edge.Edge` and the Connect app:

- ``GET /``: the dashboard, one static page (``dashboard.html``, package data: inline CSS and
  JavaScript, no build step) that fetches ``/api/dashboard`` every two seconds and draws it;
- ``GET /api/dashboard``: one JSON snapshot of the cluster (`snapshot`): the summary, workers,
  running tasks, the latest tasks, recent failures with their tracebacks, actors, the
  throughput of the last minutes and jobs (none yet: fray jobs are issue 9);
- ``GET /metrics``: Prometheus text (`fray.controller.metrics`);
- ``GET /healthz``: 200 ``{"status": "ok", ...}``, 503 once the controller is shutting down or
  its state could not be saved;
- everything else goes to the Connect app, RPCs timed by ``fray_rpc_duration_seconds``.

The page itself holds no data and is served to anyone; with a token, ``/api/dashboard`` and
``/metrics`` need ``Authorization: Bearer <token>`` like every RPC. The page asks for the token
in a login field (or takes it from the URL fragment, ``/#token=...``, which browsers never
send, so no server or proxy logs it) and keeps it in the tab's session storage.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from functools import cache
from importlib import resources
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

from fray.controller import convert, job_convert
from fray.controller.metrics import ControllerMetrics
from fray.controller.records import TaskRecord
from fray.controller.service import ControllerService
from fray.wire import auth
from fray.wire.metrics import (
    authorized,
    send_json,
    send_metrics,
    send_text,
    send_unauthorized,
)
from fray.wire.pb import controller_pb2 as pb

RUNNING_SHOWN = 50
LATEST_SHOWN = 20
ACTORS_SHOWN = 200
JOBS_SHOWN = 50  # the newest
MAX_TRACEBACK = 8000  # characters of each failure's traceback sent to the page
THROUGHPUT_WINDOW = 300  # seconds
THROUGHPUT_BIN = 10  # seconds

_App = Callable[[Any, Any, Any], Any]


@cache
def page() -> bytes:
    """The dashboard's HTML (package data)."""
    return resources.files("fray.controller").joinpath("dashboard.html").read_bytes()


class ControllerRoutes:
    """An ASGI app: the routes of the module docstring, then `app` (the Connect app)."""

    def __init__(
        self,
        app: _App,
        service: ControllerService,
        metrics: ControllerMetrics,
        token: str | None,
        health: Callable[[], str],
    ) -> None:
        self._app = app
        self._service = service
        self._metrics = metrics
        self._token = auth.TokenCheck(token)
        self._health = health  # "ok", or why not

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        path = scope["path"]
        timer = self._metrics.rpc.child(path)
        if timer is not None:  # an RPC: the hot path
            started = self._metrics.rpc.now()
            try:
                await self._app(scope, receive, send)
            finally:
                timer.observe(self._metrics.rpc.now() - started)
            return
        if scope["method"] not in ("GET", "HEAD"):
            await self._app(scope, receive, send)
        elif path == "/":
            await send_text(send, 200, page(), b"text/html; charset=utf-8")
        elif path == "/healthz":
            status = self._health()
            body = {
                "status": status,
                "controller_id": self._service.controller_id,
                "workers": len(self._service.state.workers),
            }
            await send_json(send, 200 if status == "ok" else 503, body)
        elif path in ("/metrics", "/api/dashboard"):
            if not authorized(self._token, scope):
                await send_unauthorized(send)
            elif path == "/metrics":
                await send_metrics(send, self._metrics.registry)
            else:
                await send_json(send, 200, await snapshot(self._service, self._metrics))
        else:
            await self._app(scope, receive, send)


def _dict(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def _tasks(tasks: Iterable[TaskRecord]) -> list[dict[str, Any]]:
    out = []
    for task in tasks:
        message = convert.task_to_pb(task)
        if message.HasField("error"):
            message.error.pickled_exception = b""
            message.error.traceback = message.error.traceback[-MAX_TRACEBACK:]
        out.append(_dict(message))
    return out


async def snapshot(service: ControllerService, metrics: ControllerMetrics) -> dict[str, Any]:
    """The dashboard's view of the cluster, as JSON-ready data (field names as in the proto).

    Costs O(workers + running tasks + actors): never a scan of every task.
    """
    state = service.state
    summary = await service.get_cluster_summary(pb.GetClusterSummaryRequest(), None)  # type: ignore[arg-type]
    workers = await service.list_workers(pb.ListWorkersRequest(), None)  # type: ignore[arg-type]
    actors = await service.list_actors(pb.ListActorsRequest(), None)  # type: ignore[arg-type]
    running: list[TaskRecord] = []
    for worker in state.workers.values():
        running.extend(state.tasks[i] for i in worker.task_ids if i in state.tasks)
        if len(running) >= RUNNING_SHOWN:
            break
    latest: list[TaskRecord] = []
    for task in reversed(state.tasks.values()):  # type: ignore[call-overload]  # a dict view
        latest.append(task)
        if len(latest) >= LATEST_SHOWN:
            break
    worker_list = []
    for worker in workers.workers:
        entry = _dict(worker)
        entry.pop("task_ids", None)
        entry["leased"] = len(worker.task_ids)
        worker_list.append(entry)
    return {
        "time": time.time(),
        "summary": _dict(summary),
        "workers": worker_list,
        "running": _tasks(running[:RUNNING_SHOWN]),
        "latest": _tasks(latest),
        "failures": _tasks(reversed(metrics.failures)),
        "actors": [_dict(a) for a in actors.actors[:ACTORS_SHOWN]],
        "actors_total": len(actors.actors),
        "throughput": {
            "bin_seconds": THROUGHPUT_BIN,
            "by_state": metrics.throughput(THROUGHPUT_WINDOW, THROUGHPUT_BIN),
        },
        "jobs": _jobs(service),
        "jobs_total": len(state.jobs),
    }


def _jobs(service: ControllerService) -> list[dict[str, Any]]:
    """The newest jobs, newest first, with where their replicas run (not their full state)."""
    state, out = service.state, []
    for job in reversed(state.jobs.values()):  # type: ignore[call-overload]  # a dict view
        entry = _dict(job_convert.job_to_pb(job, state.job_pending_reason(job)))
        entry.pop("replica_states", None)
        entry["workers"] = sorted({r.worker_id for r in job.replicas if r.worker_id})
        out.append(entry)
        if len(out) >= JOBS_SHOWN:
            break
    return out
