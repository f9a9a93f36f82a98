"""The state machine itself: which state may follow which, for tasks and for actors, and what
every change of state does to the registries. Read this first.

Every change of a task's state goes through `Transitions.move`, every change of an actor's
through `Transitions.move_actor`; a move the tables do not allow is a bug in the controller
(AssertionError). When to move is decided elsewhere (`task_lifecycle`, `actor_lifecycle`).
Every move marks the task or actor changed (`changes`), for the journal to save.

Tasks::

    PENDING --lease--> ASSIGNED --a slot started it--> RUNNING --value--> COMPLETED
       |                  |                               |
       |                  +-------------------------------+ (both "held" by their worker)
       |                  |--error with retries left, worker lost within budget,
       |                  |  handed back--> PENDING
       |                  |--error, no retries left / worker lost too often--> FAILED
       |                  |--value (its start report lost or not sent)--> COMPLETED
       +--cancel--> CANCELLED <--cancel reported, or holder lost after cancel--+

RUNNING means running: a leased task waits in its worker's local queue (ASSIGNED) until the
worker reports that a slot started it (`ReportResults.started`); `started_at` is then the moment
the slot started it. A worker that does not report starts (`LeaseTasks.reports_started` false,
e.g. a curl user) has its leased tasks moved to RUNNING at the lease.

Actors::

    PENDING --placed--> CREATING --constructed--> READY --killed--> DEAD
                           |--constructor raised--> FAILED
    CREATING/READY --worker or process lost, restarts left--> RESTARTING --placed--> CREATING
                   --lost, no restarts left--> DEAD
"""

from __future__ import annotations

from collections.abc import Callable

from fray.controller.actors import ActorRegistry
from fray.controller.changes import Changes
from fray.controller.finished_log import FinishedLogs
from fray.controller.records import ActorRecord, ActorState, TaskRecord, TaskState
from fray.controller.tasks import TaskTable
from fray.controller.workers import WorkerRegistry

# The only legal moves; anything else is a bug in the controller.
_OFF_WORKER = frozenset(
    {TaskState.PENDING, TaskState.COMPLETED, TaskState.FAILED, TaskState.CANCELLED}
)
TASK_TRANSITIONS: dict[TaskState, frozenset[TaskState]] = {
    TaskState.PENDING: frozenset({TaskState.ASSIGNED, TaskState.CANCELLED}),
    TaskState.ASSIGNED: _OFF_WORKER | {TaskState.RUNNING},
    TaskState.RUNNING: frozenset(
        {TaskState.PENDING, TaskState.COMPLETED, TaskState.FAILED, TaskState.CANCELLED}
    ),
    TaskState.COMPLETED: frozenset(),
    TaskState.FAILED: frozenset(),
    TaskState.CANCELLED: frozenset(),
}
ACTOR_TRANSITIONS: dict[ActorState, frozenset[ActorState]] = {
    ActorState.PENDING: frozenset({ActorState.CREATING, ActorState.DEAD}),
    ActorState.CREATING: frozenset(
        {ActorState.READY, ActorState.FAILED, ActorState.RESTARTING, ActorState.DEAD}
    ),
    ActorState.READY: frozenset({ActorState.RESTARTING, ActorState.DEAD}),
    ActorState.RESTARTING: frozenset({ActorState.CREATING, ActorState.DEAD}),
    ActorState.FAILED: frozenset(),
    ActorState.DEAD: frozenset(),
}


class Transitions:
    """Moves tasks and actors between states and keeps the registries in step with them."""

    def __init__(
        self,
        tasks: TaskTable,
        workers: WorkerRegistry,
        finished_logs: FinishedLogs,
        actors: ActorRegistry,
        clock: Callable[[], float],
        changes: Changes | None = None,
    ) -> None:
        self._tasks, self._workers, self._logs = tasks, workers, finished_logs
        self._actors, self._clock = actors, clock
        self._changes = Changes() if changes is None else changes

    def move(self, task: TaskRecord, to: TaskState) -> None:
        if to not in TASK_TRANSITIONS[task.state]:
            raise AssertionError(f"illegal move of task {task.task_id}: {task.state} -> {to}")
        self._tasks.recount(task.state, to)
        self._changes.task(task.task_id)
        if task.state.held and not to.held:  # off its worker (and any cancel it was to do)
            self._workers.release_task(task.worker_id, task.task_id)
        task.state = to
        now = self._clock()
        if to is TaskState.PENDING:
            task.worker_id, task.started_at = "", None
            self._tasks.requeue_front(task.task_id)  # older than anything queued after it
        elif to is TaskState.ASSIGNED:
            task.started_at = None
        elif to is TaskState.RUNNING:
            task.started_at = now
        else:  # finished: its owner reads it from its log; the oldest finished are forgotten
            task.finished_at = now
            task.spec.function = task.spec.args = b""  # never needed again: memory and disk
            if task.spec.owner:
                self._logs.append(task.spec.owner, task.task_id)
            self._tasks.retire(task.task_id)

    def move_actor(self, actor: ActorRecord, to: ActorState) -> None:
        if to not in ACTOR_TRANSITIONS[actor.state]:
            raise AssertionError(f"illegal move of actor {actor.actor_id}: {actor.state} -> {to}")
        self._changes.actor(actor.actor_id)
        placed = actor.state in (ActorState.CREATING, ActorState.READY)
        if placed and to is not ActorState.READY:  # off its worker
            self._workers.release_actor(actor.worker_id, actor.actor_id)
        actor.state = to
        if to in (ActorState.PENDING, ActorState.RESTARTING) or not to.live:
            actor.worker_id = ""
        if not to.live:  # its name can be taken again
            self._actors.release_name(actor)
