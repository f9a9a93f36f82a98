"""Actor handles on the fray backend, and creating and killing actors.

`ActorDirectory.create` (behind `FrayContext.create_actor`) registers the actor with the
controller, which places it on a worker (`fray.worker.actor_host`). A handle's calls go straight
to that worker (`FrayWorker.CallActor`), queued per handle and sent in batches by one sender at
a time, so calls from one handle run in the order they were made (`fray.client.actor_calls`).

What a handle uses of its context is a `ClientLink`: the controller client (where is the actor),
the worker clients (its calls) and `reopen`, which gives the link of this process's shared
context when a handle is unpickled (in a task, in another actor).

Failures: a call whose worker or actor process died while it was sent fails with
`ActorDiedError` (actor calls run at most once: it may or may not have run). Later calls wait
for the controller to restart the actor elsewhere (when `max_restarts` allows) or fail with
`ActorDiedError`; calls on an actor whose constructor raised fail with `ActorCreationError`.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from typing import Any

from connectrpc.code import Code
from connectrpc.errors import ConnectError

from fray import errors
from fray.client.actor_calls import ActorCaller, ActorFuture
from fray.client.actor_place import ActorLocator
from fray.client.actor_send import ActorSender
from fray.client.connections import ClientLink, refused
from fray.client.futures import future_value
from fray.client.objects import pack_arguments
from fray.wire import payload
from fray.wire.pb import controller_pb2 as pb

logger = logging.getLogger(__name__)

__all__ = ["ActorDirectory", "ActorFuture", "FrayActorHandle", "public_methods"]


class _Method:
    """`handle.method`: `.remote(*args, **kwargs)` calls it and returns a future."""

    def __init__(self, caller: ActorCaller, name: str) -> None:
        self._caller = caller
        self._name = name

    def remote(self, *args: Any, **kwargs: Any) -> ActorFuture:
        return self._caller.submit(self._name, args, kwargs)


class FrayActorHandle:
    """A handle to an actor on a fray worker; it can be passed to tasks and other actors."""

    def __init__(self, link: ClientLink, actor: pb.Actor, methods: frozenset[str]) -> None:
        self.actor_id = actor.actor_id
        self.name = actor.name
        self.class_name = actor.class_name
        self._methods = methods
        self._link = link
        what = f"actor {actor.actor_id} ({actor.class_name})"
        locator = ActorLocator(link.controller, actor.actor_id, what)
        sender = ActorSender(
            link.workers, locator, actor.actor_id, actor.class_name, link.driver_log, link.objects
        )
        self._caller = ActorCaller(sender, locator)

    def __getattr__(self, name: str) -> _Method:
        if name.startswith("_") or name not in self._methods:
            raise AttributeError(f"actor class {self.class_name} has no method {name!r}")
        return _Method(self._caller, name)

    def __reduce__(self) -> Any:
        actor = pb.Actor(actor_id=self.actor_id, name=self.name, class_name=self.class_name)
        link = self._link
        return _rebuild, (link.reopen, link.address, actor.SerializeToString(), self._methods)

    def __repr__(self) -> str:
        return f"<FrayActorHandle {self.class_name} {self.actor_id}>"


def _rebuild(
    reopen: Callable[[str], ClientLink], address: str, actor: bytes, methods: frozenset[str]
) -> FrayActorHandle:
    """An unpickled handle: on the link of this process's shared context for `address`."""
    return FrayActorHandle(reopen(address), pb.Actor.FromString(actor), methods)


def public_methods(cls: type) -> frozenset[str]:
    return frozenset(
        name for name in dir(cls) if not name.startswith("_") and callable(getattr(cls, name))
    )


class ActorDirectory:
    """Creates and kills a context's actors; remembers its non-detached ones, which `close`
    kills (they live as long as their creator)."""

    def __init__(self, link: ClientLink) -> None:
        self._link = link
        self._lock = threading.Lock()
        self._owned: list[str] = []  # non-detached actors created here

    def create(
        self,
        cls: type,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        name: str | None,
        get_if_exists: bool,
        detached: bool,
        max_restarts: int,
        requirements: pb.Requirements | None = None,
    ) -> FrayActorHandle:
        """Register `cls(*args, **kwargs)` with the controller (futures among the arguments
        are waited for); ValueError when `name` is taken, unless `get_if_exists`.
        `requirements` (checked already): what the actor holds on its worker."""
        class_name = getattr(cls, "__qualname__", type(cls).__qualname__)
        args = tuple(future_value(a) for a in args)
        kwargs = {k: future_value(v) for k, v in kwargs.items()}
        # Large constructor arguments become an object, kept for the actor's restarts until
        # the context closes (no future). A detached actor outlives its creator (and its
        # objects): its arguments go inline.
        objects = None if detached else self._link.objects
        data, object_ids, stored = pack_arguments(objects, args, kwargs, class_name, None)
        spec = pb.ActorSpec(
            actor_id=uuid.uuid4().hex[:16],  # ours, so that a retried CreateActor is a repeat
            name=name or "",
            class_name=class_name,
            cls=payload.dumps(cls, f"the actor class {class_name}"),
            args=data,
            object_ids=object_ids,
            max_restarts=max_restarts,
            owner=self._link.owner,
            detached=detached,
            requirements=requirements,
        )
        request = pb.CreateActorRequest(actor=spec, get_if_exists=get_if_exists)
        controller = self._link.controller
        try:
            response = controller.call(controller.rpc.create_actor, request)
        except ConnectError as exc:
            if exc.code == Code.ALREADY_EXISTS:
                raise ValueError(exc.message) from None
            raise refused(exc, "CreateActor") from None
        if response.existed and stored and self._link.objects is not None:
            self._link.objects.release([stored])  # the actor there keeps its own arguments
        if not response.existed and not detached:
            with self._lock:
                self._owned.append(response.actor.actor_id)
        return FrayActorHandle(self._link, response.actor, public_methods(cls))

    def kill(self, handle: FrayActorHandle) -> None:
        """Stop an actor for good; the handle's pending and later calls fail at once."""
        controller = self._link.controller
        try:
            controller.call(
                controller.rpc.kill_actor, pb.KillActorRequest(actor_id=handle.actor_id)
            )
        except ConnectError as exc:
            raise refused(exc, "the request") from None
        handle._caller.killed()

    def kill_owned(self) -> None:
        """Kill the non-detached actors created here (at close; 2 s of retries each)."""
        controller = self._link.controller
        with self._lock:
            owned, self._owned = self._owned, []
        for actor_id in owned:
            try:
                controller.call(
                    controller.rpc.kill_actor,
                    pb.KillActorRequest(actor_id=actor_id),
                    retry_timeout=2,
                )
            except (ConnectError, errors.FrayError) as exc:
                logger.warning("could not kill actor %s at close: %s", actor_id, exc)
