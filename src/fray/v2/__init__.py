"""fray.v2: submit jobs, open worker pools and find named actors, on the local, Ray or fray
backend.

    from fray.v2 import current_cluster, ResourceSpec

    cluster = current_cluster()  # $FRAY_CLUSTER_SPEC: "local" (default), "ray", "fray?...", ...
    with cluster.worker_pool(num_workers=2, resources=ResourceSpec()) as pool:
        print([f.result() for f in [pool.submit(pow, i, 2) for i in range(5)]])

The API follows Iris's shape. Where things are: the protocols in :mod:`fray.v2.cluster`,
``create_cluster``/``current_cluster`` in :mod:`fray.v2.factory`, value types in
:mod:`fray.v2.types`, actors in :mod:`fray.v2.actor`, backends in :mod:`fray.v2.backends`,
errors in :mod:`fray.errors`. Importing this package does not import Ray or fray's client;
a backend is loaded when a cluster of its kind is created.
"""

from fray.errors import JobFailedError, NoActorError, UnknownJobError
from fray.v2.actor.server import ActorServer
from fray.v2.cluster import ActorPool, BroadcastResult, Cluster, Job, Resolver, WorkerPool
from fray.v2.factory import create_cluster, current_cluster, set_current_cluster, use_cluster
from fray.v2.types import (
    Entrypoint,
    EnvironmentSpec,
    JobId,
    JobStatus,
    Namespace,
    ResourceSpec,
)

__all__ = [
    "ActorPool",
    "ActorServer",
    "BroadcastResult",
    "Cluster",
    "Entrypoint",
    "EnvironmentSpec",
    "Job",
    "JobFailedError",
    "JobId",
    "JobStatus",
    "Namespace",
    "NoActorError",
    "Resolver",
    "ResourceSpec",
    "UnknownJobError",
    "WorkerPool",
    "create_cluster",
    "current_cluster",
    "set_current_cluster",
    "use_cluster",
]
