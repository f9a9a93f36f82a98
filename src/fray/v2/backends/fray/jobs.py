"""fray.v2 jobs on fray's controller: the job spec sent, and :class:`FrayJob`, a job seen
through the controller's job RPCs (GetJob, StopJob, GetJobLogs).

A job's replicas run on the workers as processes of their own; their state and output live in
the controller, so any process that knows the job's id can follow it. ``wait(stream_logs=True)``
long-polls ``GetJobLogs`` per replica and prints each line prefixed with ``[job_id]``
(``[job_id/INDEX]`` for jobs of several replicas), as :class:`fray.v2.job.TaskJob` does.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from connectrpc.code import Code
from connectrpc.errors import ConnectError

from fray.errors import FrayError, JobFailedError, UnknownJobError
from fray.v2.backends.fray.resources import fray_requirements
from fray.v2.job import dump_entrypoint
from fray.v2.types import Entrypoint, JobId, JobStatus, ResourceSpec
from fray.wire.controller_client import ControllerClient
from fray.wire.pb import controller_pb2 as pb

__all__ = ["FrayJob", "build_job_spec", "call_controller", "job_status"]

logger = logging.getLogger(__name__)

_STATUS: dict[int, JobStatus] = {
    pb.JOB_STATE_UNSPECIFIED: JobStatus.PENDING,
    pb.JOB_STATE_PENDING: JobStatus.PENDING,
    pb.JOB_STATE_RUNNING: JobStatus.RUNNING,
    pb.JOB_STATE_SUCCEEDED: JobStatus.SUCCEEDED,
    pb.JOB_STATE_FAILED: JobStatus.FAILED,
    pb.JOB_STATE_KILLED: JobStatus.KILLED,
}
_WAIT_SLICE = 10.0  # seconds: the longest GetJob long poll while waiting without streaming
_STREAM_POLL = 0.2  # seconds between log reads while streaming
_DRAIN_SECONDS = 5.0  # how long a finished job's last output may take to arrive
_RES = TypeVar("_RES")


def job_status(state: int) -> JobStatus:
    """A wire ``JobState`` as a fray.v2 :class:`JobStatus`."""
    return _STATUS.get(state, JobStatus.PENDING)


def call_controller(
    client: ControllerClient,
    method: Callable[..., _RES],
    request: Any,
    *,
    job_id: str = "",
    wait_ms: int = 0,
) -> _RES:
    """A controller call; its refusals as Python errors: ``not_found`` for ``job_id`` is
    :class:`UnknownJobError`, ``invalid_argument`` a ``ValueError``, others a FrayError."""
    try:
        return client.call(method, request, wait_ms=wait_ms)
    except ConnectError as exc:
        if exc.code == Code.NOT_FOUND and job_id:
            raise UnknownJobError(job_id) from None
        if exc.code == Code.INVALID_ARGUMENT:
            raise ValueError(exc.message) from None
        raise FrayError(f"the controller said {exc.code.value}: {exc.message}") from None


def build_job_spec(
    job_id: str,
    name: str,
    entrypoint: Entrypoint,
    resources: ResourceSpec,
    env: Mapping[str, str],
    working_dir: str | None,
    owner: str,
) -> pb.JobSpec:
    """The ``JobSpec`` of a fray.v2 job: a binary entrypoint (one with a ``command``) goes
    as its argv, any other as the cloudpickled ``(fn, args, kwargs)``."""
    spec = pb.JobSpec(
        job_id=job_id,
        name=name,
        replicas=resources.replicas,
        requirements=fray_requirements(resources),
        env=dict(env),
        working_dir=working_dir or "",
        owner=owner,
    )
    if entrypoint.command:
        spec.command.extend(entrypoint.command)
    else:
        spec.entrypoint = dump_entrypoint(entrypoint)
    return spec


class _ReplicaLog:
    """A replica's output read from the controller, printed as complete, prefixed lines."""

    def __init__(self, job_id: str, index: int, prefix: str) -> None:
        self.job_id = job_id
        self.index = index
        self.prefix = prefix
        self.offset = 0
        self.partial = b""
        self.finished = False

    def read(self, client: ControllerClient, wait_ms: int = 0) -> bytes:
        """The output past what was read (waiting up to ``wait_ms`` for some)."""
        request = pb.GetJobLogsRequest(
            job_id=self.job_id, replica=self.index, offset=self.offset, wait_ms=wait_ms
        )
        response = call_controller(
            client, client.rpc.get_job_logs, request, job_id=self.job_id, wait_ms=wait_ms
        )
        self.offset = max(self.offset, response.next_offset)
        self.finished = response.finished
        return response.data

    def print_new(self, client: ControllerClient, wait_ms: int = 0, final: bool = False) -> None:
        data = self.partial + self.read(client, wait_ms)
        lines = data.split(b"\n")
        self.partial = lines.pop()
        if final and self.partial:
            lines.append(self.partial)
            self.partial = b""
        for line in lines:
            print(f"{self.prefix} {line.decode(errors='replace')}", flush=True)


def _failure(job: pb.Job) -> str:
    """The error of a failed job (the controller's names the replica: kept for several)."""
    if len(job.replica_states) == 1 and job.replica_states[0].error:
        return job.replica_states[0].error
    return job.error


class FrayJob:
    """A :class:`fray.v2.cluster.Job` on fray's controller (see the module docstring)."""

    def __init__(self, client: ControllerClient, job_id: JobId, name: str, replicas: int) -> None:
        self._client = client
        self._job_id = job_id
        self.name = name
        self.replicas = max(1, replicas)
        self._warned_pending = False

    @classmethod
    def from_wire(cls, client: ControllerClient, job: pb.Job) -> FrayJob:
        return cls(client, JobId(job.job_id), job.name, job.replicas)

    @property
    def job_id(self) -> JobId:
        return self._job_id

    def describe(self, wait_ms: int = 0) -> pb.Job:
        """The controller's record of the job (``wait_ms``: wait that long for its end)."""
        request = pb.GetJobRequest(job_id=self._job_id, wait_ms=wait_ms)
        client = self._client
        job = call_controller(
            client, client.rpc.get_job, request, job_id=self._job_id, wait_ms=wait_ms
        ).job
        if job.state == pb.JOB_STATE_PENDING and job.pending_reason and not self._warned_pending:
            self._warned_pending = True
            logger.warning("job %s is pending: %s", self._job_id, job.pending_reason)
        return job

    def status(self) -> JobStatus:
        return job_status(self.describe().state)

    def error(self) -> str | None:
        """A failed job's error: the failed replica's traceback (or how its process ended),
        after ``replica N:`` for jobs of several replicas."""
        job = self.describe()
        return _failure(job) if job.state == pb.JOB_STATE_FAILED else None

    def logs(self) -> str:
        """The output of the job's replicas so far (replica after replica)."""
        parts = []
        for index in range(self.replicas):
            log = _ReplicaLog(self._job_id, index, "")
            while data := log.read(self._client):
                parts.append(data)
        return b"".join(parts).decode(errors="replace")

    def terminate(self) -> None:
        client = self._client
        request = pb.StopJobRequest(job_id=self._job_id)
        call_controller(client, client.rpc.stop_job, request, job_id=self._job_id)

    def wait(
        self, timeout: float = 300.0, *, stream_logs: bool = False, raise_on_failure: bool = True
    ) -> JobStatus:
        deadline = time.monotonic() + timeout
        logs = [_ReplicaLog(self._job_id, i, self._prefix(i)) for i in range(self.replicas)]
        job = self.describe()
        while True:
            if stream_logs:
                for log in logs:
                    log.print_new(self._client)
            status = job_status(job.state)
            if status.is_finished():
                break
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"job {self._job_id} still {status} after {timeout}s")
            step = min(left, _STREAM_POLL if stream_logs else _WAIT_SLICE)
            job = self.describe(wait_ms=max(1, int(step * 1000)))
        if stream_logs:
            self._drain(logs)
        if status == JobStatus.FAILED and raise_on_failure:
            raise JobFailedError(self._job_id, status, _failure(job))
        return status

    def _drain(self, logs: list[_ReplicaLog]) -> None:
        """Print the rest of each replica's output (it may arrive just after the job ends)."""
        deadline = time.monotonic() + _DRAIN_SECONDS
        for log in logs:
            while not log.finished and (left := deadline - time.monotonic()) > 0:
                log.print_new(self._client, max(1, int(min(left, 1.0) * 1000)))
            log.print_new(self._client, final=True)
        sys.stdout.flush()

    def _prefix(self, index: int) -> str:
        return f"[{self._job_id}]" if self.replicas == 1 else f"[{self._job_id}/{index}]"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._job_id!r})"
