"""A restart: the saved state (`SavedState`, read by `store`) put back into the registries, and
the rules that reconcile it with a world that went on without the controller.

- Workers come back as they were saved, heard from just now: each has a whole heartbeat timeout
  to call again. A worker that does (its next `LeaseTasks` lists what it holds) keeps its
  RUNNING tasks and its READY actors; one that does not is lost as usual (its tasks count an
  infrastructure failure and run elsewhere, its actors restart within their budget).
- PENDING tasks queue in the order they were submitted; finished ones keep their finishing
  order (and the `max_finished_tasks` limit); RUNNING ones stay leased to their worker, and a
  cancellation asked for goes to it again.
- Actors keep their state, incarnation and worker; CREATING ones get their start order again
  if the worker does not list them (the usual repair of a lost lease answer), PENDING and
  RESTARTING ones are placed.
- Finished logs keep their positions, so clients' cursors stay valid.
- What work holds on its worker (`WorkerRecord.used`) is never saved: it is rebuilt here from
  the held tasks and placed actors, plus whatever else holds (`holds`: job replicas), before
  any waiting actor is placed.

A saved RUNNING task or placed actor whose worker was not saved cannot happen (a worker leaves
the registry in the same step as its tasks and actors); it is handled anyway, as a loss.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from fray.controller.actor_lifecycle import ActorLifecycle
from fray.controller.actors import ActorRegistry
from fray.controller.finished_log import FinishedLogs
from fray.controller.objects import ObjectStore
from fray.controller.placement import Need
from fray.controller.records import (
    ActorRecord,
    ActorState,
    ErrorKind,
    JobRecord,
    TaskFailure,
    TaskRecord,
    WorkerRecord,
)
from fray.controller.task_lifecycle import TaskLifecycle
from fray.controller.tasks import TaskTable
from fray.controller.workers import WorkerRegistry
from fray.wire.pb import controller_pb2 as pb


@dataclass
class SavedLog:
    """One owner's finished log as saved: `base` is the position of the first id."""

    owner: str
    base: int
    dropped_until: int
    ids: list[str]


@dataclass
class SavedState:
    """Everything a controller saved, as records (tasks in the order they were submitted)."""

    controller_id: str
    workers: list[WorkerRecord] = field(default_factory=list)
    tasks: list[TaskRecord] = field(default_factory=list)
    actors: list[ActorRecord] = field(default_factory=list)
    objects: dict[str, bytes] = field(default_factory=dict)
    located: dict[str, pb.ObjectLocation] = field(default_factory=dict)
    logs: list[SavedLog] = field(default_factory=list)
    jobs: list[JobRecord] = field(default_factory=list)  # in submission order


def restore(
    saved: SavedState,
    *,
    tasks: TaskTable,
    workers: WorkerRegistry,
    objects: ObjectStore,
    logs: FinishedLogs,
    actors: ActorRegistry,
    task_rules: TaskLifecycle,
    actor_rules: ActorLifecycle,
    holds: Iterable[tuple[str, Need]] = (),
) -> None:
    """Put `saved` into empty registries and reconcile it (see the module docstring).

    `holds`: (worker id, need) of other work that holds capacity on its worker (running job
    replicas), held again before waiting actors are placed."""
    for worker in saved.workers:
        workers.restore(worker)
    for worker_id, need in holds:
        workers.hold(worker_id, need)
    objects.by_id.update(saved.objects)
    objects.located.update(saved.located)  # owners gone meanwhile are dropped by their check
    unfinished = [t for t in saved.tasks if not t.state.finished]
    finished = sorted((t for t in saved.tasks if t.state.finished), key=_finished_at)
    orphans: list[TaskRecord] = []
    for task in unfinished + finished:
        tasks.restore(task)
        if task.state.held:
            holder = workers.by_id.get(task.worker_id)
            if holder is None:
                orphans.append(task)
                continue
            workers.hold_task(holder, task)
            if task.cancel_requested:
                holder.pending_cancels.add(task.task_id)
    for task in reversed(orphans):  # each goes to the front of the queue: keep their order
        task_rules.hand_back(task)
    tasks.evict()
    lost: list[ActorRecord] = []
    for actor in saved.actors:
        actors.restore(actor)
        if actor.state in (ActorState.CREATING, ActorState.READY):
            host = workers.by_id.get(actor.worker_id)
            if host is None:
                lost.append(actor)
            else:
                workers.hold_actor(host, actor.actor_id, actor.spec.need)
    for actor in lost:
        failure = TaskFailure(
            ErrorKind.WORKER_LOST,
            "ActorDiedError",
            f"its worker {actor.worker_id} was not known after a controller restart",
            worker_id=actor.worker_id,
        )
        actor_rules.lost(actor, failure)
    for log in saved.logs:
        logs.restore(log.owner, log.base, log.dropped_until, log.ids)
    actor_rules.place()  # new and restarting actors, now that the workers are back


def _finished_at(task: TaskRecord) -> float:
    return task.finished_at or 0.0
