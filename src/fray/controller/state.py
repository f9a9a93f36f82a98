"""The controller's state machine: the task queue, the worker registry and the object store.

Pure Python and single-threaded: no transport, no asyncio, no locks. The Connect service
(`fray.controller.service`) calls these methods from its event loop and turns the exceptions below
into Connect error codes. Time comes from an injectable clock so the machine can be tested alone.

Task life cycle (every change goes through `_move`)::

    PENDING --lease--> RUNNING --value--> COMPLETED
       |                 |--error with retries left, worker lost within budget,
       |                 |  handed back--> PENDING
       |                 |--error, no retries left / worker lost too often--> FAILED
       +--cancel--> CANCELLED <--cancel reported, or holder lost after cancel--+

Actor life cycle (every change goes through `_move_actor`)::

    PENDING --placed--> CREATING --constructed--> READY --killed--> DEAD
                           |--constructor raised--> FAILED
    CREATING/READY --worker or process lost, restarts left--> RESTARTING --placed--> CREATING
                   --lost, no restarts left--> DEAD

Tasks that clients sent straight to a worker (`FrayWorker.RunTask`) never pass through here:
the worker reports them once finished (`record_direct`), and they are kept like other finished
tasks, without their values.
"""

from __future__ import annotations

import enum
import itertools
import math
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from fray.wire.limits import MAX_ID_LENGTH


class TaskState(enum.Enum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def finished(self) -> bool:
        return self in _FINISHED


_FINISHED = frozenset({TaskState.COMPLETED, TaskState.FAILED, TaskState.CANCELLED})

# The only legal moves; anything else is a bug in the controller.
_TRANSITIONS: dict[TaskState, frozenset[TaskState]] = {
    TaskState.PENDING: frozenset({TaskState.RUNNING, TaskState.CANCELLED}),
    TaskState.RUNNING: frozenset(
        {TaskState.PENDING, TaskState.COMPLETED, TaskState.FAILED, TaskState.CANCELLED}
    ),
    TaskState.COMPLETED: frozenset(),
    TaskState.FAILED: frozenset(),
    TaskState.CANCELLED: frozenset(),
}


class ErrorKind(enum.Enum):
    USER = "USER"  # the function raised
    WORKER_LOST = "WORKER_LOST"  # worker or its executor died / went silent (infrastructure)
    TIMEOUT = "TIMEOUT"  # stopped after its execution timeout
    CANCELLED = "CANCELLED"
    DESERIALIZATION = "DESERIALIZATION"  # the worker could not unpickle the task


class StateError(Exception):
    """Base of the errors a request can cause; the service maps each to a Connect code."""


class InvalidRequest(StateError):
    """Malformed input (Connect `invalid_argument`)."""


class NotFound(StateError):
    """Unknown task, worker, object or cursor (Connect `not_found`)."""


class AlreadyExists(StateError):
    """A task id that is already taken (Connect `already_exists`)."""


@dataclass
class TaskFailure:
    kind: ErrorKind
    type: str
    message: str
    traceback: str = ""
    pickled_exception: bytes = b""
    worker_id: str = ""


@dataclass
class TaskSpec:
    """What a client submits."""

    function: bytes
    args: bytes
    task_id: str = ""
    name: str = ""
    object_ids: tuple[str, ...] = ()
    timeout_seconds: float = 0.0
    max_retries: int = 0
    owner: str = ""
    infra_failures: int = 0  # already had, on the direct path


@dataclass
class Task:
    spec: TaskSpec
    submitted_at: float
    state: TaskState = TaskState.PENDING
    attempts: int = 0  # times leased
    user_failures: int = 0
    infra_failures: int = 0
    worker_id: str = ""
    started_at: float | None = None
    finished_at: float | None = None
    result: bytes | None = None
    error: TaskFailure | None = None
    cancel_requested: bool = False
    direct: bool = False  # ran through the direct path; recorded when finished

    @property
    def task_id(self) -> str:
        return self.spec.task_id


@dataclass
class Outcome:
    """A worker's report for one task: exactly one of value, error or handed_back."""

    task_id: str
    attempt: int
    value: bytes | None = None
    error: TaskFailure | None = None
    handed_back: bool = False


@dataclass
class Worker:
    worker_id: str
    address: str
    slots: int
    prefetch: int
    registered_at: float
    last_heartbeat: float
    cpus: float = 0.0
    memory_bytes: int = 0
    labels: dict[str, str] = field(default_factory=dict)
    # Tasks leased to this worker, in lease order (a dict used as an ordered set).
    task_ids: dict[str, None] = field(default_factory=dict)
    pending_cancels: set[str] = field(default_factory=set)
    tasks_completed: int = 0
    tasks_failed: int = 0
    draining: bool = False  # shutting down: gets no more tasks
    actor_ids: dict[str, None] = field(default_factory=dict)  # actors placed here
    actor_starts: list[str] = field(default_factory=list)  # to send with the next lease
    actor_stops: list[str] = field(default_factory=list)
    direct_running: int = 0  # direct tasks running or about to, as of its last heartbeat


class ActorState(enum.Enum):
    PENDING = "PENDING"
    CREATING = "CREATING"
    READY = "READY"
    RESTARTING = "RESTARTING"
    FAILED = "FAILED"
    DEAD = "DEAD"

    @property
    def live(self) -> bool:
        return self not in (ActorState.FAILED, ActorState.DEAD)


_ACTOR_TRANSITIONS: dict[ActorState, frozenset[ActorState]] = {
    ActorState.PENDING: frozenset({ActorState.CREATING, ActorState.DEAD}),
    ActorState.CREATING: frozenset(
        {ActorState.READY, ActorState.FAILED, ActorState.RESTARTING, ActorState.DEAD}
    ),
    ActorState.READY: frozenset({ActorState.RESTARTING, ActorState.DEAD}),
    ActorState.RESTARTING: frozenset({ActorState.CREATING, ActorState.DEAD}),
    ActorState.FAILED: frozenset(),
    ActorState.DEAD: frozenset(),
}


@dataclass
class ActorSpec:
    """What a client asks for in CreateActor."""

    cls: bytes
    args: bytes
    actor_id: str = ""
    name: str = ""
    class_name: str = ""
    object_ids: tuple[str, ...] = ()
    max_restarts: int = 0
    owner: str = ""
    detached: bool = False


@dataclass
class Actor:
    spec: ActorSpec
    created_at: float
    state: ActorState = ActorState.PENDING
    worker_id: str = ""
    incarnation: int = 0  # placements so far
    restarts: int = 0
    error: TaskFailure | None = None

    @property
    def actor_id(self) -> str:
        return self.spec.actor_id


@dataclass
class DirectRecord:
    """A finished task that went straight from a client to a worker."""

    spec: TaskSpec  # without function and args
    state: TaskState
    started_at: float
    finished_at: float
    error: TaskFailure | None = None


@dataclass
class _FinishedLog:
    """Ids of one owner's finished tasks; `base` entries before the deque were acknowledged."""

    last_read: float
    base: int = 0
    ids: deque[str] = field(default_factory=deque)
    dropped_until: int = 0  # entries before this were dropped unread (an idle owner)


def _cancelled() -> TaskFailure:
    return TaskFailure(ErrorKind.CANCELLED, "TaskCancelledError", "cancelled")


class ControllerState:
    """Tasks, workers and objects, and every rule about how they change."""

    def __init__(
        self,
        *,
        heartbeat_timeout: float = 10.0,
        max_infra_attempts: int = 3,
        max_finished_tasks: int = 100_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if heartbeat_timeout <= 0 or max_infra_attempts < 1 or max_finished_tasks < 1:
            raise ValueError("heartbeat_timeout, max_infra_attempts and max_finished_tasks > 0")
        self.heartbeat_timeout = heartbeat_timeout
        self.max_infra_attempts = max_infra_attempts
        self.max_finished_tasks = max_finished_tasks
        self.clock = clock
        self.tasks: dict[str, Task] = {}
        self.workers: dict[str, Worker] = {}
        self.objects: dict[str, bytes] = {}
        self.counts: dict[TaskState, int] = {s: 0 for s in TaskState}
        self._queue: deque[str] = deque()  # PENDING task ids, oldest first (may hold stale ids)
        self._finished_order: deque[str] = deque()  # for evicting the oldest finished tasks
        self._finished_logs: dict[str, _FinishedLog] = {}
        self.actors: dict[str, Actor] = {}
        self._actor_names: dict[str, str] = {}  # name -> id, live actors only

    # ------------------------------------------------------------------ transitions

    def _move(self, task: Task, to: TaskState) -> None:
        if to not in _TRANSITIONS[task.state]:
            raise AssertionError(f"illegal move of task {task.task_id}: {task.state} -> {to}")
        self.counts[task.state] -= 1
        self.counts[to] += 1
        now = self.clock()
        if task.state is TaskState.RUNNING:
            worker = self.workers.get(task.worker_id)
            if worker is not None:
                worker.task_ids.pop(task.task_id, None)
                worker.pending_cancels.discard(task.task_id)
        task.state = to
        if to is TaskState.PENDING:
            task.worker_id = ""
            task.started_at = None
            # A task coming back from a worker is older than anything queued after it.
            self._queue.appendleft(task.task_id)
        elif to is TaskState.RUNNING:
            task.started_at = now
        elif to.finished:
            task.finished_at = now
            self._finished_order.append(task.task_id)
            if task.spec.owner:
                self._finished_log(task.spec.owner).ids.append(task.task_id)
            self._evict_finished()

    def _finish_error(self, task: Task, failure: TaskFailure) -> None:
        task.error = failure
        to = TaskState.CANCELLED if failure.kind is ErrorKind.CANCELLED else TaskState.FAILED
        self._move(task, to)

    def _evict_finished(self) -> None:
        while len(self._finished_order) > self.max_finished_tasks:
            task_id = self._finished_order.popleft()
            task = self.tasks.pop(task_id, None)
            if task is None:
                continue
            self.counts[task.state] -= 1
            # Its id stays in its owner's finished log (if unread): it reads as lost there.

    # ------------------------------------------------------------------ clients

    def submit(self, specs: Iterable[TaskSpec]) -> list[str]:
        """Queue tasks; all or none. Returns their ids (assigning any that are empty)."""
        specs = list(specs)
        if not specs:
            raise InvalidRequest("no tasks given")
        seen: set[str] = set()
        for i, spec in enumerate(specs):
            where = f"task {i}" + (f" ({spec.task_id})" if spec.task_id else "")
            if not spec.function:
                raise InvalidRequest(f"{where}: function is empty")
            if len(spec.task_id) > MAX_ID_LENGTH:
                raise InvalidRequest(f"{where}: task_id longer than {MAX_ID_LENGTH} characters")
            if not (spec.timeout_seconds >= 0 and math.isfinite(spec.timeout_seconds)):
                raise InvalidRequest(f"{where}: timeout_seconds must be >= 0")
            if spec.max_retries < 0:
                raise InvalidRequest(f"{where}: max_retries must be >= 0")
            if spec.infra_failures < 0:
                raise InvalidRequest(f"{where}: infra_failures must be >= 0")
            known = self.tasks.get(spec.task_id)
            # A direct task's record gives way to the same task queued again (its client lost
            # the worker's answer).
            if (known is not None and not known.direct) or spec.task_id in seen:
                raise AlreadyExists(f"task {spec.task_id} already exists")
            if spec.task_id:
                seen.add(spec.task_id)
            for object_id in spec.object_ids:
                if object_id not in self.objects:
                    raise NotFound(f"{where}: object {object_id} not found")
        now = self.clock()
        ids = []
        for spec in specs:
            if not spec.task_id:
                spec.task_id = uuid.uuid4().hex
            replaced = self.tasks.get(spec.task_id)
            if replaced is not None:  # a direct record (rare): forget it entirely
                self.counts[replaced.state] -= 1
                self._finished_order.remove(spec.task_id)
            had = min(spec.infra_failures, self.max_infra_attempts - 1)  # one try here at least
            self.tasks[spec.task_id] = Task(
                spec=spec, submitted_at=now, attempts=had, infra_failures=had
            )
            self.counts[TaskState.PENDING] += 1
            self._queue.append(spec.task_id)
            ids.append(spec.task_id)
        return ids

    def get_task(self, task_id: str) -> Task:
        task = self.tasks.get(task_id)
        if task is None:
            raise NotFound(f"task {task_id} not found")
        return task

    def finished_among(self, task_ids: Iterable[str]) -> tuple[list[Task], int]:
        """The finished tasks among `task_ids`, and how many are not finished."""
        finished, pending = [], 0
        for task_id in task_ids:
            task = self.get_task(task_id)
            if task.state.finished:
                finished.append(task)
            else:
                pending += 1
        return finished, pending

    def read_finished(self, owner: str, cursor: int, limit: int) -> tuple[list[Task], int, bool]:
        """An owner's finished tasks from position `cursor` on; acknowledges those before it.

        Returns the tasks, the next cursor, and whether entries the reader had not read were
        dropped (it then has to ask for its tasks one by one). A cursor past the end of the log
        (the controller lost its state, e.g. it restarted) raises NotFound; one before what was
        acknowledged reads from the oldest entry still kept.
        """
        if not owner:
            raise InvalidRequest("owner is empty")
        log = self._finished_log(owner)
        log.last_read = self.clock()
        end = log.base + len(log.ids)
        if cursor > end or cursor < 0:
            raise NotFound(f"cursor {cursor} is not in the finished log of {owner} (0..{end})")
        dropped = cursor < log.dropped_until
        cursor = max(cursor, log.base)  # entries before base were acknowledged or dropped
        while log.base < cursor:
            log.ids.popleft()
            log.base += 1
        tasks = []
        for task_id in itertools.islice(log.ids, max(1, limit)):
            task = self.tasks.get(task_id)
            tasks.append(task if task is not None else self._evicted(task_id))
        return tasks, cursor + min(len(log.ids), max(1, limit)), dropped

    def _finished_log(self, owner: str) -> _FinishedLog:
        log = self._finished_logs.get(owner)
        if log is None:
            log = self._finished_logs[owner] = _FinishedLog(last_read=self.clock())
        return log

    def expire_finished_logs(self, max_idle: float) -> int:
        """Drop the unread ids of owners silent for `max_idle` seconds (clients that went away);
        their positions are kept, so a reader that comes back is told what it missed.
        Returns how many logs were emptied."""
        cutoff = self.clock() - max_idle
        emptied = 0
        for log in self._finished_logs.values():
            if log.last_read < cutoff and log.ids:
                log.base += len(log.ids)
                log.dropped_until = log.base
                log.ids = deque()
                emptied += 1
        return emptied

    def _evicted(self, task_id: str) -> Task:
        """Stands for a finished task forgotten before its owner read it: it reads as lost."""
        message = (
            f"its result was dropped before it was read: the controller keeps "
            f"{self.max_finished_tasks} finished tasks"
        )
        return Task(
            spec=TaskSpec(function=b"", args=b"", task_id=task_id),
            submitted_at=0.0,
            state=TaskState.FAILED,
            error=TaskFailure(ErrorKind.WORKER_LOST, "ResultEvicted", message),
        )

    def finished_count(self, owner: str) -> int:
        log = self._finished_logs.get(owner)
        return 0 if log is None else log.base + len(log.ids)

    def cancel(self, task_ids: Iterable[str]) -> list[Task]:
        """Cancel pending tasks at once; ask the holders of running ones to stop them."""
        tasks = [self.get_task(task_id) for task_id in task_ids]
        for task in tasks:
            if task.state is TaskState.PENDING:
                task.cancel_requested = True
                task.error = _cancelled()
                self._move(task, TaskState.CANCELLED)
            elif task.state is TaskState.RUNNING and not task.cancel_requested:
                task.cancel_requested = True
                self.workers[task.worker_id].pending_cancels.add(task.task_id)
        return tasks

    def list_tasks(
        self, state: TaskState | None = None, worker_id: str = "", limit: int = 1000
    ) -> list[Task]:
        if worker_id:
            ids: Iterable[str] = list(self._get_worker(worker_id).task_ids)
        else:
            ids = self.tasks
        out = []
        for task_id in ids:
            task = self.tasks[task_id]
            if state is None or task.state is state:
                out.append(task)
                if len(out) >= limit:
                    break
        return out

    # ------------------------------------------------------------------ objects

    def put_object(self, data: bytes) -> str:
        object_id = uuid.uuid4().hex
        self.objects[object_id] = data
        return object_id

    def get_object(self, object_id: str) -> bytes:
        data = self.objects.get(object_id)
        if data is None:
            raise NotFound(f"object {object_id} not found")
        return data

    def delete_objects(self, object_ids: Iterable[str]) -> int:
        return sum(self.objects.pop(object_id, None) is not None for object_id in object_ids)

    # ------------------------------------------------------------------ workers

    def _get_worker(self, worker_id: str) -> Worker:
        worker = self.workers.get(worker_id)
        if worker is None:
            raise NotFound(f"worker {worker_id} not found (expired or never registered)")
        return worker

    def register_worker(
        self,
        *,
        worker_id: str = "",
        address: str = "",
        slots: int = 1,
        prefetch: int = 0,
        cpus: float = 0.0,
        memory_bytes: int = 0,
        labels: dict[str, str] | None = None,
    ) -> Worker:
        """Add a worker. Re-registering an id replaces it; tasks it held are treated as lost."""
        if slots < 1:
            raise InvalidRequest("slots must be >= 1")
        if prefetch < 0:
            raise InvalidRequest("prefetch must be >= 0")
        if len(worker_id) > MAX_ID_LENGTH:
            raise InvalidRequest(f"worker_id longer than {MAX_ID_LENGTH} characters")
        if worker_id in self.workers:
            self._drop_worker(self.workers[worker_id], "re-registered")
        now = self.clock()
        worker = Worker(
            worker_id=worker_id or uuid.uuid4().hex[:12],
            address=address,
            slots=slots,
            prefetch=prefetch,
            registered_at=now,
            last_heartbeat=now,
            cpus=cpus,
            memory_bytes=memory_bytes,
            labels=dict(labels or {}),
        )
        self.workers[worker.worker_id] = worker
        self._place_actors()
        return worker

    def heartbeat(
        self, worker_id: str, draining: bool = False, direct_running: int | None = None
    ) -> list[str]:
        """Note the worker is alive; returns (and clears) the cancellations it must carry out.

        `draining` marks a worker that is shutting down: it is leased nothing more.
        """
        worker = self._get_worker(worker_id)
        worker.last_heartbeat = self.clock()
        worker.draining = worker.draining or draining
        if direct_running is not None:
            worker.direct_running = max(0, direct_running)
        cancels = sorted(worker.pending_cancels)
        worker.pending_cancels.clear()
        return cancels

    def unregister_worker(self, worker_id: str) -> list[str]:
        """Remove a worker that is leaving; what it still holds goes back to the queue."""
        worker = self._get_worker(worker_id)
        held = list(worker.task_ids)
        for task_id in reversed(held):  # each goes to the front: keep their order
            self._hand_back(self.tasks[task_id])
        del self.workers[worker_id]
        self._lose_actors(worker, "left (shut down)")
        return held

    def _hand_back(self, task: Task) -> None:
        if task.cancel_requested:
            self._finish_error(task, _cancelled())
        else:
            self._move(task, TaskState.PENDING)

    def lease(
        self, worker_id: str, held: Iterable[str] | None = None, prefetch: int | None = None
    ) -> tuple[list[Task], list[str]]:
        """Hand a worker the tasks it has room for; also returns its pending cancellations.

        `held` lists the tasks the worker still has (None: not told). Tasks the controller thinks
        it leased to the worker but the worker does not have (a lost lease response) go back to
        the queue. A worker holds at most `slots + prefetch` tasks (`prefetch`: what it asks for
        now, capped by what it registered), and beyond its free slots gets no more than its fair
        share of the queue, so that long tasks spread over the workers.
        """
        cancels = self.heartbeat(worker_id)
        worker = self.workers[worker_id]
        if held is not None:
            held_set = set(held)
            for task_id in reversed([t for t in worker.task_ids if t not in held_set]):
                self._hand_back(self.tasks[task_id])
        queued = self.counts[TaskState.PENDING]
        extra = worker.prefetch if prefetch is None else max(0, min(prefetch, worker.prefetch))
        room = worker.slots + extra - len(worker.task_ids)
        if room <= 0 or queued == 0 or worker.draining:
            return [], cancels
        free_slots = max(0, worker.slots - len(worker.task_ids))
        fair_share = math.ceil(queued / max(1, len(self.workers)))
        grant = min(room, max(free_slots, fair_share))
        leased: list[Task] = []
        while len(leased) < grant and self._queue:
            task = self.tasks.get(self._queue.popleft())
            if task is None or task.state is not TaskState.PENDING:
                continue  # cancelled or evicted while queued
            self._move(task, TaskState.RUNNING)
            task.attempts += 1
            task.worker_id = worker_id
            worker.task_ids[task.task_id] = None
            leased.append(task)
        return leased, cancels

    def reconcile_actors(
        self, worker_id: str, hosted: Iterable[tuple[str, int, ActorState]]
    ) -> bool:
        """Compare the actors a worker says it hosts, as (id, incarnation, CREATING or READY),
        with the actors placed on it, and repair what a lost message left behind: a start order
        it never got is sent again, READY counts as a lost ReportActors, a READY actor it no
        longer has is lost, and an actor it should not host is stopped. True if anything
        changed."""
        worker = self._get_worker(worker_id)
        seen = {actor_id: (incarnation, state) for actor_id, incarnation, state in hosted}
        changed = False
        missing: list[str] = []  # READY here, but the worker no longer has it
        for actor_id in list(worker.actor_ids):
            actor = self.actors[actor_id]
            entry = seen.get(actor_id)
            if entry is not None and entry[0] == actor.incarnation:
                if entry[1] is ActorState.READY and actor.state is ActorState.CREATING:
                    self._move_actor(actor, ActorState.READY)
                    changed = True
                continue
            if actor_id in worker.actor_starts:
                continue  # it has not been told yet
            changed = True
            if actor.state is ActorState.CREATING:
                worker.actor_starts.append(actor_id)  # the order was lost: send it again
            else:
                missing.append(actor_id)
        self._lose_actors(worker, "no longer hosts it", missing)
        for actor_id in seen:
            known = self.actors.get(actor_id)
            placed_here = known is not None and known.state.live and known.worker_id == worker_id
            if not placed_here and actor_id not in worker.actor_stops:
                worker.actor_stops.append(actor_id)
                changed = True
        return changed

    def take_actor_orders(self, worker_id: str) -> tuple[list[Actor], list[str]]:
        """The actors a worker must start and the ids it must stop (sent with its lease)."""
        worker = self._get_worker(worker_id)
        starts = [self.actors[a] for a in worker.actor_starts]
        stops = list(worker.actor_stops)
        worker.actor_starts.clear()
        worker.actor_stops.clear()
        return starts, stops

    def report(self, worker_id: str, outcomes: Iterable[Outcome]) -> int:
        """Apply a worker's results; returns how many applied (stale reports are ignored)."""
        worker = self._get_worker(worker_id)
        worker.last_heartbeat = self.clock()
        accepted = 0
        for outcome in outcomes:
            task = self.tasks.get(outcome.task_id)
            if (
                task is None
                or task.state is not TaskState.RUNNING
                or task.worker_id != worker_id
                or task.attempts != outcome.attempt
            ):
                continue
            accepted += 1
            if outcome.handed_back:
                self._hand_back(task)
            elif outcome.error is not None:
                worker.tasks_failed += 1
                outcome.error.worker_id = outcome.error.worker_id or worker_id
                self._apply_error(task, outcome.error)
            elif task.cancel_requested:
                task.error = _cancelled()
                self._move(task, TaskState.CANCELLED)
            else:
                worker.tasks_completed += 1
                task.result = outcome.value or b""
                task.error = None
                self._move(task, TaskState.COMPLETED)
        return accepted

    def record_direct(self, worker_id: str, records: Iterable[DirectRecord]) -> int:
        """Keep finished direct tasks for ListTasks/GetTask; returns how many were new.

        Records for ids already known are ignored (a task is recorded once). They never reach
        their owner's finished log: the owner got the outcome from the worker itself.
        """
        worker = self.workers.get(worker_id)
        recorded = 0
        for record in records:
            task_id = record.spec.task_id
            if (
                not task_id
                or len(task_id) > MAX_ID_LENGTH
                or task_id in self.tasks
                or not record.state.finished
            ):
                continue
            self.tasks[task_id] = Task(
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
            self.counts[record.state] += 1
            self._finished_order.append(task_id)
            recorded += 1
            if worker is not None:
                if record.state is TaskState.COMPLETED:
                    worker.tasks_completed += 1
                else:
                    worker.tasks_failed += 1
        self._evict_finished()
        return recorded

    def _apply_error(self, task: Task, failure: TaskFailure) -> None:
        if task.cancel_requested or failure.kind is ErrorKind.CANCELLED:
            failure = _cancelled()
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

    def _infra_failure(self, task: Task, failure: TaskFailure) -> None:
        task.infra_failures += 1
        if task.cancel_requested:
            self._hand_back(task)
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

    def _drop_worker(self, worker: Worker, reason: str) -> None:
        for task_id in reversed(list(worker.task_ids)):  # requeued to the front, in order
            failure = TaskFailure(
                ErrorKind.WORKER_LOST,
                "WorkerLostError",
                f"worker {worker.worker_id} {reason}",
                worker_id=worker.worker_id,
            )
            self._infra_failure(self.tasks[task_id], failure)
        del self.workers[worker.worker_id]
        self._lose_actors(worker, reason)

    def expire_workers(self) -> list[str]:
        """Drop workers silent past the heartbeat timeout; requeue or fail their tasks."""
        cutoff = self.clock() - self.heartbeat_timeout
        dead = [w for w in self.workers.values() if w.last_heartbeat < cutoff]
        for worker in dead:
            self._drop_worker(
                worker, f"stopped heartbeating (silent for more than {self.heartbeat_timeout:g}s)"
            )
        return [w.worker_id for w in dead]

    # ------------------------------------------------------------------ overview

    @property
    def queue_depth(self) -> int:
        return self.counts[TaskState.PENDING]

    def busy_slots(self) -> int:
        return sum(min(len(w.task_ids) + w.direct_running, w.slots) for w in self.workers.values())

    # ------------------------------------------------------------------ actors

    def _move_actor(self, actor: Actor, to: ActorState) -> None:
        if to not in _ACTOR_TRANSITIONS[actor.state]:
            raise AssertionError(f"illegal move of actor {actor.actor_id}: {actor.state} -> {to}")
        if actor.state in (ActorState.CREATING, ActorState.READY):
            worker = self.workers.get(actor.worker_id)
            if worker is not None and to is not ActorState.READY:
                worker.actor_ids.pop(actor.actor_id, None)
        actor.state = to
        if to in (ActorState.PENDING, ActorState.RESTARTING) or not to.live:
            actor.worker_id = ""
        if not to.live and self._actor_names.get(actor.spec.name) == actor.actor_id:
            del self._actor_names[actor.spec.name]

    def create_actor(self, spec: ActorSpec, get_if_exists: bool = False) -> tuple[Actor, bool]:
        """Register an actor and place it; returns it and whether it existed (get_if_exists)."""
        if spec.name:
            existing = self._actor_names.get(spec.name)
            if existing is not None:
                if get_if_exists:
                    return self.actors[existing], True
                raise AlreadyExists(f"an actor named {spec.name!r} already exists")
        if not spec.cls:
            raise InvalidRequest("cls is empty")
        if spec.max_restarts < 0:
            raise InvalidRequest("max_restarts must be >= 0")
        for value, what in ((spec.actor_id, "actor_id"), (spec.name, "name")):
            if len(value) > MAX_ID_LENGTH:
                raise InvalidRequest(f"{what} longer than {MAX_ID_LENGTH} characters")
        if spec.actor_id in self.actors:
            raise AlreadyExists(f"actor {spec.actor_id} already exists")
        for object_id in spec.object_ids:
            if object_id not in self.objects:
                raise NotFound(f"object {object_id} not found")
        spec.actor_id = spec.actor_id or uuid.uuid4().hex[:16]
        actor = Actor(spec=spec, created_at=self.clock())
        self.actors[actor.actor_id] = actor
        if spec.name:
            self._actor_names[spec.name] = actor.actor_id
        self._place_actors()
        return actor, False

    def get_actor(self, actor_id: str = "", name: str = "") -> Actor:
        if name and not actor_id:
            actor_id = self._actor_names.get(name, "")
            if not actor_id:
                raise NotFound(f"no live actor named {name!r}")
        actor = self.actors.get(actor_id)
        if actor is None:
            raise NotFound(f"actor {actor_id} not found")
        return actor

    def kill_actor(self, actor_id: str) -> Actor:
        """Stop an actor for good (its worker is told with its next lease)."""
        actor = self.get_actor(actor_id)
        if actor.state.live:
            worker = self.workers.get(actor.worker_id)
            if worker is not None:
                if actor.actor_id in worker.actor_starts:  # not told to start it yet
                    worker.actor_starts.remove(actor.actor_id)
                else:
                    worker.actor_stops.append(actor.actor_id)
            actor.error = TaskFailure(ErrorKind.CANCELLED, "ActorDiedError", "killed")
            self._move_actor(actor, ActorState.DEAD)
        return actor

    def report_actor(
        self,
        worker_id: str,
        actor_id: str,
        incarnation: int,
        state: ActorState,
        error: TaskFailure | None = None,
    ) -> bool:
        """A worker says it started (READY), could not construct (FAILED) or lost (DEAD) an
        actor. Stale reports (another incarnation, another worker) are ignored."""
        actor = self.actors.get(actor_id)
        if (
            actor is None
            or actor.worker_id != worker_id
            or actor.incarnation != incarnation
            or actor.state not in (ActorState.CREATING, ActorState.READY)
        ):
            return False
        if state is ActorState.READY and actor.state is ActorState.CREATING:
            self._move_actor(actor, ActorState.READY)
        elif state is ActorState.READY:
            return False  # already READY: its worker's lease said so first
        elif state is ActorState.FAILED and actor.state is ActorState.CREATING:
            actor.error = error
            self._move_actor(actor, ActorState.FAILED)
        elif state is ActorState.DEAD:
            self._actor_lost(
                actor,
                error
                or TaskFailure(
                    ErrorKind.WORKER_LOST, "ActorDiedError", "its process died", worker_id=worker_id
                ),
            )
        else:
            raise InvalidRequest(f"actor {actor_id}: cannot report {state.value} now")
        return True

    def _lose_actors(
        self, worker: Worker, reason: str, actor_ids: Iterable[str] | None = None
    ) -> None:
        """Its actors (all, or `actor_ids`) are lost: restarted elsewhere within budget."""
        for actor_id in list(worker.actor_ids if actor_ids is None else actor_ids):
            failure = TaskFailure(
                ErrorKind.WORKER_LOST,
                "ActorDiedError",
                f"its worker {worker.worker_id} {reason}",
                worker_id=worker.worker_id,
            )
            self._actor_lost(self.actors[actor_id], failure)

    def _actor_lost(self, actor: Actor, failure: TaskFailure) -> None:
        actor.error = failure
        if actor.restarts < actor.spec.max_restarts:
            actor.restarts += 1
            self._move_actor(actor, ActorState.RESTARTING)
            self._place_actors()
        else:
            self._move_actor(actor, ActorState.DEAD)

    def _place_actors(self) -> None:
        """Put waiting actors on the live workers hosting the fewest actors (then the most
        free slots). Actors do not take task slots."""
        waiting = [
            a
            for a in self.actors.values()
            if a.state in (ActorState.PENDING, ActorState.RESTARTING)
        ]
        for actor in waiting:
            candidates = [w for w in self.workers.values() if not w.draining]
            if not candidates:
                return
            worker = min(candidates, key=lambda w: (len(w.actor_ids), len(w.task_ids) - w.slots))
            self._move_actor(actor, ActorState.CREATING)
            actor.worker_id = worker.worker_id
            actor.incarnation += 1
            worker.actor_ids[actor.actor_id] = None
            worker.actor_starts.append(actor.actor_id)

    def list_actors(self, state: ActorState | None = None) -> list[Actor]:
        return [a for a in self.actors.values() if state is None or a.state is state]
