"""Job machinery shared by the backends: the job process, log streaming and waiting.

A job is one or more *tasks* (``ResourceSpec.replicas``), each running the entrypoint in
its own Python process (:class:`JobProcess`) whose stdout and stderr go to one log file per
task. :class:`TaskJob` turns a list of task runners into a :class:`fray.v2.cluster.Job`;
:class:`JobTable` keeps a cluster's jobs. A job's failure raises
:class:`fray.errors.JobFailedError`, an unknown id :class:`fray.errors.UnknownJobError`.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import cloudpickle

from fray.common import watchdog
from fray.common.processes import start_python, stop_process
from fray.errors import JobFailedError, UnknownJobError
from fray.v2.cluster import CLUSTER_SPEC_ENV, Job
from fray.v2.types import Entrypoint, JobId, JobStatus

__all__ = [
    "JobProcess",
    "JobTable",
    "TaskJob",
    "TaskRunner",
    "bootstrap_args",
    "check_job_name",
    "dump_entrypoint",
    "job_env",
]

# The job's process runs fray.common.watchdog's source, then the script below (``python -c``):
# it needs only cloudpickle and the standard library, as the job may run where fray is not
# installed (a Ray node). argv is (payload, error file, launcher pid, cleanup dir).
# ``payload`` is a file holding the cloudpickled ``(fn, args, kwargs)``, or ``module:NAME``
# for the ``entrypoint.pkl`` inside the importable package NAME. An error file of ``-`` means
# none; a launcher pid of ``0`` means no launcher to watch. When its launcher dies, nobody can
# read its files any more: it deletes the cleanup dir and exits (``exit_when_gone``).
_BOOTSTRAP_MAIN = """
import os, shutil, sys, traceback
if sys.argv[3] != "0":
    exit_when_gone(
        int(sys.argv[3]), before_exit=lambda: shutil.rmtree(sys.argv[4], ignore_errors=True)
    )
try:
    import cloudpickle
    path = sys.argv[1]
    if path.startswith("module:"):
        import importlib
        package = importlib.import_module(path[len("module:"):])
        path = os.path.join(os.path.dirname(package.__file__), "entrypoint.pkl")
    with open(path, "rb") as f:
        fn, args, kwargs = cloudpickle.load(f)
    del f, path
    fn(*args, **kwargs)
except SystemExit:
    raise
except BaseException:
    text = traceback.format_exc()
    if sys.argv[2] != "-":
        with open(sys.argv[2], "w") as f:
            f.write(text)
    sys.stderr.write(text)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)
"""
_BOOTSTRAP = Path(watchdog.__file__).read_text() + _BOOTSTRAP_MAIN
_STOP_GRACE = 3.0  # seconds between SIGTERM and SIGKILL


def check_job_name(name: str) -> None:
    """Reject names a job id cannot be made of (empty, or containing ``"/"``)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"a job name must be a non-empty string, got {name!r}")
    if "/" in name:
        raise ValueError(f"job names cannot contain '/', got {name!r}")


def bootstrap_args(
    payload: str, error_file: str = "-", launcher_pid: int = 0, cleanup_dir: str = "-"
) -> list[str]:
    """The arguments after ``python`` that run a dumped entrypoint (see ``_BOOTSTRAP``).

    ``payload`` is the payload file, or ``module:NAME`` for ``entrypoint.pkl`` inside the
    importable package NAME.
    """
    return ["-c", _BOOTSTRAP, payload, error_file, str(launcher_pid), cleanup_dir]


def job_env(cluster_spec: str, job_id: JobId, num_tasks: int, index: int) -> dict[str, str]:
    """The variables every backend sets for task ``index`` of a job: the cluster's spec (so
    ``current_cluster()`` in the job reaches the same cluster), the job's id and its tasks."""
    return {
        CLUSTER_SPEC_ENV: cluster_spec,
        "FRAY_JOB_ID": job_id,
        "FRAY_NUM_TASKS": str(num_tasks),
        "FRAY_TASK_INDEX": str(index),
    }


def dump_entrypoint(entrypoint: Entrypoint) -> bytes:
    """Cloudpickle an entrypoint as ``(fn, args, kwargs)`` (the process needs no fray)."""
    return cloudpickle.dumps((entrypoint.callable, tuple(entrypoint.args), dict(entrypoint.kwargs)))


class JobProcess:
    """One task of a job: ``python -c BOOTSTRAP`` with its output in ``workdir/output.log``.

    ``cwd`` is the process's working directory; ``env`` its whole environment (to which
    ``PYTHONUNBUFFERED=1`` is added, so output reaches the log as it is printed). The
    process gets its own session, so :meth:`stop` kills everything it started. If the
    launching process dies first, the job deletes ``cleanup_dir`` (default ``workdir``)
    and exits.
    """

    def __init__(
        self,
        payload: bytes,
        workdir: str,
        env: Mapping[str, str],
        cwd: str | None = None,
        cleanup_dir: str | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / "output.log"
        self._error_path = self.workdir / "error.txt"
        payload_path = self.workdir / "entrypoint.pkl"
        payload_path.write_bytes(payload)
        self._stopped = False
        self._lock = threading.Lock()
        with open(self.log_path, "wb") as log:
            self._proc = start_python(
                *bootstrap_args(
                    str(payload_path),
                    str(self._error_path),
                    os.getpid(),
                    cleanup_dir or str(self.workdir),
                ),
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**env, "PYTHONUNBUFFERED": "1"},
                cwd=cwd,
                new_session=True,
            )

    @property
    def pid(self) -> int:
        return self._proc.pid

    def status(self) -> JobStatus:
        """``running`` while the process lives, then how it ended."""
        code = self._proc.poll()
        if code is None:
            return JobStatus.RUNNING
        if self._stopped:
            return JobStatus.KILLED
        return JobStatus.SUCCEEDED if code == 0 else JobStatus.FAILED

    def wait(self, timeout: float | None) -> bool:
        """Wait up to ``timeout`` seconds for the process to end; True if it has."""
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def error(self) -> str | None:
        """The traceback of a failed task (or how its process ended); else ``None``."""
        if self.status() != JobStatus.FAILED:
            return None
        try:
            return self._error_path.read_text()
        except FileNotFoundError:
            code = self._proc.returncode
            if code < 0:
                return f"the job's process was killed by signal {-code}"
            return f"the job's process exited with code {code}"

    def read_log(self, offset: int) -> bytes:
        """The log's bytes from ``offset`` on."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                return f.read()
        except FileNotFoundError:
            return b""

    def stop(self) -> None:
        """SIGTERM the process's session, SIGKILL after a grace period; then reap it."""
        with self._lock:
            if self._proc.poll() is not None:
                return
            self._stopped = True
            stop_process(self._proc, _STOP_GRACE, group=True)


class TaskRunner(Protocol):
    """What :class:`TaskJob` needs of one task, on any backend."""

    def status(self) -> JobStatus: ...

    def wait(self, timeout: float | None) -> bool: ...

    def error(self) -> str | None: ...

    def read_log(self, offset: int) -> bytes: ...

    def stop(self) -> None: ...


def combine_status(statuses: Sequence[JobStatus]) -> JobStatus:
    """A job's status from its tasks': any failure fails it, then killed, then pending."""
    for status in (JobStatus.FAILED, JobStatus.KILLED):
        if status in statuses:
            return status
    if all(s == JobStatus.SUCCEEDED for s in statuses):
        return JobStatus.SUCCEEDED
    if any(s == JobStatus.PENDING for s in statuses):
        return JobStatus.PENDING
    return JobStatus.RUNNING


class TaskJob:
    """A :class:`fray.v2.cluster.Job` over one task runner per replica.

    When a task fails, the others are stopped. Log lines are prefixed with ``[job_id]``
    (``[job_id/INDEX]`` for jobs of several tasks) when streamed.
    """

    def __init__(
        self,
        job_id: JobId,
        name: str,
        tasks: Sequence[TaskRunner],
        on_finish: Callable[[], None] | None = None,
    ) -> None:
        self._job_id = job_id
        self.name = name
        self._tasks = list(tasks)
        self._lock = threading.Lock()
        self._on_finish = on_finish
        self._finished = False

    @property
    def job_id(self) -> JobId:
        return self._job_id

    def status(self) -> JobStatus:
        status = combine_status([task.status() for task in self._tasks])
        if status.is_finished():
            self._finish(status)
        return status

    def _finish(self, status: JobStatus) -> None:
        with self._lock:
            if self._finished:
                return
            self._finished = True
        if status != JobStatus.SUCCEEDED:
            for task in self._tasks:
                task.stop()
        if self._on_finish is not None:
            self._on_finish()

    def error(self) -> str | None:
        """The first failed task's traceback, if a task failed."""
        for task in self._tasks:
            error = task.error()
            if error is not None:
                return error
        return None

    def logs(self) -> str:
        """The output of the job's tasks so far (task after task)."""
        return "".join(t.read_log(0).decode(errors="replace") for t in self._tasks)

    def terminate(self) -> None:
        for task in self._tasks:
            task.stop()
        self.status()

    def wait(
        self, timeout: float = 300.0, *, stream_logs: bool = False, raise_on_failure: bool = True
    ) -> JobStatus:
        deadline = time.monotonic() + timeout
        streams = [_LogStream(self._prefix(i)) for i in range(len(self._tasks))]
        while True:
            status = self.status()
            if stream_logs:
                for task, stream in zip(self._tasks, streams, strict=True):
                    stream.feed(task, final=status.is_finished())
            if status.is_finished():
                break
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"job {self._job_id} still {status} after {timeout}s")
            pending = [t for t in self._tasks if not t.status().is_finished()]
            step = min(left, 0.2 if stream_logs or len(pending) != 1 else 1.0)
            if pending:
                pending[0].wait(step)
        if status == JobStatus.FAILED and raise_on_failure:
            raise JobFailedError(self._job_id, status, self.error() or "")
        return status

    def _prefix(self, index: int) -> str:
        return f"[{self._job_id}]" if len(self._tasks) == 1 else f"[{self._job_id}/{index}]"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._job_id!r})"


class JobTable:
    """The jobs one cluster object submitted, by id (thread-safe)."""

    def __init__(self) -> None:
        self._jobs: dict[JobId, TaskJob] = {}
        self._lock = threading.Lock()

    @staticmethod
    def new_id(name: str) -> JobId:
        """A fresh job id for a job called ``name`` (checked with :func:`check_job_name`)."""
        check_job_name(name)
        return JobId(f"{name}-{uuid.uuid4().hex[:8]}")

    def add(self, job: TaskJob) -> TaskJob:
        with self._lock:
            self._jobs[job.job_id] = job
        return job

    def get(self, job_id: JobId) -> TaskJob:
        """The job called ``job_id``; :class:`UnknownJobError` when there is none."""
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise UnknownJobError(job_id)
        return job

    def list(self) -> list[Job]:
        """Every job, oldest first (what ``Cluster.list_jobs`` returns)."""
        with self._lock:
            return list(self._jobs.values())

    def terminate(self, job_id: JobId) -> None:
        """Terminate one job (what ``Cluster.terminate`` does)."""
        self.get(job_id).terminate()

    def terminate_all(self) -> None:
        for job in self.list():
            job.terminate()


class _LogStream:
    """Prints a task's new complete log lines, prefixed, to ``sys.stdout``."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.offset = 0
        self.partial = b""

    def feed(self, task: Any, final: bool) -> None:
        data = task.read_log(self.offset)
        self.offset += len(data)
        data = self.partial + data
        lines = data.split(b"\n")
        self.partial = lines.pop()
        if final and self.partial:
            lines.append(self.partial)
            self.partial = b""
        for line in lines:
            print(f"{self.prefix} {line.decode(errors='replace')}", flush=True)
