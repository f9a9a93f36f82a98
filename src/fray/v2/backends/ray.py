"""The Ray backend: jobs, worker pools and actors on a Ray cluster.

* Jobs: each replica of a job is one job of Ray's Jobs API (``JobSubmissionClient``, through
  the cluster's dashboard, so Ray must run it: ``ray[default]``), with submission id
  ``<job_id>`` (``<job_id>-<index>`` for jobs of several replicas). The cloudpickled
  entrypoint travels in the job's ``runtime_env`` as ``py_modules=[<temp package holding
  entrypoint.pkl>]`` (uploaded by the client, so remote clusters work too, and the user's
  ``working_dir`` stays free); the job's command is ``python -c <bootstrap>`` (shared with
  the local backend, :func:`fray.v2.job.bootstrap_args`) that imports the package and
  calls the entrypoint. The command uses the driver's interpreter path when it exists on
  the node, else ``python`` from ``PATH``. The replica's resources become ``entrypoint_*``
  options (:func:`fray.v2.backends.ray_resources.ray_job_options`), which Ray holds while
  the job runs. The job gets ``FRAY_CLUSTER_SPEC`` for this cluster (and Ray sets
  ``RAY_ADDRESS``), so ``current_cluster()`` inside a job reaches it. Status, logs and
  ``terminate`` (``stop_job``: SIGTERM to the job's process group, then SIGKILL) go through
  the client; a failed job's error is Ray's message, which ends with its log tail. Jobs
  outlive the driver that submitted them.
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
import re
import shlex
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import ray

from fray.common.deadlines import deadline_after, time_left
from fray.common.net import free_port
from fray.common.remote_errors import with_remote_traceback
from fray.v2.actor.hosting import check_actor_name
from fray.v2.actor.pool import ActorEndpoint
from fray.v2.actor.resolver import EndpointResolver
from fray.v2.backends.base import BackendCluster
from fray.v2.backends.ray_resources import (
    ray_job_options,
    ray_resource_options,
    ray_runtime_env,
)
from fray.v2.cluster import DEFAULT_NAMESPACE
from fray.v2.job import JobTable, TaskJob, bootstrap_args, dump_entrypoint, job_env
from fray.v2.types import Entrypoint, EnvironmentSpec, JobStatus, Namespace, ResourceSpec
from fray.v2.worker_pool import FutureWorkerPool, chain_future

__all__ = ["RayCluster", "RayWorkerPool", "dashboard_url", "ref_future"]

_ACTOR_PREFIX = "fray-actor:"
_CALL_TIMEOUT = 60.0  # seconds for a Ray job to stop once asked
_AGENT_WAIT = 120.0  # seconds a just-started cluster gets to bring up its job agent


def _unwrap(exc: BaseException) -> BaseException:
    """The user's exception inside a ``RayTaskError`` when Ray could rebuild it (with Ray's
    text, which holds the remote traceback, as its cause); else ``exc`` itself."""
    if isinstance(exc, ray.exceptions.RayTaskError):
        cause = exc.cause
        if isinstance(cause, BaseException) and not isinstance(cause, ray.exceptions.RayTaskError):
            return with_remote_traceback(cause, str(exc))
    return exc


def _unwrapped(call: Callable[[], Any]) -> Any:
    """``call()``, re-raising a user's exception out of its ``RayTaskError``."""
    try:
        return call()
    except ray.exceptions.RayTaskError as exc:
        error = _unwrap(exc)
        raise error from error.__cause__


def _result(future: Future[Any]) -> Any:
    return _unwrapped(future.result)


def _get(ref: Any, timeout: float | None = None) -> Any:
    return _unwrapped(lambda: ray.get(ref, timeout=timeout))


def ref_future(ref: Any) -> Future[Any]:
    """A ``concurrent.futures.Future`` for an ``ObjectRef``, with user exceptions unwrapped."""
    return chain_future(ref.future(), _result)


# --- jobs ----------------------------------------------------------------------------------

_RAY_STATUS = {
    "PENDING": JobStatus.PENDING,
    "RUNNING": JobStatus.RUNNING,
    "SUCCEEDED": JobStatus.SUCCEEDED,
    "FAILED": JobStatus.FAILED,
    "STOPPED": JobStatus.KILLED,
}
_POLL = 0.2  # seconds between status polls while waiting for a Ray job
_ERROR_TAIL = 20_000  # bytes of a failed job's log in its error text


def _job_command(package: str) -> str:
    """The shell command running the entrypoint held by ``package`` (see the docstring)."""
    args = " ".join(shlex.quote(arg) for arg in bootstrap_args(f"module:{package}"))
    return f'P={shlex.quote(sys.executable)}; [ -x "$P" ] || P=python; exec "$P" {args}'


def dashboard_url() -> str:
    """The ``http://`` address of the connected Ray cluster's dashboard (its Jobs API)."""
    url = ray._private.worker.get_dashboard_url()
    if not url:
        raise RuntimeError(
            "this Ray cluster runs no dashboard, which fray's Ray jobs need (Ray's Jobs API):"
            " install ray[default] and start Ray with its dashboard"
        )
    return url if "://" in url else f"http://{url}"


def _submit_job(client: Any, submission_id: str, options: dict[str, Any]) -> str:
    """``client.submit_job``, retried while a just-started cluster has no job agent yet."""
    deadline = time.monotonic() + _AGENT_WAIT
    while True:
        try:
            return str(client.submit_job(submission_id=submission_id, **options))
        except RuntimeError as exc:
            if "No available agent" not in str(exc) or time.monotonic() > deadline:
                raise
        time.sleep(0.5)


class _RayJobTask:
    """One replica of a job: a job of Ray's Jobs API, seen through ``JobSubmissionClient``."""

    def __init__(self, client: Any, submission_id: str, options: dict[str, Any]) -> None:
        self._client = client
        self.submission_id = _submit_job(client, submission_id, options)
        # Ray starts the job's log with its own lines, ending with this one.
        self._log_start = f"Running entrypoint for job {self.submission_id}: "
        self._log_start += f"{options['entrypoint']}\n"
        self._final: JobStatus | None = None
        self._error: str | None = None
        self._log: bytes | None = None
        self._stop_requested = False
        self._lock = threading.Lock()

    def _ray_status(self) -> JobStatus:
        raw = self._client.get_job_status(self.submission_id)
        return _RAY_STATUS[str(getattr(raw, "value", raw))]

    def status(self) -> JobStatus:
        if self._final is not None:
            return self._final
        status = self._ray_status()
        if status == JobStatus.FAILED and self._stop_requested:
            status = JobStatus.KILLED
        if status.is_finished():
            with self._lock:
                if self._final is None:
                    self._log = self._fetch_log()
                    if status == JobStatus.FAILED:
                        self._error = self._failure()
                    self._final = status
        return status

    def wait(self, timeout: float | None) -> bool:
        deadline = deadline_after(timeout)
        while not self.status().is_finished():
            left = time_left(deadline)
            if left == 0:
                return False
            time.sleep(_POLL if left is None else min(_POLL, left))
        return True

    def error(self) -> str | None:
        return self._error if self.status() == JobStatus.FAILED else None

    def _failure(self) -> str:
        """Why the job failed: Ray's message, with the job's log tail when its code failed."""
        message = str(self._client.get_job_info(self.submission_id).message or "")
        if message.startswith("Job entrypoint command failed") and self._log:
            first = message.splitlines()[0].split(", last available logs")[0]
            tail = self._log[-_ERROR_TAIL:].decode(errors="replace")
            return f"{first}; the end of its log:\n{tail}"
        return message or "the Ray job failed"

    def _fetch_log(self) -> bytes:
        """The job's own output: its log without Ray's lines before the entrypoint's."""
        try:
            log = str(self._client.get_job_logs(self.submission_id))
        except RuntimeError:  # no log yet (the job has not started)
            return b""
        start = log.find(self._log_start)
        return log[start + len(self._log_start) :].encode() if start >= 0 else b""

    def read_log(self, offset: int) -> bytes:
        if self._final is not None and self._log is not None:
            return self._log[offset:]
        return self._fetch_log()[offset:]

    def stop(self) -> None:
        if self.status().is_finished():
            return
        self._stop_requested = True
        self._client.stop_job(self.submission_id)
        if self._ray_status() == JobStatus.PENDING:
            self._kill_pending_supervisor()
        if not self.wait(_CALL_TIMEOUT):
            raise TimeoutError(f"Ray job {self.submission_id} did not stop")

    def _kill_pending_supervisor(self) -> None:
        """Kill the job's supervisor actor while it waits for resources.

        ``stop_job`` asks the supervisor to stop, which a supervisor that is not scheduled
        yet never hears: Ray would keep the job pending (up to its start timeout). Ray then
        marks the job failed ("supervisor actor died"), which :meth:`status` reports as
        killed since a stop was requested.
        """
        try:
            from ray.dashboard.modules.job.common import (
                JOB_ACTOR_NAME_TEMPLATE,
                SUPERVISOR_ACTOR_RAY_NAMESPACE,
            )

            actor = ray.get_actor(
                JOB_ACTOR_NAME_TEMPLATE.format(job_id=self.submission_id),
                namespace=SUPERVISOR_ACTOR_RAY_NAMESPACE,
            )
        except (ImportError, ValueError):  # private Ray names moved, or the actor is gone
            return
        ray.kill(actor, no_restart=True)


# --- worker pools --------------------------------------------------------------------------


class _PoolWorkerActor:
    """The Ray actor class of one pool worker: it runs whatever function it is sent."""

    def run(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return fn(*args, **kwargs)


class RayWorkerPool(FutureWorkerPool):
    """``num_workers`` Ray actors; work goes to the one with the fewest calls in flight."""

    def __init__(self, num_workers: int, options: dict[str, Any]) -> None:
        super().__init__(num_workers)
        remote: Any = ray.remote(_PoolWorkerActor)
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


class _ActorHostActor:
    """The Ray actor class hosting one instance registered with ``ActorServer``."""

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


class RayCluster(BackendCluster):
    """A :class:`fray.v2.cluster.Cluster` on Ray (see the module docstring).

    Connects on creation when Ray is not initialised yet: to ``address`` if given, else as
    ``ray.init()`` would (``$RAY_ADDRESS``, or a new local instance).
    """

    def __init__(self, namespace: Namespace = DEFAULT_NAMESPACE, address: str | None = None):
        super().__init__(namespace)
        if not ray.is_initialized():
            # A new local instance gets its dashboard (Jobs API) on a free port: Ray's
            # default, 8265, may be taken by another Ray. Ignored when connecting.
            ray.init(address=address, namespace=namespace, dashboard_port=free_port())
        self._handles: dict[str, Any] = {}
        self._client: Any = None
        self._lock = threading.Lock()

    @property
    def spec(self) -> str:
        """A spec reaching this cluster from anywhere (what jobs get as FRAY_CLUSTER_SPEC)."""
        address = ray.get_runtime_context().gcs_address
        return f"ray?namespace={self._namespace}&address={address}"

    def _job_client(self) -> Any:
        from ray.job_submission import JobSubmissionClient

        with self._lock:
            if self._client is None:
                self._client = JobSubmissionClient(dashboard_url())
            return self._client

    def submit(
        self,
        entrypoint: Entrypoint,
        name: str,
        resources: ResourceSpec,
        environment: EnvironmentSpec | None = None,
    ) -> TaskJob:
        job_id = JobTable.new_id(name)
        client = self._job_client()
        runtime_env = ray_runtime_env(environment)
        user_env = runtime_env.get("env_vars", {})
        spec = self.spec
        package = f"fray_job_{uuid.uuid4().hex}"
        tasks = []
        with tempfile.TemporaryDirectory(prefix="fray-v2-ray-job-") as tmp:
            package_dir = os.path.join(tmp, package)
            os.mkdir(package_dir)
            with open(os.path.join(package_dir, "__init__.py"), "w"):
                pass
            with open(os.path.join(package_dir, "entrypoint.pkl"), "wb") as f:
                f.write(dump_entrypoint(entrypoint))
            base_id = re.sub(r"[^A-Za-z0-9_.-]", "_", job_id)
            try:
                for index in range(resources.replicas):
                    env = {**user_env, **job_env(spec, job_id, resources.replicas, index)}
                    task_runtime_env = {
                        **runtime_env,
                        "env_vars": env,
                        "py_modules": [package_dir],
                    }
                    options = {
                        **ray_job_options(resources),
                        "entrypoint": _job_command(package),
                        "runtime_env": task_runtime_env,
                        "metadata": {"fray_job_id": job_id, "fray_task_index": str(index)},
                    }
                    submission_id = base_id if resources.replicas == 1 else f"{base_id}-{index}"
                    tasks.append(_RayJobTask(client, submission_id, options))
            except BaseException:
                for task in tasks:
                    with contextlib.suppress(Exception):
                        task.stop()
                raise
        return self._jobs.add(TaskJob(job_id, name, tasks))

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
        host: Any = ray.remote(_ActorHostActor)
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
