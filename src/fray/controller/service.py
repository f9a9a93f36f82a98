"""The FrayController Connect service and the server that runs it.

`ControllerService` translates protobuf requests into calls on `ControllerState` (the state
machine) and implements the long polls; `ControllerServer` serves it with uvicorn, in the calling
thread (`run`, the `fray controller` command) or in a background thread (`start`, for tests and
local clusters).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncGenerator, Callable
from typing import Any, TypeVar

from connectrpc.code import Code
from connectrpc.compat import google_protobuf_binary_codec
from connectrpc.errors import ConnectError
from connectrpc.request import RequestContext
from google.protobuf.message import Message

from fray.controller import convert
from fray.controller import state as st
from fray.wire import auth, serving
from fray.wire.limits import MAX_MESSAGE_BYTES
from fray.wire.pb import controller_pb2 as pb
from fray.wire.pb.controller_connect import FrayController, FrayControllerASGIApplication

logger = logging.getLogger(__name__)

DEFAULT_PORT = 8265
FINISHED_LOG_IDLE_SECONDS = 3600.0  # a client silent this long is gone: forget its log

_T = TypeVar("_T")
_M = TypeVar("_M", bound=Message)

# ---------------------------------------------------------------------- long-poll plumbing


class _Signal:
    """A broadcast wake-up: `wait` sleeps until the next `fire` or a timeout."""

    def __init__(self) -> None:
        self._future: asyncio.Future[None] | None = None

    async def wait(self, timeout: float) -> None:
        if self._future is None:
            self._future = asyncio.get_running_loop().create_future()
        await asyncio.wait([self._future], timeout=timeout)

    def fire(self) -> None:
        if self._future is not None:
            self._future.set_result(None)
            self._future = None


class ControllerService(FrayController):
    """The FrayController RPCs over one `ControllerState`."""

    def __init__(self, state: st.ControllerState, *, max_wait_seconds: float = 30.0) -> None:
        self.state = state
        self.controller_id = uuid.uuid4().hex[:12]
        # Workers must call at least this often; their lease long polls are capped to it.
        self.heartbeat_interval = state.heartbeat_timeout / 3
        self.max_wait_seconds = max_wait_seconds
        self.closing = False
        # Long polls sleep on one of two signals: workers wait for work (or cancellations),
        # clients for finished tasks. A mutation fires the ones it may concern.
        self._work = _Signal()
        self._finished = _Signal()
        self._actors = _Signal()  # for GetActor waits

    async def lifespan(self) -> AsyncGenerator[ControllerService]:
        """Runs the worker reaper for as long as the server runs."""
        reaper = asyncio.create_task(self._reap_workers())
        try:
            yield self
        finally:
            self.begin_shutdown()
            reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reaper

    def begin_shutdown(self) -> None:
        """Refuse new calls and end the long polls in flight, with `unavailable`."""
        if not self.closing:
            logger.info("controller %s shutting down", self.controller_id)
        self.closing = True
        self._mutated()

    async def _reap_workers(self) -> None:
        """Expire silent workers (and the finished logs of clients gone for an hour)."""
        period = min(1.0, self.state.heartbeat_timeout / 4)
        while True:
            await asyncio.sleep(period)
            try:
                self.state.expire_finished_logs(FINISHED_LOG_IDLE_SECONDS)
            except Exception:
                logger.exception("expiring finished logs failed")
            try:
                expired = self.state.expire_workers()
            except Exception:  # keep reaping: a dead reaper would hang every lost task
                logger.exception("reaping workers failed")
                self._mutated()  # whatever it requeued before failing
                continue
            if expired:
                logger.warning(
                    "workers %s stopped heartbeating; their tasks were requeued", expired
                )
                self._mutated()

    def _check_open(self) -> None:
        if self.closing:
            raise ConnectError(Code.UNAVAILABLE, "controller is shutting down")

    def _mutated(self, *, finished: bool = True) -> None:
        """Wake the long polls so they look again (`finished=False`: no task can have ended)."""
        self._work.fire()
        self._actors.fire()
        if finished:
            self._finished.fire()

    async def _poll(
        self,
        wait_ms: int,
        ctx: RequestContext[Any, Any],
        check: Callable[[], _T | None],
        signal: _Signal,
        cap_seconds: float | None = None,
    ) -> _T | None:
        """Call `check` now and after every change until it returns non-None or time is up."""
        self._check_open()
        loop = asyncio.get_running_loop()
        wait = min(wait_ms / 1000, cap_seconds or self.max_wait_seconds)
        client_timeout_ms = ctx.timeout_ms
        if client_timeout_ms is not None:  # answer before the client gives up
            wait = min(wait, max(0.0, client_timeout_ms / 1000 - 0.2))
        deadline = loop.time() + wait
        while True:
            result = check()
            remaining = deadline - loop.time()
            if result is not None or remaining <= 0:
                return result
            await signal.wait(remaining)
            self._check_open()

    # ------------------------------------------------------------------ clients

    async def submit_tasks(
        self, request: pb.SubmitTasksRequest, ctx: RequestContext[Any, Any]
    ) -> pb.SubmitTasksResponse:
        self._check_open()
        specs = [
            st.TaskSpec(
                function=t.function,
                args=t.args,
                task_id=t.task_id,
                name=t.name,
                object_ids=tuple(t.object_ids),
                timeout_seconds=t.timeout_seconds,
                max_retries=t.max_retries,
                owner=t.owner,
                infra_failures=t.infra_failures,
            )
            for t in request.tasks
        ]
        ids = self.state.submit(specs)
        self._mutated(finished=False)
        return pb.SubmitTasksResponse(task_ids=ids, controller_id=self.controller_id)

    async def get_task(
        self, request: pb.GetTaskRequest, ctx: RequestContext[Any, Any]
    ) -> pb.GetTaskResponse:
        task = self.state.get_task(request.task_id)
        return pb.GetTaskResponse(task=convert.task_to_pb(task, request.include_result))

    async def wait_tasks(
        self, request: pb.WaitTasksRequest, ctx: RequestContext[Any, Any]
    ) -> pb.WaitTasksResponse:
        ids = list(dict.fromkeys(request.task_ids))
        if not ids:
            raise st.InvalidRequest("task_ids is empty")
        if request.min_finished < 0:
            raise st.InvalidRequest("min_finished must be >= 0")
        wanted = min(request.min_finished or len(ids), len(ids))

        def check() -> tuple[list[st.Task], int] | None:
            finished, pending = self.state.finished_among(ids)
            return (finished, pending) if len(finished) >= wanted else None

        await self._poll(request.wait_ms, ctx, check, self._finished)
        finished, pending = self.state.finished_among(ids)
        return pb.WaitTasksResponse(
            finished=[convert.task_to_pb(t, request.include_results) for t in finished],
            pending_count=pending,
        )

    async def watch_finished(
        self, request: pb.WatchFinishedRequest, ctx: RequestContext[Any, Any]
    ) -> pb.WatchFinishedResponse:
        owner, cursor = request.owner, request.cursor
        limit = request.limit or 1000

        def check() -> bool | None:  # something new, or a cursor that is not ours
            return True if self.state.finished_count(owner) != cursor else None

        if not owner:
            raise st.InvalidRequest("owner is empty")
        if request.controller_id and request.controller_id != self.controller_id:
            # The cursor belongs to a controller before a restart: say who we are, start over.
            return pb.WatchFinishedResponse(next_cursor=0, controller_id=self.controller_id)
        await self._poll(request.wait_ms, ctx, check, self._finished)
        tasks, next_cursor, dropped = self.state.read_finished(owner, cursor, limit)
        return pb.WatchFinishedResponse(
            finished=[convert.task_to_pb(t, include_result=True) for t in tasks],
            next_cursor=next_cursor,
            controller_id=self.controller_id,
            dropped=dropped,
        )

    async def cancel_tasks(
        self, request: pb.CancelTasksRequest, ctx: RequestContext[Any, Any]
    ) -> pb.CancelTasksResponse:
        self._check_open()
        tasks = self.state.cancel(request.task_ids)
        self._mutated()
        return pb.CancelTasksResponse(tasks=[convert.task_to_pb(t) for t in tasks])

    async def list_tasks(
        self, request: pb.ListTasksRequest, ctx: RequestContext[Any, Any]
    ) -> pb.ListTasksResponse:
        if request.limit < 0:
            raise st.InvalidRequest("limit must be >= 0")
        state = convert.PB_TO_STATE.get(request.state)
        if state is None and request.state != pb.TASK_STATE_UNSPECIFIED:
            raise st.InvalidRequest(f"unknown task state {request.state}")
        tasks = self.state.list_tasks(state, request.worker_id, request.limit or 1000)
        return pb.ListTasksResponse(tasks=[convert.task_to_pb(t) for t in tasks])

    async def put_object(
        self, request: pb.PutObjectRequest, ctx: RequestContext[Any, Any]
    ) -> pb.PutObjectResponse:
        self._check_open()
        data = request.data  # each access to a bytes field copies it: once only
        object_id = self.state.put_object(data)
        return pb.PutObjectResponse(object_id=object_id, size_bytes=len(data))

    async def get_object(
        self, request: pb.GetObjectRequest, ctx: RequestContext[Any, Any]
    ) -> pb.GetObjectResponse:
        return pb.GetObjectResponse(data=self.state.get_object(request.object_id))

    async def delete_objects(
        self, request: pb.DeleteObjectsRequest, ctx: RequestContext[Any, Any]
    ) -> pb.DeleteObjectsResponse:
        return pb.DeleteObjectsResponse(deleted=self.state.delete_objects(request.object_ids))

    # ------------------------------------------------------------------ workers

    async def register_worker(
        self, request: pb.RegisterWorkerRequest, ctx: RequestContext[Any, Any]
    ) -> pb.RegisterWorkerResponse:
        self._check_open()
        worker = self.state.register_worker(
            worker_id=request.worker_id,
            address=request.address,
            slots=request.slots,
            prefetch=request.prefetch,
            cpus=request.resources.cpus,
            memory_bytes=request.resources.memory_bytes,
            labels=dict(request.resources.labels),
        )
        self._mutated()
        logger.info(
            "worker %s registered (%d slots) at %s",
            worker.worker_id,
            worker.slots,
            worker.address or "-",
        )
        return pb.RegisterWorkerResponse(
            worker_id=worker.worker_id,
            controller_id=self.controller_id,
            heartbeat_interval_ms=int(self.heartbeat_interval * 1000),
            heartbeat_timeout_ms=int(self.state.heartbeat_timeout * 1000),
        )

    async def heartbeat(
        self, request: pb.HeartbeatRequest, ctx: RequestContext[Any, Any]
    ) -> pb.HeartbeatResponse:
        cancels = self.state.heartbeat(request.worker_id, request.draining, request.direct_running)
        if request.draining:
            self._mutated(finished=False)  # its lease poll returns; others may take its work
        return pb.HeartbeatResponse(cancel_task_ids=cancels)

    async def unregister_worker(
        self, request: pb.UnregisterWorkerRequest, ctx: RequestContext[Any, Any]
    ) -> pb.UnregisterWorkerResponse:
        requeued = self.state.unregister_worker(request.worker_id)
        self._mutated()
        logger.info("worker %s unregistered; requeued %d tasks", request.worker_id, len(requeued))
        return pb.UnregisterWorkerResponse(requeued_task_ids=requeued)

    async def lease_tasks(
        self, request: pb.LeaseTasksRequest, ctx: RequestContext[Any, Any]
    ) -> pb.LeaseTasksResponse:
        held: list[str] | None = list(request.held_task_ids) if request.reports_held else None
        prefetch = request.prefetch if request.HasField("prefetch") else None
        if request.reports_actors:
            hosted = []
            for update in request.hosted_actors:
                state = convert.PB_TO_ACTOR_STATE.get(update.state)
                if state not in (st.ActorState.CREATING, st.ActorState.READY):
                    raise ConnectError(
                        Code.INVALID_ARGUMENT,
                        f"hosted actor {update.actor_id}: state must be CREATING or READY",
                    )
                hosted.append((update.actor_id, update.incarnation, state))
            if self.state.reconcile_actors(request.worker_id, hosted):
                self._mutated(finished=False)

        def check() -> pb.LeaseTasksResponse | None:
            nonlocal held
            leased, cancels = self.state.lease(request.worker_id, held, prefetch)
            held = None  # reconciled once per call
            starts, stops = self.state.take_actor_orders(request.worker_id)
            if not (leased or cancels or starts or stops):
                return None
            return pb.LeaseTasksResponse(
                tasks=[convert.leased_to_pb(t) for t in leased],
                cancel_task_ids=cancels,
                start_actors=[convert.actor_start_to_pb(a) for a in starts],
                stop_actor_ids=stops,
            )

        found = await self._poll(
            request.wait_ms, ctx, check, self._work, cap_seconds=self.heartbeat_interval
        )
        return found or pb.LeaseTasksResponse()

    async def report_results(
        self, request: pb.ReportResultsRequest, ctx: RequestContext[Any, Any]
    ) -> pb.ReportResultsResponse:
        outcomes = [convert.outcome_from_pb(r) for r in request.results]
        direct = [convert.direct_from_pb(t) for t in request.direct_tasks]
        self.state.record_direct(request.worker_id, direct)  # kept even from a forgotten worker
        accepted = self.state.report(request.worker_id, outcomes)
        self._mutated()
        return pb.ReportResultsResponse(accepted=accepted)

    async def report_actors(
        self, request: pb.ReportActorsRequest, ctx: RequestContext[Any, Any]
    ) -> pb.ReportActorsResponse:
        self.state.heartbeat(request.worker_id)  # not_found: the worker must register again
        for update in request.updates:
            state = convert.PB_TO_ACTOR_STATE.get(update.state)
            if state not in (st.ActorState.READY, st.ActorState.FAILED, st.ActorState.DEAD):
                raise ConnectError(
                    Code.INVALID_ARGUMENT,
                    f"actor {update.actor_id}: state must be READY, FAILED or DEAD",
                )
            error = convert.failure_from_pb(update.error) if update.HasField("error") else None
            self.state.report_actor(
                request.worker_id, update.actor_id, update.incarnation, state, error
            )
        self._mutated(finished=False)
        return pb.ReportActorsResponse()

    # ------------------------------------------------------------------ actors

    def _actor_pb(self, actor: st.Actor) -> pb.Actor:
        worker = self.state.workers.get(actor.worker_id)
        return convert.actor_to_pb(actor, worker.address if worker is not None else "")

    async def create_actor(
        self, request: pb.CreateActorRequest, ctx: RequestContext[Any, Any]
    ) -> pb.CreateActorResponse:
        self._check_open()
        spec = convert.actor_spec_from_pb(request.actor)
        actor, existed = self.state.create_actor(spec, request.get_if_exists)
        self._mutated(finished=False)
        return pb.CreateActorResponse(actor=self._actor_pb(actor), existed=existed)

    async def get_actor(
        self, request: pb.GetActorRequest, ctx: RequestContext[Any, Any]
    ) -> pb.GetActorResponse:
        if not request.actor_id and not request.name:
            raise ConnectError(Code.INVALID_ARGUMENT, "give actor_id or name")
        actor = self.state.get_actor(request.actor_id, request.name)

        def check() -> st.Actor | None:
            ready = actor.state is st.ActorState.READY
            if not actor.state.live or (ready and actor.incarnation >= request.min_incarnation):
                return actor
            return None

        if request.wait_ms:
            await self._poll(request.wait_ms, ctx, check, self._actors)
        return pb.GetActorResponse(actor=self._actor_pb(actor))

    async def list_actors(
        self, request: pb.ListActorsRequest, ctx: RequestContext[Any, Any]
    ) -> pb.ListActorsResponse:
        state = convert.PB_TO_ACTOR_STATE.get(request.state) if request.state else None
        actors = self.state.list_actors(state)
        return pb.ListActorsResponse(actors=[self._actor_pb(a) for a in actors])

    async def kill_actor(
        self, request: pb.KillActorRequest, ctx: RequestContext[Any, Any]
    ) -> pb.KillActorResponse:
        actor = self.state.kill_actor(request.actor_id)
        self._mutated(finished=False)
        return pb.KillActorResponse(actor=self._actor_pb(actor))

    # ------------------------------------------------------------------ operators

    async def list_workers(
        self, request: pb.ListWorkersRequest, ctx: RequestContext[Any, Any]
    ) -> pb.ListWorkersResponse:
        return pb.ListWorkersResponse(
            workers=[convert.worker_to_pb(w) for w in self.state.workers.values()]
        )

    async def get_cluster_summary(
        self, request: pb.GetClusterSummaryRequest, ctx: RequestContext[Any, Any]
    ) -> pb.GetClusterSummaryResponse:
        s = self.state
        return pb.GetClusterSummaryResponse(
            queue_depth=s.queue_depth,
            tasks_by_state={state.value: n for state, n in s.counts.items()},
            workers=len(s.workers),
            total_slots=sum(w.slots for w in s.workers.values()),
            busy_slots=s.busy_slots(),
            objects=len(s.objects),
            object_bytes=sum(len(b) for b in s.objects.values()),
            controller_id=self.controller_id,
        )


_STATE_ERROR_CODES: dict[type[Exception], Code] = {
    st.InvalidRequest: Code.INVALID_ARGUMENT,
    st.NotFound: Code.NOT_FOUND,
    st.AlreadyExists: Code.ALREADY_EXISTS,
}


# ---------------------------------------------------------------------- server


class ControllerServer:
    """A FrayController served by uvicorn on `host:port` (port 0 picks a free port).

    Binding to anything but loopback requires a token: tasks are pickles, so whoever can reach the
    controller can run code on every worker.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        *,
        token: str | None = None,
        heartbeat_timeout: float = 10.0,
        max_infra_attempts: int = 3,
        max_finished_tasks: int = 100_000,
    ) -> None:
        auth.require_token_off_loopback(host, token, "controller")
        self.state = st.ControllerState(
            heartbeat_timeout=heartbeat_timeout,
            max_infra_attempts=max_infra_attempts,
            max_finished_tasks=max_finished_tasks,
        )
        self.service = ControllerService(self.state)
        self.app = FrayControllerASGIApplication(
            self.service.lifespan(),
            interceptors=serving.interceptors(token, _STATE_ERROR_CODES, "controller"),
            read_max_bytes=MAX_MESSAGE_BYTES,
            codecs=[google_protobuf_binary_codec(), serving.CurlFriendlyJSONCodec()],
        )
        self._server = serving.Server(
            self.app,
            host,
            port,
            name="controller",
            on_shutdown=self.service.begin_shutdown,
            lifespan=True,
        )
        self.host, self.port = host, self._server.port

    @property
    def address(self) -> str:
        return self._server.url

    def run(self) -> None:
        """Serve until SIGINT/SIGTERM (in the main thread) or `stop()`."""
        self._server.run()

    def start(self, timeout: float = 30.0) -> ControllerServer:
        """Serve from a background thread; returns once the server accepts connections."""
        self._server.start(timeout)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Shut down gracefully; returns when the server has stopped."""
        self._server.stop(timeout)

    def __enter__(self) -> ControllerServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
