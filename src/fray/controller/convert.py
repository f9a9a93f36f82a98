"""Conversions between the wire (protobuf messages) and the state machine's records."""

from __future__ import annotations

from collections.abc import Iterable

from google.protobuf.timestamp_pb2 import Timestamp

from fray.controller import placement
from fray.controller import records as rec
from fray.controller.placement import NOTHING, Need
from fray.wire.pb import controller_pb2 as pb

STATE_TO_PB = {s: pb.TaskState.Value(f"TASK_STATE_{s.value}") for s in rec.TaskState}
PB_TO_STATE = {v: k for k, v in STATE_TO_PB.items()}
ACTOR_STATE_TO_PB = {s: pb.ActorState.Value(f"ACTOR_STATE_{s.value}") for s in rec.ActorState}
PB_TO_ACTOR_STATE = {v: k for k, v in ACTOR_STATE_TO_PB.items()}
_KIND_TO_PB = {k: pb.ErrorKind.Value(f"ERROR_KIND_{k.value}") for k in rec.ErrorKind}
_PB_TO_KIND = {v: k for k, v in _KIND_TO_PB.items()}


def _timestamp(seconds: float | None) -> Timestamp | None:
    if seconds is None:
        return None
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def need_from_pb(requirements: pb.Requirements, where: str) -> Need:
    """A need from a request's Requirements (`NOTHING` when it asks for nothing);
    `InvalidRequest` naming `where` (e.g. "task 3 (abc)") when it is malformed."""
    if not requirements.resources and not requirements.labels:
        return NOTHING
    try:
        need = Need.of(dict(requirements.resources), dict(requirements.labels))
    except ValueError as exc:
        raise rec.InvalidRequest(f"{where}: requirements: {exc}") from None
    return NOTHING if need.empty else need


def need_to_pb(need: Need) -> pb.Requirements | None:
    if need is NOTHING or need.empty:
        return None
    return pb.Requirements(resources=dict(need.resources), labels=dict(need.labels))


def failure_to_pb(failure: rec.TaskFailure) -> pb.TaskError:
    return pb.TaskError(
        kind=_KIND_TO_PB[failure.kind],
        type=failure.type,
        message=failure.message,
        traceback=failure.traceback,
        pickled_exception=failure.pickled_exception,
        worker_id=failure.worker_id,
    )


def failure_from_pb(error: pb.TaskError) -> rec.TaskFailure:
    kind = _PB_TO_KIND.get(error.kind)
    if kind is None:
        raise rec.InvalidRequest(f"error kind {error.kind} is not a valid ErrorKind")
    return rec.TaskFailure(
        kind=kind,
        type=error.type,
        message=error.message,
        traceback=error.traceback,
        pickled_exception=error.pickled_exception,
        worker_id=error.worker_id,
    )


def task_to_pb(
    task: rec.TaskRecord, include_result: bool = False, pending_reason: str = ""
) -> pb.Task:
    return pb.Task(
        task_id=task.task_id,
        name=task.spec.name,
        state=STATE_TO_PB[task.state],
        attempts=task.attempts,
        worker_id=task.worker_id,
        submitted_at=_timestamp(task.submitted_at),
        started_at=_timestamp(task.started_at),
        finished_at=_timestamp(task.finished_at),
        error=failure_to_pb(task.error) if task.error is not None else None,
        result=task.result if include_result and task.result is not None else b"",
        cancel_requested=task.cancel_requested,
        timeout_seconds=task.spec.timeout_seconds,
        max_retries=task.spec.max_retries,
        direct=task.direct,
        requirements=need_to_pb(task.spec.need),
        pending_reason=pending_reason,
    )


def finished_to_pb(task: rec.TaskRecord) -> pb.Task:
    """A finished task as WatchFinished's `brief` answer has it: what settles a future."""
    return pb.Task(
        task_id=task.task_id,
        name=task.spec.name,
        state=STATE_TO_PB[task.state],
        error=failure_to_pb(task.error) if task.error is not None else None,
        result=task.result if task.result is not None else b"",
    )


def worker_to_pb(
    worker: rec.WorkerRecord, busy_slots: int = 0, job_replicas: Iterable[str] = ()
) -> pb.Worker:
    return pb.Worker(
        worker_id=worker.worker_id,
        address=worker.address,
        resources=pb.Resources(
            cpus=worker.cpus,
            memory_bytes=worker.memory_bytes,
            labels=worker.labels,
            capacities=worker.capacities,
        ),
        free=placement.free(worker),
        job_replicas=job_replicas,
        draining=worker.draining,
        slots=worker.slots,
        registered_at=_timestamp(worker.registered_at),
        last_heartbeat=_timestamp(worker.last_heartbeat),
        task_ids=list(worker.task_ids),
        tasks_completed=worker.tasks_completed,
        tasks_failed=worker.tasks_failed,
        direct_running=worker.direct_running,
        busy_slots=busy_slots,
    )


def task_spec_from_pb(spec: pb.TaskSpec) -> rec.TaskSpec:
    need = NOTHING
    if spec.HasField("requirements"):
        where = f"task {spec.task_id or spec.name or '(no id)'}"
        need = need_from_pb(spec.requirements, where)
    return rec.TaskSpec(
        function=spec.function,
        args=spec.args,
        task_id=spec.task_id,
        name=spec.name,
        object_ids=tuple(spec.object_ids),
        timeout_seconds=spec.timeout_seconds,
        max_retries=spec.max_retries,
        owner=spec.owner,
        infra_failures=spec.infra_failures,
        need=need,
    )


def leased_to_pb(task: rec.TaskRecord) -> pb.LeasedTask:
    return pb.LeasedTask(
        task_id=task.task_id,
        attempt=task.attempts,
        name=task.spec.name,
        function=task.spec.function,
        args=task.spec.args,
        object_ids=task.spec.object_ids,
        timeout_seconds=task.spec.timeout_seconds,
    )


def outcome_from_pb(result: pb.TaskResult) -> rec.TaskOutcome:
    which = result.WhichOneof("outcome")
    if which is None:
        raise rec.InvalidRequest(f"result for task {result.task_id} has no outcome")
    return rec.TaskOutcome(
        task_id=result.task_id,
        attempt=result.attempt,
        value=result.value if which == "value" else None,
        error=failure_from_pb(result.error) if which == "error" else None,
        handed_back=which == "handed_back",
        stored_object_id=result.stored_object_id,
        run_seconds=result.run_seconds,
    )


def direct_from_pb(task: pb.DirectTask) -> rec.DirectTaskRecord:
    state = PB_TO_STATE.get(task.state)
    if state is None or not state.finished:
        raise rec.InvalidRequest(f"direct task {task.task_id}: state must be a finished one")
    return rec.DirectTaskRecord(
        spec=rec.TaskSpec(
            function=b"",
            args=b"",
            task_id=task.task_id,
            name=task.name,
            timeout_seconds=task.timeout_seconds,
            owner=task.owner,
        ),
        state=state,
        started_at=task.started_at.ToNanoseconds() / 1e9,
        finished_at=task.finished_at.ToNanoseconds() / 1e9,
        error=failure_from_pb(task.error) if task.HasField("error") else None,
    )


def actor_spec_from_pb(spec: pb.ActorSpec) -> rec.ActorSpec:
    need = NOTHING
    if spec.HasField("requirements"):
        need = need_from_pb(spec.requirements, f"actor {spec.actor_id or spec.name or '(new)'}")
    return rec.ActorSpec(
        cls=spec.cls,
        args=spec.args,
        actor_id=spec.actor_id,
        name=spec.name,
        class_name=spec.class_name,
        object_ids=tuple(spec.object_ids),
        max_restarts=spec.max_restarts,
        owner=spec.owner,
        detached=spec.detached,
        need=need,
    )


def actor_start_to_pb(actor: rec.ActorRecord) -> pb.ActorSpec:
    spec = actor.spec
    return pb.ActorSpec(
        actor_id=spec.actor_id,
        name=spec.name,
        class_name=spec.class_name,
        cls=spec.cls,
        args=spec.args,
        object_ids=spec.object_ids,
        max_restarts=spec.max_restarts,
        owner=spec.owner,
        detached=spec.detached,
        incarnation=actor.incarnation,
        requirements=need_to_pb(spec.need),
    )


def actor_to_pb(actor: rec.ActorRecord, address: str, pending_reason: str = "") -> pb.Actor:
    return pb.Actor(
        actor_id=actor.actor_id,
        name=actor.spec.name,
        class_name=actor.spec.class_name,
        state=ACTOR_STATE_TO_PB[actor.state],
        worker_id=actor.worker_id,
        address=address,
        incarnation=actor.incarnation,
        restarts=actor.restarts,
        max_restarts=actor.spec.max_restarts,
        created_at=_timestamp(actor.created_at),
        error=failure_to_pb(actor.error) if actor.error is not None else None,
        detached=actor.spec.detached,
        owner=actor.spec.owner,
        requirements=need_to_pb(actor.spec.need),
        pending_reason=pending_reason,
    )
