"""The rules of an actor's life at the controller: registering it, placing it on a worker,
the worker's reports, restarts after a loss, killing it, and repairing lost messages.

An actor is placed on a live worker whose free capacities and labels fit its need (see
`placement`; an actor asking for nothing fits any), hosting the fewest actors (actors do not
take task slots); it holds its need there while placed (CREATING, READY). One that fits no
worker now waits (PENDING, RESTARTING) and is tried again when capacity may have appeared
(`retry`).
The worker learns what to start and stop with its next lease (`take_orders`); it reports what
happened (`report`), and every lease lists what it hosts, so that a lost message is repaired
(`reconcile`). A lost actor is re-created elsewhere, with fresh state, up to `max_restarts`
times. The moves go through `Transitions.move_actor`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable

from fray.controller.actors import ActorRegistry
from fray.controller.objects import ObjectStore
from fray.controller.placement import fits_now
from fray.controller.records import (
    ActorRecord,
    ActorSpec,
    ActorState,
    AlreadyExists,
    ErrorKind,
    InvalidRequest,
    NotFound,
    TaskFailure,
    WorkerRecord,
)
from fray.controller.transitions import Transitions
from fray.controller.workers import WorkerRegistry
from fray.wire.limits import MAX_ID_LENGTH


class ActorLifecycle:
    """Creates, places, restarts and kills actors."""

    def __init__(
        self,
        *,
        actors: ActorRegistry,
        workers: WorkerRegistry,
        objects: ObjectStore,
        transitions: Transitions,
        clock: Callable[[], float],
    ) -> None:
        self._actors, self._workers, self._objects = actors, workers, objects
        self._move = transitions.move_actor
        self._clock = clock
        self._stuck = False  # actors were left waiting by the last `place`
        self._tried_at = -1  # `WorkerRegistry.freed` as of the last `place`

    # ---------------------------------------------------------------- clients

    def create(self, spec: ActorSpec, get_if_exists: bool = False) -> tuple[ActorRecord, bool]:
        """Register an actor and place it; returns it and whether it existed (get_if_exists).

        A request naming an actor id that its owner already created is a repeat (the answer to
        the first was lost): it gets that actor, so CreateActor is safe to retry."""
        repeat = self._actors.by_id.get(spec.actor_id) if spec.actor_id else None
        if repeat is not None:
            if (repeat.spec.owner, repeat.spec.name) == (spec.owner, spec.name):
                return repeat, False
            raise AlreadyExists(f"actor {spec.actor_id} already exists")
        if spec.name:
            existing = self._actors.named(spec.name)
            if existing is not None:
                if get_if_exists:
                    return existing, True
                raise AlreadyExists(f"an actor named {spec.name!r} already exists")
        if not spec.cls:
            raise InvalidRequest("cls is empty")
        if spec.max_restarts < 0:
            raise InvalidRequest("max_restarts must be >= 0")
        for value, what in ((spec.actor_id, "actor_id"), (spec.name, "name")):
            if len(value) > MAX_ID_LENGTH:
                raise InvalidRequest(f"{what} longer than {MAX_ID_LENGTH} characters")
        missing = self._objects.first_missing(spec.object_ids)
        if missing is not None:
            raise NotFound(f"object {missing} not found")
        spec.actor_id = spec.actor_id or uuid.uuid4().hex[:16]
        actor = ActorRecord(spec=spec, created_at=self._clock())
        self._actors.add(actor)
        self.place()
        return actor, False

    def kill(self, actor_id: str) -> ActorRecord:
        """Stop an actor for good (its worker is told with its next lease)."""
        actor = self._actors.get(actor_id)
        if actor.state.live:
            worker = self._workers.by_id.get(actor.worker_id)
            if worker is not None:
                if actor.actor_id in worker.actor_starts:  # not told to start it yet
                    worker.actor_starts.remove(actor.actor_id)
                else:
                    worker.actor_stops.append(actor.actor_id)
            actor.error = TaskFailure(ErrorKind.CANCELLED, "ActorDiedError", "killed")
            self._move(actor, ActorState.DEAD)
            self.retry()  # what it held may fit a waiting actor
        return actor

    # ---------------------------------------------------------------- workers

    def place(self) -> int:
        """Put waiting actors, oldest first, on the live workers where their need fits now,
        hosting the fewest actors (then the most free slots). One that fits nowhere waits,
        without holding up the others. Returns how many were placed."""
        self._tried_at = self._workers.freed
        stuck = False
        placed = 0
        for actor in self._actors.waiting():
            need = actor.spec.need
            candidates = [w for w in self._workers.by_id.values() if fits_now(w, need)]
            if not candidates:
                stuck = True
                continue
            worker = min(candidates, key=lambda w: (len(w.actor_ids), len(w.task_ids) - w.slots))
            self._move(actor, ActorState.CREATING)
            actor.worker_id = worker.worker_id
            actor.incarnation += 1
            self._workers.hold_actor(worker, actor.actor_id, need)
            worker.actor_starts.append(actor.actor_id)
            placed += 1
        self._stuck = stuck
        return placed

    def retry(self) -> bool:
        """Place waiting actors again if capacity may have appeared since the last try (cheap
        otherwise); True if any was placed."""
        if not self._stuck or self._workers.freed == self._tried_at:
            return False
        return self.place() > 0

    def take_orders(self, worker_id: str) -> tuple[list[ActorRecord], list[str]]:
        """The actors a worker must start and the ids it must stop (sent with its lease)."""
        worker = self._workers.get(worker_id)
        starts = [self._actors.by_id[a] for a in worker.actor_starts]
        stops = list(worker.actor_stops)
        worker.actor_starts.clear()
        worker.actor_stops.clear()
        return starts, stops

    def report(
        self,
        worker_id: str,
        actor_id: str,
        incarnation: int,
        state: ActorState,
        error: TaskFailure | None = None,
    ) -> bool:
        """A worker says it started (READY), could not construct (FAILED) or lost (DEAD) an
        actor. Stale reports (another incarnation, another worker) are ignored."""
        actor = self._actors.by_id.get(actor_id)
        if (
            actor is None
            or actor.worker_id != worker_id
            or actor.incarnation != incarnation
            or actor.state not in (ActorState.CREATING, ActorState.READY)
        ):
            return False
        if state is ActorState.READY and actor.state is ActorState.CREATING:
            self._move(actor, ActorState.READY)
        elif state is ActorState.READY:
            return False  # already READY: its worker's lease said so first
        elif state is ActorState.FAILED and actor.state is ActorState.CREATING:
            actor.error = error
            self._move(actor, ActorState.FAILED)
        elif state is ActorState.DEAD:
            self.lost(
                actor,
                error
                or TaskFailure(
                    ErrorKind.WORKER_LOST, "ActorDiedError", "its process died", worker_id=worker_id
                ),
            )
        else:
            raise InvalidRequest(f"actor {actor_id}: cannot report {state.value} now")
        self.retry()  # a failed or dead actor's capacity may fit a waiting one
        return True

    def reconcile(self, worker_id: str, hosted: Iterable[tuple[str, int, ActorState]]) -> bool:
        """Compare the actors a worker says it hosts, as (id, incarnation, CREATING or READY),
        with the actors placed on it, and repair what a lost message left behind: a start order
        it never got is sent again, READY counts as a lost ReportActors, a READY actor it no
        longer has is lost, and an actor it should not host is stopped. True if anything
        changed."""
        worker = self._workers.get(worker_id)
        seen = {actor_id: (incarnation, state) for actor_id, incarnation, state in hosted}
        changed = False
        missing: list[str] = []  # READY here, but the worker no longer has it
        for actor_id in list(worker.actor_ids):
            actor = self._actors.by_id[actor_id]
            entry = seen.get(actor_id)
            if entry is not None and entry[0] == actor.incarnation:
                if entry[1] is ActorState.READY and actor.state is ActorState.CREATING:
                    self._move(actor, ActorState.READY)
                    changed = True
                continue
            if actor_id in worker.actor_starts:
                continue  # it has not been told yet
            changed = True
            if actor.state is ActorState.CREATING:
                worker.actor_starts.append(actor_id)  # the order was lost: send it again
            else:
                missing.append(actor_id)
        self.lose(worker, "no longer hosts it", missing)
        for actor_id in seen:
            known = self._actors.by_id.get(actor_id)
            placed_here = known is not None and known.state.live and known.worker_id == worker_id
            if not placed_here and actor_id not in worker.actor_stops:
                worker.actor_stops.append(actor_id)
                changed = True
        return changed

    def lose(
        self, worker: WorkerRecord, reason: str, actor_ids: Iterable[str] | None = None
    ) -> None:
        """Its actors (all, or `actor_ids`) are lost: restarted elsewhere within budget."""
        for actor_id in list(worker.actor_ids if actor_ids is None else actor_ids):
            failure = TaskFailure(
                ErrorKind.WORKER_LOST,
                "ActorDiedError",
                f"its worker {worker.worker_id} {reason}",
                worker_id=worker.worker_id,
            )
            self.lost(self._actors.by_id[actor_id], failure)

    def lost(self, actor: ActorRecord, failure: TaskFailure) -> None:
        """A lost actor: restarted (re-placed, fresh state) while restarts remain, else DEAD."""
        actor.error = failure
        if actor.restarts < actor.spec.max_restarts:
            actor.restarts += 1
            self._move(actor, ActorState.RESTARTING)
            self.place()
        else:
            self._move(actor, ActorState.DEAD)
