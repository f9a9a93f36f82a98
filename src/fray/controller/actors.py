"""The actor registry: every actor the controller knows, by id, and the live ones by name.

Bookkeeping only: placing, restarting and killing actors is decided in `actor_lifecycle`;
`Transitions.move_actor` frees an actor's name when it ends (FAILED or DEAD), so that the name
can be taken again. New actors are marked in `changes` (their moves by `Transitions`).
"""

from __future__ import annotations

from fray.controller.changes import Changes
from fray.controller.records import ActorRecord, ActorState, NotFound


class ActorRegistry:
    """Actors by id (kept after they end, for GetActor/ListActors) and live actors by name."""

    def __init__(self, changes: Changes | None = None) -> None:
        self.by_id: dict[str, ActorRecord] = {}
        self._names: dict[str, str] = {}  # name -> id, live actors only
        self.changes = Changes() if changes is None else changes

    def add(self, actor: ActorRecord) -> None:
        self.by_id[actor.actor_id] = actor
        if actor.spec.name:
            self._names[actor.spec.name] = actor.actor_id
        self.changes.new_actor(actor.actor_id)

    def restore(self, actor: ActorRecord) -> None:
        """An actor as it was saved (at a restart); only live ones hold their names."""
        self.by_id[actor.actor_id] = actor
        if actor.spec.name and actor.state.live:
            self._names[actor.spec.name] = actor.actor_id

    def named(self, name: str) -> ActorRecord | None:
        """The live actor called `name`, if any."""
        actor_id = self._names.get(name)
        return None if actor_id is None else self.by_id[actor_id]

    def get(self, actor_id: str = "", name: str = "") -> ActorRecord:
        """An actor by id, or (without an id) the live actor called `name`."""
        if name and not actor_id:
            actor_id = self._names.get(name, "")
            if not actor_id:
                raise NotFound(f"no live actor named {name!r}")
        actor = self.by_id.get(actor_id)
        if actor is None:
            raise NotFound(f"actor {actor_id} not found")
        return actor

    def release_name(self, actor: ActorRecord) -> None:
        """The actor ended: its name is free again (called by Transitions)."""
        if self._names.get(actor.spec.name) == actor.actor_id:
            del self._names[actor.spec.name]

    def waiting(self) -> list[ActorRecord]:
        """Actors waiting for a worker (new or restarting), oldest first."""
        waiting = (ActorState.PENDING, ActorState.RESTARTING)
        return [a for a in self.by_id.values() if a.state in waiting]

    def select(self, state: ActorState | None = None) -> list[ActorRecord]:
        return [a for a in self.by_id.values() if state is None or a.state is state]
