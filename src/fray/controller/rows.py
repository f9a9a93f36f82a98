"""Records as rows of the state database and back: the columns of each table (`store` holds the
SQL) and the conversions, kept side by side so that what is written is what is read.

A row is a plain tuple of SQLite values; booleans go as ints (`sqlite3` binds exact ints,
floats and strings without looking for an adapter). Failures (`TaskFailure`) are stored as
serialized `fray.v1.TaskError` messages, lists, labels, capacities and needs as JSON (a need of
nothing as NULL). Rows are built on the event
loop (from records the loop owns) and written by the journal's thread; nothing here touches the
database.
"""

from __future__ import annotations

import json
from typing import Any

from fray.controller import convert
from fray.controller.placement import NOTHING, Need
from fray.controller.records import (
    ActorRecord,
    ActorSpec,
    ActorState,
    TaskFailure,
    TaskRecord,
    TaskSpec,
    TaskState,
    WorkerRecord,
)
from fray.wire.pb import controller_pb2 as pb

Row = tuple[Any, ...]

# ---------------------------------------------------------------------- columns

TASK_COLUMNS = (
    "saved_row",  # the key: tasks are saved in submission order, found by number, not by id
    "task_id",
    "owner",
    "name",
    "function",
    "args",
    "object_ids",
    "timeout_seconds",
    "max_retries",
    "spec_infra_failures",
    "state",
    "attempts",
    "user_failures",
    "infra_failures",
    "worker_id",
    "submitted_at",
    "started_at",
    "finished_at",
    "result",
    "error",
    "cancel_requested",
    "direct",
    "need",
)
# What changes while a task is unfinished, and what its end adds (its function and args are
# dropped then, as in memory); the row number comes last, for the WHERE clause.
TASK_PROGRESS_COLUMNS = (
    "state",
    "attempts",
    "user_failures",
    "infra_failures",
    "worker_id",
    "started_at",
    "error",
    "cancel_requested",
)
TASK_END_COLUMNS = (*TASK_PROGRESS_COLUMNS, "finished_at", "result", "function", "args")
TASK_BLOBS = ("function", "args", "result")  # may live in files (see `store`)

WORKER_COLUMNS = (
    "worker_id",
    "address",
    "slots",
    "prefetch",
    "registered_at",
    "cpus",
    "memory_bytes",
    "labels",
    "tasks_completed",
    "tasks_failed",
    "draining",
    "capacities",
)
ACTOR_COLUMNS = (
    "actor_id",
    "name",
    "class_name",
    "cls",
    "args",
    "object_ids",
    "max_restarts",
    "owner",
    "detached",
    "created_at",
    "need",
    "state",
    "worker_id",
    "incarnation",
    "restarts",
    "error",
)
ACTOR_PROGRESS_COLUMNS = ("state", "worker_id", "incarnation", "restarts", "error")
ACTOR_BLOBS = ("cls", "args")


def _failure(failure: TaskFailure | None) -> bytes | None:
    return None if failure is None else convert.failure_to_pb(failure).SerializeToString()


def _failure_back(data: bytes | None) -> TaskFailure | None:
    return None if data is None else convert.failure_from_pb(pb.TaskError.FromString(data))


def _need(need: Need) -> str | None:
    if need is NOTHING or need.empty:
        return None
    return json.dumps([need.resources, need.labels])


def _need_back(data: str | None) -> Need:
    """A need as `_need` saved it (NULL, also in rows from before needs existed: nothing)."""
    if not data:
        return NOTHING
    resources, labels = json.loads(data)
    return Need(tuple((k, float(v)) for k, v in resources), tuple((k, v) for k, v in labels))


# ---------------------------------------------------------------------- tasks


def _ids(object_ids: tuple[str, ...] | list[str]) -> str:
    """A JSON list of ids ("[]" without json.dumps: most tasks name no object)."""
    return json.dumps(list(object_ids)) if object_ids else "[]"


def task_row(task: TaskRecord) -> Row:
    spec = task.spec
    return (
        task.saved_row,
        spec.task_id,
        spec.owner,
        spec.name,
        spec.function,
        spec.args,
        _ids(spec.object_ids),
        spec.timeout_seconds,
        spec.max_retries,
        spec.infra_failures,
        task.state.value,
        task.attempts,
        task.user_failures,
        task.infra_failures,
        task.worker_id,
        task.submitted_at,
        task.started_at,
        task.finished_at,
        task.result,
        _failure(task.error),
        int(task.cancel_requested),
        int(task.direct),
        None if spec.need is NOTHING else _need(spec.need),
    )


def task_progress_row(task: TaskRecord) -> Row:
    return (*_progress(task), task.saved_row)


def task_end_row(task: TaskRecord) -> Row:
    return (*_progress(task), task.finished_at, task.result, b"", b"", task.saved_row)


def _progress(task: TaskRecord) -> Row:
    return (
        task.state.value,
        task.attempts,
        task.user_failures,
        task.infra_failures,
        task.worker_id,
        task.started_at,
        _failure(task.error),
        int(task.cancel_requested),
    )


def task_from_row(row: Row) -> TaskRecord:
    """A task from a row of TASK_COLUMNS (its blobs already read back)."""
    (
        saved_row,
        task_id,
        owner,
        name,
        function,
        args,
        object_ids,
        timeout_seconds,
        max_retries,
        spec_infra_failures,
        state,
        attempts,
        user_failures,
        infra_failures,
        worker_id,
        submitted_at,
        started_at,
        finished_at,
        result,
        error,
        cancel_requested,
        direct,
        need,
    ) = row
    spec = TaskSpec(
        function=function or b"",
        args=args or b"",
        task_id=task_id,
        name=name,
        object_ids=tuple(json.loads(object_ids)),
        timeout_seconds=timeout_seconds,
        max_retries=max_retries,
        owner=owner,
        infra_failures=spec_infra_failures,
        need=_need_back(need),
    )
    return TaskRecord(
        spec=spec,
        submitted_at=submitted_at,
        state=TaskState(state),
        attempts=attempts,
        user_failures=user_failures,
        infra_failures=infra_failures,
        worker_id=worker_id,
        started_at=started_at,
        finished_at=finished_at,
        result=result,
        error=_failure_back(error),
        cancel_requested=bool(cancel_requested),
        direct=bool(direct),
        saved_row=saved_row,
    )


# ---------------------------------------------------------------------- workers


def worker_row(worker: WorkerRecord) -> Row:
    return (
        worker.worker_id,
        worker.address,
        worker.slots,
        worker.prefetch,
        worker.registered_at,
        worker.cpus,
        worker.memory_bytes,
        json.dumps(worker.labels),
        worker.tasks_completed,
        worker.tasks_failed,
        int(worker.draining),
        json.dumps(worker.capacities),
    )


def worker_from_row(row: Row) -> WorkerRecord:
    (
        worker_id,
        address,
        slots,
        prefetch,
        registered_at,
        cpus,
        memory_bytes,
        labels,
        tasks_completed,
        tasks_failed,
        draining,
        capacities,
    ) = row
    return WorkerRecord(
        worker_id=worker_id,
        address=address,
        slots=slots,
        prefetch=prefetch,
        registered_at=registered_at,
        last_heartbeat=registered_at,  # replaced by the restart time (`WorkerRegistry.restore`)
        cpus=cpus,
        memory_bytes=memory_bytes,
        labels=json.loads(labels),
        tasks_completed=tasks_completed,
        tasks_failed=tasks_failed,
        draining=bool(draining),
        # A row from before capacities were saved: what the registration offered then.
        capacities=json.loads(capacities) if capacities else _offered(cpus, memory_bytes),
    )


def _offered(cpus: float, memory_bytes: int) -> dict[str, float]:
    offered = {"cpus": float(cpus)}
    if memory_bytes > 0:
        offered["memory"] = float(memory_bytes)
    return offered


# ---------------------------------------------------------------------- actors


def actor_row(actor: ActorRecord) -> Row:
    spec = actor.spec
    return (
        spec.actor_id,
        spec.name,
        spec.class_name,
        spec.cls,
        spec.args,
        _ids(spec.object_ids),
        spec.max_restarts,
        spec.owner,
        int(spec.detached),
        actor.created_at,
        _need(spec.need),
        *_actor_progress(actor),
    )


def actor_progress_row(actor: ActorRecord) -> Row:
    return (*_actor_progress(actor), actor.actor_id)


def _actor_progress(actor: ActorRecord) -> Row:
    return (
        actor.state.value,
        actor.worker_id,
        actor.incarnation,
        actor.restarts,
        _failure(actor.error),
    )


def actor_from_row(row: Row) -> ActorRecord:
    (
        actor_id,
        name,
        class_name,
        cls,
        args,
        object_ids,
        max_restarts,
        owner,
        detached,
        created_at,
        need,
        state,
        worker_id,
        incarnation,
        restarts,
        error,
    ) = row
    spec = ActorSpec(
        cls=cls or b"",
        args=args or b"",
        actor_id=actor_id,
        name=name,
        class_name=class_name,
        object_ids=tuple(json.loads(object_ids)),
        max_restarts=max_restarts,
        owner=owner,
        detached=bool(detached),
        need=_need_back(need),
    )
    return ActorRecord(
        spec=spec,
        created_at=created_at,
        state=ActorState(state),
        worker_id=worker_id,
        incarnation=incarnation,
        restarts=restarts,
        error=_failure_back(error),
    )
