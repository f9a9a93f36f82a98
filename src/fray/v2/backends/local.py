"""The local backend: everything on this machine, no dependencies beyond cloudpickle.

* Jobs: each replica of a job is its own Python process (:class:`fray.v2.job.JobProcess`)
  with its output in its own log file; ``terminate`` kills the process's session.
  ``ResourceSpec`` is not enforced (only ``replicas`` is used).
* Worker pools (:mod:`fray.v2.backends.local_pool`): ``num_workers`` worker processes
  (started in the background when the pool is made); each function, its arguments, its
  result and its exception travel through cloudpickle.
* Actors: an in-process registry per namespace. Calls are cloudpickled there and back and
  run one at a time per actor (a lock), as they would on a remote actor. Actors registered
  in another process (such as a local job's) are not visible here.

``EnvironmentSpec``: ``env_vars`` and ``workspace`` (working directory, first on
``sys.path``) apply to jobs and pool workers; ``pip_packages`` and ``extras`` are ignored
with a warning (nothing is installed locally).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import uuid
import weakref
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import cloudpickle

from fray.common.remote_errors import pack_exception, rebuild_exception
from fray.v2.actor.hosting import check_actor_name
from fray.v2.actor.pool import ActorEndpoint
from fray.v2.actor.resolver import EndpointResolver
from fray.v2.backends.base import BackendCluster
from fray.v2.backends.local_pool import LocalWorkerPool, child_env, warn_ignored
from fray.v2.cluster import DEFAULT_NAMESPACE
from fray.v2.job import JobProcess, JobTable, TaskJob, dump_entrypoint, job_env
from fray.v2.types import Entrypoint, EnvironmentSpec, Namespace, ResourceSpec

__all__ = ["LocalProcessCluster", "LocalWorkerPool"]


# --- actors --------------------------------------------------------------------------------

_call_executor_lock = threading.Lock()
_call_executor: ThreadPoolExecutor | None = None


def _executor() -> ThreadPoolExecutor:
    global _call_executor
    with _call_executor_lock:
        if _call_executor is None:
            _call_executor = ThreadPoolExecutor(32, thread_name_prefix="fray-v2-actor")
        return _call_executor


class _LocalEndpoint:
    """An actor instance in this process; calls take turns and round-trip through pickle."""

    def __init__(self, name: str, instance: Any) -> None:
        self.name = name
        self.instance = instance
        self._id = f"{name}:{uuid.uuid4().hex}"
        self._lock = threading.Lock()

    @property
    def endpoint_id(self) -> str:
        return self._id

    def call(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return self._invoke(method, cloudpickle.dumps((args, kwargs)))

    def submit(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Future[Any]:
        payload = cloudpickle.dumps((args, kwargs))  # pickling errors surface here
        return _executor().submit(self._invoke, method, payload)

    def _invoke(self, method: str, payload: bytes) -> Any:
        args, kwargs = cloudpickle.loads(payload)
        with self._lock:
            try:
                result = getattr(self.instance, method)(*args, **kwargs)
                data = cloudpickle.dumps(result)
            except BaseException as exc:
                error = pack_exception(exc)
            else:
                return cloudpickle.loads(data)
        raise rebuild_exception(error)


class _ActorRegistry:
    """The process-wide actor registry: ``(namespace, name) -> endpoints``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._endpoints: dict[tuple[str, str], list[_LocalEndpoint]] = {}

    def add(self, namespace: str, endpoint: _LocalEndpoint) -> None:
        with self._lock:
            self._endpoints.setdefault((namespace, endpoint.name), []).append(endpoint)

    def remove(self, namespace: str, endpoint: _LocalEndpoint) -> None:
        with self._lock:
            endpoints = self._endpoints.get((namespace, endpoint.name), [])
            if endpoint in endpoints:
                endpoints.remove(endpoint)

    def list(self, namespace: str, name: str) -> list[ActorEndpoint]:
        with self._lock:
            return list(self._endpoints.get((namespace, name), []))


_registry = _ActorRegistry()


class _HostedLocalActor:
    def __init__(self, namespace: str, endpoint: _LocalEndpoint) -> None:
        self._namespace = namespace
        self.endpoint = endpoint

    def wait_ready(self, timeout: float) -> None:
        """Local actors take calls as soon as they are registered."""

    def stop(self) -> None:
        _registry.remove(self._namespace, self.endpoint)


# --- the cluster ---------------------------------------------------------------------------


def _cleanup(workdir: str, jobs: JobTable) -> None:
    jobs.terminate_all()
    shutil.rmtree(workdir, ignore_errors=True)


class LocalProcessCluster(BackendCluster):
    """A :class:`fray.v2.cluster.Cluster` of processes on this machine, with no service
    (see the module docstring; fray's own controller and workers on loopback are
    :class:`fray.local_cluster.LocalFrayCluster`).

    Job files live in a temporary directory removed, with any job still running, by
    :meth:`shutdown` or when the cluster is garbage collected or the interpreter exits.
    """

    def __init__(self, namespace: Namespace = DEFAULT_NAMESPACE) -> None:
        super().__init__(namespace)
        self._workdir = tempfile.mkdtemp(prefix="fray-v2-local-")
        self._finalizer = weakref.finalize(self, _cleanup, self._workdir, self._jobs)

    @property
    def workdir(self) -> str:
        """The directory holding this cluster's job files (payloads and logs)."""
        return self._workdir

    @property
    def spec(self) -> str:
        """The spec that makes an equivalent cluster (what jobs get as FRAY_CLUSTER_SPEC)."""
        return f"local?namespace={self._namespace}"

    def submit(
        self,
        entrypoint: Entrypoint,
        name: str,
        resources: ResourceSpec,
        environment: EnvironmentSpec | None = None,
    ) -> TaskJob:
        job_id = JobTable.new_id(name)
        warn_ignored(environment)
        env_spec = environment or EnvironmentSpec()
        payload = dump_entrypoint(entrypoint)
        base_env = child_env(env_spec)
        tasks = [
            JobProcess(
                payload,
                os.path.join(self._workdir, job_id, str(index)),
                {**base_env, **job_env(self.spec, job_id, resources.replicas, index)},
                cwd=env_spec.workspace,
                cleanup_dir=self._workdir,  # this process's jobs all end with it
            )
            for index in range(resources.replicas)
        ]
        return self._jobs.add(TaskJob(job_id, name, tasks))

    def resolver(self) -> EndpointResolver:
        namespace = self._namespace
        return EndpointResolver(lambda name: _registry.list(namespace, name))

    def host_actor(self, name: str, actor: Any) -> _HostedLocalActor:
        """Register ``actor`` under ``name`` in this process's registry."""
        check_actor_name(name)
        endpoint = _LocalEndpoint(name, actor)
        _registry.add(self._namespace, endpoint)
        return _HostedLocalActor(self._namespace, endpoint)

    def worker_pool(
        self,
        num_workers: int,
        resources: ResourceSpec,
        environment: EnvironmentSpec | None = None,
    ) -> LocalWorkerPool:
        return LocalWorkerPool(num_workers, environment)

    def shutdown(self) -> None:
        """Terminate running jobs and delete the job files."""
        self._finalizer()

    def __enter__(self) -> LocalProcessCluster:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()


LocalCluster = LocalProcessCluster  # its old name, which keeps working
