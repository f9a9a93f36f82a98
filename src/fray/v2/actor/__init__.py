"""Actors in fray.v2: :class:`ActorServer` registers them, a resolver finds their pools."""

from fray.v2.actor.pool import (
    ActorEndpoint,
    FutureBroadcastResult,
    NoActorError,
    RoundRobinActorPool,
)
from fray.v2.actor.resolver import EndpointResolver
from fray.v2.actor.server import ActorServer, HostedActor

__all__ = [
    "ActorEndpoint",
    "ActorServer",
    "EndpointResolver",
    "FutureBroadcastResult",
    "HostedActor",
    "NoActorError",
    "RoundRobinActorPool",
]
