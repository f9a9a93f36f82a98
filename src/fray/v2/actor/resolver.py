"""Resolvers: turn an actor name into a live :class:`~fray.v2.actor.pool.RoundRobinActorPool`."""

from __future__ import annotations

from collections.abc import Callable

from fray.v2.actor.pool import ActorEndpoint, RoundRobinActorPool

__all__ = ["EndpointResolver"]


class EndpointResolver:
    """A :class:`fray.v2.cluster.Resolver` over a backend's ``list_endpoints(name)``."""

    def __init__(self, list_endpoints: Callable[[str], list[ActorEndpoint]]) -> None:
        self._list_endpoints = list_endpoints

    def lookup(self, name: str) -> RoundRobinActorPool:
        """The pool of actors named ``name``; it re-reads the registry on every use."""
        list_endpoints = self._list_endpoints
        return RoundRobinActorPool(name, lambda: list_endpoints(name))
