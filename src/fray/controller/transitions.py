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

What work holds of its worker (`placement`): a task its need from the lease until it leaves
the worker, an actor its need while CREATING or READY; every move off the worker gives it back
(`WorkerRegistry.release_task`, `release_actor`), whatever the reason.

Actors::

    PENDING --placed--> CREATING --constructed--> READY --killed--> DEAD
                           |--constructor raised--> FAILED
    CREATING/READY --worker or process lost, restarts left--> RESTARTING --placed--> CREATING
                   --lost, no restarts left--> DEAD

Jobs (and each of their replicas; the rules are in `job_lifecycle`)::

    PENDING --every replica placed at once--> RUNNING --all replicas exit 0--> SUCCEEDED
       |                                         |--a replica failed, its worker lost--> FAILED
       +--StopJob--> KILLED <--StopJob-----------+
"""

from __future__ import annotations

from collections.abc import Callable

from fray.controller.actors import ActorRegistry
from fray.controller.changes import Changes
from fray.controller.finished_log import FinishedLogs
from fray.controller.records import (
    ActorRecord,
    ActorState,
    JobRecord,
    JobState,
    ReplicaRecord,
    TaskRecord,
    TaskState,
)
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
_JOB_ENDS = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.KILLED})
JOB_TRANSITIONS: dict[JobState, frozenset[JobState]] = {  # jobs and replicas alike
    JobState.PENDING: frozenset({JobState.RUNNING, JobState.KILLED}),
    JobState.RUNNING: _JOB_ENDS,
    JobState.SUCCEEDED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.KILLED: frozenset(),
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
        self._tasks.recount(task, to)
        self._changes.task(task.task_id)
        if task.state.held and not to.held:  # off its worker (any cancel, what it held)
            self._workers.release_task(task.worker_id, task.task_id, task.spec.need)
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
        if placed and to is not ActorState.READY:  # off its worker (and what it held)
            self._workers.release_actor(actor.worker_id, actor.actor_id, actor.spec.need)
        actor.state = to
        if to in (ActorState.PENDING, ActorState.RESTARTING) or not to.live:
            actor.worker_id = ""
        if not to.live:  # its name can be taken again
            self._actors.release_name(actor)

    def move_job(self, job: JobRecord, to: JobState, replica: ReplicaRecord | None = None) -> None:
        """Move a job (or, given `replica`, one of its replicas) to `to`; stamps the time."""
        record = job if replica is None else replica
        if to not in JOB_TRANSITIONS[record.state]:
            what = job.job_id if replica is None else f"{job.job_id}/{replica.index}"
            raise AssertionError(f"illegal move of job {what}: {record.state} -> {to}")
        self._changes.job(job.job_id)
        record.state = to
        if to is JobState.RUNNING and replica is None:
            job.started_at = self._clock()
        elif to.final:
            record.finished_at = self._clock()
