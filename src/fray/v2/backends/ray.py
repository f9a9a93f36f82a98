"""The Ray backend: jobs, worker pools and actors on a Ray cluster.

* Jobs: Ray's Jobs API needs the dashboard's job server, which a minimal Ray install (no
  ``ray[default]``) cannot start. So each replica of a job runs under a *supervisor*: a
  named Ray actor (``fray-job:<job_id>:<index>`` in the cluster's namespace) that holds the
  replica's resources and runs the entrypoint as a child process
  (:class:`fray.v2.job.JobProcess`), as Ray's own job supervisor does. Its stdout/stderr go
  to a log file the driver reads through the actor; ``terminate`` kills the process's
  session. The child gets ``RAY_ADDRESS`` and ``FRAY_CLUSTER_SPEC`` for this cluster, so
  ``current_cluster()`` inside a job reaches it. When the job ends the driver copies its
  log and kills the supervisor, releasing the resources. Supervisors are owned by the
  submitting driver and die with it.
* Worker pools: ``num_workers`` Ray actors; each submit goes to the worker with the fewest
  calls in flight and returns a ``concurrent.futures.Future`` (never an ``ObjectRef``).
* Actors: ``ActorServer.register(name, actor)`` moves the instance into a named Ray actor
  ``fray-actor:<name>:<uuid>`` in the cluster's namespace (one call at a time); resolvers
  list those names and reach them with ``ray.get_actor``.

Resources and environments map as :mod:`fray.v2.backends.ray_resources` describes. A task's
exception reaches the caller with its own type when Ray can rebuild it.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import ray

from fray.job.errors import RemoteTraceback
from fray.v2.actor.pool import ActorEndpoint
from fray.v2.actor.resolver import EndpointResolver
from fray.v2.actor.server import check_actor_name
from fray.v2.backends.ray_resources import ray_resource_options, ray_runtime_env
from fray.v2.cluster import CLUSTER_SPEC_ENV, DEFAULT_NAMESPACE, Job
from fray.v2.job import JobProcess, TaskJob, check_job_name, dump_entrypoint
from fray.v2.types import Entrypoint, EnvironmentSpec, JobId, JobStatus, Namespace, ResourceSpec
from fray.v2.worker_pool import FutureWorkerPool, chain_future

__all__ = ["RayCluster", "RayWorkerPool"]

_ACTOR_PREFIX = "fray-actor:"
_JOB_PREFIX = "fray-job:"
_CALL_TIMEOUT = 60.0  # seconds for the driver's control calls to a supervisor


def _unwrap(exc: BaseException) -> BaseException:
    """The user's exception inside a ``RayTaskError`` when Ray could rebuild it."""
    if isinstance(exc, ray.exceptions.RayTaskError):
        cause = exc.cause
        if isinstance(cause, BaseException) and not isinstance(cause, ray.exceptions.RayTaskError):
            cause.__cause__ = RemoteTraceback(str(exc))
            return cause
    return exc


def _result(future: Future[Any]) -> Any:
    try:
        return future.result()
    except ray.exceptions.RayTaskError as exc:
        error = _unwrap(exc)
        raise error from error.__cause__


def _get(ref: Any, timeout: float | None = None) -> Any:
    try:
        return ray.get(ref, timeout=timeout)
    except ray.exceptions.RayTaskError as exc:
        error = _unwrap(exc)
        raise error from error.__cause__


def ref_future(ref: Any) -> Future[Any]:
    """A ``concurrent.futures.Future`` for an ``ObjectRef``, with user exceptions unwrapped."""
    return chain_future(ref.future(), _result)


# --- jobs ----------------------------------------------------------------------------------


class _JobSupervisor:
    """Ray actor running one job task as a child process (see the module docstring)."""

    def __init__(self, job_id: str, payload: bytes, env: dict[str, str], namespace: str) -> None:
        context = ray.get_runtime_context()
        child_env = dict(os.environ)
        try:
            from ray._private.utils import remove_ray_internal_flags_from_env

            remove_ray_internal_flags_from_env(child_env)
        except ImportError:  # pragma: no cover - private Ray API moved
            pass
        child_env.update(env)
        child_env["RAY_ADDRESS"] = context.gcs_address
        child_env[CLUSTER_SPEC_ENV] = f"ray?namespace={namespace}&address={context.gcs_address}"
        self._workdir = tempfile.mkdtemp(prefix=f"fray-v2-{job_id}-")
        self._proc = JobProcess(payload, self._workdir, child_env)

    def run(self) -> tuple[str, str | None]:
        """Wait for the process; its final status and error text."""
        self._proc.wait(None)
        status = self._proc.status()
        return str(status), self._proc.error()

    def read_log(self, offset: int) -> bytes:
        return self._proc.read_log(offset)

    def stop(self) -> None:
        self._proc.stop()

    def cleanup(self) -> None:
        shutil.rmtree(self._workdir, ignore_errors=True)


class _RayTask:
    """The driver's side of one job task: status, logs and stop through its supervisor."""

    def __init__(self, actor_cls: Any, options: dict[str, Any], *args: Any) -> None:
        self._actor = actor_cls.options(**options).remote(*args)
        self._ready = self._actor.__ray_ready__.remote()
        self._run = self._actor.run.remote()
        self._started = False
        self._stop_requested = False
        self._final: tuple[JobStatus, str | None] | None = None
        self._log = b""
        self._done = threading.Event()
        threading.Thread(target=self._watch, daemon=True, name="fray-v2-ray-job").start()

    def _watch(self) -> None:
        status: JobStatus
        error: str | None
        # BaseException: Ray raises SystemExit in threads blocked in ray.get at shutdown.
        try:
            raw_status, error = ray.get(self._run)
            status = JobStatus(raw_status)
        except BaseException as exc:  # the supervisor died or could not start
            status = JobStatus.KILLED if self._stop_requested else JobStatus.FAILED
            error = None if status == JobStatus.KILLED else f"{type(exc).__name__}: {exc}"
        try:
            self._log = ray.get(self._actor.read_log.remote(0), timeout=_CALL_TIMEOUT)
            ray.get(self._actor.cleanup.remote(), timeout=_CALL_TIMEOUT)
        except BaseException:
            pass  # the supervisor is gone, and its log with it
        with contextlib.suppress(BaseException):
            ray.kill(self._actor)
        self._final = (status, error)
        self._done.set()

    def _is_started(self) -> bool:
        if not self._started:
            ready, _ = ray.wait([self._ready], timeout=0)
            self._started = bool(ready)
        return self._started

    def status(self) -> JobStatus:
        if self._final is not None:
            return self._final[0]
        return JobStatus.RUNNING if self._is_started() else JobStatus.PENDING

    def wait(self, timeout: float | None) -> bool:
        return self._done.wait(timeout)

    def error(self) -> str | None:
        return self._final[1] if self._final is not None else None

    def read_log(self, offset: int) -> bytes:
        if self._final is not None:
            return self._log[offset:]
        if not self._is_started():
            return b""
        try:
            data: bytes = ray.get(self._actor.read_log.remote(offset), timeout=_CALL_TIMEOUT)
        except Exception:
            self._done.wait(_CALL_TIMEOUT)  # it just ended: the watcher has the log
            return self._log[offset:]
        return data

    def stop(self) -> None:
        if self._final is not None:
            return
        self._stop_requested = True
        if self._is_started():
            try:
                ray.get(self._actor.stop.remote(), timeout=_CALL_TIMEOUT)
            except Exception:
                ray.kill(self._actor)
        else:
            ray.kill(self._actor)
        self._done.wait(_CALL_TIMEOUT)


# --- worker pools --------------------------------------------------------------------------


class _PoolWorker:
    """Ray actor running whatever function it is sent."""

    def run(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return fn(*args, **kwargs)


class RayWorkerPool(FutureWorkerPool):
    """``num_workers`` Ray actors; work goes to the one with the fewest calls in flight."""

    def __init__(self, num_workers: int, options: dict[str, Any]) -> None:
        super().__init__(num_workers)
        remote: Any = ray.remote(_PoolWorker)
        self._workers: list[Any] = [remote.options(**options).remote() for _ in range(num_workers)]
        self._in_flight = [0] * num_workers
        self._futures: set[Future[Any]] = set()
        self._lock = threading.Lock()

    def _submit(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Future[Any]:
        with self._lock:
            index = min(range(self.num_workers), key=self._in_flight.__getitem__)
            self._in_flight[index] += 1
        future = ref_future(self._workers[index].run.remote(fn, args, kwargs))

        def done(_: Future[Any]) -> None:
            with self._lock:
                self._in_flight[index] -= 1
                self._futures.discard(future)

        with self._lock:
            self._futures.add(future)
        future.add_done_callback(done)
        return future

    def _shutdown(self, wait: bool, cancel_futures: bool) -> None:
        with self._lock:
            pending = list(self._futures)
        if cancel_futures:
            for future in pending:
                future.cancel()

        def release() -> None:
            cf.wait(pending)
            for worker in self._workers:
                ray.kill(worker)

        if wait:
            release()
        else:
            threading.Thread(target=release, daemon=True, name="fray-v2-pool-stop").start()


# --- actors --------------------------------------------------------------------------------


class _ActorHost:
    """Ray actor holding one registered instance."""

    def __init__(self, instance: Any) -> None:
        self._instance = instance

    def call(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return getattr(self._instance, method)(*args, **kwargs)


class _RayEndpoint:
    def __init__(self, ray_name: str, handle: Any) -> None:
        self._ray_name = ray_name
        self._handle = handle

    @property
    def endpoint_id(self) -> str:
        return self._ray_name

    def call(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return _get(self._handle.call.remote(method, args, kwargs))

    def submit(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Future[Any]:
        return ref_future(self._handle.call.remote(method, args, kwargs))


class _HostedRayActor:
    def __init__(self, handle: Any) -> None:
        self._handle = handle

    def wait_ready(self, timeout: float) -> None:
        """Wait for the hosting actor to start (its constructor unpickles the instance)."""
        _get(self._handle.__ray_ready__.remote(), timeout=timeout)

    def stop(self) -> None:
        ray.kill(self._handle)


def _actor_name(ray_name: str) -> str | None:
    """The fray name of a hosting actor's Ray name, or None for other actors."""
    if not ray_name.startswith(_ACTOR_PREFIX):
        return None
    name, sep, _ = ray_name[len(_ACTOR_PREFIX) :].rpartition(":")
    return name if sep else None


# --- the cluster ---------------------------------------------------------------------------


class RayCluster:
    """A :class:`fray.v2.cluster.Cluster` on Ray (see the module docstring).

    Connects on creation when Ray is not initialised yet: to ``address`` if given, else as
    ``ray.init()`` would (``$RAY_ADDRESS``, or a new local instance).
    """

    def __init__(self, namespace: Namespace = DEFAULT_NAMESPACE, address: str | None = None):
        self._namespace = namespace
        if not ray.is_initialized():
            ray.init(address=address, namespace=namespace)
        self._jobs: dict[JobId, TaskJob] = {}
        self._handles: dict[str, Any] = {}
        self._lock = threading.Lock()

    @property
    def namespace(self) -> Namespace:
        return self._namespace

    @property
    def spec(self) -> str:
        """A spec reaching this cluster from anywhere (what jobs get as FRAY_CLUSTER_SPEC)."""
        address = ray.get_runtime_context().gcs_address
        return f"ray?namespace={self._namespace}&address={address}"

    def submit(
        self,
        entrypoint: Entrypoint,
        name: str,
        resources: ResourceSpec,
        environment: EnvironmentSpec | None = None,
    ) -> TaskJob:
        check_job_name(name)
        payload = dump_entrypoint(entrypoint)
        job_id = JobId(f"{name}-{uuid.uuid4().hex[:8]}")
        options = {
            **ray_resource_options(resources),
            "namespace": self._namespace,
            "max_concurrency": 8,
            "max_restarts": 0,
        }
        runtime_env = ray_runtime_env(environment)
        if runtime_env:
            options["runtime_env"] = runtime_env
        supervisor: Any = ray.remote(_JobSupervisor)
        tasks = []
        for index in range(resources.replicas):
            env = {
                "FRAY_JOB_ID": job_id,
                "FRAY_TASK_INDEX": str(index),
                "FRAY_NUM_TASKS": str(resources.replicas),
            }
            task_options = {**options, "name": f"{_JOB_PREFIX}{job_id}:{index}"}
            tasks.append(_RayTask(supervisor, task_options, job_id, payload, env, self._namespace))
        job = TaskJob(job_id, name, tasks)
        with self._lock:
            self._jobs[job_id] = job
        return job

    def terminate(self, job_id: JobId) -> None:
        with self._lock:
            job = self._jobs[job_id]
        job.terminate()

    def list_jobs(self) -> list[Job]:
        with self._lock:
            return list(self._jobs.values())

    def resolver(self) -> EndpointResolver:
        return EndpointResolver(self._endpoints)

    def _endpoints(self, name: str) -> list[ActorEndpoint]:
        ray_names = sorted(
            entry["name"]
            for entry in ray.util.list_named_actors(all_namespaces=True)
            if entry["namespace"] == self._namespace and _actor_name(entry["name"]) == name
        )
        endpoints: list[ActorEndpoint] = []
        for ray_name in ray_names:
            with self._lock:
                handle = self._handles.get(ray_name)
            if handle is None:
                try:
                    handle = ray.get_actor(ray_name, namespace=self._namespace)
                except ValueError:
                    continue  # gone since it was listed
                with self._lock:
                    self._handles[ray_name] = handle
            endpoints.append(_RayEndpoint(ray_name, handle))
        return endpoints

    def host_actor(self, name: str, actor: Any) -> _HostedRayActor:
        """Move ``actor`` into a named Ray actor that resolvers of this namespace find."""
        check_actor_name(name)
        host: Any = ray.remote(_ActorHost)
        handle = host.options(
            name=f"{_ACTOR_PREFIX}{name}:{uuid.uuid4().hex}",
            namespace=self._namespace,
            num_cpus=0,
            max_concurrency=1,
        ).remote(actor)
        return _HostedRayActor(handle)

    def worker_pool(
        self,
        num_workers: int,
        resources: ResourceSpec,
        environment: EnvironmentSpec | None = None,
    ) -> RayWorkerPool:
        options = ray_resource_options(resources)
        runtime_env = ray_runtime_env(environment)
        if runtime_env:
            options["runtime_env"] = runtime_env
        return RayWorkerPool(num_workers, options)

    def __repr__(self) -> str:
        return f"RayCluster(namespace={self._namespace!r})"
