"""The controller's vocabulary: task and actor states, the records it keeps, and the errors a
request can cause.

Plain data, no rules. Which state may follow which is in `transitions`; when a record changes is
decided in `task_lifecycle` and `actor_lifecycle`; `convert` maps records to and from protobuf.
Records are named ``...Record`` to tell them from the protobuf messages (``pb.Task``,
``pb.Worker``) and from the worker process (``fray.worker.worker.Worker``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from fray.controller.placement import NOTHING, Need

# ---------------------------------------------------------------------- states


class TaskState(enum.Enum):
    PENDING = "PENDING"  # queued at the controller
    ASSIGNED = "ASSIGNED"  # leased to a worker, waiting in its local queue for a slot
    RUNNING = "RUNNING"  # a slot of its worker runs it
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def finished(self) -> bool:
        return self in _FINISHED

    @property
    def held(self) -> bool:
        """Leased to a worker (ASSIGNED or RUNNING): the worker has it."""
        return self in _HELD


_FINISHED = frozenset({TaskState.COMPLETED, TaskState.FAILED, TaskState.CANCELLED})
_HELD = frozenset({TaskState.ASSIGNED, TaskState.RUNNING})


class ActorState(enum.Enum):
    PENDING = "PENDING"
    CREATING = "CREATING"
    READY = "READY"
    RESTARTING = "RESTARTING"
    FAILED = "FAILED"
    DEAD = "DEAD"

    @property
    def live(self) -> bool:
        return self not in (ActorState.FAILED, ActorState.DEAD)


class ErrorKind(enum.Enum):
    USER = "USER"  # the function raised
    WORKER_LOST = "WORKER_LOST"  # worker or its executor died / went silent (infrastructure)
    TIMEOUT = "TIMEOUT"  # stopped after its execution timeout
    CANCELLED = "CANCELLED"
    DESERIALIZATION = "DESERIALIZATION"  # the worker could not unpickle the task


# ---------------------------------------------------------------------- request errors


class StateError(Exception):
    """Base of the errors a request can cause; the service maps each to a Connect code."""


class InvalidRequest(StateError):
    """Malformed input (Connect `invalid_argument`)."""


class NotFound(StateError):
    """Unknown task, worker, object or cursor (Connect `not_found`)."""


class AlreadyExists(StateError):
    """A task id that is already taken (Connect `already_exists`)."""


# ---------------------------------------------------------------------- tasks


@dataclass(slots=True)
class TaskFailure:
    """Why a task (or an actor) failed, as its worker or the controller saw it."""

    kind: ErrorKind
    type: str
    message: str
    traceback: str = ""
    pickled_exception: bytes = b""
    worker_id: str = ""


def cancelled_failure() -> TaskFailure:
    """The failure every cancelled task ends with."""
    return TaskFailure(ErrorKind.CANCELLED, "TaskCancelledError", "cancelled")


@dataclass(slots=True)
class TaskSpec:
    """What a client submits."""

    function: bytes
    args: bytes
    task_id: str = ""
    name: str = ""
    object_ids: tuple[str, ...] = ()
    timeout_seconds: float = 0.0
    max_retries: int = 0
    owner: str = ""
    infra_failures: int = 0  # already had, on the direct path
    need: Need = NOTHING  # what it holds on its worker from lease to end (placement)


@dataclass(slots=True)
class TaskRecord:
    """The controller's record of one task: its spec, where it is in its life, and its end."""

    spec: TaskSpec
    submitted_at: float
    state: TaskState = TaskState.PENDING
    attempts: int = 0  # times leased
    user_failures: int = 0
    infra_failures: int = 0
    worker_id: str = ""
    started_at: float | None = None
    finished_at: float | None = None
    result: bytes | None = None
    error: TaskFailure | None = None
    cancel_requested: bool = False
    direct: bool = False  # ran through the direct path; recorded when finished
    saved_row: int = 0  # its row in the state database (0: not saved; see `journal`)

    @property
    def task_id(self) -> str:
        return self.spec.task_id


@dataclass(slots=True)
class TaskOutcome:
    """A worker's report for one task: exactly one of value, error or handed_back."""

    task_id: str
    attempt: int
    value: bytes | None = None
    error: TaskFailure | None = None
    handed_back: bool = False
    stored_object_id: str = ""  # the value stands for this large object (freed if not kept)
    run_seconds: float = 0.0  # how long it ran on its worker (0: not told)


@dataclass(slots=True)
class DirectTaskRecord:
    """A finished task that went straight from a client to a worker, as the worker reports it."""

    spec: TaskSpec  # without function and args
    state: TaskState
    started_at: float
    finished_at: float
    error: TaskFailure | None = None


# ---------------------------------------------------------------------- workers


@dataclass(slots=True)
class WorkerRecord:
    """The controller's record of one registered worker: its capacity, leases and orders."""

    worker_id: str
    address: str
    slots: int
    prefetch: int
    registered_at: float
    last_heartbeat: float
    cpus: float = 0.0
    memory_bytes: int = 0
    labels: dict[str, str] = field(default_factory=dict)
    # Every number it offers (cpus, memory, gpus, ...), and how much of each its current tasks,
    # actors and job replicas hold (see `placement`; `used` is derived, never saved).
    capacities: dict[str, float] = field(default_factory=dict)
    used: dict[str, float] = field(default_factory=dict)
    # Tasks leased to this worker, in lease order (a dict used as an ordered set).
    task_ids: dict[str, None] = field(default_factory=dict)
    pending_cancels: set[str] = field(default_factory=set)
    tasks_completed: int = 0
    tasks_failed: int = 0
    draining: bool = False  # shutting down: gets no more tasks
    actor_ids: dict[str, None] = field(default_factory=dict)  # actors placed here
    actor_starts: list[str] = field(default_factory=list)  # to send with the next lease
    actor_stops: list[str] = field(default_factory=list)
    direct_running: int = 0  # direct tasks running or about to, as of its last heartbeat
    runs_jobs: bool = False  # its leases list job replicas (reports_jobs): jobs go only there
    instance: str = ""  # the worker process's RegisterWorker nonce (not saved: a repeat across
    # a controller restart counts as a re-registration)


# ---------------------------------------------------------------------- actors


@dataclass(slots=True)
class ActorSpec:
    """What a client asks for in CreateActor."""

    cls: bytes
    args: bytes
    actor_id: str = ""
    name: str = ""
    class_name: str = ""
    object_ids: tuple[str, ...] = ()
    max_restarts: int = 0
    owner: str = ""
    detached: bool = False
    need: Need = NOTHING  # what it holds on its worker for its life (placement)


@dataclass(slots=True)
class ActorRecord:
    """The controller's record of one actor: its spec, state and current placement."""

    spec: ActorSpec
    created_at: float
    state: ActorState = ActorState.PENDING
    worker_id: str = ""
    incarnation: int = 0  # placements so far
    restarts: int = 0
    error: TaskFailure | None = None

    @property
    def actor_id(self) -> str:
        return self.spec.actor_id


# ---------------------------------------------------------------------- jobs


class JobState(enum.Enum):
    """A job's state, and each of its replicas' (see `transitions.JOB_TRANSITIONS`)."""

    PENDING = "PENDING"  # waiting until every replica can be placed at once
    RUNNING = "RUNNING"  # placed: starting (pid 0) or running
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    KILLED = "KILLED"

    @property
    def final(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.KILLED)


def replica_key(job_id: str, index: int) -> str:
    """How the wire names a replica: "JOB_ID/INDEX" (job ids hold no "/")."""
    return f"{job_id}/{index}"


@dataclass(slots=True)
class JobSpec:
    """What a client submits in SubmitJob (checked by `job_lifecycle`)."""

    name: str
    job_id: str = ""
    replicas: int = 1
    need: Need = NOTHING  # what each replica holds on its worker for its life
    entrypoint: bytes = b""  # cloudpickled (fn, args, kwargs)...
    command: tuple[str, ...] = ()  # ...or an argv
    env: dict[str, str] = field(default_factory=dict)
    working_dir: str = ""
    owner: str = ""


@dataclass(slots=True)
class ReplicaRecord:
    """One process of a job. `held`: its need is held on `worker_id` (from its placement until
    its worker reports its end or is lost); a final replica may still be held while the worker
    has not confirmed a stop."""

    index: int
    state: JobState = JobState.PENDING
    worker_id: str = ""
    pid: int = 0  # 0 until its worker reports the start
    exit_code: int = 0
    error: str = ""
    started_at: float | None = None
    finished_at: float | None = None
    held: bool = False


@dataclass(slots=True)
class JobRecord:
    """The controller's record of one job: its spec, state and replicas."""

    spec: JobSpec
    submitted_at: float
    replicas: list[ReplicaRecord] = field(default_factory=list)
    state: JobState = JobState.PENDING
    started_at: float | None = None
    finished_at: float | None = None
    error: str = ""  # the first failed replica's error
    seq: int = 0  # submission order (kept across restarts)

    @property
    def job_id(self) -> str:
        return self.spec.job_id


@dataclass(slots=True)
class ReplicaUpdate:
    """A worker's report on one replica (`ReportJobs`): started (RUNNING, pid), output, or its
    end (SUCCEEDED, FAILED, KILLED)."""

    job_id: str
    index: int
    state: JobState
    pid: int = 0
    exit_code: int = 0
    error: str = ""
    output: bytes = b""
    output_offset: int = 0
