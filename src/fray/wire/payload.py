"""What travels inside a task: pickled calls, object refs and errors, in both directions."""

from __future__ import annotations

import io
import pickle
import types
import weakref
from collections import ChainMap
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import cloudpickle
import cloudpickle.cloudpickle as _cloudpickle_impl

from fray import errors
from fray.common import remote_errors
from fray.wire.pb import controller_pb2 as pb

PROTOCOL = 5


@dataclass(frozen=True)
class ObjectRef:
    """A handle to an object stored once by `FrayContext.put`.

    A small object lives in the controller; a large one (pickled, over
    `FRAY_OBJECT_INLINE_BYTES`) in a file of the process that put it, which workers map or
    fetch (`fray.wire.objects`). Pass it to `run` (as a top-level argument it arrives in the
    function as the object itself) or `get` it back. `size_bytes`: its stored size.
    """

    object_id: str
    size_bytes: int = 0


def _code_reduce(code: types.CodeType) -> tuple[Any, tuple[Any, ...]]:
    """cloudpickle's reduction of a code object, with its real file name in place of the
    "<dynamic-code>" cloudpickle (>= 3) writes: remote tracebacks of functions and classes
    defined in `__main__` (pickled by value) then name the user's file (line numbers are kept
    by cloudpickle either way)."""
    constructor, args = _cloudpickle_impl._code_reduce(code)
    return constructor, tuple(
        code.co_filename if isinstance(a, str) and a == "<dynamic-code>" else a for a in args
    )


class _Pickler(cloudpickle.Pickler):
    """cloudpickle's pickler, keeping code objects' file names (`_code_reduce`)."""

    dispatch_table = ChainMap({types.CodeType: _code_reduce}, cloudpickle.Pickler.dispatch_table)


def cloudpickle_dumps(obj: Any, buffer_callback: Callable[[Any], Any] | None = None) -> bytes:
    """`cloudpickle.dumps(obj, protocol=PROTOCOL)`, keeping code objects' file names.
    With `buffer_callback`, buffers that can go out of band (numpy arrays) are handed to it
    instead of being copied into the pickle."""
    with io.BytesIO() as file:
        _Pickler(file, protocol=PROTOCOL, buffer_callback=buffer_callback).dump(obj)
        return file.getvalue()


# Values made only of these (and tuples, lists and dicts of them) pickle the same with plain
# `pickle` as with cloudpickle, at a fraction of the cost (cloudpickle sets up a Pickler per
# call: ~2 µs against ~0.3 µs for small arguments, on every task and result).
_PLAIN_TYPES = frozenset({type(None), bool, int, float, complex, str, bytes})
_PLAIN_CONTAINERS = frozenset({tuple, list, dict})
_PLAIN_MAX_ITEMS = 128  # larger containers are not worth checking item by item


def plain_dumps(obj: Any) -> bytes | None:
    """`obj` pickled with plain `pickle` if it is made of builtin scalars, tuples, lists and
    dicts only (and small); else None (pickle it with cloudpickle)."""
    budget = [_PLAIN_MAX_ITEMS]
    if not _plain(obj, budget):
        return None
    return pickle.dumps(obj, protocol=PROTOCOL)


def _plain(obj: Any, budget: list[int]) -> bool:
    kind = type(obj)
    if kind in _PLAIN_TYPES:
        return True
    if kind not in _PLAIN_CONTAINERS:
        return False
    budget[0] -= len(obj)
    if budget[0] < 0:
        return False
    for item in obj.items() if kind is dict else obj:  # noqa: SIM110 (a loop beats all(genexpr))
        if not _plain(item, budget):  # (a dict's items are (key, value) tuples)
            return False
    return True


def dumps(obj: Any, what: str) -> bytes:
    """cloudpickle `obj`, or raise SerializationError naming `what`."""
    try:
        return cloudpickle_dumps(obj)
    except Exception as exc:
        raise errors.SerializationError(f"cannot pickle {what}: {short_repr(obj)}: {exc}") from exc


def short_repr(obj: Any) -> str:
    """`repr(obj)` cut to 120 characters (its type when repr fails), for error messages."""
    try:
        text = repr(obj)
    except Exception:
        text = f"<{type(obj).__qualname__}>"
    return text if len(text) <= 120 else text[:117] + "..."


def describe(fn: Callable[..., Any]) -> str:
    module = getattr(fn, "__module__", None) or ""
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{module}.{name}" if module else name


# A plain function is pickled once per function object, as Ray exports a remote function once.
# Other callables (partials, instances) can change between calls: they are pickled every time.
_function_cache: weakref.WeakKeyDictionary[Any, bytes] = weakref.WeakKeyDictionary()


def dumps_function(fn: Callable[..., Any]) -> bytes:
    if not isinstance(fn, types.FunctionType):
        return dumps(fn, f"function {describe(fn)}")
    data = _function_cache.get(fn)
    if data is None:
        data = _function_cache[fn] = dumps(fn, f"function {describe(fn)}")
    return data


def dumps_arguments(
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    name: str,
    buffer_callback: Callable[[Any], Any] | None = None,
) -> bytes:
    """Pickle a call's arguments; on failure, name the argument that does not pickle.
    `buffer_callback`: as in `cloudpickle_dumps` (out-of-band buffers are not in the bytes)."""
    call = (args, dict(kwargs))
    plain = plain_dumps(call)
    if plain is not None:
        return plain
    try:
        return cloudpickle_dumps(call, buffer_callback)
    except Exception:
        pass
    for i, arg in enumerate(args):
        dumps(arg, f"argument {i} of {name}")
    for key, value in kwargs.items():
        dumps(value, f"keyword argument {key!r} of {name}")
    return dumps((args, dict(kwargs)), f"the arguments of {name}")


def object_ids_of(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> list[str]:
    """The objects referenced by top-level arguments."""
    return [a.object_id for a in (*args, *kwargs.values()) if isinstance(a, ObjectRef)]


def resolve_refs(
    args: tuple[Any, ...], kwargs: dict[str, Any], objects: Mapping[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Replace top-level ObjectRef arguments by their objects."""

    def value(a: Any) -> Any:
        return objects[a.object_id] if isinstance(a, ObjectRef) else a

    return tuple(value(a) for a in args), {k: value(v) for k, v in kwargs.items()}


def loads(data: bytes) -> Any:
    return pickle.loads(data)


# ---------------------------------------------------------------------- errors


def error_from_exception(
    exc: BaseException, kind: pb.ErrorKind, worker_id: str, message: str = ""
) -> pb.TaskError:
    """Describe an exception for the wire: type, message, traceback and, if it pickles, itself
    (packed by :func:`fray.common.remote_errors.pack_exception`)."""
    packed = remote_errors.pack_exception(exc, protocol=PROTOCOL)
    return pb.TaskError(
        kind=kind,
        type=packed.type_name,
        message=message or packed.message,
        traceback=packed.traceback,
        pickled_exception=packed.pickled,
        worker_id=worker_id,
    )


def exception_from_error(error: pb.TaskError, task_id: str) -> BaseException:
    """The exception a future raises for a failed task."""
    where = f"task {task_id}" + (f" on worker {error.worker_id}" if error.worker_id else "")
    common = {"task_id": task_id, "worker_id": error.worker_id}
    if error.kind == pb.ERROR_KIND_USER:
        exc = remote_errors.unpack_exception(error.pickled_exception, error.traceback)
        if exc is not None:
            return exc
        return errors.RemoteTaskError(
            f"{where} raised {error.type}: {error.message}\n\nRemote traceback:\n{error.traceback}",
            type_name=error.type,
            remote_traceback=error.traceback,
            **common,
        )
    if error.kind == pb.ERROR_KIND_TIMEOUT:
        return errors.TaskTimeoutError(f"{where} timed out: {error.message}", **common)
    if error.kind == pb.ERROR_KIND_CANCELLED:
        return errors.TaskCancelledError(f"{where} was cancelled", **common)
    if error.kind == pb.ERROR_KIND_DESERIALIZATION:
        return errors.TaskDeserializationError(
            f"{where} could not be unpickled by the worker: {error.type}: {error.message}",
            **common,
        )
    return errors.TaskLostError(f"{where} was lost: {error.message}", **common)
