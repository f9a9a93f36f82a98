"""fray.v2 actors on fray: each instance an ``ActorServer`` registers becomes a fray actor.

The actor (:class:`ActorHost` holding the instance, no resources, no restarts) is named
``fray.v2/NAMESPACE/NAME/UUID`` (namespace and name %-quoted, so neither can hide a ``/``);
a resolver lists the READY actors with the prefix ``fray.v2/NAMESPACE/NAME/`` on each use
(``ListActors``), so an actor whose process died drops out of its pool. Calls go straight to
the hosting worker, as every fray actor call does; one call at a time per actor.
"""

from __future__ import annotations

import contextlib
import os
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any
from urllib.parse import quote

from fray.client.actors import FrayActorHandle, public_methods
from fray.client.context import FrayContext
from fray.errors import FrayError
from fray.v2.actor.pool import ActorEndpoint
from fray.v2.backends.fray.jobs import call_controller
from fray.v2.cluster import CLUSTER_SPEC_ENV
from fray.v2.worker_pool import chain_future
from fray.wire.controller_client import ControllerClient
from fray.wire.pb import controller_pb2 as pb

__all__ = ["ActorHost", "FrayActorDirectory", "FrayEndpoint", "HostedFrayActor", "actor_prefix"]

NAME_ROOT = "fray.v2/"


def actor_prefix(namespace: str, name: str) -> str:
    """The start of the fray actor names of the fray.v2 actors ``name`` in ``namespace``."""
    return f"{NAME_ROOT}{quote(namespace, safe='')}/{quote(name, safe='')}/"


class ActorHost:
    """The fray actor class holding one registered instance; ``cluster_spec`` becomes its
    process's ``$FRAY_CLUSTER_SPEC`` (``current_cluster()`` in its methods: the same cluster)."""

    def __init__(self, instance: Any, cluster_spec: str) -> None:
        os.environ[CLUSTER_SPEC_ENV] = cluster_spec
        self._instance = instance

    def call(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return getattr(self._instance, method)(*args, **kwargs)

    def ready(self) -> bool:
        """Answers once the instance is unpickled and the actor takes calls."""
        return True


_HOST_METHODS = public_methods(ActorHost)


class FrayEndpoint:
    """An :class:`~fray.v2.actor.pool.ActorEndpoint` over a fray actor handle."""

    def __init__(self, handle: FrayActorHandle) -> None:
        self._handle = handle

    @property
    def endpoint_id(self) -> str:
        return self._handle.name

    def call(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return self._handle.call.remote(method, args, kwargs).result()

    def submit(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Future[Any]:
        future = self._handle.call.remote(method, args, kwargs)
        future.kick()  # nobody may wait on it directly: have it sent now
        return chain_future(future, lambda f: f.result())


class HostedFrayActor:
    """A registered instance's fray actor; ``stop`` kills it (it leaves its pool)."""

    def __init__(self, ctx: FrayContext, handle: FrayActorHandle) -> None:
        self._ctx = ctx
        self.handle = handle

    def wait_ready(self, timeout: float) -> None:
        """Block until the actor takes calls (``ActorCreationError`` if it cannot start)."""
        self.handle.ready.remote().result(timeout)

    def stop(self) -> None:
        with contextlib.suppress(FrayError):  # already gone (its context closed, say)
            self._ctx.kill_actor(self.handle)


class FrayActorDirectory:
    """Hosts instances and finds the READY actors of a name, for one cluster object; keeps
    one handle per actor, so repeated lookups reuse their connections."""

    def __init__(
        self, controller: Callable[[], ControllerClient], namespace: str, cluster_spec: str
    ) -> None:
        self._controller = controller
        self._namespace = namespace
        self._cluster_spec = cluster_spec
        self._handles: dict[str, FrayActorHandle] = {}
        self._lock = threading.Lock()

    def host(self, ctx: FrayContext, name: str, instance: Any) -> HostedFrayActor:
        actor_name = actor_prefix(self._namespace, name) + uuid.uuid4().hex
        handle = ctx.create_actor(
            ActorHost, instance, self._cluster_spec, name=actor_name, max_restarts=0
        )
        with self._lock:
            self._handles[handle.actor_id] = handle
        return HostedFrayActor(ctx, handle)

    def endpoints(self, context: Callable[[], FrayContext], name: str) -> list[ActorEndpoint]:
        """The READY actors registered under ``name`` right now (``context()`` gives the
        context handles are made on, when one is needed)."""
        prefix = actor_prefix(self._namespace, name)
        request = pb.ListActorsRequest(state=pb.ACTOR_STATE_READY, name_prefix=prefix)
        client = self._controller()
        actors = call_controller(client, client.rpc.list_actors, request).actors
        endpoints: list[ActorEndpoint] = []
        with self._lock:
            for actor in actors:
                if not actor.name.startswith(prefix) or actor.state != pb.ACTOR_STATE_READY:
                    continue
                handle = self._handles.get(actor.actor_id)
                if handle is None:
                    # A handle for an actor created elsewhere, on this cluster's context.
                    handle = context().actor_handle(actor, _HOST_METHODS)
                    self._handles[actor.actor_id] = handle
                endpoints.append(FrayEndpoint(handle))
            listed = {actor.actor_id for actor in actors}
            for actor_id, handle in list(self._handles.items()):
                if handle.name.startswith(prefix) and actor_id not in listed:
                    del self._handles[actor_id]  # gone (or not ready yet: made again then)
        return endpoints
