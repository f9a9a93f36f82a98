"""Actors in fray.v2: :class:`ActorServer` registers them, a resolver finds their pools.

* :mod:`fray.v2.actor.server`: ``ActorServer`` (uses the current cluster by default);
* :mod:`fray.v2.actor.hosting`: what a backend offers to host actors;
* :mod:`fray.v2.actor.pool` and :mod:`fray.v2.actor.resolver`: the pools and resolvers
  backends build from their actor endpoints.

``NoActorError`` lives in :mod:`fray.errors` with fray's other errors.
"""

from fray.errors import NoActorError
from fray.v2.actor.hosting import ActorHosting, HostedActor, check_actor_name
from fray.v2.actor.pool import ActorEndpoint, FutureBroadcastResult, RoundRobinActorPool
from fray.v2.actor.resolver import EndpointResolver
from fray.v2.actor.server import ActorServer

__all__ = [
    "ActorEndpoint",
    "ActorHosting",
    "ActorServer",
    "EndpointResolver",
    "FutureBroadcastResult",
    "HostedActor",
    "NoActorError",
    "RoundRobinActorPool",
    "check_actor_name",
]
