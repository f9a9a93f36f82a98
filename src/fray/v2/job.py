"""Job machinery shared by the backends: the job process, log streaming and waiting.

A job is one or more *tasks* (``ResourceSpec.replicas``), each running the entrypoint in
its own Python process (:class:`JobProcess`) whose stdout and stderr go to one log file per
task. :class:`TaskJob` turns a list of task runners into a :class:`fray.v2.cluster.Job`;
:class:`JobTable` keeps a cluster's jobs. A job's failure raises
:class:`fray.errors.JobFailedError`, an unknown id :class:`fray.errors.UnknownJobError`.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from fray.common import job_process
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

bootstrap_args = job_process.bootstrap_args  # (the bootstrap lives in fray.common.job_process)


def check_job_name(name: str) -> None:
    """Reject names a job id cannot be made of (empty, or containing ``"/"``)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"a job name must be a non-empty string, got {name!r}")
    if "/" in name:
        raise ValueError(f"job names cannot contain '/', got {name!r}")


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
    return job_process.dump_call(entrypoint.callable, entrypoint.args, entrypoint.kwargs)


class JobProcess(job_process.JobProcess):
    """One task of a job (:class:`fray.common.job_process.JobProcess`), its status a
    :class:`JobStatus`."""

    def status(self) -> JobStatus:
        """``running`` while the process lives, then how it ended."""
        return JobStatus(super().status())


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
