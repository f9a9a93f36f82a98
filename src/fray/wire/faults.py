"""RPC fault injection for tests, in the spirit of Ray's ``RAY_testing_rpc_failure``.

``FRAY_TESTING_RPC_FAILURE`` makes chosen RPCs of a controller or worker fail, with a
probability, either *before* the handler runs (the request is lost) or *after* it ran (the
answer is lost, the effect stays):

    FRAY_TESTING_RPC_FAILURE="SubmitTasks=0.5:after,ReportResults=0.3,LeaseTasks=0.2:before"

Each entry is ``Method=probability[:before|after]`` (no side: either, at even odds); ``*`` names
every method. A failed call answers HTTP 503 with the Connect error ``unavailable``, which is
what a client sees when a connection breaks, so the callers' retries are what gets tested:
every RPC a worker or client repeats must be safe to repeat. The edge (`fray.wire.edge`) wraps
its app with this, so only requests it admits can fail. Read once, when a server starts;
when the variable is unset the server's app is not wrapped at all (no cost).
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from connectrpc.code import Code

from fray.wire.serving import send_error

logger = logging.getLogger(__name__)

ENV = "FRAY_TESTING_RPC_FAILURE"

_Scope = MutableMapping[str, Any]
_Message = MutableMapping[str, Any]
_Receive = Callable[[], Awaitable[_Message]]
_Send = Callable[[_Message], Awaitable[None]]
_App = Callable[[_Scope, _Receive, _Send], Awaitable[None]]
_SIDES = ("before", "after", "either")


@dataclass(frozen=True)
class Fault:
    probability: float
    side: str  # "before", "after" or "either"


def parse(text: str) -> dict[str, Fault]:
    """``Method=probability[:side],...`` -> {method: Fault}; ValueError naming a bad entry."""
    faults = {}
    for entry in filter(None, (e.strip() for e in text.split(","))):
        method, sep, rest = entry.partition("=")
        probability, _, side = rest.partition(":")
        side = side or "either"
        try:
            value = float(probability)
        except ValueError:
            value = -1.0
        if not sep or not method or not 0.0 <= value <= 1.0 or side not in _SIDES:
            raise ValueError(
                f"{ENV}: bad entry {entry!r}; expected Method=probability[:before|after] "
                "with a probability from 0 to 1"
            )
        faults[method.strip()] = Fault(value, side)
    return faults


def wrap(app: _App, name: str) -> _App:
    """`app`, failing RPCs as ``$FRAY_TESTING_RPC_FAILURE`` says (`app` itself when unset)."""
    text = os.environ.get(ENV, "")
    if not text:
        return app
    faults = parse(text)
    rng = random.Random()
    logger.warning("%s: injecting RPC failures (%s=%s)", name, ENV, text)

    def pick(path: str) -> str | None:
        fault = faults.get(path.rsplit("/", 1)[-1]) or faults.get("*")
        if fault is None or rng.random() >= fault.probability:
            return None
        return fault.side if fault.side != "either" else rng.choice(("before", "after"))

    async def injecting(scope: _Scope, receive: _Receive, send: _Send) -> None:
        side = pick(scope.get("path", "")) if scope["type"] == "http" else None
        if side is None:
            await app(scope, receive, send)
            return
        if side == "after":  # run the handler, then lose its answer

            async def swallow(message: _Message) -> None:
                return None

            await app(scope, receive, swallow)
        else:
            while (await receive()).get("more_body"):
                pass
        message = f"injected failure {side} {scope['path']} ({ENV})"
        await send_error(send, Code.UNAVAILABLE, message)

    return injecting
