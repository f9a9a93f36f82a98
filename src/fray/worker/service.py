"""What a worker serves: the FrayWorker RPCs (the direct path, actor calls), GET /healthz and
GET /metrics (Prometheus text, `fray.worker.metrics`; needs the token when the worker has one).

Clients that see a free slot send a task straight here (`RunTask`) instead of queuing it at the
controller: one RPC each way. The task runs on the worker's slots like a leased one (see
`fray.worker.direct_calls`); the worker reports it to the controller afterwards. A result is kept
for a while after the task ends, so a client whose answer got lost can ask again (`WaitTask`).
Actor calls (`CallActor`, `WaitActorCalls`) go to `fray.worker.actor_host`.

Long polls wait at most `MAX_WAIT_SECONDS`. The token check, the mapping of errors to Connect
codes and HTTP statuses, and the refusal of bad or oversized requests (`edge`) are `fray.wire`'s
(`auth`, `serving`, `edge`), as for the controller.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import time
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any

from connectrpc.code import Code
from connectrpc.compat import google_protobuf_binary_codec
from connectrpc.request import RequestContext

from fray.wire import auth, edge, serving
from fray.wire.limits import DEFAULT_MAX_REQUEST_BYTES, MAX_ID_LENGTH, MAX_TIMEOUT_SECONDS
from fray.wire.metrics import authorized, send_metrics, send_unauthorized
from fray.wire.pb import controller_pb2 as pb
from fray.wire.pb import worker_pb2 as wpb
from fray.wire.pb.worker_connect import FrayWorker, FrayWorkerASGIApplication
from fray.worker.actor_host import ActorAborted, ActorHost, UnknownActor
from fray.worker.direct_calls import (
    DirectCall,
    DirectCalls,
    UnknownTask,
    WorkerBusy,
    WorkerDraining,
)
from fray.worker.metrics import WorkerMetrics

MAX_WAIT_SECONDS = 30.0


class InvalidTask(Exception):
    """A malformed task (Connect `invalid_argument`)."""


_ERROR_CODES: dict[type[Exception], Code] = {
    WorkerBusy: Code.RESOURCE_EXHAUSTED,
    WorkerDraining: Code.FAILED_PRECONDITION,
    UnknownTask: Code.NOT_FOUND,
    UnknownActor: Code.NOT_FOUND,
    ActorAborted: Code.ABORTED,
    InvalidTask: Code.INVALID_ARGUMENT,
}


def check_spec(spec: pb.TaskSpec) -> None:
    if not spec.task_id or len(spec.task_id) > MAX_ID_LENGTH:
        raise InvalidTask(f"task_id must have 1 to {MAX_ID_LENGTH} characters")
    if not spec.function:
        raise InvalidTask(f"task {spec.task_id}: function is empty")
    if not 0 <= spec.timeout_seconds <= MAX_TIMEOUT_SECONDS:  # NaN fails too
        raise InvalidTask(
            f"task {spec.task_id}: timeout_seconds must be from 0 to {MAX_TIMEOUT_SECONDS:g}"
        )


HintObjects = Callable[[Mapping[str, pb.ObjectLocation]], None]


class WorkerService(FrayWorker):
    """The FrayWorker handlers, over the worker's direct calls and hosted actors; where a
    direct task's objects are, when its client says, goes to `hint_objects`."""

    def __init__(
        self, direct: DirectCalls, actors: ActorHost, hint_objects: HintObjects | None = None
    ) -> None:
        self._direct = direct
        self._actors = actors
        self._hint_objects = hint_objects

    async def _answer(self, call: DirectCall, wait_ms: int) -> tuple[bool, pb.TaskResult | None]:
        wait = min(wait_ms / 1000, MAX_WAIT_SECONDS)
        if not call.future.done() and wait > 0:
            call.waiting += 1
            try:
                await _until_done(call.future, wait)
            finally:
                call.waiting -= 1
                call.last_seen = time.monotonic()
        if not call.future.done():
            return False, None
        call.delivered = True
        return True, call.future.result()

    async def run_task(
        self, request: wpb.RunTaskRequest, ctx: RequestContext[Any, Any]
    ) -> wpb.RunTaskResponse:
        check_spec(request.task)
        if request.object_locations and self._hint_objects is not None:
            named = set(request.task.object_ids)  # (hints of this task's objects only)
            self._hint_objects(
                {oid: loc for oid, loc in request.object_locations.items() if oid in named}
            )
        call = self._direct.run(request.task)
        done, result = await self._answer(call, request.wait_ms)
        return wpb.RunTaskResponse(done=done, result=result)

    async def wait_task(
        self, request: wpb.WaitTaskRequest, ctx: RequestContext[Any, Any]
    ) -> wpb.WaitTaskResponse:
        call = self._direct.get(request.task_id)
        done, result = await self._answer(call, request.wait_ms)
        return wpb.WaitTaskResponse(done=done, result=result)

    async def call_actor(
        self, request: wpb.CallActorRequest, ctx: RequestContext[Any, Any]
    ) -> wpb.CallActorResponse:
        batch = self._actors.start_batch(request)
        # No wait_ms (e.g. curl): wait for the calls, however long they take.
        wait = min(request.wait_ms / 1000, MAX_WAIT_SECONDS) if request.wait_ms else None
        results = await _batch_results(batch, wait)
        return wpb.CallActorResponse(done=results is not None, results=results or [])

    async def wait_actor_calls(
        self, request: wpb.WaitActorCallsRequest, ctx: RequestContext[Any, Any]
    ) -> wpb.WaitActorCallsResponse:
        batch = self._actors.find_batch(request.batch_id)
        results = await _batch_results(batch, min(request.wait_ms / 1000, MAX_WAIT_SECONDS))
        return wpb.WaitActorCallsResponse(done=results is not None, results=results or [])

    async def cancel_task(
        self, request: wpb.CancelTaskRequest, ctx: RequestContext[Any, Any]
    ) -> wpb.CancelTaskResponse:
        return wpb.CancelTaskResponse(found=self._direct.cancel(request.task_id))


async def _until_done(future: concurrent.futures.Future[Any], timeout: float) -> None:
    """Wait (at most `timeout` seconds) for a future a slot thread completes. Lighter than
    `asyncio.wait([asyncio.wrap_future(future)])` (one loop future, one timer, one callback):
    this is on every direct task's path."""
    loop = asyncio.get_running_loop()
    waiter = loop.create_future()

    def wake(_: object = None) -> None:
        if not waiter.done():
            waiter.set_result(None)

    timer = loop.call_later(timeout, wake)

    def done(_: object) -> None:  # in the slot thread
        if not loop.is_closed():
            loop.call_soon_threadsafe(wake)

    future.add_done_callback(done)
    try:
        await waiter
    finally:
        timer.cancel()


async def _batch_results(
    batch: asyncio.Task[list[pb.TaskResult]], wait: float | None
) -> list[pb.TaskResult] | None:
    """The batch's results once it is done (None if still running after `wait` seconds);
    raises what the batch raised (ActorAborted)."""
    if not batch.done():
        await asyncio.wait([batch], timeout=wait)
    return batch.result() if batch.done() else None


def make_app(
    direct: DirectCalls,
    actors: ActorHost,
    health: Callable[[], dict[str, Any]],
    token: str | None,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    metrics: WorkerMetrics | None = None,
    hint_objects: HintObjects | None = None,
) -> Any:
    """The worker's ASGI app: FrayWorker over Connect, plus GET /healthz (JSON from `health`,
    503 unless its status is "ok") and, given `metrics`, GET /metrics (RPCs are then timed),
    behind `edge.Edge` (bad and oversized requests, the
    latter past `max_request_bytes`).

    RunTask and CallActor are on every direct task's and actor call's critical path, so the
    plain case of the RPCs is answered by `serving.PlainUnary`, without connectrpc's machinery
    (about 0.15 ms a call). Anything else, refusals included, goes to connectrpc, which also
    serves JSON for curl.
    """
    service = WorkerService(direct, actors, hint_objects)
    rpc = FrayWorkerASGIApplication(
        service,
        interceptors=serving.interceptors(token, _ERROR_CODES, "worker"),
        read_max_bytes=max_request_bytes,
        codecs=[google_protobuf_binary_codec(), serving.CurlFriendlyJSONCodec()],
    )
    plain = serving.PlainUnary(
        service, wpb.DESCRIPTOR.services_by_name["FrayWorker"], token, _ERROR_CODES, "worker"
    )

    token_check = auth.TokenCheck(token)

    async def route(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await rpc(scope, receive, send)
        elif plain.accepts(scope):
            await plain(scope, receive, send)
        elif scope["path"].startswith("/fray."):
            await rpc(scope, receive, send)
        elif scope["path"] == "/metrics" and metrics is not None:
            if authorized(token_check, scope):
                await send_metrics(send, metrics.registry)
            else:
                await send_unauthorized(send)
        else:
            await _health(health, send, scope["path"])

    async def app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        timer = metrics.rpc.child(scope["path"]) if metrics and scope["type"] == "http" else None
        if timer is None:
            await route(scope, receive, send)
            return
        started = metrics.rpc.now()  # type: ignore[union-attr]  # timer implies metrics
        try:
            await route(scope, receive, send)
        finally:
            timer.observe(metrics.rpc.now() - started)  # type: ignore[union-attr]

    return edge.Edge(
        app,
        server="worker",
        max_request_bytes=max_request_bytes,
        limit_flag="fray worker --max-request-bytes",
        requests=edge.request_types([wpb.DESCRIPTOR.services_by_name["FrayWorker"]]),
        token=token,
    )


async def _health(health: Callable[[], dict[str, Any]], send: Any, path: str) -> None:
    if path.rstrip("/") in ("/healthz", ""):
        body = health()
        status = 200 if body["status"] == "ok" else 503
        data = json.dumps(body).encode()
    else:
        status, data = 404, b'{"error": "not found"}'
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(data))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})
