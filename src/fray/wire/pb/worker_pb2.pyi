from fray.wire.pb import controller_pb2 as _controller_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RunTaskRequest(_message.Message):
    __slots__ = ("task", "wait_ms", "object_locations")
    class ObjectLocationsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _controller_pb2.ObjectLocation
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_controller_pb2.ObjectLocation, _Mapping]] = ...) -> None: ...
    TASK_FIELD_NUMBER: _ClassVar[int]
    WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    OBJECT_LOCATIONS_FIELD_NUMBER: _ClassVar[int]
    task: _controller_pb2.TaskSpec
    wait_ms: int
    object_locations: _containers.MessageMap[str, _controller_pb2.ObjectLocation]
    def __init__(self, task: _Optional[_Union[_controller_pb2.TaskSpec, _Mapping]] = ..., wait_ms: _Optional[int] = ..., object_locations: _Optional[_Mapping[str, _controller_pb2.ObjectLocation]] = ...) -> None: ...

class RunTaskResponse(_message.Message):
    __slots__ = ("done", "result")
    DONE_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    done: bool
    result: _controller_pb2.TaskResult
    def __init__(self, done: _Optional[bool] = ..., result: _Optional[_Union[_controller_pb2.TaskResult, _Mapping]] = ...) -> None: ...

class WaitTaskRequest(_message.Message):
    __slots__ = ("task_id", "wait_ms")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    wait_ms: int
    def __init__(self, task_id: _Optional[str] = ..., wait_ms: _Optional[int] = ...) -> None: ...

class WaitTaskResponse(_message.Message):
    __slots__ = ("done", "result")
    DONE_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    done: bool
    result: _controller_pb2.TaskResult
    def __init__(self, done: _Optional[bool] = ..., result: _Optional[_Union[_controller_pb2.TaskResult, _Mapping]] = ...) -> None: ...

class CancelTaskRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class CancelTaskResponse(_message.Message):
    __slots__ = ("found",)
    FOUND_FIELD_NUMBER: _ClassVar[int]
    found: bool
    def __init__(self, found: _Optional[bool] = ...) -> None: ...

class ActorCall(_message.Message):
    __slots__ = ("method", "args", "object_ids")
    METHOD_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    OBJECT_IDS_FIELD_NUMBER: _ClassVar[int]
    method: str
    args: bytes
    object_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, method: _Optional[str] = ..., args: _Optional[bytes] = ..., object_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class CallActorRequest(_message.Message):
    __slots__ = ("actor_id", "incarnation", "calls", "batch_id", "wait_ms")
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    CALLS_FIELD_NUMBER: _ClassVar[int]
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    actor_id: str
    incarnation: int
    calls: _containers.RepeatedCompositeFieldContainer[ActorCall]
    batch_id: str
    wait_ms: int
    def __init__(self, actor_id: _Optional[str] = ..., incarnation: _Optional[int] = ..., calls: _Optional[_Iterable[_Union[ActorCall, _Mapping]]] = ..., batch_id: _Optional[str] = ..., wait_ms: _Optional[int] = ...) -> None: ...

class CallActorResponse(_message.Message):
    __slots__ = ("done", "results")
    DONE_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    done: bool
    results: _containers.RepeatedCompositeFieldContainer[_controller_pb2.TaskResult]
    def __init__(self, done: _Optional[bool] = ..., results: _Optional[_Iterable[_Union[_controller_pb2.TaskResult, _Mapping]]] = ...) -> None: ...

class WaitActorCallsRequest(_message.Message):
    __slots__ = ("batch_id", "wait_ms")
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    batch_id: str
    wait_ms: int
    def __init__(self, batch_id: _Optional[str] = ..., wait_ms: _Optional[int] = ...) -> None: ...

class WaitActorCallsResponse(_message.Message):
    __slots__ = ("done", "results")
    DONE_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    done: bool
    results: _containers.RepeatedCompositeFieldContainer[_controller_pb2.TaskResult]
    def __init__(self, done: _Optional[bool] = ..., results: _Optional[_Iterable[_Union[_controller_pb2.TaskResult, _Mapping]]] = ...) -> None: ...
