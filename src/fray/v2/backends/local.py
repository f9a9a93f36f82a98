"""The local backend: everything on this machine, no dependencies beyond cloudpickle.

* Jobs: each replica of a job is its own Python process (:class:`fray.v2.job.JobProcess`)
  with its output in its own log file; ``terminate`` kills the process's session.
  ``ResourceSpec`` is not enforced (only ``replicas`` is used).
* Worker pools: ``num_workers`` worker processes (started in the background when the pool
  is made); each function, its arguments, its result and its exception travel through
  cloudpickle.
* Actors: an in-process registry per namespace. Calls are cloudpickled there and back and
  run one at a time per actor (a lock), as they would on a remote actor. Actors registered
  in another process (such as a local job's) are not visible here.

``EnvironmentSpec``: ``env_vars`` and ``workspace`` (working directory, first on
``sys.path``) apply to jobs and pool workers; ``pip_packages`` and ``extras`` are ignored
with a warning (nothing is installed locally).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import traceback
import uuid
import weakref
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import cloudpickle

from fray.errors import RemoteTraceback
from fray.v2.actor.pool import ActorEndpoint
from fray.v2.actor.resolver import EndpointResolver
from fray.v2.actor.server import check_actor_name
from fray.v2.cluster import CLUSTER_SPEC_ENV, DEFAULT_NAMESPACE, Job
from fray.v2.job import JobProcess, JobTable, TaskJob, dump_entrypoint
from fray.v2.types import Entrypoint, EnvironmentSpec, JobId, Namespace, ResourceSpec
from fray.v2.worker_pool import FutureWorkerPool

__all__ = ["LocalCluster", "LocalWorkerPool"]

logger = logging.getLogger(__name__)


def _warn_ignored(environment: EnvironmentSpec | None) -> None:
    if environment is not None and (environment.pip_packages or environment.extras):
        logger.warning("the local backend installs nothing: pip_packages and extras are ignored")


def _child_env(env_spec: EnvironmentSpec) -> dict[str, str]:
    """This process's environment plus ``env_vars``, with ``sys.path`` as PYTHONPATH (so
    the child imports what this process can) and the workspace first."""
    path = [p or os.getcwd() for p in sys.path]
    if env_spec.workspace:
        path.insert(0, env_spec.workspace)
    return {**os.environ, **env_spec.env_vars, "PYTHONPATH": os.pathsep.join(path)}


def _portable_exception(exc: BaseException) -> tuple[bytes, str]:
    """``exc`` cloudpickled (or a RuntimeError with its text if it cannot be) and its
    traceback text."""
    text = "".join(traceback.format_exception(exc))
    try:
        return cloudpickle.dumps(exc), text
    except Exception:
        return cloudpickle.dumps(RuntimeError(f"{type(exc).__name__}: {exc}")), text


def _raise_portable(data: bytes, text: str) -> None:
    """Raise the exception :func:`_portable_exception` packed, its traceback as the cause."""
    try:
        exc = cloudpickle.loads(data)
    except Exception:  # e.g. an exception class whose constructor needs other arguments
        last = text.strip().splitlines()[-1] if text.strip() else "unknown error"
        exc = RuntimeError(last)
    exc.__cause__ = RemoteTraceback(text)
    raise exc


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
                error = _portable_exception(exc)
            else:
                return cloudpickle.loads(data)
        _raise_portable(*error)


class _Registry:
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


_registry = _Registry()


class _HostedLocalActor:
    def __init__(self, namespace: str, endpoint: _LocalEndpoint) -> None:
        self._namespace = namespace
        self.endpoint = endpoint

    def wait_ready(self, timeout: float) -> None:
        """Local actors take calls as soon as they are registered."""

    def stop(self) -> None:
        _registry.remove(self._namespace, self.endpoint)


# --- worker pools --------------------------------------------------------------------------

# A pool worker: reads length-prefixed cloudpickled (fn, args, kwargs) from fd argv[1] and
# writes (ok, result or exception, traceback text) to fd argv[2]; exits at end of input.
_WORKER = """\
import os, struct, sys, traceback
import cloudpickle
tasks = os.fdopen(int(sys.argv[1]), "rb")
results = os.fdopen(int(sys.argv[2]), "wb")
while True:
    head = tasks.read(8)
    if len(head) < 8:
        break
    payload = tasks.read(struct.unpack("!Q", head)[0])
    try:
        fn, args, kwargs = cloudpickle.loads(payload)
        del payload
        out = (True, cloudpickle.dumps(fn(*args, **kwargs)), "")
    except BaseException as exc:
        text = "".join(traceback.format_exception(exc))
        try:
            data = cloudpickle.dumps(exc)
        except Exception:
            data = cloudpickle.dumps(RuntimeError(f"{type(exc).__name__}: {exc}"))
        out = (False, data, text)
    data = cloudpickle.dumps(out)
    results.write(struct.pack("!Q", len(data)) + data)
    results.flush()
"""


class _WorkerProcess:
    """One pool worker process, talking over two pipes (its stdout/stderr stay ours)."""

    def __init__(self, env: Mapping[str, str], cwd: str | None) -> None:
        task_r, task_w = os.pipe()
        result_r, result_w = os.pipe()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _WORKER, str(task_r), str(result_w)],
                pass_fds=(task_r, result_w),
                stdin=subprocess.DEVNULL,
                env=dict(env),
                cwd=cwd,
            )
        finally:
            os.close(task_r)
            os.close(result_w)
        self._tasks = os.fdopen(task_w, "wb")
        self._results = os.fdopen(result_r, "rb")

    def run(self, payload: bytes) -> tuple[bool, bytes, str] | None:
        """Send one task and return its outcome; ``None`` if the process died."""
        try:
            self._tasks.write(struct.pack("!Q", len(payload)) + payload)
            self._tasks.flush()
        except (BrokenPipeError, OSError):
            return None
        head = self._results.read(8)
        if len(head) < 8:
            return None
        data = self._results.read(struct.unpack("!Q", head)[0])
        ok, result, text = cloudpickle.loads(data)
        return bool(ok), result, text

    def close(self) -> None:
        """End of input: the worker exits once its current task is done."""
        with contextlib.suppress(OSError):
            self._tasks.close()
        self.proc.wait()
        self._results.close()


class LocalWorkerPool(FutureWorkerPool):
    """``num_workers`` worker processes; every call goes through cloudpickle both ways.

    Workers are plain ``python -c`` processes (not ``multiprocessing``), so the caller's
    ``__main__`` is never re-run; functions defined there travel by value. A worker that dies
    fails its current future and is replaced. Its stdout and stderr are this process's.
    """

    def __init__(self, num_workers: int, environment: EnvironmentSpec | None = None) -> None:
        super().__init__(num_workers)
        _warn_ignored(environment)
        env_spec = environment or EnvironmentSpec()
        self._env = _child_env(env_spec)
        self._cwd = env_spec.workspace
        self._queue: queue.SimpleQueue[tuple[Future[Any], bytes] | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._serve, daemon=True, name=f"fray-v2-worker-{i}")
            for i in range(num_workers)
        ]
        for thread in self._threads:
            thread.start()

    def _serve(self) -> None:
        worker: _WorkerProcess | None = None
        with contextlib.suppress(OSError):  # if it fails, the first task reports why
            worker = _WorkerProcess(self._env, self._cwd)
        try:
            while (item := self._queue.get()) is not None:
                future, payload = item
                if not future.set_running_or_notify_cancel():
                    continue
                if worker is None:
                    try:
                        worker = _WorkerProcess(self._env, self._cwd)
                    except OSError as exc:
                        future.set_exception(RuntimeError(f"cannot start a pool worker: {exc}"))
                        continue
                outcome = worker.run(payload)
                if outcome is None:
                    worker.close()
                    code = worker.proc.returncode
                    worker = None
                    future.set_exception(
                        RuntimeError(f"the pool's worker process died (exit code {code})")
                    )
                    continue
                ok, data, text = outcome
                try:
                    if not ok:
                        _raise_portable(data, text)
                    future.set_result(cloudpickle.loads(data))
                except BaseException as exc:
                    future.set_exception(exc)
        finally:
            if worker is not None:
                worker.close()

    def _submit(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Future[Any]:
        payload = cloudpickle.dumps((fn, args, kwargs))  # pickling errors surface here
        future: Future[Any] = Future()
        self._queue.put((future, payload))
        return future

    def _shutdown(self, wait: bool, cancel_futures: bool) -> None:
        if cancel_futures:
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    item[0].cancel()
        for _ in self._threads:
            self._queue.put(None)
        if wait:
            for thread in self._threads:
                thread.join()


# --- the cluster ---------------------------------------------------------------------------


def _cleanup(workdir: str, jobs: JobTable) -> None:
    jobs.terminate_all()
    shutil.rmtree(workdir, ignore_errors=True)


class LocalCluster:
    """A :class:`fray.v2.cluster.Cluster` on this machine (see the module docstring).

    Job files live in a temporary directory removed, with any job still running, by
    :meth:`shutdown` or when the cluster is garbage collected or the interpreter exits.
    """

    def __init__(self, namespace: Namespace = DEFAULT_NAMESPACE) -> None:
        self._namespace = namespace
        self._workdir = tempfile.mkdtemp(prefix="fray-v2-local-")
        self._jobs = JobTable()
        self._finalizer = weakref.finalize(self, _cleanup, self._workdir, self._jobs)

    @property
    def namespace(self) -> Namespace:
        return self._namespace

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
        _warn_ignored(environment)
        env_spec = environment or EnvironmentSpec()
        payload = dump_entrypoint(entrypoint)
        base_env = {
            **_child_env(env_spec),
            CLUSTER_SPEC_ENV: self.spec,
            "FRAY_JOB_ID": job_id,
            "FRAY_NUM_TASKS": str(resources.replicas),
        }
        tasks = [
            JobProcess(
                payload,
                os.path.join(self._workdir, job_id, str(index)),
                {**base_env, "FRAY_TASK_INDEX": str(index)},
                cwd=env_spec.workspace,
                cleanup_dir=self._workdir,  # this process's jobs all end with it
            )
            for index in range(resources.replicas)
        ]
        return self._jobs.add(TaskJob(job_id, name, tasks))

    def terminate(self, job_id: JobId) -> None:
        self._jobs.get(job_id).terminate()

    def list_jobs(self) -> list[Job]:
        return list(self._jobs.list())

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

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        return f"LocalCluster(namespace={self._namespace!r})"
