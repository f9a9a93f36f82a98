"""The local backend's worker pools: ``num_workers`` Python processes fed over pipes.

Each worker is ``python -m fray.v2.backends.local_pool TASKS RESULTS PARENT``: it reads
length-prefixed cloudpickled ``(fn, args, kwargs)`` from fd TASKS and writes ``(True,
pickled result)`` or ``(False, PackedError)`` (:mod:`fray.common.remote_errors`) to fd
RESULTS, until its input ends or process PARENT (the pool's) dies. Workers are not
``multiprocessing`` children, so the caller's ``__main__`` is never re-run in them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import struct
import sys
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import IO, Any

import cloudpickle

from fray.common.processes import start_python
from fray.common.remote_errors import pack_exception, rebuild_exception
from fray.common.watchdog import exit_when_gone
from fray.v2.types import EnvironmentSpec
from fray.v2.worker_pool import FutureWorkerPool, drain_calls

__all__ = ["LocalWorkerPool", "child_env", "warn_ignored"]

logger = logging.getLogger(__name__)

_WORKER_MODULE = "fray.v2.backends.local_pool"
_HEADER = struct.Struct("!Q")  # the length of the frame that follows


def warn_ignored(environment: EnvironmentSpec | None) -> None:
    """Warn that ``pip_packages`` and ``extras`` mean nothing to the local backend."""
    if environment is not None and (environment.pip_packages or environment.extras):
        logger.warning("the local backend installs nothing: pip_packages and extras are ignored")


def child_env(env_spec: EnvironmentSpec) -> dict[str, str]:
    """This process's environment plus ``env_vars``, with ``sys.path`` as PYTHONPATH (so
    the child imports what this process can, fray included) and the workspace first."""
    path = [p or os.getcwd() for p in sys.path]
    if env_spec.workspace:
        path.insert(0, env_spec.workspace)
    return {**os.environ, **env_spec.env_vars, "PYTHONPATH": os.pathsep.join(path)}


def _write_frame(stream: IO[bytes], data: bytes) -> None:
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def _read_frame(stream: IO[bytes]) -> bytes | None:
    """The next frame, or ``None`` at the end of the stream."""
    head = stream.read(_HEADER.size)
    if len(head) < _HEADER.size:
        return None
    return stream.read(_HEADER.unpack(head)[0])


def serve_pool_worker(task_fd: int, result_fd: int, parent_pid: int) -> None:
    """The worker process's loop (see the module docstring)."""
    exit_when_gone(parent_pid)  # a long call must not outlive the pool's process
    tasks = os.fdopen(task_fd, "rb")
    results = os.fdopen(result_fd, "wb")
    while (payload := _read_frame(tasks)) is not None:
        outcome: tuple[bool, Any]
        try:
            fn, args, kwargs = cloudpickle.loads(payload)
            del payload
            outcome = (True, cloudpickle.dumps(fn(*args, **kwargs)))
        except BaseException as exc:
            outcome = (False, pack_exception(exc))
        _write_frame(results, cloudpickle.dumps(outcome))


class _PoolWorkerProcess:
    """One pool worker process, seen from the pool (its stdout/stderr stay ours)."""

    def __init__(self, env: Mapping[str, str], cwd: str | None) -> None:
        task_r, task_w = os.pipe()
        result_r, result_w = os.pipe()
        try:
            self.proc = start_python(
                "-m",
                _WORKER_MODULE,
                str(task_r),
                str(result_w),
                str(os.getpid()),
                pass_fds=(task_r, result_w),
                env=env,
                cwd=cwd,
            )
        finally:
            os.close(task_r)
            os.close(result_w)
        self._tasks = os.fdopen(task_w, "wb")
        self._results = os.fdopen(result_r, "rb")

    def run(self, payload: bytes) -> tuple[bool, Any] | None:
        """Send one task and return its outcome; ``None`` if the process died."""
        try:
            _write_frame(self._tasks, payload)
        except OSError:  # BrokenPipeError included
            return None
        data = _read_frame(self._results)
        if data is None:
            return None
        ok, value = cloudpickle.loads(data)
        return bool(ok), value

    def close(self) -> None:
        """End of input: the worker exits once its current task is done."""
        with contextlib.suppress(OSError):
            self._tasks.close()
        self.proc.wait()
        self._results.close()


class LocalWorkerPool(FutureWorkerPool):
    """``num_workers`` worker processes; every call goes through cloudpickle both ways.

    Functions defined in the caller's ``__main__`` travel by value. A worker that dies fails
    its current future and is replaced; one whose pool's process dies exits. Its stdout and
    stderr are this process's. A task's exception is re-raised with its own type (a
    ``RuntimeError`` naming it when it cannot be rebuilt) and its traceback as ``__cause__``.
    """

    def __init__(self, num_workers: int, environment: EnvironmentSpec | None = None) -> None:
        super().__init__(num_workers)
        warn_ignored(environment)
        env_spec = environment or EnvironmentSpec()
        self._env = child_env(env_spec)
        self._cwd = env_spec.workspace
        self._queue: queue.SimpleQueue[tuple[Future[Any], bytes] | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._serve, daemon=True, name=f"fray-v2-worker-{i}")
            for i in range(num_workers)
        ]
        for thread in self._threads:
            thread.start()

    def _serve(self) -> None:
        worker: _PoolWorkerProcess | None = None
        with contextlib.suppress(OSError):  # if it fails, the first task reports why
            worker = _PoolWorkerProcess(self._env, self._cwd)
        try:
            while (item := self._queue.get()) is not None:
                future, payload = item
                if not future.set_running_or_notify_cancel():
                    continue
                if worker is None:
                    try:
                        worker = _PoolWorkerProcess(self._env, self._cwd)
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
                _settle(future, *outcome)
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
            for future in drain_calls(self._queue):
                future.cancel()
        for _ in self._threads:
            self._queue.put(None)
        if wait:
            for thread in self._threads:
                thread.join()


def _settle(future: Future[Any], ok: bool, value: Any) -> None:
    """End ``future`` with a worker's outcome."""
    if not ok:
        future.set_exception(rebuild_exception(value))
        return
    try:
        future.set_result(cloudpickle.loads(value))
    except BaseException as exc:  # the result's class is missing here, for one
        future.set_exception(exc)


if __name__ == "__main__":
    serve_pool_worker(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
