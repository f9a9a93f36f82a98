"""`ControllerService`: the `fray.v1.FrayController` Connect RPCs over one `ControllerState`.

Each RPC turns its request message into calls on the state machine and the answer back into a
message (`convert`); request errors raised by the state become Connect codes in the server's
interceptor (`server`). The long polls (LeaseTasks, WaitTasks, WatchFinished, GetActor; GetJob
and GetJobLogs, whose RPCs are in `job_service`) sleep until a mutating RPC wakes them: clients'
polls on broadcast signals, workers' lease polls one by one, only those a change concerns
(`long_poll.LeasePolls`). A background reaper expires silent workers; another forgets the
large objects of processes that went away (`object_owners`).

With durable state (a `journal.Journal`), an RPC that changed the state, or that answers with
what others changed (finished tasks, leases), awaits `journal.durable()` before answering: what
a caller was told survives a crash. The controller's id is then the one saved with the state,
so clients' cursors stay valid across restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import Counter
from collections.abc import AsyncGenerator, Callable
from typing import Any, TypeVar

from connectrpc.code import Code
from connectrpc.errors import ConnectError
from connectrpc.request import RequestContext

from fray.controller import convert, job_convert, long_poll, object_owners
from fray.controller.job_service import JobRpcs
from fray.controller.journal import Journal
from fray.controller.long_poll import LeasePolls, Signal
from fray.controller.metrics import ControllerMetrics
from fray.controller.placement import Reasons
from fray.controller.records import (
    ActorRecord,
    ActorState,
    InvalidRequest,
    JobState,
    StateError,
    TaskRecord,
    TaskSpec,
)
from fray.controller.state import ControllerState
from fray.controller.task_logs import TaskLogs, TaskText
from fray.wire.limits import DEFAULT_MAX_QUEUED_TASKS_PER_CLIENT
from fray.wire.pb import controller_pb2 as pb
from fray.wire.pb.controller_connect import FrayController

logger = logging.getLogger(__name__)

FINISHED_LOG_IDLE_SECONDS = 3600.0  # a client silent this long is gone: forget its log

_T = TypeVar("_T")


class ControllerService(JobRpcs, FrayController):
    """The FrayController RPCs over one `ControllerState`."""

    def __init__(
        self,
        state: ControllerState,
        *,
        max_wait_seconds: float = 30.0,
        journal: Journal | None = None,
        max_queued_tasks_per_client: int = DEFAULT_MAX_QUEUED_TASKS_PER_CLIENT,
    ) -> None:
        if max_queued_tasks_per_client < 1:
            raise ValueError("max_queued_tasks_per_client must be >= 1")
        self.state = state
        self.max_queued_tasks_per_client = max_queued_tasks_per_client
        self.journal = journal
        self.controller_id = journal.controller_id if journal else uuid.uuid4().hex[:12]
        # Workers must call at least this often; their lease long polls are capped to it.
        self.heartbeat_interval = state.heartbeat_timeout / 3
        self.max_wait_seconds = max_wait_seconds
        self.closing = False
        # Workers' lease polls are woken one by one, only by the changes that concern them
        # (`long_poll.LeasePolls`); clients' polls sleep on broadcast signals: finished tasks
        # (and tasks' output), actors, jobs. A mutation wakes the ones it may concern.
        self._lease_polls = LeasePolls(state)
        self._finished = Signal()
        self._finished_seen = state.finished_total  # as of the last fire of `_finished`
        self._actors = Signal()  # for GetActor waits
        self._job_changes = Signal()  # for GetJob and GetJobLogs waits
        # Counted around the RPCs that may finish tasks: `unfinished` before, `settle` after.
        self.metrics = ControllerMetrics(state)
        self.task_logs = TaskLogs()  # what tasks printed: in memory only, not journaled

    async def lifespan(self) -> AsyncGenerator[ControllerService]:
        """Runs the worker reaper and the object owners check for as long as the server runs."""
        reaper = asyncio.create_task(self._reap_workers())
        owners = asyncio.create_task(object_owners.watch(self.state, self._objects_dropped))
        try:
            yield self
        finally:
            self.begin_shutdown()
            for task in (reaper, owners):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if self.journal is not None:
                await self.journal.close()

    def begin_shutdown(self) -> None:
        """Refuse new calls and end the long polls in flight, with `unavailable`."""
        if not self.closing:
            logger.info("controller %s shutting down", self.controller_id)
        self.closing = True
        self._mutated()
        self._lease_polls.wake_all()

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
                watched = self.metrics.unfinished_on_workers()
                expired = self.state.expire_workers()
                self.metrics.settle(watched)
            except Exception:  # keep reaping: a dead reaper would hang every lost task
                logger.exception("reaping workers failed")
                self._mutated()  # whatever it requeued before failing
                continue
            if expired:
                logger.warning(
                    "workers %s stopped heartbeating; their tasks were requeued", expired
                )
                self._mutated()
            with contextlib.suppress(StateError):  # a failed journal: logged there
                await self._durable()  # whatever changed, whoever forgot to save it

    def _objects_dropped(self) -> None:
        """Objects whose owner went away were forgotten: workers holding copies hear it."""
        self._mutated(finished=False)

    async def _durable(self) -> None:
        """Return once every change so far is saved (at once without durable state)."""
        if self.journal is not None:
            await self.journal.durable()

    def _check_open(self) -> None:
        if self.closing:
            raise ConnectError(Code.UNAVAILABLE, "controller is shutting down")

    def _mutated(self, *, finished: bool = True) -> None:
        """Anything may have changed: wake the long polls it may concern. Workers' lease polls
        as the state noted (`_changed`), and those caching objects that are gone (call this,
        not `_changed`, after freeing objects); every client signal (`finished=False`: not the
        finished tasks' one, unless tasks did finish). Pending jobs (and waiting actors) are
        placed first if capacity may have appeared."""
        self._changed(finished=finished)
        self._lease_polls.wake_freed(self.state.missing_objects)
        self._job_changes.fire()
        self._actors.fire()

    def _changed(self, *, finished: bool = False) -> None:
        """Tasks, workers, actors or jobs changed: wake the lease polls that can use what the
        state noted (`long_poll.LeasePolls.wake_changes`), clients waiting for actors and jobs
        if those changed, and clients waiting for finished tasks if any finished (or
        `finished`: e.g. new output)."""
        self.state.place_jobs()
        if self._lease_polls.wake_changes():
            self._job_changes.fire()
            self._actors.fire()
        total = self.state.finished_total
        if finished or total != self._finished_seen:
            self._finished_seen = total
            self._finished.fire()

    async def _poll(
        self,
        wait_ms: int,
        ctx: RequestContext[Any, Any],
        check: Callable[[], _T | None],
        signal: long_poll.Waitable,
        cap_seconds: float | None = None,
    ) -> _T | None:
        """Call `check` now and after every change until it returns non-None or time is up."""
        self._check_open()
        cap = cap_seconds or self.max_wait_seconds
        seconds = long_poll.poll_seconds(wait_ms, cap, ctx.timeout_ms)
        return await long_poll.poll(check, signal, seconds, self._check_open)

    # ------------------------------------------------------------------ clients

    async def submit_tasks(
        self, request: pb.SubmitTasksRequest, ctx: RequestContext[Any, Any]
    ) -> pb.SubmitTasksResponse:
        self._check_open()
        specs = [convert.task_spec_from_pb(t) for t in request.tasks]
        self._check_queue_room(specs)
        try:
            ids = self.state.submit(specs)
        except StateError:  # e.g. already_exists for a repeat: answered once the first is saved
            await self._durable()
            raise
        self.metrics.submitted(len(ids))
        self._changed()
        await self._durable()
        return pb.SubmitTasksResponse(task_ids=ids, controller_id=self.controller_id)

    def _check_queue_room(self, specs: list[TaskSpec]) -> None:
        """`resource_exhausted` when the tasks would give a client (owner) more unfinished
        queued tasks than `max_queued_tasks_per_client` (tasks already known do not count: a
        repeated submission is answered `already_exists`)."""
        limit = self.max_queued_tasks_per_client
        new = Counter(s.owner for s in specs if s.task_id not in self.state.tasks)
        for owner, count in new.items():
            held = self.state.unfinished_count(owner)
            if held + count > limit:
                raise ConnectError(
                    Code.RESOURCE_EXHAUSTED,
                    f"client {owner or '(no owner)'} has {held} unfinished tasks queued and "
                    f"submits {count} more: at most {limit} per client "
                    "(fray controller --max-queued-tasks-per-client)",
                )

    async def get_task(
        self, request: pb.GetTaskRequest, ctx: RequestContext[Any, Any]
    ) -> pb.GetTaskResponse:
        task = self.state.get_task(request.task_id)
        reason = self.state.pending_reason(task)
        return pb.GetTaskResponse(task=convert.task_to_pb(task, request.include_result, reason))

    async def wait_tasks(
        self, request: pb.WaitTasksRequest, ctx: RequestContext[Any, Any]
    ) -> pb.WaitTasksResponse:
        ids = list(dict.fromkeys(request.task_ids))
        if not ids:
            raise InvalidRequest("task_ids is empty")
        if request.min_finished < 0:
            raise InvalidRequest("min_finished must be >= 0")
        wanted = min(request.min_finished or len(ids), len(ids))
        among = self.state.watch_finished_among(ids)  # each look: what finished since the last

        def check() -> bool | None:
            return True if among.update() >= wanted else None

        await self._poll(request.wait_ms, ctx, check, self._finished)
        among.update()
        finished, pending = among.answer()
        await self._durable()  # answer with results that are saved
        return pb.WaitTasksResponse(
            finished=[convert.task_to_pb(t, request.include_results) for t in finished],
            pending_count=pending,
        )

    async def watch_finished(
        self, request: pb.WatchFinishedRequest, ctx: RequestContext[Any, Any]
    ) -> pb.WatchFinishedResponse:
        owner, cursor = request.owner, request.cursor
        limit = request.limit or 1000

        streams = self.task_logs.streams

        def check() -> bool | None:  # something new, or a cursor that is not ours
            if self.state.finished_count(owner) != cursor:
                return True
            if request.watch_output and streams.has_new(owner, request.output_cursor):
                return True  # live output of a running task
            return None

        if not owner:
            raise InvalidRequest("owner is empty")
        if request.controller_id and request.controller_id != self.controller_id:
            # The cursor belongs to a controller before a restart: say who we are, start over.
            return pb.WatchFinishedResponse(next_cursor=0, controller_id=self.controller_id)
        if request.watch_output:
            self.task_logs.watch(owner)  # keep its tasks' output from now on
        await self._poll(request.wait_ms, ctx, check, self._finished)
        tasks, next_cursor, dropped = self.state.read_finished(owner, cursor, limit)
        output: list[pb.TaskOutputChunk] = []
        next_output_cursor = 0
        if request.watch_output:
            output, next_output_cursor = streams.read(owner, request.output_cursor)
        await self._durable()  # the entries, their results and the acknowledgement are saved
        if request.brief:
            finished = [convert.finished_to_pb(t) for t in tasks]
        else:
            finished = [convert.task_to_pb(t, include_result=True) for t in tasks]
        return pb.WatchFinishedResponse(
            finished=self.task_logs.fill(finished),
            next_cursor=next_cursor,
            controller_id=self.controller_id,
            dropped=dropped,
            output=output,
            next_output_cursor=next_output_cursor,
        )

    async def get_task_logs(
        self, request: pb.GetTaskLogsRequest, ctx: RequestContext[Any, Any]
    ) -> pb.GetTaskLogsResponse:
        """A task's output; with wait_ms, once it has finished (or at the deadline). A task not
        known (yet: a direct task is reported after it ends) is waited for, then not_found."""
        task_id = request.task_id
        if request.follow:
            return await self._follow_task_logs(request, ctx)

        def finished() -> bool | None:
            if self.task_logs.get(task_id) is not None:
                return True
            if task_id not in self.state.tasks:
                return None
            return True if self.state.get_task(task_id).state.finished else None

        done = finished()
        if not done and request.wait_ms:
            done = await self._poll(request.wait_ms, ctx, finished, self._finished)
        if not done and self.task_logs.get(task_id) is None:
            self.state.get_task(task_id)  # not_found for a task the controller does not know
        return pb.GetTaskLogsResponse(finished=bool(done), output=self.task_logs.get(task_id))

    async def _follow_task_logs(
        self, request: pb.GetTaskLogsRequest, ctx: RequestContext[Any, Any]
    ) -> pb.GetTaskLogsResponse:
        """GetTaskLogs with `follow`: once there is output past `offset` (or the task ended),
        the text from `offset` on (from the oldest byte kept: `dropped_bytes` is where the text
        starts) and where to ask next."""
        task_id, offset = request.task_id, request.offset

        def finished(text: TaskText | None) -> bool:
            task = self.state.tasks.get(task_id)  # the record decides: a task may be retried
            if task is not None:
                return task.state.finished
            return text is not None and text.finished  # a direct task: known once it ended

        def ready() -> bool | None:
            text = self.task_logs.text_from(task_id, offset)
            if finished(text) or (text is not None and text.end != offset):
                return True
            return None

        done = ready()
        if not done and request.wait_ms:
            done = await self._poll(request.wait_ms, ctx, ready, self._finished)
        text = self.task_logs.text_from(task_id, offset)
        if text is None and task_id not in self.state.tasks:
            self.state.get_task(task_id)  # not_found for a task the controller does not know
        if text is None or (not text.text and not text.start):
            return pb.GetTaskLogsResponse(
                finished=finished(text), next_offset=offset if text is None else text.end
            )
        return pb.GetTaskLogsResponse(
            finished=finished(text),
            output=pb.TaskOutput(
                text=text.text, dropped_bytes=text.start, pid=text.pid, worker_id=text.worker_id
            ),
            next_offset=text.end,
        )

    async def cancel_tasks(
        self, request: pb.CancelTasksRequest, ctx: RequestContext[Any, Any]
    ) -> pb.CancelTasksResponse:
        self._check_open()
        watched = self.metrics.unfinished(request.task_ids)
        tasks = self.state.cancel(request.task_ids)
        self.metrics.settle(watched)
        self._changed()  # the holders of running ones hear it; clients if some finished
        await self._durable()
        return pb.CancelTasksResponse(tasks=[convert.task_to_pb(t) for t in tasks])

    async def list_tasks(
        self, request: pb.ListTasksRequest, ctx: RequestContext[Any, Any]
    ) -> pb.ListTasksResponse:
        if request.limit < 0:
            raise InvalidRequest("limit must be >= 0")
        state = convert.PB_TO_STATE.get(request.state)
        if state is None and request.state != pb.TASK_STATE_UNSPECIFIED:
            raise InvalidRequest(f"unknown task state {request.state}")
        tasks = self.state.list_tasks(state, request.worker_id, request.limit or 1000)
        reasons = self.state.reasons()  # per distinct need, not per task
        why = self.state.pending_reason
        return pb.ListTasksResponse(
            tasks=[convert.task_to_pb(t, False, why(t, reasons)) for t in tasks]
        )

    async def put_object(
        self, request: pb.PutObjectRequest, ctx: RequestContext[Any, Any]
    ) -> pb.PutObjectResponse:
        self._check_open()
        data = request.data  # each access to a bytes field copies it: once only
        location = request.location if request.HasField("location") else None
        try:
            object_id = self.state.put_object(data, request.object_id, location)
        finally:
            await self._durable()  # a repeat is answered once the first put is saved
        size = self.state.objects.size_of(object_id)
        return pb.PutObjectResponse(object_id=object_id, size_bytes=size)

    async def get_object(
        self, request: pb.GetObjectRequest, ctx: RequestContext[Any, Any]
    ) -> pb.GetObjectResponse:
        found = self.state.get_object(request.object_id)
        if isinstance(found, bytes):
            return pb.GetObjectResponse(data=found)
        return pb.GetObjectResponse(location=found)

    async def delete_objects(
        self, request: pb.DeleteObjectsRequest, ctx: RequestContext[Any, Any]
    ) -> pb.DeleteObjectsResponse:
        deleted = self.state.delete_objects(request.object_ids)
        if deleted:
            self._mutated(finished=False)  # lease polls tell workers to drop their copies
        await self._durable()
        return pb.DeleteObjectsResponse(deleted=deleted)

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
            instance=request.instance,
            capacities=dict(request.resources.capacities),
        )
        self._changed()
        await self._durable()
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
            self._changed()  # its lease poll hears it
            await self._durable()
        return pb.HeartbeatResponse(cancel_task_ids=cancels)

    async def unregister_worker(
        self, request: pb.UnregisterWorkerRequest, ctx: RequestContext[Any, Any]
    ) -> pb.UnregisterWorkerResponse:
        watched = self.metrics.unfinished_on_workers([request.worker_id])
        requeued = self.state.unregister_worker(request.worker_id)
        self.metrics.settle(watched)
        self._changed()
        await self._durable()
        logger.info("worker %s unregistered; requeued %d tasks", request.worker_id, len(requeued))
        return pb.UnregisterWorkerResponse(requeued_task_ids=requeued)

    async def lease_tasks(
        self, request: pb.LeaseTasksRequest, ctx: RequestContext[Any, Any]
    ) -> pb.LeaseTasksResponse:
        held: list[str] | None = list(request.held_task_ids) if request.reports_held else None
        prefetch = request.prefetch if request.HasField("prefetch") else None
        cached = list(request.cached_object_ids)
        if request.reports_actors:
            hosted = []
            for update in request.hosted_actors:
                state = convert.PB_TO_ACTOR_STATE.get(update.state)
                if state not in (ActorState.CREATING, ActorState.READY):
                    raise ConnectError(
                        Code.INVALID_ARGUMENT,
                        f"hosted actor {update.actor_id}: state must be CREATING or READY",
                    )
                hosted.append((update.actor_id, update.incarnation, state))
            if self.state.reconcile_actors(request.worker_id, hosted):
                self._mutated(finished=False)
        if request.reports_jobs and self.state.reconcile_jobs(
            request.worker_id, request.job_replicas
        ):
            self._mutated(finished=False)

        polls = self._lease_polls
        poll = polls.new(request.worker_id, prefetch, cached)

        def check() -> pb.LeaseTasksResponse | None:
            nonlocal held
            cover, poll.cover = poll.cover, None  # woken for new tasks: expected to take some
            leased: list[TaskRecord] = []
            try:
                watched = self.metrics.unfinished_on_workers([request.worker_id]) if held else []
                leased, cancels = self.state.lease(
                    request.worker_id, held, prefetch, request.reports_started
                )
            finally:
                polls.ran(poll, cover, leased)  # fewer than expected: others take the rest
            self.metrics.settle(watched)
            self.metrics.leased(leased)
            held = None  # reconciled once per call
            starts, stops = self.state.take_actor_orders(request.worker_id)
            freed = self.state.missing_objects(cached)  # the worker drops its copies
            self._changed()  # what this lease handed back or placed may concern others
            launches, job_stops = self.state.take_job_orders(request.worker_id)
            if not (leased or cancels or starts or stops or freed or launches or job_stops):
                return None
            return pb.LeaseTasksResponse(
                tasks=[convert.leased_to_pb(t) for t in leased],
                cancel_task_ids=cancels,
                start_actors=[convert.actor_start_to_pb(a) for a in starts],
                stop_actor_ids=stops,
                freed_object_ids=freed,
                start_jobs=[job_convert.launch_to_pb(j, i) for j, i in launches],
                stop_job_replicas=job_stops,
            )

        try:
            found = await self._poll(
                request.wait_ms, ctx, check, poll, cap_seconds=self.heartbeat_interval
            )
        finally:
            polls.done(poll)  # woken for new tasks but never looked: others take them
        await self._durable()  # the leases (and repairs) are saved before the worker hears
        return found or pb.LeaseTasksResponse()

    async def report_results(
        self, request: pb.ReportResultsRequest, ctx: RequestContext[Any, Any]
    ) -> pb.ReportResultsResponse:
        outcomes = [convert.outcome_from_pb(r) for r in request.results]
        direct = [convert.direct_from_pb(t) for t in request.direct_tasks]
        self.task_logs.add_reported(request, self._task_owner)
        watched = self.metrics.unfinished(o.task_id for o in outcomes)
        known = self.metrics.finished_ids(t.task_id for t in request.direct_tasks)
        self.state.record_direct(request.worker_id, direct)  # kept even from a forgotten worker
        if request.started:  # before the results: a task may have started and finished since
            self.state.started(
                request.worker_id,
                ((s.task_id, s.attempt, s.running_for_ms / 1000) for s in request.started),
            )
        accepted = self.state.report(request.worker_id, outcomes)
        self.metrics.settle(watched)
        self.metrics.settle_new((t.task_id for t in request.direct_tasks), known)
        # The reporting worker has room again; retried tasks are queued again; the owners of
        # finished tasks (and of output) hear it.
        self._changed(
            finished=bool(request.results or request.output_chunks or request.direct_tasks)
        )
        await self._durable()
        return pb.ReportResultsResponse(accepted=accepted)

    def _task_owner(self, task_id: str) -> tuple[str, str] | None:
        """A known task's owner and name (for its live output)."""
        task = self.state.tasks.get(task_id)
        return None if task is None else (task.spec.owner, task.spec.name)

    async def report_actors(
        self, request: pb.ReportActorsRequest, ctx: RequestContext[Any, Any]
    ) -> pb.ReportActorsResponse:
        self.state.heartbeat(request.worker_id)  # not_found: the worker must register again
        for update in request.updates:
            state = convert.PB_TO_ACTOR_STATE.get(update.state)
            if state not in (ActorState.READY, ActorState.FAILED, ActorState.DEAD):
                raise ConnectError(
                    Code.INVALID_ARGUMENT,
                    f"actor {update.actor_id}: state must be READY, FAILED or DEAD",
                )
            error = convert.failure_from_pb(update.error) if update.HasField("error") else None
            self.state.report_actor(
                request.worker_id, update.actor_id, update.incarnation, state, error
            )
        self._mutated(finished=False)
        await self._durable()
        return pb.ReportActorsResponse()

    # ------------------------------------------------------------------ actors

    def _actor_pb(self, actor: ActorRecord, reasons: Reasons | None = None) -> pb.Actor:
        worker = self.state.workers.get(actor.worker_id)
        address = worker.address if worker is not None else ""
        return convert.actor_to_pb(actor, address, self.state.actor_pending_reason(actor, reasons))

    async def create_actor(
        self, request: pb.CreateActorRequest, ctx: RequestContext[Any, Any]
    ) -> pb.CreateActorResponse:
        self._check_open()
        spec = convert.actor_spec_from_pb(request.actor)
        try:
            actor, existed = self.state.create_actor(spec, request.get_if_exists)
        finally:
            self._mutated(finished=False)
            await self._durable()  # also before an already_exists: the name's owner is saved
        return pb.CreateActorResponse(actor=self._actor_pb(actor), existed=existed)

    async def get_actor(
        self, request: pb.GetActorRequest, ctx: RequestContext[Any, Any]
    ) -> pb.GetActorResponse:
        if not request.actor_id and not request.name:
            raise ConnectError(Code.INVALID_ARGUMENT, "give actor_id or name")
        actor = self.state.get_actor(request.actor_id, request.name)

        def check() -> ActorRecord | None:
            ready = actor.state is ActorState.READY
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
        actors = self.state.list_actors(state, request.name_prefix)
        reasons = self.state.reasons()
        return pb.ListActorsResponse(actors=[self._actor_pb(a, reasons) for a in actors])

    async def kill_actor(
        self, request: pb.KillActorRequest, ctx: RequestContext[Any, Any]
    ) -> pb.KillActorResponse:
        actor = self.state.kill_actor(request.actor_id)
        self._mutated(finished=False)
        await self._durable()
        return pb.KillActorResponse(actor=self._actor_pb(actor))

    # ------------------------------------------------------------------ operators

    async def list_workers(
        self, request: pb.ListWorkersRequest, ctx: RequestContext[Any, Any]
    ) -> pb.ListWorkersResponse:
        workers = []
        for w in self.state.workers.values():
            worker = convert.worker_to_pb(w, self.state.worker_busy_slots(w))
            worker.job_replicas.extend(self.state.job_replicas_on(w.worker_id))
            workers.append(worker)
        return pb.ListWorkersResponse(workers=workers)

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
            object_bytes=s.objects.size_bytes,
            controller_id=self.controller_id,
            active_clients=s.active_clients(),
            unplaceable=s.unplaceable() + s.unplaceable_jobs(),
            jobs_by_state={state.value: s.job_counts.get(state, 0) for state in JobState},
        )
