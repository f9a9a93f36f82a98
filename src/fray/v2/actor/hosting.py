"""What a backend must offer to host actors, and the name check every backend applies.

:class:`fray.v2.actor.server.ActorServer` hands ``(name, instance)`` pairs to a cluster's
``host_actor`` (:class:`ActorHosting`) and gets back a :class:`HostedActor`. Backends import
this module, never the server (which looks up the current cluster).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

__all__ = ["ActorHosting", "HostedActor", "check_actor_name"]


class HostedActor(Protocol):
    """A registered actor; ``stop`` removes it from its pool."""

    def wait_ready(self, timeout: float) -> None:
        """Block until the actor can take calls (raises if it cannot)."""
        ...

    def stop(self) -> None: ...


@runtime_checkable
class ActorHosting(Protocol):
    """What a cluster offers an :class:`~fray.v2.actor.server.ActorServer`."""

    def host_actor(self, name: str, actor: Any) -> HostedActor: ...


def check_actor_name(name: str) -> None:
    """Reject names no backend can host (empty, or not a string)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"an actor name must be a non-empty string, got {name!r}")
