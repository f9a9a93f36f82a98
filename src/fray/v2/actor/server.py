"""``ActorServer``: serves actor instances under names other code finds with a resolver.

The server hands each ``(name, instance)`` to its cluster's ``host_actor``
(:class:`~fray.v2.actor.hosting.ActorHosting`): the local backend keeps the instance in this
process, the Ray backend moves it into a named Ray actor. Several registrations of one name
(from one server or many) form one pool.
"""

from __future__ import annotations

import threading
from typing import Any

from fray.v2.actor.hosting import ActorHosting, HostedActor, check_actor_name
from fray.v2.cluster import Cluster
from fray.v2.factory import current_cluster

__all__ = ["ActorServer"]

_READY_TIMEOUT = 120.0  # seconds a published actor may take to start


class ActorServer:
    """Registers actors with ``cluster`` (default: :func:`fray.v2.current_cluster`).

    ``register`` before serving queues the actor; ``serve_background`` publishes every
    queued actor and returns once they all take calls, ``serve`` does the same and then
    blocks until ``shutdown``. Registering while serving publishes at once.
    """

    def __init__(self, cluster: Cluster | None = None) -> None:
        cluster = cluster if cluster is not None else current_cluster()
        if not isinstance(cluster, ActorHosting):
            raise TypeError(f"{type(cluster).__name__} cannot host actors")
        self._cluster: ActorHosting = cluster
        self._lock = threading.Lock()
        self._queued: list[tuple[str, Any]] = []
        self._hosted: list[HostedActor] = []
        self._serving = False
        self._stopped = threading.Event()

    def register(self, name: str, actor: Any) -> None:
        """Serve ``actor`` (an instance) under ``name``."""
        check_actor_name(name)
        with self._lock:
            if self._stopped.is_set():
                raise RuntimeError("this ActorServer was shut down")
            if not self._serving:
                self._queued.append((name, actor))
                return
        self._host(name, actor).wait_ready(_READY_TIMEOUT)

    def serve_background(self) -> None:
        """Publish the registered actors and return."""
        with self._lock:
            if self._stopped.is_set():
                raise RuntimeError("this ActorServer was shut down")
            self._serving = True
            queued, self._queued = self._queued, []
        hosted = [self._host(name, actor) for name, actor in queued]
        for actor in hosted:
            actor.wait_ready(_READY_TIMEOUT)

    def serve(self) -> None:
        """Publish the registered actors and block until :meth:`shutdown`."""
        self.serve_background()
        self._stopped.wait()

    def shutdown(self) -> None:
        """Withdraw every actor this server published and release ``serve``."""
        with self._lock:
            hosted, self._hosted = self._hosted, []
            self._stopped.set()
        for actor in hosted:
            actor.stop()

    def _host(self, name: str, actor: Any) -> HostedActor:
        hosted = self._cluster.host_actor(name, actor)
        with self._lock:
            if not self._stopped.is_set():
                self._hosted.append(hosted)
                return hosted
        hosted.stop()  # shut down while it was being published
        return hosted

    def __enter__(self) -> ActorServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()
