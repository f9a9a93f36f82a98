"""The executor: a child process of a worker that runs one task at a time.

Tasks run in a separate process so that a timeout or a cancellation can stop them for real (the
worker kills the executor and starts a new one) and a task that crashes its process (os._exit,
a segfault) cannot take the worker down.

Wire format over the pipe:
    worker -> executor: pickle of (function_bytes, args_bytes, [object_id, ...]) or, when some
                        objects are files, (function_bytes, args_bytes, [object_id, ...],
                        {object_id: ObjectFile}); then one raw message per listed object (its
                        pickled bytes, sent as they are); or a batch (`fray.worker.slots`):
                        a pickled list of (function_bytes, args_bytes, []), run in order and
                        answered one by one as below
    executor -> worker: zero or more pickles of ("out", offset, text_bytes) while the task runs
                        (live output, below), then one pickle of ("ok", result_bytes, output) |
                        ("stored", object_id_bytes, output) | ("error", TaskError bytes,
                        output), output being the last 64 KiB the task printed and the bytes
                        dropped before them (`fray.worker.capture`)

Large objects (`fray.wire.objects`) arrive as `ObjectFile` paths, mapped here with
`layout.load_file`; arguments pickled as a `StoredValue` are that object. A result whose
pickle exceeds `INLINE_MAX_BYTES` is written as a file into the directory the worker gave the
executor (`result_dir`), named by a fresh id, and answered as "stored": the worker adopts it.

Live output: while a task runs, what it prints is also sent as it comes, at most every
LIVE_INTERVAL: ("out", offset, text_bytes) is the UTF-8 text written since the previous "out",
`offset` being where it starts in everything the task printed (when more than 64 KiB came in
between, the kept part is sent and the gap is what was dropped). The first write after a send
wakes a thread of the executor (`_LiveOutput`), which waits LIVE_INTERVAL and sends what is new;
a silent task costs it nothing, and a task ending within LIVE_INTERVAL of its first print sends
no "out" (its output goes with its reply only). "out" and the final reply are sent under one
lock, the reply last: no "out" of a task follows its reply. The final reply still carries the
task's output (the last 64 KiB), whether or not parts of it went live.
Actor calls (`actor_main`, batches of calls) send their output with their outcomes only.

An actor process (`actor_main`) is the same kind of child, hosting one actor instance:
    worker -> actor: pickle of (class_bytes, args_bytes, {object_id: bytes | ObjectFile})
                     once, then pickles of [(method, args_bytes, {object_id: bytes |
                     ObjectFile}), ...] (a batch)
    actor -> worker: pickle of ("ok", b"") | ("error", TaskError bytes) for the constructor
                     (its output is not captured), then one list of outcomes (as above, with
                     each call's output) per batch
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import pickle
import select
import signal
import sys
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import cloudpickle

from fray.common.remote_errors import qualified_type
from fray.common.watchdog import exit_when_gone
from fray.errors import ObjectLostError
from fray.wire import payload
from fray.wire.objects import layout, memory
from fray.wire.pb import controller_pb2 as pb
from fray.worker import capture

_FUNCTION_CACHE_SIZE = 256
# Larger pickled functions (closures over big data) are not cached: the cache must not keep
# the data after the task.
_FUNCTION_CACHE_MAX_BYTES = 1 << 20
# While a task runs, what it printed is sent to the worker at most this often (seconds).
LIVE_INTERVAL = 0.5


class _FunctionCache:
    """Unpickled functions by their pickled bytes (a task's function usually repeats)."""

    def __init__(self) -> None:
        self._cache: OrderedDict[bytes, Any] = OrderedDict()

    def load(self, data: bytes) -> Any:
        fn = self._cache.get(data)
        if fn is None:
            fn = pickle.loads(data)
            if len(data) <= _FUNCTION_CACHE_MAX_BYTES:
                self._cache[data] = fn
                if len(self._cache) > _FUNCTION_CACHE_SIZE:
                    self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(data)
        return fn


Outcome = tuple[str, bytes, capture.Output]


@dataclass(frozen=True)
class ObjectFile:
    """A large object's file on this host, sent to an executor in place of its bytes."""

    path: str


# An object for a task: its pickled bytes, or its file.
ObjectData = bytes | ObjectFile
Objects = Mapping[str, ObjectData]

# Where this process writes large results (set by `main`/`actor_main`; None: sent inline).
_result_dir: str | None = None


class _LiveOutput:
    """Sends what the running task prints to the worker while it runs, at most every
    LIVE_INTERVAL (see the module docstring). One per executor process; its thread starts at
    the first print and sleeps while nothing is printed. `lock` guards the connection's
    sending side: the final reply is sent under it too (`answer`)."""

    def __init__(self, conn: multiprocessing.connection.Connection) -> None:
        self._conn = conn
        self.lock = threading.Lock()
        self._buffer: capture.TaskBuffer | None = None  # the running task's
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._notify = self._printed  # made once, not per task
        self._buffer_lock = threading.Lock()  # the tasks' buffers' (one task at a time)

    def start_task(self) -> capture.TaskBuffer:
        """A buffer for the task about to run, whose output goes live."""
        buffer = capture.TaskBuffer(self._notify, self._buffer_lock)
        self._buffer = buffer
        return buffer

    def _printed(self) -> None:
        """The running task printed after a send (or for the first time): send within
        LIVE_INTERVAL. Called under the buffer's lock."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="fray-live", daemon=True)
            self._thread.start()
        self._wake.set()

    def _loop(self) -> None:
        while True:
            self._wake.wait()
            time.sleep(LIVE_INTERVAL)  # gather what comes in the meantime
            self._wake.clear()  # before the take: a write after it sets it again
            with self.lock:
                buffer = self._buffer
                new = buffer.take_new() if buffer is not None else None
                if new is None:
                    continue
                offset, data = new
                try:
                    message = pickle.dumps(("out", offset, data), protocol=payload.PROTOCOL)
                    self._conn.send_bytes(message)
                except OSError:  # the worker is gone; the main thread will notice
                    self._buffer = None

    def answer(self, outcome: Outcome) -> bool:
        """Send the task's reply (after any "out" of it); no more "out" until the next task."""
        with self.lock:
            self._buffer = None
            return _answer(self._conn, outcome)


def run_one(
    functions: _FunctionCache,
    function: bytes,
    args: bytes,
    objects: Objects,
    live: _LiveOutput | None = None,
) -> Outcome:
    """Unpickle and run one task (its output going live through `live`, if given); never
    raises."""
    buffer = live.start_task() if live is not None else capture.TaskBuffer()
    return _run(lambda: functions.load(function), args, objects, buffer)


def _run(
    find: Callable[[], Callable[..., Any]],
    args: bytes,
    objects: Objects,
    buffer: capture.TaskBuffer | None = None,
) -> Outcome:
    """Call what `find` gives with the unpickled arguments, capturing what it prints (into
    `buffer`, or a new one): ("ok", pickled value, output) or ("error", pickled TaskError,
    output); never raises."""
    with capture.captured(buffer) as buffer:
        status, data = _call(find, args, objects)
    return status, data, buffer.output()


def _call(
    find: Callable[[], Callable[..., Any]], args: bytes, objects: Objects
) -> tuple[str, bytes]:
    """The call itself: ("ok", pickled value), ("stored", object id) or ("error", pickled
    TaskError)."""
    try:
        fn = find()
        call_args, call_kwargs = _arguments(args, objects)
    except BaseException as exc:
        return "error", _error(exc, pb.ERROR_KIND_DESERIALIZATION)
    try:
        value = fn(*call_args, **call_kwargs)
    except BaseException as exc:
        if exc.__traceback__ is not None and exc.__traceback__.tb_next is not None:
            exc.__traceback__ = exc.__traceback__.tb_next  # start at the user's code, not here
        return "error", _error(exc, pb.ERROR_KIND_USER)
    try:
        return _result(value)
    except BaseException as exc:
        message = f"the return value ({type(value).__qualname__}) could not be pickled: {exc}"
        return "error", _error(exc, pb.ERROR_KIND_USER, message)


def _result(value: Any) -> tuple[str, bytes]:
    """("ok", pickled value), or ("stored", object id) for a value too large to go inline."""
    big_bytes = isinstance(value, bytes | bytearray) and len(value) > layout.INLINE_MAX_BYTES
    if not big_bytes:  # (a large bytes value would be copied into this pickle for nothing)
        plain = payload.plain_dumps(value)
        if plain is not None and len(plain) <= layout.INLINE_MAX_BYTES:
            return "ok", plain
        buffers: list[pickle.PickleBuffer] = []
        data = cloudpickle.dumps(value, protocol=payload.PROTOCOL, buffer_callback=buffers.append)
        if not buffers and len(data) <= layout.INLINE_MAX_BYTES:  # the common case: small
            return "ok", data
        del data
    encoded = layout.encode(value, "the return value")
    if _result_dir is None or encoded.data_bytes <= layout.INLINE_MAX_BYTES:
        return "ok", layout.inline_bytes(encoded)
    object_id = uuid.uuid4().hex
    path = os.path.join(_result_dir, object_id)
    try:
        layout.write_file(path, encoded)  # removes what it wrote if it fails
    except OSError:  # no room (or no directory): inline, as small results go
        return "ok", layout.inline_bytes(encoded)
    return "stored", object_id.encode()


def load_object(data: ObjectData) -> Any:
    """An object's value, from its pickled bytes or (mapped) from its file."""
    if isinstance(data, ObjectFile):
        try:
            return layout.load_file(data.path)
        except FileNotFoundError:
            message = f"object file {data.path} is gone (freed, or its owner went away)"
            raise ObjectLostError(message) from None
    return pickle.loads(data)


def _arguments(args: bytes, objects: Objects) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The call's (args, kwargs), with stored objects in place of their refs (and in place of
    the arguments themselves, when they were stored as an object)."""
    values = {object_id: load_object(data) for object_id, data in objects.items()}
    call = pickle.loads(args)
    if isinstance(call, layout.StoredValue):
        if call.object_id not in values:
            raise LookupError(f"the arguments' object {call.object_id} was not fetched")
        call = values[call.object_id]
    call_args, call_kwargs = call
    if not values:  # no objects: no refs to replace
        return call_args, call_kwargs
    return payload.resolve_refs(call_args, call_kwargs, values)


def _error(exc: BaseException, kind: pb.ErrorKind, message: str = "") -> bytes:
    try:
        return payload.error_from_exception(exc, kind, "", message).SerializeToString()
    except Exception:  # last resort: the executor must survive any exception
        fallback = pb.TaskError(kind=kind, type=qualified_type(exc), message="<unprintable>")
        return fallback.SerializeToString()


def main(
    conn: multiprocessing.connection.Connection, worker_pid: int, result_dir: str | None = None
) -> None:
    """Serve tasks from the worker until the pipe closes; large results go to `result_dir`."""
    global _result_dir
    _result_dir = result_dir
    memory.keep_freed_from_env()  # large objects read again and again: no fresh pages each time
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the worker's to handle
    # Exit within a second of the worker's death, even in the middle of a long call (the pipe
    # closing is noticed only between calls, and a SIGKILLed worker cannot stop us).
    exit_when_gone(worker_pid, interval=1.0)
    capture.install_logging()
    functions = _FunctionCache()
    live = _LiveOutput(conn)
    while _serve_task(conn, functions, live):
        pass


def _serve_task(
    conn: multiprocessing.connection.Connection, functions: _FunctionCache, live: _LiveOutput
) -> bool:
    """Receive, run and answer one task; False once the pipe is closed. Its arguments, objects
    and result are let go when this returns, not kept until the next task arrives."""
    try:
        message = _receive(conn)
    except (EOFError, OSError):
        return False
    header = pickle.loads(message)
    if isinstance(header, list):  # a batch: (function, args, []) each, answered one by one
        for function, args, _ in header:
            outcome = run_one(functions, function, args, {}, live)
            sys.stdout.flush()
            sys.stderr.flush()
            if not live.answer(outcome):
                return False
        return True
    function, args, object_ids = header[:3]
    try:
        objects: dict[str, ObjectData] = {oid: conn.recv_bytes() for oid in object_ids}
    except (EOFError, OSError):
        return False
    if len(header) > 3:  # objects that are files
        objects.update(header[3])
    outcome = run_one(functions, function, args, objects, live)
    sys.stdout.flush()
    sys.stderr.flush()
    return live.answer(outcome)


def _receive(conn: multiprocessing.connection.Connection) -> bytes:
    """The worker's next message. Freed memory kept for the next large object
    (`memory.keep_freed`) is given back once no message has come for
    `memory.IDLE_GIVE_BACK_SECONDS`: an idle executor holds no more than it uses."""
    if memory.keeps_freed():  # (glibc only: Linux, where select.poll exists)
        poller = select.poll()  # (a third of the cost of conn.poll; no limit on descriptors)
        poller.register(conn.fileno(), select.POLLIN)
        if not poller.poll(memory.IDLE_GIVE_BACK_SECONDS * 1000):
            memory.give_back()
    return conn.recv_bytes()


def actor_main(
    requests: multiprocessing.connection.Connection,
    results: multiprocessing.connection.Connection,
    worker_pid: int,
    result_dir: str | None = None,
) -> None:
    """Construct one actor, then run its method calls in order until the pipe closes (large
    results go to `result_dir`)."""
    global _result_dir
    _result_dir = result_dir
    memory.keep_freed_from_env()  # as in main()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    exit_when_gone(worker_pid, interval=1.0)  # as in main()
    capture.install_logging()
    built, instance = _start_actor(requests, results)
    if not built:
        return
    while _serve_batch(instance, requests, results):
        pass


def _start_actor(
    requests: multiprocessing.connection.Connection,
    results: multiprocessing.connection.Connection,
) -> tuple[bool, Any]:
    """Build the actor from the first message and report how it went: (built, instance). The
    constructor's pickled arguments are let go when this returns."""
    try:
        cls_bytes, args_bytes, objects = pickle.loads(requests.recv_bytes())
    except (EOFError, OSError):
        return False, None
    instance, error = _construct(cls_bytes, args_bytes, objects)
    answered = _answer(results, ("ok", b"") if error is None else ("error", error))
    return answered and error is None, instance


def _serve_batch(
    instance: Any,
    requests: multiprocessing.connection.Connection,
    results: multiprocessing.connection.Connection,
) -> bool:
    """Run one batch of calls and answer it; False once the pipe is closed (the batch's
    arguments and results are let go when this returns)."""
    try:
        calls = pickle.loads(_receive(requests))
    except (EOFError, OSError):
        return False
    outcomes = [_call_method(instance, *call) for call in calls]
    sys.stdout.flush()
    sys.stderr.flush()
    return _answer(results, outcomes)


def _answer(results: multiprocessing.connection.Connection, outcome: Any) -> bool:
    """Send `outcome` to the worker; False when the worker is gone (nobody to tell)."""
    try:
        results.send_bytes(pickle.dumps(outcome, protocol=payload.PROTOCOL))
    except OSError:  # BrokenPipeError: the worker died or stopped this process
        return False
    return True


def _construct(cls_bytes: bytes, args: bytes, objects: Objects) -> tuple[Any, bytes | None]:
    """The actor instance, or the pickled TaskError of why there is none."""
    try:
        cls = pickle.loads(cls_bytes)
        call_args, call_kwargs = _arguments(args, objects)
    except BaseException as exc:
        return None, _error(exc, pb.ERROR_KIND_DESERIALIZATION)
    try:
        return cls(*call_args, **call_kwargs), None
    except BaseException as exc:
        return None, _error(exc, pb.ERROR_KIND_USER)


def _call_method(instance: Any, method: str, args: bytes, objects: Objects) -> Outcome:
    return _run(lambda: getattr(instance, method), args, objects)


def context() -> Any:
    """The multiprocessing context executors start from (forkserver on Linux: fast restarts)."""
    if sys.platform == "linux":
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["fray.worker.executor"])
        return ctx
    return multiprocessing.get_context("spawn")
