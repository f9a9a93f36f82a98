"""Jobs between the wire (protobuf messages), the records and the rows of the state database.

A job's row: its id, its submission number, its spec (a serialized `fray.v1.JobSpec`, written
once) and its progress (JSON: the job's and its replicas' states, times, errors, pids and
holds, rewritten as it changes).
"""

from __future__ import annotations

import json
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from fray.controller.placement import Need
from fray.controller.records import (
    InvalidRequest,
    JobRecord,
    JobSpec,
    JobState,
    ReplicaRecord,
    ReplicaUpdate,
)
from fray.wire.pb import controller_pb2 as pb

JOB_STATE_TO_PB = {s: pb.JobState.Value(f"JOB_STATE_{s.value}") for s in JobState}
PB_TO_JOB_STATE = {v: k for k, v in JOB_STATE_TO_PB.items()}

Row = tuple[Any, ...]
JOB_COLUMNS = ("job_id", "seq", "spec", "progress")
JOB_PROGRESS_COLUMNS = ("progress",)  # then the job id, for the WHERE clause


def _timestamp(seconds: float | None) -> Timestamp | None:
    if seconds is None:
        return None
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def need_from_pb(requirements: pb.Requirements) -> Need:
    try:
        return Need.of(dict(requirements.resources), dict(requirements.labels))
    except ValueError as exc:
        raise InvalidRequest(f"requirements: {exc}") from None


def _requirements(need: Need) -> pb.Requirements:
    return pb.Requirements(resources=dict(need.resources), labels=dict(need.labels))


def job_spec_from_pb(spec: pb.JobSpec) -> JobSpec:
    """A submitted spec as a record (checked further by `JobLifecycle.submit`)."""
    if spec.replicas < 0:
        raise InvalidRequest("replicas must be >= 0")
    return JobSpec(
        name=spec.name,
        job_id=spec.job_id,
        replicas=spec.replicas,
        need=need_from_pb(spec.requirements),
        entrypoint=spec.entrypoint,
        command=tuple(spec.command),
        env=dict(spec.env),
        working_dir=spec.working_dir,
        owner=spec.owner,
    )


def job_spec_to_pb(spec: JobSpec) -> pb.JobSpec:
    return pb.JobSpec(
        job_id=spec.job_id,
        name=spec.name,
        replicas=spec.replicas,
        requirements=_requirements(spec.need),
        entrypoint=spec.entrypoint,
        command=list(spec.command),
        env=spec.env,
        working_dir=spec.working_dir,
        owner=spec.owner,
    )


def replica_to_pb(replica: ReplicaRecord) -> pb.JobReplica:
    return pb.JobReplica(
        index=replica.index,
        state=JOB_STATE_TO_PB[replica.state],
        worker_id=replica.worker_id,
        pid=replica.pid,
        exit_code=replica.exit_code,
        error=replica.error,
        started_at=_timestamp(replica.started_at),
        finished_at=_timestamp(replica.finished_at),
    )


def job_to_pb(job: JobRecord, pending_reason: str = "") -> pb.Job:
    spec = job.spec
    return pb.Job(
        job_id=job.job_id,
        name=spec.name,
        state=JOB_STATE_TO_PB[job.state],
        replicas=spec.replicas,
        requirements=_requirements(spec.need),
        replica_states=[replica_to_pb(r) for r in job.replicas],
        submitted_at=_timestamp(job.submitted_at),
        started_at=_timestamp(job.started_at),
        finished_at=_timestamp(job.finished_at),
        error=job.error,
        pending_reason=pending_reason,
        owner=spec.owner,
        command=list(spec.command),
    )


def launch_to_pb(job: JobRecord, index: int) -> pb.JobLaunch:
    spec = job.spec
    return pb.JobLaunch(
        job_id=job.job_id,
        index=index,
        replicas=spec.replicas,
        entrypoint=spec.entrypoint,
        command=list(spec.command),
        env=spec.env,
        working_dir=spec.working_dir,
    )


def update_from_pb(update: pb.JobReplicaUpdate) -> ReplicaUpdate:
    state = PB_TO_JOB_STATE.get(update.state)
    if state is None or state is JobState.PENDING:
        raise InvalidRequest(
            f"replica {update.job_id}/{update.index}: state must be RUNNING, SUCCEEDED, "
            "FAILED or KILLED"
        )
    return ReplicaUpdate(
        job_id=update.job_id,
        index=update.index,
        state=state,
        pid=update.pid,
        exit_code=update.exit_code,
        error=update.error,
        output=update.output,
        output_offset=update.output_offset,
    )


def job_state_from_pb(state: int) -> JobState | None:
    """A ListJobs filter (None: any state)."""
    if state == pb.JOB_STATE_UNSPECIFIED:
        return None
    found = PB_TO_JOB_STATE.get(state)  # type: ignore[call-overload]
    if found is None:
        raise InvalidRequest(f"unknown job state {state}")
    return found


# ---------------------------------------------------------------------- rows


def _progress(job: JobRecord) -> str:
    return json.dumps(
        {
            "state": job.state.value,
            "submitted_at": job.submitted_at,
            "started_at": job.started_at,
            "finished_at": job.finished_at,
            "error": job.error,
            "replicas": [
                [
                    r.state.value,
                    r.worker_id,
                    r.pid,
                    r.exit_code,
                    r.error,
                    r.started_at,
                    r.finished_at,
                    r.held,
                ]
                for r in job.replicas
            ],
        }
    )


def job_row(job: JobRecord) -> Row:
    return (job.job_id, job.seq, job_spec_to_pb(job.spec).SerializeToString(), _progress(job))


def job_progress_row(job: JobRecord) -> Row:
    return (_progress(job), job.job_id)


def job_from_row(row: Row) -> JobRecord:
    """A job from a row of JOB_COLUMNS."""
    _, seq, spec_bytes, progress = row
    message = pb.JobSpec.FromString(spec_bytes)
    spec = job_spec_from_pb(message)
    saved: dict[str, Any] = json.loads(progress)
    replicas = [
        ReplicaRecord(
            index=i,
            state=JobState(state),
            worker_id=worker_id,
            pid=pid,
            exit_code=exit_code,
            error=error,
            started_at=started_at,
            finished_at=finished_at,
            held=held,
        )
        for i, (
            state,
            worker_id,
            pid,
            exit_code,
            error,
            started_at,
            finished_at,
            held,
        ) in enumerate(saved["replicas"])
    ]
    return JobRecord(
        spec=spec,
        submitted_at=saved["submitted_at"],
        replicas=replicas,
        state=JobState(saved["state"]),
        started_at=saved["started_at"],
        finished_at=saved["finished_at"],
        error=saved["error"],
        seq=seq,
    )
