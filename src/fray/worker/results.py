"""Outcomes that the worker itself gives a task (rather than its executor).

A task's result goes to its direct caller or to the controller (`fray.worker.worker` routes it);
the pieces that end a task themselves (a cancel before it started, a dead executor, a timeout, a
slot that cannot run it) build the result here.
"""

from __future__ import annotations

from fray.wire.pb import controller_pb2 as pb

# Direct tasks run as attempt 0; leased tasks count attempts from 1, so the two never mix up
# even when a client requeued a task whose direct call here is still running.
DIRECT_ATTEMPT = 0


def failed(
    task: pb.LeasedTask, kind: pb.ErrorKind, type_name: str, message: str, worker_id: str
) -> pb.TaskResult:
    """The result of a task that ended with an error raised by the worker itself."""
    error = pb.TaskError(kind=kind, type=type_name, message=message, worker_id=worker_id)
    return pb.TaskResult(task_id=task.task_id, attempt=task.attempt, error=error)


def handed_back(task: pb.LeasedTask) -> pb.TaskResult:
    """The result of a task the worker gives back unrun (it is shutting down)."""
    return pb.TaskResult(task_id=task.task_id, attempt=task.attempt, handed_back=True)
