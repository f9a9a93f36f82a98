"""Where an actor is: the worker address and incarnation that a handle's calls go to.

`ActorLocator` remembers the last place the controller gave, forgets it when a call shows the
actor may have moved (`moved`: only a newer incarnation will do), and asks the controller again
(`GetActor` long poll with `min_incarnation`) until the actor is READY there, or is gone for
good: constructor failed (`ActorCreationError`), dead (`ActorDiedError`). Once gone, `final`
holds the error every later call fails with.
"""

from __future__ import annotations

import time

from connectrpc.errors import ConnectError

from fray import errors
from fray.wire import payload
from fray.wire.controller_client import ControllerClient
from fray.wire.pb import controller_pb2 as pb

READY_TIMEOUT = 60.0  # how long a call waits for its actor to be placed and built
_RESOLVE_WAIT_MS = 10_000


class ActorLocator:
    """Tracks where actor `actor_id` runs, asking `controller` when it does not know."""

    def __init__(self, controller: ControllerClient, actor_id: str, what: str) -> None:
        self._controller = controller
        self._actor_id = actor_id
        self._what = what  # "actor <id> (<class>)", for messages
        self._address = ""
        self._incarnation = 0
        self._min_incarnation = 0
        self.final: BaseException | None = None  # the actor is gone for good

    def place(self) -> tuple[str, int] | None:
        """Where to send calls without asking the controller first (one read: a batch's
        waiting thread may clear it meanwhile), or None."""
        address, incarnation = self._address, self._incarnation
        current = bool(address) and incarnation >= self._min_incarnation
        return (address, incarnation) if current else None

    def forget(self) -> None:
        """Ask the controller before the next call."""
        self._address = ""

    def moved(self, incarnation: int) -> None:
        """The actor may have moved: ask the controller where it is before the next call."""
        self._min_incarnation = max(self._min_incarnation, incarnation + 1)
        self._address = ""

    def killed(self) -> BaseException:
        """The actor was killed through this handle: later calls fail at once."""
        self.final = errors.ActorDiedError(
            f"{self._what} is dead: killed", actor_id=self._actor_id, call_sent=False
        )
        return self.final

    def resolve(self) -> tuple[str, int]:
        """Where the actor is ready now (asking the controller when we do not know)."""
        if self.final is not None:
            raise self.final
        deadline = time.monotonic() + READY_TIMEOUT
        client = self._controller
        while True:
            request = pb.GetActorRequest(
                actor_id=self._actor_id,
                wait_ms=_RESOLVE_WAIT_MS,
                min_incarnation=self._min_incarnation,
            )
            try:
                actor = client.call(client.rpc.get_actor, request, wait_ms=request.wait_ms).actor
            except ConnectError as exc:
                raise errors.ActorError(
                    f"{self._what}: the controller said {exc.code.value}: {exc.message}",
                    actor_id=self._actor_id,
                ) from None
            if actor.state == pb.ACTOR_STATE_READY and actor.incarnation >= self._min_incarnation:
                self._address, self._incarnation = actor.address, actor.incarnation
                return self._address, self._incarnation
            if actor.state == pb.ACTOR_STATE_FAILED:
                self.final = errors.ActorCreationError(
                    f"{self._what} could not be created: {actor.error.type}: {actor.error.message}",
                    actor_id=self._actor_id,
                )
                self.final.__cause__ = payload.exception_from_error(actor.error, self._what)
                raise self.final
            if actor.state == pb.ACTOR_STATE_DEAD:
                self.final = errors.ActorDiedError(
                    f"{self._what} is dead: {actor.error.message or 'killed'}",
                    actor_id=self._actor_id,
                    call_sent=False,  # found dead before sending: the call did not run
                )
                raise self.final
            if time.monotonic() > deadline:
                state = pb.ActorState.Name(actor.state)
                if actor.pending_reason:  # e.g. "no worker offers gpus=1"
                    state = f"{state}: {actor.pending_reason}"
                raise errors.ActorError(
                    f"{self._what} is not ready after {READY_TIMEOUT:g}s ({state})",
                    actor_id=self._actor_id,
                )
