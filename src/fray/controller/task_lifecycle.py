"""The rules of a task's life at the controller: what a submission must be, who gets which task,
what a worker's report does, retries and the budget for lost workers, and cancellation.

The decisions are here; the moves they lead to go through `Transitions.move`, and the
bookkeeping is in the task table and the worker registry. Two budgets: a task whose function
raised is retried `max_retries` times (its spec); a task whose worker was lost (died, went
silent, lost an answer) is run again until `max_infra_attempts` such losses, then fails.

Tasks that clients sent straight to a worker (`FrayWorker.RunTask`) never pass through this
queue: the worker reports them once finished (`record_direct`), and they are kept like other
finished tasks, without their values.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Iterable

from fray.controller.objects import ObjectStore
from fray.controller.placement import NOTHING, Need, fits_now, hold
from fray.controller.records import (
    AlreadyExists,
    DirectTaskRecord,
    ErrorKind,
    InvalidRequest,
    NotFound,
    TaskFailure,
    TaskOutcome,
    TaskRecord,
    TaskSpec,
    TaskState,
    WorkerRecord,
    cancelled_failure,
)
from fray.controller.tasks import TaskTable
from fray.controller.transitions import Transitions
from fray.controller.workers import WorkerRegistry
from fray.wire.limits import MAX_ID_LENGTH, MAX_TIMEOUT_SECONDS


def prefetch_of(worker: WorkerRecord, asked: int | None) -> int:
    """The tasks a worker may hold beyond its slots: what it asks for now (None: what it
    registered), at most what it registered."""
    return worker.prefetch if asked is None else max(0, min(asked, worker.prefetch))


# A lease carries at least this many tasks (room and queue allowing) when the next ones are
# known to be short: their function's recent tasks ran under SHORT_TASK_SECONDS.
MIN_LEASE = 64
SHORT_TASK_SECONDS = 0.005


def grant_size(
    worker: WorkerRecord, prefetch: int, queued: int, workers: int, short: bool = False
) -> int:
    """How many tasks one lease hands a worker that could take `queued` of the queued tasks.

    Its free slots, always; beyond them (prefetch) its fair share of those tasks over all the
    workers, so that long tasks spread over the workers. With many workers that share shrinks
    to one task a lease, so when the next tasks are known to be `short` (their function's
    recent tasks ran under SHORT_TASK_SECONDS) a lease carries at least MIN_LEASE of them
    (within its room, and at most half of the queue). The minimum is not applied to tasks not
    known to be short: a worker's prefetch follows its recent pace, which says nothing of the
    next tasks (a burst of tiny tasks, then long ones), and N long tasks queued behind one
    worker would wait while others idle.
    """
    held = len(worker.task_ids)
    room = worker.slots + prefetch - held
    free_slots = max(0, worker.slots - held)
    fair_share = math.ceil(queued / max(1, workers))
    least = min(MIN_LEASE, max(1, queued // 2)) if short else 0
    return max(0, min(room, max(free_slots, fair_share, least)))


class TaskLifecycle:
    """Submits, leases, finishes, retries and cancels tasks."""

    def __init__(
        self,
        *,
        tasks: TaskTable,
        workers: WorkerRegistry,
        objects: ObjectStore,
        transitions: Transitions,
        clock: Callable[[], float],
        max_infra_attempts: int,
    ) -> None:
        self._tasks, self._workers, self._objects = tasks, workers, objects
        self._move = transitions.move
        self._clock = clock
        self.max_infra_attempts = max_infra_attempts

    # ---------------------------------------------------------------- clients

    def submit(self, specs: Iterable[TaskSpec]) -> list[str]:
        """Queue tasks; all or none. Returns their ids (assigning any that are empty)."""
        specs = list(specs)
        if not specs:
            raise InvalidRequest("no tasks given")
        seen: set[str] = set()
        for i, spec in enumerate(specs):
            where = f"task {i}" + (f" ({spec.task_id})" if spec.task_id else "")
            self._check(spec, where)
            known = self._tasks.by_id.get(spec.task_id)
            # A direct task's record gives way to the same task queued again (its client lost
            # the worker's answer).
            if (known is not None and not known.direct) or spec.task_id in seen:
                raise AlreadyExists(f"task {spec.task_id} already exists")
            if spec.task_id:
                seen.add(spec.task_id)
            missing = self._objects.first_missing(spec.object_ids)
            if missing is not None:
                raise NotFound(f"{where}: object {missing} not found")
        now = self._clock()
        for spec in specs:
            spec.task_id = spec.task_id or uuid.uuid4().hex
            had = min(spec.infra_failures, self.max_infra_attempts - 1)  # one try here at least
            self._tasks.add_pending(
                TaskRecord(spec=spec, submitted_at=now, attempts=had, infra_failures=had)
            )
        return [spec.task_id for spec in specs]

    @staticmethod
    def _check(spec: TaskSpec, where: str) -> None:
        if not spec.function:
            raise InvalidRequest(f"{where}: function is empty")
        if len(spec.task_id) > MAX_ID_LENGTH:
            raise InvalidRequest(f"{where}: task_id longer than {MAX_ID_LENGTH} characters")
        if not 0 <= spec.timeout_seconds <= MAX_TIMEOUT_SECONDS:  # NaN fails too
            raise InvalidRequest(
                f"{where}: timeout_seconds must be from 0 to {MAX_TIMEOUT_SECONDS:g}"
            )
        if spec.max_retries < 0:
            raise InvalidRequest(f"{where}: max_retries must be >= 0")
        if spec.infra_failures < 0:
            raise InvalidRequest(f"{where}: infra_failures must be >= 0")

    def cancel(self, task_ids: Iterable[str]) -> list[TaskRecord]:
        """Cancel pending tasks at once; ask the holders of running ones to stop them."""
        tasks = [self._tasks.get(task_id) for task_id in task_ids]
        for task in tasks:
            if task.state is TaskState.PENDING:
                task.cancel_requested = True
                task.error = cancelled_failure()
                self._move(task, TaskState.CANCELLED)
            elif task.state.held and not task.cancel_requested:
                task.cancel_requested = True
                self._tasks.changes.task(task.task_id)
                self._workers.by_id[task.worker_id].pending_cancels.add(task.task_id)
                self._workers.news.add(task.worker_id)
        return tasks

    # ---------------------------------------------------------------- workers

    def lease(
        self,
        worker_id: str,
        held: Iterable[str] | None = None,
        prefetch: int | None = None,
        reports_started: bool = False,
    ) -> tuple[list[TaskRecord], list[str]]:
        """Hand a worker the tasks it has room for; also returns its pending cancellations.

        `held` lists the tasks the worker still has (None: not told). Tasks the controller thinks
        it leased to the worker but the worker does not have (a lost lease response) go back to
        the queue. A worker holds at most `slots + prefetch` tasks (`prefetch`: what it asks for
        now, capped by what it registered), and beyond its free slots gets no more than its fair
        share of the queue (the tasks it could take), so that long tasks spread over the
        workers. Only tasks whose need fits the worker now are taken (oldest first, whatever
        waits in other queues), and each holds its need there until it leaves the worker.

        Leased tasks are ASSIGNED until the worker reports that a slot started them (`started`);
        for a worker that does not report starts (`reports_started` false), RUNNING at once.
        """
        cancels = self._workers.heartbeat(worker_id)
        worker = self._workers.by_id[worker_id]
        if held is not None:
            held_set = set(held)
            for task_id in reversed([t for t in worker.task_ids if t not in held_set]):
                self.hand_back(self._tasks.by_id[task_id])
        extra = prefetch_of(worker, prefetch)
        room = worker.slots + extra - len(worker.task_ids)
        if room <= 0 or self._tasks.queued == 0 or worker.draining:
            return [], cancels
        # Whether each need fits, as of the last hold: a refusal stands for the whole call
        # (holding more never helps), a fit until the next task with a need is held.
        fitting: dict[Need, bool] = {}

        def fits(need: Need) -> bool:
            fit = fitting.get(need)
            if fit is None:
                fit = fitting[need] = fits_now(worker, need)
            return fit

        queued = self._tasks.queued_fitting(fits)  # the tasks this worker could take
        if queued == 0:
            return [], cancels
        short = self._tasks.short_work_ahead(SHORT_TASK_SECONDS)
        grant = grant_size(worker, extra, queued, len(self._workers.by_id), short)
        leased: list[TaskRecord] = []
        next_pending, task_ids = self._tasks.next_pending, worker.task_ids
        while len(leased) < grant and (task := next_pending(fits)) is not None:
            self._move(task, TaskState.ASSIGNED)
            task.attempts += 1
            task.worker_id = worker_id
            task_ids[task.task_id] = None  # it holds its slot and its need there
            if task.spec.need is not NOTHING:
                hold(worker, task.spec.need)
                for need in [n for n, fit in fitting.items() if fit]:
                    del fitting[need]
            if not reports_started:
                self._move(task, TaskState.RUNNING)
            leased.append(task)
        return leased, cancels

    def started(self, worker_id: str, starts: Iterable[tuple[str, int, float]]) -> int:
        """A worker's slots started these leased tasks: (task id, attempt, seconds it has been
        running). ASSIGNED -> RUNNING, `started_at` back-dated by the seconds; stale reports are
        ignored. Returns how many applied."""
        applied = 0
        now = self._clock()
        for task_id, attempt, running_for in starts:
            task = self._tasks.by_id.get(task_id)
            if (
                task is None
                or task.state is not TaskState.ASSIGNED
                or task.worker_id != worker_id
                or task.attempts != attempt
            ):
                continue
            self._move(task, TaskState.RUNNING)
            task.started_at = now - max(0.0, running_for)
            applied += 1
        return applied

    def report(self, worker_id: str, outcomes: Iterable[TaskOutcome]) -> int:
        """Apply a worker's results; returns how many applied (stale reports are ignored)."""
        worker = self._workers.alive(worker_id)
        accepted = 0
        for outcome in outcomes:
            task = self._tasks.by_id.get(outcome.task_id)
            if (
                task is None
                or not task.state.held
                or task.worker_id != worker_id
                or task.attempts != outcome.attempt
            ):
                self._drop_stored(outcome)  # a stale attempt's value: nobody will read it
                continue
            accepted += 1
            if outcome.handed_back:
                self.hand_back(task)
            elif outcome.error is not None:
                worker.tasks_failed += 1
                outcome.error.worker_id = outcome.error.worker_id or worker_id
                self._apply_error(task, outcome.error)
            elif task.cancel_requested:
                self._drop_stored(outcome)
                task.error = cancelled_failure()
                self._move(task, TaskState.CANCELLED)
            else:
                worker.tasks_completed += 1
                if outcome.run_seconds > 0:  # as the worker measured it (no report delays)
                    self._tasks.record_run(task.spec, outcome.run_seconds)
                task.result = outcome.value or b""
                task.error = None
                self._move(task, TaskState.COMPLETED)
        if accepted:
            self._workers.touch(worker_id)  # its counters
        return accepted

    def _drop_stored(self, outcome: TaskOutcome) -> None:
        """Free the large object an unkept value stands for (its worker then deletes it)."""
        if outcome.stored_object_id and outcome.value is not None:
            self._objects.delete([outcome.stored_object_id])

    def record_direct(self, worker_id: str, records: Iterable[DirectTaskRecord]) -> int:
        """Keep finished direct tasks for ListTasks/GetTask; returns how many were new.

        Records for ids already known are ignored (a task is recorded once). They never reach
        their owner's finished log: the owner got the outcome from the worker itself.
        """
        worker = self._workers.by_id.get(worker_id)
        recorded = 0
        for record in records:
            task_id = record.spec.task_id
            if (
                not task_id
                or len(task_id) > MAX_ID_LENGTH
                or task_id in self._tasks.by_id
                or not record.state.finished
            ):
                continue
            task = TaskRecord(
                spec=record.spec,
                submitted_at=record.started_at,
                state=record.state,
                attempts=1,
                worker_id=worker_id,
                started_at=record.started_at,
                finished_at=record.finished_at,
                error=record.error,
                direct=True,
            )
            self._tasks.add_finished(task)
            recorded += 1
            if worker is not None:
                self._workers.touch(worker_id)
                if record.state is TaskState.COMPLETED:
                    worker.tasks_completed += 1
                else:
                    worker.tasks_failed += 1
        self._tasks.evict()
        return recorded

    def hand_back(self, task: TaskRecord) -> None:
        """A running task its worker no longer runs: queued again, or cancelled if asked."""
        if task.cancel_requested:
            self._finish_error(task, cancelled_failure())
        else:
            self._move(task, TaskState.PENDING)

    def hand_back_all(self, worker: WorkerRecord) -> list[str]:
        """A leaving worker's tasks go back to the front of the queue, in order."""
        held = list(worker.task_ids)
        for task_id in reversed(held):  # each goes to the front: keep their order
            self.hand_back(self._tasks.by_id[task_id])
        return held

    def lose_all(self, worker: WorkerRecord, reason: str) -> None:
        """A lost worker's tasks: each counts an infrastructure failure against its budget."""
        for task_id in reversed(list(worker.task_ids)):  # requeued to the front, in order
            failure = TaskFailure(
                ErrorKind.WORKER_LOST,
                "WorkerLostError",
                f"worker {worker.worker_id} {reason}",
                worker_id=worker.worker_id,
            )
            self._infra_failure(self._tasks.by_id[task_id], failure)

    # ---------------------------------------------------------------- failures

    def _apply_error(self, task: TaskRecord, failure: TaskFailure) -> None:
        if task.cancel_requested or failure.kind is ErrorKind.CANCELLED:
            failure = cancelled_failure()
        elif failure.kind is ErrorKind.WORKER_LOST:
            self._infra_failure(task, failure)
            return
        elif failure.kind is ErrorKind.USER:
            task.user_failures += 1
            if task.user_failures <= task.spec.max_retries:
                task.error = failure  # kept for inspection while it is retried
                self._move(task, TaskState.PENDING)
                return
        self._finish_error(task, failure)

    def _infra_failure(self, task: TaskRecord, failure: TaskFailure) -> None:
        task.infra_failures += 1
        if task.cancel_requested:
            self.hand_back(task)
        elif task.infra_failures < self.max_infra_attempts:
            task.error = failure
            self._move(task, TaskState.PENDING)
        else:
            failure.message = (
                f"task {task.task_id} lost {task.infra_failures} times "
                f"(budget {self.max_infra_attempts}); last on worker {failure.worker_id}: "
                f"{failure.message}"
            )
            self._finish_error(task, failure)

    def _finish_error(self, task: TaskRecord, failure: TaskFailure) -> None:
        task.error = failure
        to = TaskState.CANCELLED if failure.kind is ErrorKind.CANCELLED else TaskState.FAILED
        self._move(task, to)
