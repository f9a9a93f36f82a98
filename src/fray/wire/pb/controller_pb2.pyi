import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TaskState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_STATE_UNSPECIFIED: _ClassVar[TaskState]
    TASK_STATE_PENDING: _ClassVar[TaskState]
    TASK_STATE_RUNNING: _ClassVar[TaskState]
    TASK_STATE_COMPLETED: _ClassVar[TaskState]
    TASK_STATE_FAILED: _ClassVar[TaskState]
    TASK_STATE_CANCELLED: _ClassVar[TaskState]
    TASK_STATE_ASSIGNED: _ClassVar[TaskState]

class ErrorKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ERROR_KIND_UNSPECIFIED: _ClassVar[ErrorKind]
    ERROR_KIND_USER: _ClassVar[ErrorKind]
    ERROR_KIND_WORKER_LOST: _ClassVar[ErrorKind]
    ERROR_KIND_TIMEOUT: _ClassVar[ErrorKind]
    ERROR_KIND_CANCELLED: _ClassVar[ErrorKind]
    ERROR_KIND_DESERIALIZATION: _ClassVar[ErrorKind]

class ActorState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACTOR_STATE_UNSPECIFIED: _ClassVar[ActorState]
    ACTOR_STATE_PENDING: _ClassVar[ActorState]
    ACTOR_STATE_CREATING: _ClassVar[ActorState]
    ACTOR_STATE_READY: _ClassVar[ActorState]
    ACTOR_STATE_RESTARTING: _ClassVar[ActorState]
    ACTOR_STATE_FAILED: _ClassVar[ActorState]
    ACTOR_STATE_DEAD: _ClassVar[ActorState]

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_PENDING: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_SUCCEEDED: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
    JOB_STATE_KILLED: _ClassVar[JobState]
TASK_STATE_UNSPECIFIED: TaskState
TASK_STATE_PENDING: TaskState
TASK_STATE_RUNNING: TaskState
TASK_STATE_COMPLETED: TaskState
TASK_STATE_FAILED: TaskState
TASK_STATE_CANCELLED: TaskState
TASK_STATE_ASSIGNED: TaskState
ERROR_KIND_UNSPECIFIED: ErrorKind
ERROR_KIND_USER: ErrorKind
ERROR_KIND_WORKER_LOST: ErrorKind
ERROR_KIND_TIMEOUT: ErrorKind
ERROR_KIND_CANCELLED: ErrorKind
ERROR_KIND_DESERIALIZATION: ErrorKind
ACTOR_STATE_UNSPECIFIED: ActorState
ACTOR_STATE_PENDING: ActorState
ACTOR_STATE_CREATING: ActorState
ACTOR_STATE_READY: ActorState
ACTOR_STATE_RESTARTING: ActorState
ACTOR_STATE_FAILED: ActorState
ACTOR_STATE_DEAD: ActorState
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_PENDING: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_SUCCEEDED: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_KILLED: JobState

class TaskError(_message.Message):
    __slots__ = ("kind", "type", "message", "traceback", "pickled_exception", "worker_id")
    KIND_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TRACEBACK_FIELD_NUMBER: _ClassVar[int]
    PICKLED_EXCEPTION_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    kind: ErrorKind
    type: str
    message: str
    traceback: str
    pickled_exception: bytes
    worker_id: str
    def __init__(self, kind: _Optional[_Union[ErrorKind, str]] = ..., type: _Optional[str] = ..., message: _Optional[str] = ..., traceback: _Optional[str] = ..., pickled_exception: _Optional[bytes] = ..., worker_id: _Optional[str] = ...) -> None: ...

class Requirements(_message.Message):
    __slots__ = ("resources", "labels")
    class ResourcesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    resources: _containers.ScalarMap[str, float]
    labels: _containers.ScalarMap[str, str]
    def __init__(self, resources: _Optional[_Mapping[str, float]] = ..., labels: _Optional[_Mapping[str, str]] = ...) -> None: ...

class TaskSpec(_message.Message):
    __slots__ = ("task_id", "function", "args", "object_ids", "name", "timeout_seconds", "max_retries", "owner", "infra_failures", "requirements")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    OBJECT_IDS_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MAX_RETRIES_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    INFRA_FAILURES_FIELD_NUMBER: _ClassVar[int]
    REQUIREMENTS_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    function: bytes
    args: bytes
    object_ids: _containers.RepeatedScalarFieldContainer[str]
    name: str
    timeout_seconds: float
    max_retries: int
    owner: str
    infra_failures: int
    requirements: Requirements
    def __init__(self, task_id: _Optional[str] = ..., function: _Optional[bytes] = ..., args: _Optional[bytes] = ..., object_ids: _Optional[_Iterable[str]] = ..., name: _Optional[str] = ..., timeout_seconds: _Optional[float] = ..., max_retries: _Optional[int] = ..., owner: _Optional[str] = ..., infra_failures: _Optional[int] = ..., requirements: _Optional[_Union[Requirements, _Mapping]] = ...) -> None: ...

class Task(_message.Message):
    __slots__ = ("task_id", "name", "state", "attempts", "worker_id", "submitted_at", "started_at", "finished_at", "error", "result", "cancel_requested", "timeout_seconds", "max_retries", "direct", "output", "requirements", "pending_reason")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    SUBMITTED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    CANCEL_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MAX_RETRIES_FIELD_NUMBER: _ClassVar[int]
    DIRECT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    REQUIREMENTS_FIELD_NUMBER: _ClassVar[int]
    PENDING_REASON_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    name: str
    state: TaskState
    attempts: int
    worker_id: str
    submitted_at: _timestamp_pb2.Timestamp
    started_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    error: TaskError
    result: bytes
    cancel_requested: bool
    timeout_seconds: float
    max_retries: int
    direct: bool
    output: TaskOutput
    requirements: Requirements
    pending_reason: str
    def __init__(self, task_id: _Optional[str] = ..., name: _Optional[str] = ..., state: _Optional[_Union[TaskState, str]] = ..., attempts: _Optional[int] = ..., worker_id: _Optional[str] = ..., submitted_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., error: _Optional[_Union[TaskError, _Mapping]] = ..., result: _Optional[bytes] = ..., cancel_requested: _Optional[bool] = ..., timeout_seconds: _Optional[float] = ..., max_retries: _Optional[int] = ..., direct: _Optional[bool] = ..., output: _Optional[_Union[TaskOutput, _Mapping]] = ..., requirements: _Optional[_Union[Requirements, _Mapping]] = ..., pending_reason: _Optional[str] = ...) -> None: ...

class SubmitTasksRequest(_message.Message):
    __slots__ = ("tasks",)
    TASKS_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[TaskSpec]
    def __init__(self, tasks: _Optional[_Iterable[_Union[TaskSpec, _Mapping]]] = ...) -> None: ...

class SubmitTasksResponse(_message.Message):
    __slots__ = ("task_ids", "controller_id")
    TASK_IDS_FIELD_NUMBER: _ClassVar[int]
    CONTROLLER_ID_FIELD_NUMBER: _ClassVar[int]
    task_ids: _containers.RepeatedScalarFieldContainer[str]
    controller_id: str
    def __init__(self, task_ids: _Optional[_Iterable[str]] = ..., controller_id: _Optional[str] = ...) -> None: ...

class GetTaskRequest(_message.Message):
    __slots__ = ("task_id", "include_result")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_RESULT_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    include_result: bool
    def __init__(self, task_id: _Optional[str] = ..., include_result: _Optional[bool] = ...) -> None: ...

class GetTaskResponse(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: Task
    def __init__(self, task: _Optional[_Union[Task, _Mapping]] = ...) -> None: ...

class WaitTasksRequest(_message.Message):
    __slots__ = ("task_ids", "min_finished", "wait_ms", "include_results")
    TASK_IDS_FIELD_NUMBER: _ClassVar[int]
    MIN_FINISHED_FIELD_NUMBER: _ClassVar[int]
    WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_RESULTS_FIELD_NUMBER: _ClassVar[int]
    task_ids: _containers.RepeatedScalarFieldContainer[str]
    min_finished: int
    wait_ms: int
    include_results: bool
    def __init__(self, task_ids: _Optional[_Iterable[str]] = ..., min_finished: _Optional[int] = ..., wait_ms: _Optional[int] = ..., include_results: _Optional[bool] = ...) -> None: ...

class WaitTasksResponse(_message.Message):
    __slots__ = ("finished", "pending_count")
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    PENDING_COUNT_FIELD_NUMBER: _ClassVar[int]
    finished: _containers.RepeatedCompositeFieldContainer[Task]
    pending_count: int
    def __init__(self, finished: _Optional[_Iterable[_Union[Task, _Mapping]]] = ..., pending_count: _Optional[int] = ...) -> None: ...

class WatchFinishedRequest(_message.Message):
    __slots__ = ("owner", "cursor", "wait_ms", "limit", "controller_id", "watch_output", "output_cursor", "brief")
    OWNER_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    CONTROLLER_ID_FIELD_NUMBER: _ClassVar[int]
    WATCH_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_CURSOR_FIELD_NUMBER: _ClassVar[int]
    BRIEF_FIELD_NUMBER: _ClassVar[int]
    owner: str
    cursor: int
    wait_ms: int
    limit: int
    controller_id: str
    watch_output: bool
    output_cursor: int
    brief: bool
    def __init__(self, owner: _Optional[str] = ..., cursor: _Optional[int] = ..., wait_ms: _Optional[int] = ..., limit: _Optional[int] = ..., controller_id: _Optional[str] = ..., watch_output: _Optional[bool] = ..., output_cursor: _Optional[int] = ..., brief: _Optional[bool] = ...) -> None: ...

class WatchFinishedResponse(_message.Message):
    __slots__ = ("finished", "next_cursor", "controller_id", "dropped", "output", "next_output_cursor")
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    NEXT_CURSOR_FIELD_NUMBER: _ClassVar[int]
    CONTROLLER_ID_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    NEXT_OUTPUT_CURSOR_FIELD_NUMBER: _ClassVar[int]
    finished: _containers.RepeatedCompositeFieldContainer[Task]
    next_cursor: int
    controller_id: str
    dropped: bool
    output: _containers.RepeatedCompositeFieldContainer[TaskOutputChunk]
    next_output_cursor: int
    def __init__(self, finished: _Optional[_Iterable[_Union[Task, _Mapping]]] = ..., next_cursor: _Optional[int] = ..., controller_id: _Optional[str] = ..., dropped: _Optional[bool] = ..., output: _Optional[_Iterable[_Union[TaskOutputChunk, _Mapping]]] = ..., next_output_cursor: _Optional[int] = ...) -> None: ...

class CancelTasksRequest(_message.Message):
    __slots__ = ("task_ids",)
    TASK_IDS_FIELD_NUMBER: _ClassVar[int]
    task_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, task_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class CancelTasksResponse(_message.Message):
    __slots__ = ("tasks",)
    TASKS_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[Task]
    def __init__(self, tasks: _Optional[_Iterable[_Union[Task, _Mapping]]] = ...) -> None: ...

class ListTasksRequest(_message.Message):
    __slots__ = ("state", "worker_id", "limit")
    STATE_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    state: TaskState
    worker_id: str
    limit: int
    def __init__(self, state: _Optional[_Union[TaskState, str]] = ..., worker_id: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class ListTasksResponse(_message.Message):
    __slots__ = ("tasks",)
    TASKS_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[Task]
    def __init__(self, tasks: _Optional[_Iterable[_Union[Task, _Mapping]]] = ...) -> None: ...

class ObjectLocation(_message.Message):
    __slots__ = ("size_bytes", "owner", "host", "path", "url", "pid", "pid_start")
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    PID_START_FIELD_NUMBER: _ClassVar[int]
    size_bytes: int
    owner: str
    host: str
    path: str
    url: str
    pid: int
    pid_start: int
    def __init__(self, size_bytes: _Optional[int] = ..., owner: _Optional[str] = ..., host: _Optional[str] = ..., path: _Optional[str] = ..., url: _Optional[str] = ..., pid: _Optional[int] = ..., pid_start: _Optional[int] = ...) -> None: ...

class PutObjectRequest(_message.Message):
    __slots__ = ("data", "object_id", "location")
    DATA_FIELD_NUMBER: _ClassVar[int]
    OBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    object_id: str
    location: ObjectLocation
    def __init__(self, data: _Optional[bytes] = ..., object_id: _Optional[str] = ..., location: _Optional[_Union[ObjectLocation, _Mapping]] = ...) -> None: ...

class PutObjectResponse(_message.Message):
    __slots__ = ("object_id", "size_bytes")
    OBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    object_id: str
    size_bytes: int
    def __init__(self, object_id: _Optional[str] = ..., size_bytes: _Optional[int] = ...) -> None: ...

class GetObjectRequest(_message.Message):
    __slots__ = ("object_id",)
    OBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    object_id: str
    def __init__(self, object_id: _Optional[str] = ...) -> None: ...

class GetObjectResponse(_message.Message):
    __slots__ = ("data", "location")
    DATA_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    location: ObjectLocation
    def __init__(self, data: _Optional[bytes] = ..., location: _Optional[_Union[ObjectLocation, _Mapping]] = ...) -> None: ...

class DeleteObjectsRequest(_message.Message):
    __slots__ = ("object_ids",)
    OBJECT_IDS_FIELD_NUMBER: _ClassVar[int]
    object_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, object_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class DeleteObjectsResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: int
    def __init__(self, deleted: _Optional[int] = ...) -> None: ...

class Resources(_message.Message):
    __slots__ = ("cpus", "memory_bytes", "labels", "capacities")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class CapacitiesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    CPUS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    CAPACITIES_FIELD_NUMBER: _ClassVar[int]
    cpus: float
    memory_bytes: int
    labels: _containers.ScalarMap[str, str]
    capacities: _containers.ScalarMap[str, float]
    def __init__(self, cpus: _Optional[float] = ..., memory_bytes: _Optional[int] = ..., labels: _Optional[_Mapping[str, str]] = ..., capacities: _Optional[_Mapping[str, float]] = ...) -> None: ...

class Worker(_message.Message):
    __slots__ = ("worker_id", "address", "resources", "slots", "registered_at", "last_heartbeat", "task_ids", "tasks_completed", "tasks_failed", "draining", "direct_running", "busy_slots", "free", "job_replicas")
    class FreeEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    TASK_IDS_FIELD_NUMBER: _ClassVar[int]
    TASKS_COMPLETED_FIELD_NUMBER: _ClassVar[int]
    TASKS_FAILED_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    DIRECT_RUNNING_FIELD_NUMBER: _ClassVar[int]
    BUSY_SLOTS_FIELD_NUMBER: _ClassVar[int]
    FREE_FIELD_NUMBER: _ClassVar[int]
    JOB_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    address: str
    resources: Resources
    slots: int
    registered_at: _timestamp_pb2.Timestamp
    last_heartbeat: _timestamp_pb2.Timestamp
    task_ids: _containers.RepeatedScalarFieldContainer[str]
    tasks_completed: int
    tasks_failed: int
    draining: bool
    direct_running: int
    busy_slots: int
    free: _containers.ScalarMap[str, float]
    job_replicas: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, worker_id: _Optional[str] = ..., address: _Optional[str] = ..., resources: _Optional[_Union[Resources, _Mapping]] = ..., slots: _Optional[int] = ..., registered_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_heartbeat: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., task_ids: _Optional[_Iterable[str]] = ..., tasks_completed: _Optional[int] = ..., tasks_failed: _Optional[int] = ..., draining: _Optional[bool] = ..., direct_running: _Optional[int] = ..., busy_slots: _Optional[int] = ..., free: _Optional[_Mapping[str, float]] = ..., job_replicas: _Optional[_Iterable[str]] = ...) -> None: ...

class RegisterWorkerRequest(_message.Message):
    __slots__ = ("worker_id", "address", "resources", "slots", "prefetch", "instance")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    PREFETCH_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    address: str
    resources: Resources
    slots: int
    prefetch: int
    instance: str
    def __init__(self, worker_id: _Optional[str] = ..., address: _Optional[str] = ..., resources: _Optional[_Union[Resources, _Mapping]] = ..., slots: _Optional[int] = ..., prefetch: _Optional[int] = ..., instance: _Optional[str] = ...) -> None: ...

class RegisterWorkerResponse(_message.Message):
    __slots__ = ("worker_id", "controller_id", "heartbeat_interval_ms", "heartbeat_timeout_ms")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    CONTROLLER_ID_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    controller_id: str
    heartbeat_interval_ms: int
    heartbeat_timeout_ms: int
    def __init__(self, worker_id: _Optional[str] = ..., controller_id: _Optional[str] = ..., heartbeat_interval_ms: _Optional[int] = ..., heartbeat_timeout_ms: _Optional[int] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("worker_id", "draining", "direct_running")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    DIRECT_RUNNING_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    draining: bool
    direct_running: int
    def __init__(self, worker_id: _Optional[str] = ..., draining: _Optional[bool] = ..., direct_running: _Optional[int] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ("cancel_task_ids",)
    CANCEL_TASK_IDS_FIELD_NUMBER: _ClassVar[int]
    cancel_task_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, cancel_task_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class UnregisterWorkerRequest(_message.Message):
    __slots__ = ("worker_id",)
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    def __init__(self, worker_id: _Optional[str] = ...) -> None: ...

class UnregisterWorkerResponse(_message.Message):
    __slots__ = ("requeued_task_ids",)
    REQUEUED_TASK_IDS_FIELD_NUMBER: _ClassVar[int]
    requeued_task_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, requeued_task_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class LeaseTasksRequest(_message.Message):
    __slots__ = ("worker_id", "wait_ms", "held_task_ids", "reports_held", "prefetch", "hosted_actors", "reports_actors", "cached_object_ids", "job_replicas", "reports_jobs", "reports_started")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    HELD_TASK_IDS_FIELD_NUMBER: _ClassVar[int]
    REPORTS_HELD_FIELD_NUMBER: _ClassVar[int]
    PREFETCH_FIELD_NUMBER: _ClassVar[int]
    HOSTED_ACTORS_FIELD_NUMBER: _ClassVar[int]
    REPORTS_ACTORS_FIELD_NUMBER: _ClassVar[int]
    CACHED_OBJECT_IDS_FIELD_NUMBER: _ClassVar[int]
    JOB_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    REPORTS_JOBS_FIELD_NUMBER: _ClassVar[int]
    REPORTS_STARTED_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    wait_ms: int
    held_task_ids: _containers.RepeatedScalarFieldContainer[str]
    reports_held: bool
    prefetch: int
    hosted_actors: _containers.RepeatedCompositeFieldContainer[ActorUpdate]
    reports_actors: bool
    cached_object_ids: _containers.RepeatedScalarFieldContainer[str]
    job_replicas: _containers.RepeatedScalarFieldContainer[str]
    reports_jobs: bool
    reports_started: bool
    def __init__(self, worker_id: _Optional[str] = ..., wait_ms: _Optional[int] = ..., held_task_ids: _Optional[_Iterable[str]] = ..., reports_held: _Optional[bool] = ..., prefetch: _Optional[int] = ..., hosted_actors: _Optional[_Iterable[_Union[ActorUpdate, _Mapping]]] = ..., reports_actors: _Optional[bool] = ..., cached_object_ids: _Optional[_Iterable[str]] = ..., job_replicas: _Optional[_Iterable[str]] = ..., reports_jobs: _Optional[bool] = ..., reports_started: _Optional[bool] = ...) -> None: ...

class LeasedTask(_message.Message):
    __slots__ = ("task_id", "attempt", "name", "function", "args", "object_ids", "timeout_seconds")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    OBJECT_IDS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    attempt: int
    name: str
    function: bytes
    args: bytes
    object_ids: _containers.RepeatedScalarFieldContainer[str]
    timeout_seconds: float
    def __init__(self, task_id: _Optional[str] = ..., attempt: _Optional[int] = ..., name: _Optional[str] = ..., function: _Optional[bytes] = ..., args: _Optional[bytes] = ..., object_ids: _Optional[_Iterable[str]] = ..., timeout_seconds: _Optional[float] = ...) -> None: ...

class LeaseTasksResponse(_message.Message):
    __slots__ = ("tasks", "cancel_task_ids", "start_actors", "stop_actor_ids", "freed_object_ids", "start_jobs", "stop_job_replicas")
    TASKS_FIELD_NUMBER: _ClassVar[int]
    CANCEL_TASK_IDS_FIELD_NUMBER: _ClassVar[int]
    START_ACTORS_FIELD_NUMBER: _ClassVar[int]
    STOP_ACTOR_IDS_FIELD_NUMBER: _ClassVar[int]
    FREED_OBJECT_IDS_FIELD_NUMBER: _ClassVar[int]
    START_JOBS_FIELD_NUMBER: _ClassVar[int]
    STOP_JOB_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[LeasedTask]
    cancel_task_ids: _containers.RepeatedScalarFieldContainer[str]
    start_actors: _containers.RepeatedCompositeFieldContainer[ActorSpec]
    stop_actor_ids: _containers.RepeatedScalarFieldContainer[str]
    freed_object_ids: _containers.RepeatedScalarFieldContainer[str]
    start_jobs: _containers.RepeatedCompositeFieldContainer[JobLaunch]
    stop_job_replicas: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, tasks: _Optional[_Iterable[_Union[LeasedTask, _Mapping]]] = ..., cancel_task_ids: _Optional[_Iterable[str]] = ..., start_actors: _Optional[_Iterable[_Union[ActorSpec, _Mapping]]] = ..., stop_actor_ids: _Optional[_Iterable[str]] = ..., freed_object_ids: _Optional[_Iterable[str]] = ..., start_jobs: _Optional[_Iterable[_Union[JobLaunch, _Mapping]]] = ..., stop_job_replicas: _Optional[_Iterable[str]] = ...) -> None: ...

class TaskResult(_message.Message):
    __slots__ = ("task_id", "attempt", "value", "error", "handed_back", "output", "stored_object_id", "run_seconds")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    HANDED_BACK_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    STORED_OBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    attempt: int
    value: bytes
    error: TaskError
    handed_back: bool
    output: TaskOutput
    stored_object_id: str
    run_seconds: float
    def __init__(self, task_id: _Optional[str] = ..., attempt: _Optional[int] = ..., value: _Optional[bytes] = ..., error: _Optional[_Union[TaskError, _Mapping]] = ..., handed_back: _Optional[bool] = ..., output: _Optional[_Union[TaskOutput, _Mapping]] = ..., stored_object_id: _Optional[str] = ..., run_seconds: _Optional[float] = ...) -> None: ...

class TaskOutput(_message.Message):
    __slots__ = ("text", "dropped_bytes", "pid", "worker_id")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    DROPPED_BYTES_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    text: str
    dropped_bytes: int
    pid: int
    worker_id: str
    def __init__(self, text: _Optional[str] = ..., dropped_bytes: _Optional[int] = ..., pid: _Optional[int] = ..., worker_id: _Optional[str] = ...) -> None: ...

class GetTaskLogsRequest(_message.Message):
    __slots__ = ("task_id", "wait_ms", "follow", "offset")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    wait_ms: int
    follow: bool
    offset: int
    def __init__(self, task_id: _Optional[str] = ..., wait_ms: _Optional[int] = ..., follow: _Optional[bool] = ..., offset: _Optional[int] = ...) -> None: ...

class GetTaskLogsResponse(_message.Message):
    __slots__ = ("finished", "output", "next_offset")
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    NEXT_OFFSET_FIELD_NUMBER: _ClassVar[int]
    finished: bool
    output: TaskOutput
    next_offset: int
    def __init__(self, finished: _Optional[bool] = ..., output: _Optional[_Union[TaskOutput, _Mapping]] = ..., next_offset: _Optional[int] = ...) -> None: ...

class TaskOutputChunk(_message.Message):
    __slots__ = ("task_id", "attempt", "offset", "text", "owner", "name", "pid", "worker_id")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    attempt: int
    offset: int
    text: str
    owner: str
    name: str
    pid: int
    worker_id: str
    def __init__(self, task_id: _Optional[str] = ..., attempt: _Optional[int] = ..., offset: _Optional[int] = ..., text: _Optional[str] = ..., owner: _Optional[str] = ..., name: _Optional[str] = ..., pid: _Optional[int] = ..., worker_id: _Optional[str] = ...) -> None: ...

class ReportResultsRequest(_message.Message):
    __slots__ = ("worker_id", "results", "direct_tasks", "started", "output_chunks")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    DIRECT_TASKS_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    results: _containers.RepeatedCompositeFieldContainer[TaskResult]
    direct_tasks: _containers.RepeatedCompositeFieldContainer[DirectTask]
    started: _containers.RepeatedCompositeFieldContainer[TaskStarted]
    output_chunks: _containers.RepeatedCompositeFieldContainer[TaskOutputChunk]
    def __init__(self, worker_id: _Optional[str] = ..., results: _Optional[_Iterable[_Union[TaskResult, _Mapping]]] = ..., direct_tasks: _Optional[_Iterable[_Union[DirectTask, _Mapping]]] = ..., started: _Optional[_Iterable[_Union[TaskStarted, _Mapping]]] = ..., output_chunks: _Optional[_Iterable[_Union[TaskOutputChunk, _Mapping]]] = ...) -> None: ...

class TaskStarted(_message.Message):
    __slots__ = ("task_id", "attempt", "running_for_ms")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FOR_MS_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    attempt: int
    running_for_ms: int
    def __init__(self, task_id: _Optional[str] = ..., attempt: _Optional[int] = ..., running_for_ms: _Optional[int] = ...) -> None: ...

class DirectTask(_message.Message):
    __slots__ = ("task_id", "name", "owner", "timeout_seconds", "started_at", "finished_at", "state", "error", "output")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    name: str
    owner: str
    timeout_seconds: float
    started_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    state: TaskState
    error: TaskError
    output: TaskOutput
    def __init__(self, task_id: _Optional[str] = ..., name: _Optional[str] = ..., owner: _Optional[str] = ..., timeout_seconds: _Optional[float] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., state: _Optional[_Union[TaskState, str]] = ..., error: _Optional[_Union[TaskError, _Mapping]] = ..., output: _Optional[_Union[TaskOutput, _Mapping]] = ...) -> None: ...

class ReportResultsResponse(_message.Message):
    __slots__ = ("accepted",)
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    def __init__(self, accepted: _Optional[int] = ...) -> None: ...

class ListWorkersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListWorkersResponse(_message.Message):
    __slots__ = ("workers",)
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    workers: _containers.RepeatedCompositeFieldContainer[Worker]
    def __init__(self, workers: _Optional[_Iterable[_Union[Worker, _Mapping]]] = ...) -> None: ...

class GetClusterSummaryRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetClusterSummaryResponse(_message.Message):
    __slots__ = ("queue_depth", "tasks_by_state", "workers", "total_slots", "busy_slots", "objects", "object_bytes", "controller_id", "active_clients", "unplaceable", "jobs_by_state")
    class TasksByStateEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class UnplaceableEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class JobsByStateEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    QUEUE_DEPTH_FIELD_NUMBER: _ClassVar[int]
    TASKS_BY_STATE_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SLOTS_FIELD_NUMBER: _ClassVar[int]
    BUSY_SLOTS_FIELD_NUMBER: _ClassVar[int]
    OBJECTS_FIELD_NUMBER: _ClassVar[int]
    OBJECT_BYTES_FIELD_NUMBER: _ClassVar[int]
    CONTROLLER_ID_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_CLIENTS_FIELD_NUMBER: _ClassVar[int]
    UNPLACEABLE_FIELD_NUMBER: _ClassVar[int]
    JOBS_BY_STATE_FIELD_NUMBER: _ClassVar[int]
    queue_depth: int
    tasks_by_state: _containers.ScalarMap[str, int]
    workers: int
    total_slots: int
    busy_slots: int
    objects: int
    object_bytes: int
    controller_id: str
    active_clients: int
    unplaceable: _containers.ScalarMap[str, int]
    jobs_by_state: _containers.ScalarMap[str, int]
    def __init__(self, queue_depth: _Optional[int] = ..., tasks_by_state: _Optional[_Mapping[str, int]] = ..., workers: _Optional[int] = ..., total_slots: _Optional[int] = ..., busy_slots: _Optional[int] = ..., objects: _Optional[int] = ..., object_bytes: _Optional[int] = ..., controller_id: _Optional[str] = ..., active_clients: _Optional[int] = ..., unplaceable: _Optional[_Mapping[str, int]] = ..., jobs_by_state: _Optional[_Mapping[str, int]] = ...) -> None: ...

class ActorSpec(_message.Message):
    __slots__ = ("actor_id", "name", "class_name", "cls", "args", "object_ids", "max_restarts", "owner", "detached", "incarnation", "requirements")
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    CLASS_NAME_FIELD_NUMBER: _ClassVar[int]
    CLS_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    OBJECT_IDS_FIELD_NUMBER: _ClassVar[int]
    MAX_RESTARTS_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    DETACHED_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    REQUIREMENTS_FIELD_NUMBER: _ClassVar[int]
    actor_id: str
    name: str
    class_name: str
    cls: bytes
    args: bytes
    object_ids: _containers.RepeatedScalarFieldContainer[str]
    max_restarts: int
    owner: str
    detached: bool
    incarnation: int
    requirements: Requirements
    def __init__(self, actor_id: _Optional[str] = ..., name: _Optional[str] = ..., class_name: _Optional[str] = ..., cls: _Optional[bytes] = ..., args: _Optional[bytes] = ..., object_ids: _Optional[_Iterable[str]] = ..., max_restarts: _Optional[int] = ..., owner: _Optional[str] = ..., detached: _Optional[bool] = ..., incarnation: _Optional[int] = ..., requirements: _Optional[_Union[Requirements, _Mapping]] = ...) -> None: ...

class Actor(_message.Message):
    __slots__ = ("actor_id", "name", "class_name", "state", "worker_id", "address", "incarnation", "restarts", "max_restarts", "created_at", "error", "detached", "owner", "requirements", "pending_reason")
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    CLASS_NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    RESTARTS_FIELD_NUMBER: _ClassVar[int]
    MAX_RESTARTS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    DETACHED_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    REQUIREMENTS_FIELD_NUMBER: _ClassVar[int]
    PENDING_REASON_FIELD_NUMBER: _ClassVar[int]
    actor_id: str
    name: str
    class_name: str
    state: ActorState
    worker_id: str
    address: str
    incarnation: int
    restarts: int
    max_restarts: int
    created_at: _timestamp_pb2.Timestamp
    error: TaskError
    detached: bool
    owner: str
    requirements: Requirements
    pending_reason: str
    def __init__(self, actor_id: _Optional[str] = ..., name: _Optional[str] = ..., class_name: _Optional[str] = ..., state: _Optional[_Union[ActorState, str]] = ..., worker_id: _Optional[str] = ..., address: _Optional[str] = ..., incarnation: _Optional[int] = ..., restarts: _Optional[int] = ..., max_restarts: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., error: _Optional[_Union[TaskError, _Mapping]] = ..., detached: _Optional[bool] = ..., owner: _Optional[str] = ..., requirements: _Optional[_Union[Requirements, _Mapping]] = ..., pending_reason: _Optional[str] = ...) -> None: ...

class CreateActorRequest(_message.Message):
    __slots__ = ("actor", "get_if_exists")
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    GET_IF_EXISTS_FIELD_NUMBER: _ClassVar[int]
    actor: ActorSpec
    get_if_exists: bool
    def __init__(self, actor: _Optional[_Union[ActorSpec, _Mapping]] = ..., get_if_exists: _Optional[bool] = ...) -> None: ...

class CreateActorResponse(_message.Message):
    __slots__ = ("actor", "existed")
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    EXISTED_FIELD_NUMBER: _ClassVar[int]
    actor: Actor
    existed: bool
    def __init__(self, actor: _Optional[_Union[Actor, _Mapping]] = ..., existed: _Optional[bool] = ...) -> None: ...

class GetActorRequest(_message.Message):
    __slots__ = ("actor_id", "name", "wait_ms", "min_incarnation")
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    MIN_INCARNATION_FIELD_NUMBER: _ClassVar[int]
    actor_id: str
    name: str
    wait_ms: int
    min_incarnation: int
    def __init__(self, actor_id: _Optional[str] = ..., name: _Optional[str] = ..., wait_ms: _Optional[int] = ..., min_incarnation: _Optional[int] = ...) -> None: ...

class GetActorResponse(_message.Message):
    __slots__ = ("actor",)
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    actor: Actor
    def __init__(self, actor: _Optional[_Union[Actor, _Mapping]] = ...) -> None: ...

class ListActorsRequest(_message.Message):
    __slots__ = ("state", "name_prefix")
    STATE_FIELD_NUMBER: _ClassVar[int]
    NAME_PREFIX_FIELD_NUMBER: _ClassVar[int]
    state: ActorState
    name_prefix: str
    def __init__(self, state: _Optional[_Union[ActorState, str]] = ..., name_prefix: _Optional[str] = ...) -> None: ...

class ListActorsResponse(_message.Message):
    __slots__ = ("actors",)
    ACTORS_FIELD_NUMBER: _ClassVar[int]
    actors: _containers.RepeatedCompositeFieldContainer[Actor]
    def __init__(self, actors: _Optional[_Iterable[_Union[Actor, _Mapping]]] = ...) -> None: ...

class KillActorRequest(_message.Message):
    __slots__ = ("actor_id",)
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    actor_id: str
    def __init__(self, actor_id: _Optional[str] = ...) -> None: ...

class KillActorResponse(_message.Message):
    __slots__ = ("actor",)
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    actor: Actor
    def __init__(self, actor: _Optional[_Union[Actor, _Mapping]] = ...) -> None: ...

class ActorUpdate(_message.Message):
    __slots__ = ("actor_id", "incarnation", "state", "error")
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    actor_id: str
    incarnation: int
    state: ActorState
    error: TaskError
    def __init__(self, actor_id: _Optional[str] = ..., incarnation: _Optional[int] = ..., state: _Optional[_Union[ActorState, str]] = ..., error: _Optional[_Union[TaskError, _Mapping]] = ...) -> None: ...

class ReportActorsRequest(_message.Message):
    __slots__ = ("worker_id", "updates")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    UPDATES_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    updates: _containers.RepeatedCompositeFieldContainer[ActorUpdate]
    def __init__(self, worker_id: _Optional[str] = ..., updates: _Optional[_Iterable[_Union[ActorUpdate, _Mapping]]] = ...) -> None: ...

class ReportActorsResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class JobSpec(_message.Message):
    __slots__ = ("job_id", "name", "replicas", "requirements", "entrypoint", "command", "env", "working_dir", "owner")
    class EnvEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    REQUIREMENTS_FIELD_NUMBER: _ClassVar[int]
    ENTRYPOINT_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    WORKING_DIR_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    name: str
    replicas: int
    requirements: Requirements
    entrypoint: bytes
    command: _containers.RepeatedScalarFieldContainer[str]
    env: _containers.ScalarMap[str, str]
    working_dir: str
    owner: str
    def __init__(self, job_id: _Optional[str] = ..., name: _Optional[str] = ..., replicas: _Optional[int] = ..., requirements: _Optional[_Union[Requirements, _Mapping]] = ..., entrypoint: _Optional[bytes] = ..., command: _Optional[_Iterable[str]] = ..., env: _Optional[_Mapping[str, str]] = ..., working_dir: _Optional[str] = ..., owner: _Optional[str] = ...) -> None: ...

class JobReplica(_message.Message):
    __slots__ = ("index", "state", "worker_id", "pid", "exit_code", "error", "started_at", "finished_at")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    index: int
    state: JobState
    worker_id: str
    pid: int
    exit_code: int
    error: str
    started_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    def __init__(self, index: _Optional[int] = ..., state: _Optional[_Union[JobState, str]] = ..., worker_id: _Optional[str] = ..., pid: _Optional[int] = ..., exit_code: _Optional[int] = ..., error: _Optional[str] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("job_id", "name", "state", "replicas", "requirements", "replica_states", "submitted_at", "started_at", "finished_at", "error", "pending_reason", "owner", "command")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    REQUIREMENTS_FIELD_NUMBER: _ClassVar[int]
    REPLICA_STATES_FIELD_NUMBER: _ClassVar[int]
    SUBMITTED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    PENDING_REASON_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    name: str
    state: JobState
    replicas: int
    requirements: Requirements
    replica_states: _containers.RepeatedCompositeFieldContainer[JobReplica]
    submitted_at: _timestamp_pb2.Timestamp
    started_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    error: str
    pending_reason: str
    owner: str
    command: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, job_id: _Optional[str] = ..., name: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ..., replicas: _Optional[int] = ..., requirements: _Optional[_Union[Requirements, _Mapping]] = ..., replica_states: _Optional[_Iterable[_Union[JobReplica, _Mapping]]] = ..., submitted_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., error: _Optional[str] = ..., pending_reason: _Optional[str] = ..., owner: _Optional[str] = ..., command: _Optional[_Iterable[str]] = ...) -> None: ...

class SubmitJobRequest(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: JobSpec
    def __init__(self, job: _Optional[_Union[JobSpec, _Mapping]] = ...) -> None: ...

class SubmitJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("job_id", "wait_ms")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    wait_ms: int
    def __init__(self, job_id: _Optional[str] = ..., wait_ms: _Optional[int] = ...) -> None: ...

class GetJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("state",)
    STATE_FIELD_NUMBER: _ClassVar[int]
    state: JobState
    def __init__(self, state: _Optional[_Union[JobState, str]] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ...) -> None: ...

class StopJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class StopJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class GetJobLogsRequest(_message.Message):
    __slots__ = ("job_id", "replica", "offset", "wait_ms")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    replica: int
    offset: int
    wait_ms: int
    def __init__(self, job_id: _Optional[str] = ..., replica: _Optional[int] = ..., offset: _Optional[int] = ..., wait_ms: _Optional[int] = ...) -> None: ...

class GetJobLogsResponse(_message.Message):
    __slots__ = ("data", "next_offset", "finished", "dropped_bytes")
    DATA_FIELD_NUMBER: _ClassVar[int]
    NEXT_OFFSET_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    DROPPED_BYTES_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    next_offset: int
    finished: bool
    dropped_bytes: int
    def __init__(self, data: _Optional[bytes] = ..., next_offset: _Optional[int] = ..., finished: _Optional[bool] = ..., dropped_bytes: _Optional[int] = ...) -> None: ...

class JobLaunch(_message.Message):
    __slots__ = ("job_id", "index", "replicas", "entrypoint", "command", "env", "working_dir")
    class EnvEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    ENTRYPOINT_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    WORKING_DIR_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    index: int
    replicas: int
    entrypoint: bytes
    command: _containers.RepeatedScalarFieldContainer[str]
    env: _containers.ScalarMap[str, str]
    working_dir: str
    def __init__(self, job_id: _Optional[str] = ..., index: _Optional[int] = ..., replicas: _Optional[int] = ..., entrypoint: _Optional[bytes] = ..., command: _Optional[_Iterable[str]] = ..., env: _Optional[_Mapping[str, str]] = ..., working_dir: _Optional[str] = ...) -> None: ...

class JobReplicaUpdate(_message.Message):
    __slots__ = ("job_id", "index", "state", "pid", "exit_code", "error", "output", "output_offset")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_OFFSET_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    index: int
    state: JobState
    pid: int
    exit_code: int
    error: str
    output: bytes
    output_offset: int
    def __init__(self, job_id: _Optional[str] = ..., index: _Optional[int] = ..., state: _Optional[_Union[JobState, str]] = ..., pid: _Optional[int] = ..., exit_code: _Optional[int] = ..., error: _Optional[str] = ..., output: _Optional[bytes] = ..., output_offset: _Optional[int] = ...) -> None: ...

class ReportJobsRequest(_message.Message):
    __slots__ = ("worker_id", "updates")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    UPDATES_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    updates: _containers.RepeatedCompositeFieldContainer[JobReplicaUpdate]
    def __init__(self, worker_id: _Optional[str] = ..., updates: _Optional[_Iterable[_Union[JobReplicaUpdate, _Mapping]]] = ...) -> None: ...

class ReportJobsResponse(_message.Message):
    __slots__ = ("stop_job_replicas",)
    STOP_JOB_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    stop_job_replicas: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, stop_job_replicas: _Optional[_Iterable[str]] = ...) -> None: ...
