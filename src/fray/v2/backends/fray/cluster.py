"""``FrayCluster``: fray.v2 on fray's own controller (``create_cluster("fray?...")``).

* Jobs (:mod:`.jobs`): ``SubmitJob`` with a job id chosen here (``NAME-xxxxxxxx``); each
  replica is a process of its own on a worker whose free resources fit the ``ResourceSpec``
  (:mod:`.resources`), all replicas placed at once. Callable entrypoints travel cloudpickled
  and run under fray's job bootstrap; binary ones (``Entrypoint.from_binary``) as their
  argv. The job gets ``env_vars``, ``FRAY_CLUSTER_SPEC`` (this cluster's :attr:`spec`, so
  ``current_cluster()`` in the job reaches the same controller and namespace) and runs in
  ``workspace`` (a directory on the worker's machine). ``pip_packages`` and ``extras`` are
  ignored with a warning: fray workers install nothing.
* ``list_jobs`` lists the controller's jobs in this namespace, whoever submitted them (the
  namespace travels in the job's ``owner``, ``fray.v2/NAMESPACE/ID``); jobs submitted
  otherwise (``fray job submit``, curl) count as the default namespace's. ``terminate``
  works on any job id the controller knows.
* Worker pools (:mod:`.pool`) and actors (:mod:`.actors`) are fray actors created through
  one :class:`~fray.client.context.FrayContext`, made on first use and closed by
  :meth:`FrayCluster.shutdown` (or at interpreter exit), which kills them. Pool workers hold
  the pool's ``ResourceSpec``; their processes, and those of actors, get this cluster's spec
  as ``FRAY_CLUSTER_SPEC``, so ``current_cluster()`` there reaches the same namespace.

The token is ``$FRAY_TOKEN`` and the CA bundle ``$FRAY_TLS_CA``, as for every fray client.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import uuid
import weakref
from typing import Any
from urllib.parse import quote, unquote

from fray.client.context import FrayContext
from fray.v2.actor.hosting import check_actor_name
from fray.v2.actor.pool import ActorEndpoint
from fray.v2.actor.resolver import EndpointResolver
from fray.v2.backends.fray.actors import FrayActorDirectory, HostedFrayActor
from fray.v2.backends.fray.jobs import FrayJob, build_job_spec, call_controller
from fray.v2.backends.fray.pool import FrayWorkerPool
from fray.v2.backends.fray.resources import resources_and_labels
from fray.v2.cluster import CLUSTER_SPEC_ENV, DEFAULT_NAMESPACE, Job
from fray.v2.job import JobTable
from fray.v2.types import Entrypoint, EnvironmentSpec, JobId, Namespace, ResourceSpec
from fray.wire.controller_client import ControllerClient, normalize_address
from fray.wire.pb import controller_pb2 as pb
from fray.wire.probe import probe

__all__ = ["FrayCluster", "job_namespace"]

logger = logging.getLogger(__name__)

_OWNER_ROOT = "fray.v2/"


def job_namespace(owner: str) -> str:
    """The namespace of a job submitted by ``owner`` (the default one for non-fray.v2 jobs)."""
    if not owner.startswith(_OWNER_ROOT):
        return DEFAULT_NAMESPACE
    return unquote(owner[len(_OWNER_ROOT) :].rpartition("/")[0])


class _Connections:
    """What a FrayCluster opens: its controller client and its FrayContext (both lazily)."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.lock = threading.Lock()
        self.client: ControllerClient | None = None
        self.ctx: FrayContext | None = None
        self.closed = False

    def controller(self) -> ControllerClient:
        with self.lock:
            self._check_open()
            if self.client is None:
                client = ControllerClient(self.address)
                try:
                    probe(client)  # nothing there, or not a controller: say so now
                except BaseException:
                    client.close()
                    raise
                self.client = client
            return self.client

    def context(self) -> FrayContext:
        with self.lock:
            self._check_open()
            if self.ctx is None:
                self.ctx = FrayContext(self.address)
            return self.ctx

    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeError("this fray cluster object was shut down")

    def close(self) -> None:
        with self.lock:
            self.closed = True
            ctx, self.ctx = self.ctx, None
            client, self.client = self.client, None
        if ctx is not None:
            with contextlib.suppress(Exception):
                ctx.close()
        if client is not None:
            client.close()


class FrayCluster:
    """A :class:`fray.v2.cluster.Cluster` on the fray controller at ``address`` (see the
    module docstring). Nothing is contacted before the first call, which fails within a
    few seconds (:class:`~fray.errors.ControllerUnavailableError`) when no fray controller
    answers at ``address``."""

    def __init__(self, address: str, namespace: Namespace = DEFAULT_NAMESPACE) -> None:
        self._namespace = namespace
        self._conn = _Connections(normalize_address(address))  # ValueError if malformed
        self._owner = f"{_OWNER_ROOT}{quote(namespace, safe='')}/{uuid.uuid4().hex[:12]}"
        self._actors = FrayActorDirectory(self._conn.controller, namespace, self.spec)
        self._finalizer = weakref.finalize(self, self._conn.close)

    @property
    def namespace(self) -> Namespace:
        return self._namespace

    @property
    def address(self) -> str:
        """The controller's address."""
        return self._conn.address

    @property
    def spec(self) -> str:
        """The spec that reaches this cluster (what jobs get as FRAY_CLUSTER_SPEC)."""
        address = quote(self._conn.address, safe=":/[]")
        return f"fray?address={address}&namespace={quote(self._namespace, safe='')}"

    # --- jobs ------------------------------------------------------------------------------

    def submit(
        self,
        entrypoint: Entrypoint,
        name: str,
        resources: ResourceSpec,
        environment: EnvironmentSpec | None = None,
    ) -> FrayJob:
        job_id = JobTable.new_id(name)
        env_spec = environment or EnvironmentSpec()
        if env_spec.pip_packages or env_spec.extras:
            logger.warning("the fray backend installs nothing: pip_packages and extras are ignored")
        env = {**env_spec.env_vars, CLUSTER_SPEC_ENV: self.spec}
        spec = build_job_spec(
            job_id, name, entrypoint, resources, env, env_spec.workspace, self._owner
        )
        client = self._conn.controller()
        job = call_controller(client, client.rpc.submit_job, pb.SubmitJobRequest(job=spec)).job
        return FrayJob.from_wire(client, job)

    def list_jobs(self) -> list[Job]:
        """The controller's jobs in this namespace, oldest first."""
        client = self._conn.controller()
        jobs = call_controller(client, client.rpc.list_jobs, pb.ListJobsRequest()).jobs
        return [
            FrayJob.from_wire(client, job)
            for job in jobs
            if job_namespace(job.owner) == self._namespace
        ]

    def terminate(self, job_id: JobId) -> None:
        """Stop job ``job_id`` (:class:`~fray.errors.UnknownJobError` if the controller has
        no such job)."""
        FrayJob(self._conn.controller(), job_id, "", 1).terminate()

    # --- actors and pools ------------------------------------------------------------------

    def resolver(self) -> EndpointResolver:
        def endpoints(name: str) -> list[ActorEndpoint]:
            return self._actors.endpoints(self._conn.context, name)

        return EndpointResolver(endpoints)

    def host_actor(self, name: str, actor: Any) -> HostedFrayActor:
        """Start a fray actor holding ``actor``, found by resolvers of this namespace."""
        check_actor_name(name)
        return self._actors.host(self._conn.context(), name, actor)

    def worker_pool(
        self,
        num_workers: int,
        resources: ResourceSpec,
        environment: EnvironmentSpec | None = None,
    ) -> FrayWorkerPool:
        env_spec = environment or EnvironmentSpec()
        if env_spec.pip_packages or env_spec.extras:
            logger.warning("the fray backend installs nothing: pip_packages and extras are ignored")
        capacities, labels = resources_and_labels(resources)
        return FrayWorkerPool(
            self._conn.context(),
            num_workers,
            {**env_spec.env_vars, CLUSTER_SPEC_ENV: self.spec},
            env_spec.workspace,
            capacities,
            labels,
            why_waiting=self._actor_pending_reason,
        )

    def _actor_pending_reason(self, actor_id: str) -> str:
        """Why the controller has not placed an actor ("" when it is just busy)."""
        client = self._conn.controller()
        request = pb.GetActorRequest(actor_id=actor_id)
        return call_controller(client, client.rpc.get_actor, request).actor.pending_reason

    # --- lifetime --------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Close this cluster object's connections; its pools' and actors' actors are killed
        (jobs keep running: they belong to the controller)."""
        self._finalizer()

    @property
    def is_shut_down(self) -> bool:
        """True after :meth:`shutdown` (``current_cluster()`` then makes a new one)."""
        return self._conn.closed

    def __enter__(self) -> FrayCluster:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        return f"FrayCluster({self._conn.address!r}, namespace={self._namespace!r})"
