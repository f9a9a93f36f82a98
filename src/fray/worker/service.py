"""What a worker serves: the FrayWorker RPCs (the direct path) and GET /healthz.

Clients that see a free slot send a task straight here (`RunTask`) instead of queuing it at the
controller: one RPC each way. The task runs on the worker's slots like a leased one; the worker
reports it to the controller afterwards. A result is kept for `RESULT_KEEP_SECONDS` after the
task ends, so a client whose answer got lost can ask again (`WaitTask`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
import uuid
from typing import TYPE_CHECKING, Any

from connectrpc.code import Code
from connectrpc.compat import google_protobuf_binary_codec
from connectrpc.request import RequestContext
from google.protobuf.message import DecodeError

from fray.wire import auth, serving
from fray.wire.limits import MAX_ID_LENGTH, MAX_MESSAGE_BYTES
from fray.wire.pb import controller_pb2 as pb
from fray.wire.pb import worker_pb2 as wpb
from fray.wire.pb.worker_connect import FrayWorker, FrayWorkerASGIApplication
from fray.worker.actor_host import ActorAborted, UnknownActor

if TYPE_CHECKING:
    from fray.worker.worker import DirectCall, Worker

_SERVICE = "/fray.v1.FrayWorker/"
logger = logging.getLogger(__name__)

MAX_WAIT_SECONDS = 30.0


class WorkerBusy(Exception):
    """No free slot (Connect `resource_exhausted`)."""


class WorkerDraining(Exception):
    """The worker is shutting down (Connect `failed_precondition`; `unavailable` is left to
    transport failures, after which a client cannot know whether the task started)."""


class InvalidTask(Exception):
    """A malformed task (Connect `invalid_argument`)."""


class UnknownTask(Exception):
    """No such direct task here, or its result was already forgotten (Connect `not_found`)."""


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
    if not (spec.timeout_seconds >= 0 and math.isfinite(spec.timeout_seconds)):
        raise InvalidTask(f"task {spec.task_id}: timeout_seconds must be >= 0")


class WorkerService(FrayWorker):
    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    async def _answer(self, call: DirectCall, wait_ms: int) -> tuple[bool, pb.TaskResult | None]:
        wait = min(wait_ms / 1000, MAX_WAIT_SECONDS)
        if not call.future.done() and wait > 0:
            call.waiting += 1
            try:
                await asyncio.wait([asyncio.wrap_future(call.future)], timeout=wait)
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
        call = self.worker.run_direct(request.task)
        done, result = await self._answer(call, request.wait_ms)
        return wpb.RunTaskResponse(done=done, result=result)

    async def wait_task(
        self, request: wpb.WaitTaskRequest, ctx: RequestContext[Any, Any]
    ) -> wpb.WaitTaskResponse:
        call = self.worker.direct_call(request.task_id)
        done, result = await self._answer(call, request.wait_ms)
        return wpb.WaitTaskResponse(done=done, result=result)

    async def call_actor(
        self, request: wpb.CallActorRequest, ctx: RequestContext[Any, Any]
    ) -> wpb.CallActorResponse:
        batch = self.worker.actors.start_batch(request)
        # No wait_ms (e.g. curl): wait for the calls, however long they take.
        wait = min(request.wait_ms / 1000, MAX_WAIT_SECONDS) if request.wait_ms else None
        results = await _batch_results(batch, wait)
        return wpb.CallActorResponse(done=results is not None, results=results or [])

    async def wait_actor_calls(
        self, request: wpb.WaitActorCallsRequest, ctx: RequestContext[Any, Any]
    ) -> wpb.WaitActorCallsResponse:
        batch = self.worker.actors.find_batch(request.batch_id)
        results = await _batch_results(batch, min(request.wait_ms / 1000, MAX_WAIT_SECONDS))
        return wpb.WaitActorCallsResponse(done=results is not None, results=results or [])

    async def cancel_task(
        self, request: wpb.CancelTaskRequest, ctx: RequestContext[Any, Any]
    ) -> wpb.CancelTaskResponse:
        return wpb.CancelTaskResponse(found=self.worker.cancel_direct(request.task_id))


async def _batch_results(
    batch: asyncio.Task[list[pb.TaskResult]], wait: float | None
) -> list[pb.TaskResult] | None:
    """The batch's results once it is done (None if still running after `wait` seconds);
    raises what the batch raised (ActorAborted)."""
    if not batch.done():
        await asyncio.wait([batch], timeout=wait)
    return batch.result() if batch.done() else None


def make_app(worker: Worker, token: str | None) -> Any:
    """The worker's ASGI app: FrayWorker over Connect, plus GET /healthz (JSON).

    RunTask and CallActor are on every direct task's and actor call's critical path, so their
    plain case (binary protobuf, no compression, the right token) is answered here without
    connectrpc's machinery, which costs about 0.15 ms a call; the Connect wire format is the
    same. Anything else, errors included, goes to connectrpc, which also serves JSON for curl.
    """
    service = WorkerService(worker)
    rpc = FrayWorkerASGIApplication(
        service,
        interceptors=serving.interceptors(token, _ERROR_CODES, "worker"),
        read_max_bytes=MAX_MESSAGE_BYTES,
        codecs=[google_protobuf_binary_codec(), serving.CurlFriendlyJSONCodec()],
    )
    expected_auth = auth.expected_authorization(token)
    fast: dict[str, tuple[Any, Any]] = {
        _SERVICE + "RunTask": (wpb.RunTaskRequest, service.run_task),
        _SERVICE + "CallActor": (wpb.CallActorRequest, service.call_actor),
    }

    def plain(scope: dict[str, Any]) -> bool:
        if scope["path"] not in fast or scope["method"] != "POST":
            return False
        headers = dict(scope["headers"])
        if headers.get(b"content-type") != b"application/proto":
            return False
        if headers.get(b"content-encoding", b"identity") != b"identity":
            return False
        given = headers.get(b"authorization", b"")
        return auth.authorized(expected_auth, given)

    async def answer_plain(scope: dict[str, Any], receive: Any, send: Any) -> None:
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        request_class, handler = fast[scope["path"]]
        try:
            request = request_class.FromString(body)
        except DecodeError as exc:
            await _send_error(send, Code.INVALID_ARGUMENT, f"malformed request: {exc}")
            return
        try:
            response = await handler(request, None)
        except Exception as exc:
            code = next((c for cls, c in _ERROR_CODES.items() if isinstance(exc, cls)), None)
            if code is None:
                ref = uuid.uuid4().hex[:8]
                logger.exception("internal error in %s (ref %s)", scope["path"], ref)
                code, exc = (
                    Code.INTERNAL,
                    Exception(f"internal error (ref {ref}); see the worker log"),
                )
            await _send_error(send, code, str(exc))
            return
        data = response.SerializeToString()
        headers = [(b"content-type", b"application/proto"), (b"content-length", b"%d" % len(data))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": data})

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await rpc(scope, receive, send)
        elif plain(scope):
            await answer_plain(scope, receive, send)
        elif scope["path"].startswith("/fray."):
            await rpc(scope, receive, send)
        else:
            await _health(worker, send, scope["path"])

    return app


# The HTTP status of each Connect error code the fast path can answer with (Connect protocol).
_HTTP_STATUS = {
    Code.INVALID_ARGUMENT: 400,
    Code.FAILED_PRECONDITION: 400,
    Code.NOT_FOUND: 404,
    Code.ABORTED: 409,
    Code.RESOURCE_EXHAUSTED: 429,
    Code.INTERNAL: 500,
}


async def _send_error(send: Any, code: Code, message: str) -> None:
    data = json.dumps({"code": code.value, "message": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(data))]
    await send({"type": "http.response.start", "status": _HTTP_STATUS[code], "headers": headers})
    await send({"type": "http.response.body", "body": data})


async def _health(worker: Worker, send: Any, path: str) -> None:
    if path.rstrip("/") in ("/healthz", ""):
        body = worker.health()
        status = 200 if body["status"] == "ok" else 503
        data = json.dumps(body).encode()
    else:
        status, data = 404, b'{"error": "not found"}'
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(data))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})
