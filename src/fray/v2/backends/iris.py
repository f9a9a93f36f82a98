"""The Iris backend of fray.v2: ``create_cluster("iris?address=URL&namespace=NAME")``.

A thin adapter over the public client API of Marin's ``iris`` package (imported only here, and
only when a cluster is made). Written against these files of ``marin-community/marin``
(``lib/iris/src/iris/``, read through the project's code search; Iris is not installable
here, so ``tests/iris_standin`` stands in for it in the tests):

* ``client/client.py`` @ 01e12487: ``IrisClient.remote(address, workspace=...)`` and
  ``.local()``, ``submit(entrypoint, name, resources, environment, ports=, constraints=,
  replicas=)``, ``Job.status()/tasks()/terminate()``, ``Task.logs()``, ``list_jobs(states=,
  prefix=)``, ``resolver_for_job``, ``iris_ctx()`` (``registry``, ``get_port``);
* ``cluster/types.py`` @ 0009e749: ``ResourceSpec``, ``EnvironmentSpec``,
  ``Entrypoint.from_callable``, ``gpu_device``/``tpu_device``,
  ``preemptible_constraint``/``region_constraint``;
* ``cluster/client/job_info.py`` @ 04f6701d: ``get_job_info()`` (``task_index``,
  ``advertise_host``);
* ``actor/server.py`` @ 01977dc6, ``actor/client.py`` @ 032da538, ``actor/resolver.py`` @
  055c1d01: ``ActorServer``, ``ActorClient``, ``FixedResolver``;
* ``client/worker_pool.py`` @ 0501d0e3: ``WorkerPool``, ``WorkerPoolConfig``.

Iris's interface moves quickly (later versions name jobs ``/root/child`` and moved the
constraints to ``iris.cluster.constraints``); a newer Iris may need these imports adjusted.

What maps to what:

* ``ResourceSpec``: ``cpu`` -> ``cpu`` rounded up to whole CPUs (Iris counts integers),
  ``memory``/``disk`` -> bytes, GPU -> ``gpu_device(variant, count)`` (``"auto"``: any
  variant, ``""``), TPU -> ``tpu_device(variant, device_count)``, ``replicas`` -> ``replicas``,
  ``preemptible=False`` -> ``preemptible_constraint(False)``, ``regions`` ->
  ``region_constraint``. Worker pools take no constraints in Iris: theirs are ignored.
* ``Entrypoint``: always ``Entrypoint.from_callable`` of :func:`run_fray_task`, which sets
  ``FRAY_TASK_INDEX`` from Iris's job info, enters the workspace and calls fray's cloudpickled
  entrypoint (binary entrypoints are fray's ``run_command``, so one path serves both).
* ``EnvironmentSpec``: ``env_vars`` (plus fray's ``FRAY_*`` job variables),
  ``pip_packages`` and ``extras`` go to Iris's ``EnvironmentSpec``; ``workspace`` is a
  directory on the task's machine, entered by the task (the ``workspace=`` spec option is
  Iris's own: the directory bundled and shipped by ``IrisClient.remote``).
* fray must be installed in the jobs' environment (Iris's workspace bundle or
  ``pip_packages``): tasks run :func:`run_fray_task` and :func:`serve_actor` from this module.
* Jobs: one Iris job per fray job, named with fray's id (``NAME-xxxxxxxx``); status, wait,
  logs and terminate go through Iris's ``Job``. A failed job's error is Iris's reason plus the
  last traceback in its tasks' output.
* Actors: ``ActorServer(cluster).register(name, obj)`` starts one Iris job per actor
  (:func:`serve_actor`: an Iris ``ActorServer`` on the job's ``actor`` port, registered with
  the job's endpoint registry); the job's name carries the fray namespace and actor name, so a
  resolver lists the running jobs with that prefix and resolves each one's endpoint. Calls
  go through Iris's ``ActorClient``. ``stop`` terminates the job.
* Worker pools: Iris's ``WorkerPool`` (one job of ``num_workers`` tasks), its futures turned
  into ``concurrent.futures.Future``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import re
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError, ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fray.errors import JobFailedError, UnknownJobError
from fray.v2.actor.hosting import check_actor_name
from fray.v2.actor.pool import ActorEndpoint
from fray.v2.actor.resolver import EndpointResolver
from fray.v2.cluster import DEFAULT_NAMESPACE, Job
from fray.v2.job import JobTable, dump_entrypoint, job_env
from fray.v2.types import Entrypoint, EnvironmentSpec, JobId, JobStatus, Namespace, ResourceSpec
from fray.v2.worker_pool import FutureWorkerPool

__all__ = [
    "IrisCluster",
    "IrisJob",
    "IrisWorkerPool",
    "iris_environment",
    "iris_resources",
    "run_fray_task",
    "serve_actor",
]

logger = logging.getLogger(__name__)

ACTOR_ENDPOINT = "fray-actor"  # the endpoint name every actor job registers
ACTOR_CPUS = 1  # what an actor's job asks for (fray's ActorServer takes no resources)
_ACTOR_JOB_ROOT = "fray-actor-"
_READY_POLL = 0.05


# --- conversions -----------------------------------------------------------------------------


def iris_resources(spec: ResourceSpec) -> tuple[Any, list[Any]]:
    """``spec`` as Iris's ``(ResourceSpec, constraints)`` for one replica."""
    from iris.cluster.types import ResourceSpec as IrisResourceSpec
    from iris.cluster.types import (
        gpu_device,
        preemptible_constraint,
        region_constraint,
        tpu_device,
    )

    device = None
    variant = spec.device_variant or ""
    if spec.device_type == "gpu":
        device = gpu_device("" if variant == "auto" else variant, spec.device_count)
    elif spec.device_type == "tpu":
        device = tpu_device(variant, spec.device_count)
    resources = IrisResourceSpec(
        cpu=math.ceil(spec.cpu), memory=spec.memory_bytes, disk=spec.disk_bytes, device=device
    )
    constraints = []
    if not spec.preemptible:
        constraints.append(preemptible_constraint(False))
    if spec.regions:
        constraints.append(region_constraint(list(spec.regions)))
    return resources, constraints


def iris_environment(env_spec: EnvironmentSpec, env_vars: dict[str, str]) -> Any:
    """``env_spec`` as Iris's ``EnvironmentSpec``, its variables plus ``env_vars``."""
    from iris.cluster.types import EnvironmentSpec as IrisEnvironmentSpec

    return IrisEnvironmentSpec(
        pip_packages=list(env_spec.pip_packages),
        env_vars={**env_spec.env_vars, **env_vars},
        extras=list(env_spec.extras),
    )


def _job_status(state: int) -> JobStatus:
    from iris.rpc import cluster_pb2

    names = {
        "JOB_STATE_RUNNING": JobStatus.RUNNING,
        "JOB_STATE_SUCCEEDED": JobStatus.SUCCEEDED,
        "JOB_STATE_FAILED": JobStatus.FAILED,
        "JOB_STATE_WORKER_FAILED": JobStatus.FAILED,
        "JOB_STATE_UNSCHEDULABLE": JobStatus.FAILED,
        "JOB_STATE_KILLED": JobStatus.KILLED,
    }
    for name, status in names.items():
        if getattr(cluster_pb2, name, None) == state:
            return status
    return JobStatus.PENDING  # pending, building, or a state this fray does not know


# --- code that runs in Iris tasks ---------------------------------------------------------------


def run_fray_task(payload: bytes, workspace: str | None) -> None:
    """An Iris task of a fray job: ``FRAY_TASK_INDEX``, the workspace, then the entrypoint."""
    import cloudpickle
    from iris.cluster.client import get_job_info

    info = get_job_info()
    os.environ["FRAY_TASK_INDEX"] = str(info.task_index if info is not None else 0)
    if workspace:
        os.chdir(workspace)
        sys.path.insert(0, workspace)
    fn, args, kwargs = cloudpickle.loads(payload)
    fn(*args, **kwargs)


def serve_actor(instance: Any) -> None:
    """An Iris task hosting one fray actor until its job is terminated."""
    from iris.actor.server import ActorServer
    from iris.client.client import iris_ctx
    from iris.cluster.client import get_job_info

    ctx = iris_ctx()
    info = get_job_info()
    if info is None or ctx.registry is None:
        raise RuntimeError("serve_actor runs in an Iris job")
    server = ActorServer(host="0.0.0.0", port=ctx.get_port("actor"))
    server.register(ACTOR_ENDPOINT, instance)
    port = server.serve_background()
    ctx.registry.register(ACTOR_ENDPOINT, f"{info.advertise_host}:{port}")
    threading.Event().wait()


def _in_workspace(workspace: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run ``fn`` with ``workspace`` as the working directory, first on ``sys.path``."""
    os.chdir(workspace)
    if workspace not in sys.path:
        sys.path.insert(0, workspace)
    return fn(*args, **kwargs)


# --- jobs ------------------------------------------------------------------------------------


def _last_traceback(text: str) -> str:
    start = text.rfind("Traceback (most recent call last):")
    return text[start:].strip() if start >= 0 else "\n".join(text.strip().splitlines()[-20:])


class IrisJob:
    """A :class:`fray.v2.cluster.Job` over an Iris job."""

    def __init__(self, job_id: JobId, name: str, iris_job: Any, replicas: int) -> None:
        self._job_id = job_id
        self.name = name
        self.iris_job = iris_job
        self._replicas = replicas

    @property
    def job_id(self) -> JobId:
        return self._job_id

    def status(self) -> JobStatus:
        return _job_status(self.iris_job.status().state)

    def _task_lines(self) -> list[list[str]]:
        tasks = sorted(self.iris_job.tasks(), key=lambda t: t.task_index)
        return [[entry.data for entry in task.logs()] for task in tasks]

    def logs(self) -> str:
        """The output of the job's tasks so far (task after task)."""
        return "".join(line + "\n" for lines in self._task_lines() for line in lines)

    def error(self) -> str:
        """Why the job failed: Iris's reason, then the last traceback it printed."""
        reason = self.iris_job.status().error
        return "\n".join(part for part in (reason, _last_traceback(self.logs())) if part)

    def terminate(self) -> None:
        if not self.status().is_finished():
            self.iris_job.terminate()

    def wait(
        self, timeout: float = 300.0, *, stream_logs: bool = False, raise_on_failure: bool = True
    ) -> JobStatus:
        deadline = time.monotonic() + timeout
        printed: list[int] = []
        delay = 0.05
        while True:
            status = self.status()
            if stream_logs:
                self._print_new(printed)
            if status.is_finished():
                break
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"job {self._job_id} still {status} after {timeout}s")
            time.sleep(min(delay, left))
            delay = min(delay * 2, 0.2 if stream_logs else 1.0)
        if status == JobStatus.FAILED and raise_on_failure:
            raise JobFailedError(self._job_id, status, self.error())
        return status

    def _print_new(self, printed: list[int]) -> None:
        """Print the lines not printed yet (``printed``: how many, per task)."""
        for index, lines in enumerate(self._task_lines()):
            if index == len(printed):
                printed.append(0)
            prefix = f"[{self._job_id}]" if self._replicas == 1 else f"[{self._job_id}/{index}]"
            for line in lines[printed[index] :]:
                print(f"{prefix} {line}", flush=True)
            printed[index] = max(printed[index], len(lines))

    def __repr__(self) -> str:
        return f"IrisJob({self._job_id!r})"


# --- actors ----------------------------------------------------------------------------------

_call_executor: ThreadPoolExecutor | None = None
_call_executor_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    global _call_executor
    with _call_executor_lock:
        if _call_executor is None:
            _call_executor = ThreadPoolExecutor(32, thread_name_prefix="fray-v2-iris")
        return _call_executor


def actor_job_prefix(namespace: str, name: str) -> str:
    """The start of the Iris job names hosting actor ``name`` in ``namespace``."""
    slug = re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:40]
    digest = hashlib.sha256(f"{namespace}\0{name}".encode()).hexdigest()[:12]
    return f"{_ACTOR_JOB_ROOT}{slug}-{digest}-"


class _IrisEndpoint:
    """One actor job's endpoint, called through Iris's ``ActorClient``."""

    def __init__(self, job_id: str, url: str) -> None:
        from iris.actor.client import ActorClient
        from iris.actor.resolver import FixedResolver

        self._id = f"{job_id} {url}"
        self._client = ActorClient(FixedResolver({ACTOR_ENDPOINT: url}), ACTOR_ENDPOINT)

    @property
    def endpoint_id(self) -> str:
        return self._id

    def call(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return getattr(self._client, method)(*args, **kwargs)

    def submit(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Future[Any]:
        return _executor().submit(self.call, method, args, kwargs)


class _HostedIrisActor:
    def __init__(self, cluster: IrisCluster, iris_job: Any) -> None:
        self._cluster = cluster
        self.iris_job = iris_job

    def wait_ready(self, timeout: float) -> None:
        """Block until the actor's endpoint is registered (raises if its job ended)."""
        deadline = time.monotonic() + timeout
        job_id = str(self.iris_job.job_id)
        resolver = self._cluster.client.resolver_for_job(job_id)
        while resolver.resolve(ACTOR_ENDPOINT).is_empty:
            status = self.iris_job.status()
            if _job_status(status.state).is_finished():
                job = IrisJob(JobId(job_id), job_id, self.iris_job, 1)
                raise RuntimeError(f"the actor's Iris job {job_id} ended: {job.error()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the actor's Iris job {job_id} not serving after {timeout}s")
            time.sleep(_READY_POLL)

    def stop(self) -> None:
        with contextlib.suppress(Exception):  # already gone
            self.iris_job.terminate()


# --- worker pools ----------------------------------------------------------------------------


class IrisWorkerPool(FutureWorkerPool):
    """Iris's ``WorkerPool`` (started and waited for here) behind fray's WorkerPool."""

    def __init__(
        self, client: Any, num_workers: int, resources: Any, environment: Any, workspace: str | None
    ) -> None:
        from iris.client.worker_pool import WorkerPool, WorkerPoolConfig

        super().__init__(num_workers)
        config = WorkerPoolConfig(
            num_workers=num_workers,
            resources=resources,
            environment=environment,
            name_prefix="fray-pool",
        )
        self._pool = WorkerPool(client, config)
        self._pool.__enter__()  # launches the workers' job, waits until they serve
        self._workspace = workspace
        self._waiters = ThreadPoolExecutor(max(4, 2 * num_workers), "fray-v2-iris-pool")
        self._pending: set[Future[Any]] = set()
        self._lock = threading.Lock()

    def _submit(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Future[Any]:
        if self._workspace:
            fn, args = _in_workspace, (self._workspace, fn, *args)
        inner = self._pool.submit(fn, *args, **kwargs)
        outer: Future[Any] = Future()
        with self._lock:
            self._pending.add(outer)
        self._waiters.submit(self._settle, inner, outer)
        return outer

    def _settle(self, inner: Any, outer: Future[Any]) -> None:
        try:
            value = inner.result()
        except BaseException as exc:
            with contextlib.suppress(InvalidStateError):
                outer.set_exception(exc)
        else:
            with contextlib.suppress(InvalidStateError):
                outer.set_result(value)
        with self._lock:
            self._pending.discard(outer)

    def _shutdown(self, wait: bool, cancel_futures: bool) -> None:
        self._pool.shutdown(wait=wait and not cancel_futures)
        with self._lock:
            left, self._pending = list(self._pending), set()
        for future in left:  # their workers are gone
            if not future.cancel():
                with contextlib.suppress(InvalidStateError):
                    future.set_exception(RuntimeError("the worker pool was shut down"))
        self._waiters.shutdown(wait=False)


# --- the cluster -----------------------------------------------------------------------------


class IrisCluster:
    """A :class:`fray.v2.cluster.Cluster` on Iris (see the module docstring).

    ``address``: an Iris controller (``IrisClient.remote``, with ``workspace`` bundled and
    shipped by Iris); none: ``IrisClient.local()``. ``client`` (an ``IrisClient``) overrides
    both.
    """

    def __init__(
        self,
        namespace: Namespace = DEFAULT_NAMESPACE,
        address: str | None = None,
        workspace: str | None = None,
        client: Any = None,
    ) -> None:
        from iris.client import IrisClient

        if client is None:
            if address:
                ws = Path(workspace) if workspace else None
                client = IrisClient.remote(address, workspace=ws)
            else:
                client = IrisClient.local()
        self.client = client
        self._namespace = namespace
        self._address = address
        self._workspace = workspace
        self._jobs: dict[JobId, IrisJob] = {}
        self._lock = threading.Lock()
        self._owned: list[Any] = []  # actor jobs and pools this object started
        self._closed = False

    @property
    def namespace(self) -> Namespace:
        return self._namespace

    @property
    def spec(self) -> str:
        """The spec that reaches this cluster (what jobs get as FRAY_CLUSTER_SPEC)."""
        parts = [f"namespace={quote(self._namespace, safe='')}"]
        if self._address:
            parts.insert(0, f"address={quote(self._address, safe=':/[]')}")
        if self._workspace:
            parts.append(f"workspace={quote(self._workspace, safe='/')}")
        return "iris?" + "&".join(parts)

    # --- jobs -------------------------------------------------------------------------------

    def submit(
        self,
        entrypoint: Entrypoint,
        name: str,
        resources: ResourceSpec,
        environment: EnvironmentSpec | None = None,
    ) -> IrisJob:
        from iris.cluster.types import Entrypoint as IrisEntrypoint

        job_id = JobTable.new_id(name)
        env_spec = environment or EnvironmentSpec()
        iris_res, constraints = iris_resources(resources)
        env = job_env(self.spec, job_id, resources.replicas, 0)
        del env["FRAY_TASK_INDEX"]  # each task sets its own (run_fray_task)
        iris_job = self.client.submit(
            IrisEntrypoint.from_callable(
                run_fray_task, dump_entrypoint(entrypoint), env_spec.workspace
            ),
            job_id,
            iris_res,
            iris_environment(env_spec, env),
            constraints=constraints,
            replicas=resources.replicas,
        )
        job = IrisJob(job_id, name, iris_job, resources.replicas)
        with self._lock:
            self._jobs[job_id] = job
        return job

    def terminate(self, job_id: JobId) -> None:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise UnknownJobError(job_id)
        job.terminate()

    def list_jobs(self) -> list[Job]:
        """The jobs submitted through this cluster object, oldest first."""
        with self._lock:
            return list(self._jobs.values())

    # --- actors and pools -----------------------------------------------------------------

    def _actor_endpoints(self, name: str) -> list[ActorEndpoint]:
        from iris.rpc import cluster_pb2

        running = self.client.list_jobs(
            states=[cluster_pb2.JOB_STATE_RUNNING], prefix=actor_job_prefix(self._namespace, name)
        )
        endpoints: list[ActorEndpoint] = []
        for status in running:
            result = self.client.resolver_for_job(status.job_id).resolve(ACTOR_ENDPOINT)
            endpoints.extend(_IrisEndpoint(str(status.job_id), e.url) for e in result.endpoints)
        return endpoints

    def resolver(self) -> EndpointResolver:
        return EndpointResolver(self._actor_endpoints)

    def host_actor(self, name: str, actor: Any) -> _HostedIrisActor:
        """Start an Iris job serving ``actor``, found by resolvers of this namespace."""
        from iris.cluster.types import Entrypoint as IrisEntrypoint
        from iris.cluster.types import ResourceSpec as IrisResourceSpec

        check_actor_name(name)
        job_name = JobTable.new_id(actor_job_prefix(self._namespace, name).rstrip("-"))
        iris_job = self.client.submit(
            IrisEntrypoint.from_callable(serve_actor, actor),
            job_name,
            IrisResourceSpec(cpu=ACTOR_CPUS),
            iris_environment(EnvironmentSpec(), {"FRAY_CLUSTER_SPEC": self.spec}),
            ports=["actor"],
        )
        with self._lock:
            self._owned.append(iris_job)
        return _HostedIrisActor(self, iris_job)

    def worker_pool(
        self,
        num_workers: int,
        resources: ResourceSpec,
        environment: EnvironmentSpec | None = None,
    ) -> IrisWorkerPool:
        env_spec = environment or EnvironmentSpec()
        iris_res, constraints = iris_resources(resources)
        if constraints:
            logger.warning("Iris worker pools take no constraints: regions/preemptible ignored")
        pool = IrisWorkerPool(
            self.client,
            num_workers,
            iris_res,
            iris_environment(env_spec, {"FRAY_CLUSTER_SPEC": self.spec}),
            env_spec.workspace,
        )
        with self._lock:
            self._owned.append(pool)
        return pool

    # --- lifetime ---------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Stop the actors and pools this object started and close the client (jobs keep
        running on a remote Iris; a local one ends with its client)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            owned, self._owned = self._owned, []
        for thing in owned:
            with contextlib.suppress(Exception):
                if isinstance(thing, IrisWorkerPool):
                    thing.shutdown(wait=False)
                else:
                    thing.terminate()
        self.client.shutdown(wait=False)

    @property
    def is_shut_down(self) -> bool:
        return self._closed

    def __enter__(self) -> IrisCluster:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        return f"IrisCluster({self._address!r}, namespace={self._namespace!r})"
