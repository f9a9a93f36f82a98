"""The exceptions fray raises to its users, for every API: ``fray.job``, ``fray.v2`` and the
RPC client.

Every error a future can end with is a `TaskError` naming the task (and, where one was involved,
the worker), except a user exception that could be unpickled on the client: that one is re-raised
with its original type, its remote traceback attached as `__cause__` (a `RemoteTraceback`; see
`fray.common.remote_errors`). fray.v2's own errors (`JobFailedError`, `UnknownJobError`,
`NoActorError`) are here too, and are also importable from `fray.v2`.
"""

from __future__ import annotations

import concurrent.futures

__all__ = [
    "ActorCreationError",
    "ActorDiedError",
    "ActorError",
    "ControllerError",
    "ControllerUnavailableError",
    "FrayError",
    "JobFailedError",
    "NoActorError",
    "ObjectLostError",
    "RemoteTaskError",
    "RemoteTraceback",
    "SerializationError",
    "TaskCancelledError",
    "TaskDeserializationError",
    "TaskError",
    "TaskLostError",
    "TaskTimeoutError",
    "UnknownJobError",
]


class FrayError(Exception):
    """Base class of fray's own errors."""


class SerializationError(FrayError, TypeError):
    """A function, argument or object could not be pickled (raised at submit time)."""


class ControllerUnavailableError(FrayError, ConnectionError):
    """The controller could not be reached within the retry budget."""


class ControllerError(FrayError):
    """The controller refused a request; `code` is the Connect code (e.g. "unauthenticated")."""

    def __init__(self, message: str, *, code: str = "") -> None:
        super().__init__(message)
        self.code = code


class ObjectLostError(FrayError, LookupError):
    """An object's bytes cannot be read any more: it was freed, or the process that held it
    (its owner) went away. `object_id` names it."""

    def __init__(self, message: str, *, object_id: str = "") -> None:
        super().__init__(message)
        self.object_id = object_id


class RemoteTraceback(Exception):
    """Carries a remote traceback's text; attached as `__cause__` of re-raised task errors.

    Printed between triple quotes, so the remote part stands out in the local traceback.
    """

    def __init__(self, traceback_text: str) -> None:
        super().__init__(traceback_text)
        self.traceback_text = traceback_text

    def __str__(self) -> str:
        text = self.traceback_text
        if not text.endswith("\n"):
            text += "\n"
        return f'\n\n"""\n{text}"""'


class TaskError(FrayError):
    """A task ended without a result."""

    def __init__(self, message: str, *, task_id: str = "", worker_id: str = "") -> None:
        super().__init__(message)
        self.task_id = task_id
        self.worker_id = worker_id


class RemoteTaskError(TaskError):
    """The task raised an exception that could not be re-created on the client."""

    def __init__(
        self,
        message: str,
        *,
        type_name: str = "",
        remote_traceback: str = "",
        task_id: str = "",
        worker_id: str = "",
    ) -> None:
        super().__init__(message, task_id=task_id, worker_id=worker_id)
        self.type_name = type_name
        self.remote_traceback = remote_traceback


class TaskLostError(TaskError):
    """The task's worker died or went silent more often than the retry budget allows, or the
    controller lost the task (it restarted)."""


class TaskTimeoutError(TaskError, TimeoutError):
    """The task ran past its execution timeout and was stopped."""


class TaskCancelledError(TaskError, concurrent.futures.CancelledError):
    """The task was cancelled."""


class TaskDeserializationError(TaskError):
    """The worker could not unpickle the task (e.g. a module missing on the worker)."""


class ActorError(FrayError):
    """An actor could not take a call. `actor_id` names it (the backend's id, when it has one)."""

    def __init__(self, message: str, *, actor_id: str = "") -> None:
        super().__init__(message)
        self.actor_id = actor_id


class ActorCreationError(ActorError):
    """The actor's constructor raised: every call on it fails with this error, whose
    `__cause__` is the constructor's exception (or its remote traceback)."""


class ActorDiedError(ActorError):
    """The actor is gone: killed, or its process or worker died. A call that was in flight
    may or may not have run (actor calls run at most once); `call_sent` is False when the
    actor was known dead before the call was sent (so it surely did not run)."""

    def __init__(self, message: str, *, actor_id: str = "", call_sent: bool = True) -> None:
        super().__init__(message, actor_id=actor_id)
        self.call_sent = call_sent


# ---------------------------------------------------------------------- fray.v2


class JobFailedError(FrayError, RuntimeError):
    """A fray.v2 job failed; `error` holds its traceback (or how its process ended)."""

    def __init__(self, job_id: str, status: str, error: str) -> None:
        last = error.strip().splitlines()[-1] if error.strip() else "no error text"
        super().__init__(f"job {job_id} {status}: {last}\n\n{error}")
        self.job_id = job_id
        self.status = status
        self.error = error


class UnknownJobError(FrayError, KeyError):
    """`terminate` (or a lookup) named a job the fray.v2 cluster does not know (local and Ray:
    not submitted through that cluster object; fray: not known to the controller)."""

    def __init__(self, job_id: str) -> None:
        super().__init__(job_id)
        self.job_id = job_id

    def __str__(self) -> str:
        return f"no job {self.job_id!r} in this cluster"


class NoActorError(FrayError, LookupError):
    """No fray.v2 actor holds the name a call or `wait_any` needed."""
