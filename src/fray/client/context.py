"""FrayContext: the JobContext that runs work on a fray controller's workers.

`run` pickles the call at once (so an unpicklable argument fails in the caller, naming it) and
returns a `FrayFuture`. A task goes straight to a worker with a free slot when there is one (the
direct path, `fray.client.direct`); otherwise a submitter thread queues tasks at the controller
in batches, and a collector thread long-polls WatchFinished to resolve futures as they finish.
Futures never hang: a task that is lost, an unreachable controller and a controller restart all
end them with a typed error.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import contextlib
import itertools
import logging
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from connectrpc.code import Code
from connectrpc.errors import ConnectError

from fray import errors
from fray.client.actors import ActorFuture, FrayActorHandle, public_methods
from fray.client.direct import DirectPath, WorkerClients
from fray.job.context import (
    deadline_after,
    time_left,
    validate_actor_args,
    validate_wait_args,
)
from fray.wire import auth, payload
from fray.wire.controller_client import DEFAULT_RETRY_TIMEOUT, ControllerClient
from fray.wire.payload import ObjectRef
from fray.wire.pb import controller_pb2 as pb

logger = logging.getLogger(__name__)

_SUBMIT_BATCH = 2000
_WATCH_WAIT_MS = 10_000
_WAIT_SLICE_MS = 10_000
_RES = TypeVar("_RES")
_FINISHED_STATES = (pb.TASK_STATE_COMPLETED, pb.TASK_STATE_FAILED, pb.TASK_STATE_CANCELLED)

__all__ = ["FrayContext", "FrayFuture", "ObjectRef", "TaskOptions"]


class FrayFuture(concurrent.futures.Future[Any]):
    """The future of a task on a fray controller. `cancel()` also stops it if it is running."""

    def __init__(self, ctx: FrayContext, task_id: str) -> None:
        super().__init__()
        self._ctx = ctx
        self.task_id = task_id
        self.controller_id = ""  # set when the controller accepted the task

    def cancel(self) -> bool:
        # Cancel locally first: the controller's answer (a cancelled task) may reach the
        # collector before this call returns, and must not turn a cancel into a failure.
        if not super().cancel():
            return False
        try:
            self._ctx._cancel(self)
        except (ConnectError, errors.FrayError) as exc:
            logger.warning("could not ask the controller to stop task %s: %s", self.task_id, exc)
        return True

    def result(self, timeout: float | None = None) -> Any:
        if timeout is None and not self.done():
            self._ctx._help(self)  # a direct call no thread took yet: make it here
        return super().result(timeout)

    def __repr__(self) -> str:
        return f"<FrayFuture {self.task_id} {self._state}>"


@dataclass(frozen=True)
class TaskOptions:
    """Per-task settings: `ctx.options(timeout=5, max_retries=2).run(fn, x)`."""

    ctx: FrayContext
    timeout: float | None = None
    max_retries: int = 0
    name: str | None = None

    def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> FrayFuture:
        return self.ctx._submit(fn, args, kwargs, self)


class FrayContext:
    """Runs functions on the workers of the fray controller at `controller_address`.

    `token` (default: $FRAY_TOKEN) is sent as a bearer token. Calls that cannot reach the
    controller are retried for `retry_timeout` seconds, then fail with ControllerUnavailableError.
    `direct=False` sends every task through the controller's queue (no direct path).
    """

    def __init__(
        self,
        controller_address: str,
        *,
        token: str | None = None,
        retry_timeout: float = DEFAULT_RETRY_TIMEOUT,
        direct: bool = True,
    ) -> None:
        self._client = ControllerClient(
            controller_address, token=token, retry_timeout=retry_timeout
        )
        self._workers = WorkerClients(auth.token_from_env(token))
        self._direct = (
            DirectPath(self._client, self._workers, self._finish_direct, self._requeue)
            if direct
            else None
        )
        self.owner = f"client-{uuid.uuid4().hex[:12]}"
        self._ids = itertools.count()
        self._lock = threading.Condition()
        self._unsent: list[tuple[pb.TaskSpec, FrayFuture]] = []
        self._in_flight = 0  # tasks being submitted right now
        self._futures: dict[str, FrayFuture] = {}  # not finished yet
        self._controller_id = ""
        self._cursor = 0
        self._closed = False
        self._threads: list[threading.Thread] = []
        self._owned_actors: list[str] = []  # non-detached actors created here
        _open_contexts.add(self)

    @property
    def controller_address(self) -> str:
        return self._client.address

    # ------------------------------------------------------------------ JobContext

    def put(self, obj: Any) -> ObjectRef:
        """Store `obj` once in the controller; tasks given the ref receive the object."""
        data = payload.dumps(obj, "the object given to put()")
        response = self._call(self._client.rpc.put_object, pb.PutObjectRequest(data=data))
        return ObjectRef(response.object_id, response.size_bytes)

    def get(self, x: Any, timeout: float | None = None) -> Any:
        """The value of a future or ref, or the values of a list of them (in order)."""
        if isinstance(x, list | tuple):
            deadline = deadline_after(timeout)
            return [self.get(item, time_left(deadline)) for item in x]
        if isinstance(x, concurrent.futures.Future):
            return x.result(timeout)
        if isinstance(x, ObjectRef):
            response = self._call(
                self._client.rpc.get_object, pb.GetObjectRequest(object_id=x.object_id)
            )
            return payload.loads(response.data)
        return x

    def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> FrayFuture:
        """Run `fn(*args, **kwargs)` on a worker; refs among the arguments arrive as objects."""
        return self._submit(fn, args, kwargs, None)

    def options(
        self, *, timeout: float | None = None, max_retries: int = 0, name: str | None = None
    ) -> TaskOptions:
        """Settings for the next `run`: execution timeout (s), retries of user errors, a name."""
        if timeout is not None and timeout <= 0:
            raise ValueError("timeout must be > 0")
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        return TaskOptions(self, timeout, max_retries, name)

    def wait(
        self, futures: Sequence[Any], num_returns: int = 1, timeout: float | None = None
    ) -> tuple[list[Any], list[Any]]:
        """Wait, on the controller, until `num_returns` futures are done (or the timeout).

        Returns (ready, pending) in input order, with exactly `num_returns` ready when enough
        finished: extra finished futures stay in `pending`.
        """
        futures = validate_wait_args(futures, num_returns, timeout)
        if not futures:
            return [], []
        for f in futures:
            if isinstance(f, ActorFuture) and not f.done():
                f._caller.kick()  # we wait for it: send it now
        deadline = deadline_after(timeout)
        while True:
            # One snapshot: `done` and `waiting` must agree, or the controller is asked for
            # more than are missing and the wait lasts its whole slice.
            waiting = [f for f in futures if not _is_done(f)]
            done = len(futures) - len(waiting)
            remaining = time_left(deadline)
            if done >= num_returns or remaining == 0:
                break
            self._flush()
            slice_ms = (
                _WAIT_SLICE_MS if remaining is None else min(_WAIT_SLICE_MS, remaining * 1000)
            )
            on_controller = [
                f
                for f in waiting
                if isinstance(f, FrayFuture) and f._ctx is self and f.controller_id
            ]
            if len(on_controller) < len(waiting):
                # Some are not at the controller (on the direct path, waiting for arguments,
                # or not ours): wait here; the collector resolves the others meanwhile.
                concurrent.futures.wait(
                    waiting, slice_ms / 1000, concurrent.futures.FIRST_COMPLETED
                )
                continue
            request = pb.WaitTasksRequest(
                task_ids=[f.task_id for f in on_controller],
                min_finished=min(num_returns - done, len(on_controller)),
                wait_ms=int(slice_ms),
                include_results=True,
            )
            try:
                response = self._client.call(
                    self._client.rpc.wait_tasks, request, wait_ms=request.wait_ms
                )
            except ConnectError as exc:
                if exc.code != Code.NOT_FOUND:
                    raise _refused(exc, "WaitTasks") from None
                self._check_lost()
                continue
            for task in response.finished:
                self._resolve(task)
        ready: list[Any] = []
        pending: list[Any] = []
        for f in futures:
            (ready if _is_done(f) and len(ready) < num_returns else pending).append(f)
        return ready, pending

    def create_actor(
        self,
        cls: type,
        /,
        *args: Any,
        name: str | None = None,
        get_if_exists: bool = False,
        lifetime: str = "non_detached",
        preemptible: bool = True,
        max_restarts: int = 0,
        **kwargs: Any,
    ) -> FrayActorHandle:
        """Start `cls(*args, **kwargs)` on a worker; see `fray.client.actors`.

        `name` must be unique among live actors (ValueError), unless `get_if_exists`, which
        returns the live actor of that name. Non-detached actors are killed when this context
        closes; `lifetime="detached"` ones live until killed. `max_restarts`: times the actor
        is re-created, with fresh state, after its worker or process dies. `preemptible` is
        accepted for compatibility: fray workers have no preemptible kind.
        """
        validate_actor_args(name or None, get_if_exists, lifetime)  # "" is no name either
        if max_restarts < 0:
            raise ValueError("max_restarts must be >= 0")
        class_name = getattr(cls, "__qualname__", type(cls).__qualname__)
        args = tuple(a.result() if isinstance(a, concurrent.futures.Future) else a for a in args)
        kwargs = {
            k: v.result() if isinstance(v, concurrent.futures.Future) else v
            for k, v in kwargs.items()
        }
        spec = pb.ActorSpec(
            name=name or "",
            class_name=class_name,
            cls=payload.dumps(cls, f"the actor class {class_name}"),
            args=payload.dumps_arguments(args, kwargs, class_name),
            object_ids=payload.object_ids_of(args, kwargs),
            max_restarts=max_restarts,
            owner=self.owner,
            detached=lifetime == "detached",
        )
        request = pb.CreateActorRequest(actor=spec, get_if_exists=get_if_exists)
        try:
            response = self._client.call(self._client.rpc.create_actor, request)
        except ConnectError as exc:
            if exc.code == Code.ALREADY_EXISTS:
                raise ValueError(exc.message) from None
            raise _refused(exc, "CreateActor") from None
        if not response.existed and not spec.detached:
            with self._lock:
                self._owned_actors.append(response.actor.actor_id)
        return FrayActorHandle(self, response.actor, public_methods(cls))

    def kill_actor(self, handle: FrayActorHandle) -> None:
        """Stop an actor for good; its pending and later calls fail with ActorDiedError."""
        request = pb.KillActorRequest(actor_id=handle.actor_id)
        self._call(self._client.rpc.kill_actor, request)
        handle._caller.killed()

    # ------------------------------------------------------------------ extras

    def cancel(self, futures: Iterable[FrayFuture]) -> None:
        """Cancel tasks: queued ones at once, running ones are stopped on their workers."""
        for future in futures:
            future.cancel()

    def free(self, refs: Iterable[ObjectRef]) -> int:
        """Delete stored objects; returns how many existed."""
        request = pb.DeleteObjectsRequest(object_ids=[r.object_id for r in refs])
        return self._call(self._client.rpc.delete_objects, request).deleted

    def close(self) -> None:
        """Cancel this context's unfinished tasks, stop its threads; their futures fail with
        FrayError. Also done at interpreter exit for contexts still open."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._lock.notify_all()
            outstanding = list(self._futures.values())
        # Their futures fail first: a cancellation's answer must not settle them differently.
        self._fail(outstanding, errors.FrayError("the FrayContext was closed"))
        if self._direct is not None:
            self._direct.close()
        submitted = [f.task_id for f in outstanding if f.controller_id]
        if submitted:  # nobody will read their results: do not let them use the workers
            try:
                self._client.call(
                    self._client.rpc.cancel_tasks,
                    pb.CancelTasksRequest(task_ids=submitted),
                    retry_timeout=2,
                )
            except (ConnectError, errors.FrayError) as exc:
                logger.warning("could not cancel %d tasks at close: %s", len(submitted), exc)
        for actor_id in self._owned_actors:  # non-detached actors live as long as their creator
            try:
                self._client.call(
                    self._client.rpc.kill_actor,
                    pb.KillActorRequest(actor_id=actor_id),
                    retry_timeout=2,
                )
            except (ConnectError, errors.FrayError) as exc:
                logger.warning("could not kill actor %s at close: %s", actor_id, exc)
        self._client.close()
        self._workers.close()
        _open_contexts.discard(self)

    def _call(self, method: Callable[..., _RES], request: Any) -> _RES:
        """A controller call whose refusal surfaces as a fray error."""
        try:
            return self._client.call(method, request)
        except ConnectError as exc:
            raise _refused(exc, "the request") from None

    def __enter__(self) -> FrayContext:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ submission

    def _submit(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        options: TaskOptions | None,
    ) -> FrayFuture:
        if not callable(fn):
            raise TypeError(f"run() needs a callable, got {type(fn).__qualname__}")
        future = FrayFuture(self, f"{self.owner[7:]}-{next(self._ids)}")
        waits_for = [
            a for a in (*args, *kwargs.values()) if isinstance(a, concurrent.futures.Future)
        ]
        if waits_for:
            self._submit_after(waits_for, future, fn, args, kwargs, options)
        else:
            self._enqueue(future, fn, args, kwargs, options)
        return future

    def _submit_after(
        self,
        waits_for: list[concurrent.futures.Future[Any]],
        future: FrayFuture,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        options: TaskOptions | None,
    ) -> None:
        """Submit once the futures among the arguments are done, passing their values (as Ray
        does for task refs); a failed one fails `future` with its error."""
        remaining = [len(waits_for)]
        count_lock = threading.Lock()

        def value(a: Any) -> Any:
            return a.result() if isinstance(a, concurrent.futures.Future) else a

        def on_done(_: concurrent.futures.Future[Any]) -> None:
            with count_lock:
                remaining[0] -= 1
                if remaining[0]:
                    return
            if future.done():  # cancelled meanwhile
                return
            if any(d.cancelled() for d in waits_for):
                concurrent.futures.Future.cancel(future)
                return
            try:
                values = tuple(value(a) for a in args)
                self._enqueue(future, fn, values, {k: value(v) for k, v in kwargs.items()}, options)
            except BaseException as exc:
                _settle(future, exception=exc)

        for dependency in waits_for:
            dependency.add_done_callback(on_done)

    def _enqueue(
        self,
        future: FrayFuture,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        options: TaskOptions | None,
    ) -> None:
        name = (options.name if options else None) or payload.describe(fn)
        spec = pb.TaskSpec(
            task_id=future.task_id,
            function=payload.dumps_function(fn),
            args=payload.dumps_arguments(args, kwargs, name),
            object_ids=payload.object_ids_of(args, kwargs),
            name=name,
            timeout_seconds=(options.timeout or 0.0) if options else 0.0,
            max_retries=options.max_retries if options else 0,
            owner=self.owner,
        )
        with self._lock:
            if self._closed:
                raise errors.FrayError("the FrayContext is closed")
            if future.done():  # cancelled while its arguments were being waited for
                return
            self._futures[spec.task_id] = future
            # Straight to a free slot, unless tasks are already waiting to be queued (a backlog
            # is better served by the controller's batches) or user errors are to be retried.
            direct = self._direct is not None and not self._unsent and not spec.max_retries
        if direct and self._direct is not None and self._direct.try_send(spec, future):
            if future.cancelled():  # cancelled before the direct path knew it: stop it there
                self._direct.cancel(spec.task_id)
            return
        self._queue_at_controller(spec, future)

    def _queue_at_controller(self, spec: pb.TaskSpec, future: FrayFuture) -> None:
        with self._lock:
            # Checked under the lock that _cancel searches _unsent with: a cancel either sees
            # the task there or this sees the future cancelled.
            if self._closed or future.done():
                return  # close() fails the future; a cancelled one is not queued
            self._unsent.append((spec, future))
            self._lock.notify_all()
            if not self._threads:
                self._start_threads()

    def _requeue(self, spec: pb.TaskSpec, future: FrayFuture, lost: bool) -> None:
        """A task the direct path could not finish: queue it at the controller. `lost`: the
        worker may have died running it, which counts against its attempt budget."""
        if future.done():
            return
        if lost:
            spec.infra_failures += 1
        self._queue_at_controller(spec, future)

    def _help(self, future: FrayFuture) -> None:
        if self._direct is not None and threading.current_thread() not in self._threads:
            self._direct.help(future.task_id)

    def _finish_direct(self, future: FrayFuture, result: pb.TaskResult) -> None:
        with self._lock:
            self._futures.pop(future.task_id, None)
        if result.HasField("value"):
            self._settle_value(future, result.value, future.task_id)
        else:
            _settle(future, exception=payload.exception_from_error(result.error, future.task_id))

    def _start_threads(self) -> None:
        for target, name in ((self._submit_loop, "submit"), (self._collect_loop, "collect")):
            thread = threading.Thread(target=target, name=f"fray-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _submit_loop(self) -> None:
        while True:
            with self._lock:
                while not self._unsent and not self._closed:
                    self._lock.wait()
                if self._closed:
                    return
                batch = self._unsent[:_SUBMIT_BATCH]
                del self._unsent[:_SUBMIT_BATCH]
                self._in_flight = len(batch)
            try:
                controller_id = self._send(pb.SubmitTasksRequest(tasks=[s for s, _ in batch]))
            except Exception as exc:
                with self._lock:
                    self._in_flight = 0
                    self._lock.notify_all()
                self._fail([f for _, f in batch], _submit_error(exc))
                continue
            with self._lock:
                lost = self._note_controller(controller_id)
                for _, future in batch:
                    future.controller_id = controller_id
                self._in_flight = 0
                self._lock.notify_all()
            self._fail_lost(lost)

    def _send(self, request: pb.SubmitTasksRequest) -> str:
        """Submit a batch; returns the controller's id.

        A batch is all or none and its ids are ours, so `already_exists` means an earlier try
        of this very call got through (its answer was lost): the batch is accepted.
        """
        try:
            return self._client.call(self._client.rpc.submit_tasks, request).controller_id
        except ConnectError as exc:
            if exc.code != Code.ALREADY_EXISTS:
                raise
        summary = self._client.call(
            self._client.rpc.get_cluster_summary, pb.GetClusterSummaryRequest()
        )
        return summary.controller_id

    def _flush(self) -> None:
        """Wait until every task run so far has been accepted (or refused) by the controller."""
        if threading.current_thread() in self._threads:
            return  # a done-callback on our own thread: waiting would wait for itself
        with self._lock:
            while (self._unsent or self._in_flight) and not self._closed:
                self._lock.wait()

    def _cancel(self, future: FrayFuture) -> None:
        """Stop a (locally cancelled) task wherever it is: on the direct path, waiting to be
        queued, or at the controller. It may be moving from the first to the others."""
        sent_direct = self._direct is not None and self._direct.cancel(future.task_id)
        with self._lock:
            for i, (spec, queued) in enumerate(self._unsent):
                if queued is future:
                    del self._unsent[i]
                    self._futures.pop(spec.task_id, None)
                    return
        self._flush()
        if sent_direct and not future.controller_id:
            with self._lock:
                self._futures.pop(future.task_id, None)
            return
        try:
            self._client.call(
                self._client.rpc.cancel_tasks, pb.CancelTasksRequest(task_ids=[future.task_id])
            )
        except ConnectError as exc:
            if exc.code != Code.NOT_FOUND:  # not found: it never reached the controller
                raise
        with self._lock:
            self._futures.pop(future.task_id, None)

    # ------------------------------------------------------------------ results

    def _collect_loop(self) -> None:
        while True:
            with self._lock:
                # Watch only once a controller accepted tasks: the request names it, so that a
                # restarted controller answers at once instead of holding a stale long poll.
                while not (self._futures and self._controller_id) and not self._closed:
                    self._lock.wait()
                if self._closed:
                    return
                request = pb.WatchFinishedRequest(
                    owner=self.owner,
                    cursor=self._cursor,
                    wait_ms=_WATCH_WAIT_MS,
                    controller_id=self._controller_id,
                )
            try:
                self._collect(request)
            except Exception:  # the collector must not die: every future would hang
                if self._closed:
                    return
                logger.exception("watching results failed; retrying")
                time.sleep(0.5)

    def _collect(self, request: pb.WatchFinishedRequest) -> None:
        try:
            response = self._client.call(
                self._client.rpc.watch_finished, request, wait_ms=_WATCH_WAIT_MS
            )
        except errors.ControllerUnavailableError as exc:
            self._fail(self._submitted(), exc)
            return
        except ConnectError as exc:
            if exc.code != Code.NOT_FOUND:
                raise
            self._check_lost()  # our cursor is past its end: it lost state we could not see
            return
        with self._lock:
            lost = self._note_controller(response.controller_id)
            if lost is None and self._cursor == request.cursor:
                self._cursor = response.next_cursor
        self._fail_lost(lost)
        for task in response.finished:
            self._resolve(task)
        if response.dropped:  # we were away so long that unread results were dropped
            self._ask_each()

    def _note_controller(self, controller_id: str) -> list[FrayFuture] | None:
        """Track the controller's identity. Holds _lock.

        When it changed (a restart: its state was in memory), returns the futures of the tasks
        the old one had, removed from the outstanding ones; otherwise None.
        """
        if controller_id == self._controller_id or not controller_id:
            return None
        restarted = bool(self._controller_id)
        self._controller_id = controller_id
        self._cursor = 0
        if not restarted:
            return None
        lost = [f for f in self._futures.values() if f.controller_id not in ("", controller_id)]
        for future in lost:
            del self._futures[future.task_id]
        return lost

    def _fail_lost(self, lost: list[FrayFuture] | None) -> None:
        for future in lost or ():
            _settle(
                future,
                exception=errors.TaskLostError(
                    f"task {future.task_id} was lost: the controller restarted",
                    task_id=future.task_id,
                ),
            )

    def _check_lost(self) -> None:
        """Our cursor is past the end of the controller's log: it lost state without our
        noticing a new controller id. Learn its id, then ask about each outstanding task."""
        summary = self._client.call(
            self._client.rpc.get_cluster_summary, pb.GetClusterSummaryRequest()
        )
        with self._lock:
            lost = self._note_controller(summary.controller_id)
            self._cursor = 0
        self._fail_lost(lost)
        self._ask_each()

    def _ask_each(self) -> None:
        """Resolve outstanding tasks one by one (GetTask): finished ones get their result,
        unknown ones fail with TaskLostError."""
        for future in self._submitted():
            request = pb.GetTaskRequest(task_id=future.task_id, include_result=True)
            try:
                task = self._client.call(self._client.rpc.get_task, request).task
            except errors.ControllerUnavailableError as exc:
                self._fail(self._submitted(), exc)
                return
            except ConnectError as exc:
                if exc.code != Code.NOT_FOUND:
                    raise
                self._fail(
                    [future],
                    errors.TaskLostError(
                        f"task {future.task_id} was lost: the controller no longer knows it",
                        task_id=future.task_id,
                    ),
                )
                continue
            if task.state in _FINISHED_STATES:
                self._resolve(task)

    def _submitted(self) -> list[FrayFuture]:
        with self._lock:
            return [f for f in self._futures.values() if f.controller_id]

    def _resolve(self, task: pb.Task) -> None:
        with self._lock:
            future = self._futures.pop(task.task_id, None)
        if future is None or future.done():
            return
        if task.state == pb.TASK_STATE_COMPLETED:
            self._settle_value(future, task.result, task.task_id)
        else:
            _settle(future, exception=payload.exception_from_error(task.error, task.task_id))

    @staticmethod
    def _settle_value(future: FrayFuture, data: bytes, task_id: str) -> None:
        try:
            value = payload.loads(data)
        except Exception as exc:
            _settle(
                future,
                exception=errors.SerializationError(
                    f"the result of task {task_id} could not be unpickled here: {exc}"
                ),
            )
            return
        _settle(future, value=value)

    def _fail(self, futures: Iterable[FrayFuture], exc: BaseException) -> None:
        with self._lock:
            for future in futures:
                self._futures.pop(future.task_id, None)
        for future in futures:
            _settle(future, exception=exc)


_shared: dict[str, FrayContext] = {}
_shared_lock = threading.Lock()


def context_for(address: str) -> FrayContext:
    """This process's shared FrayContext for a controller (created on first use): what code
    running on a worker gets from get_default_job_ctx(), and what unpickled handles use."""
    with _shared_lock:
        ctx = _shared.get(address)
        if ctx is None or ctx._closed:
            ctx = _shared[address] = FrayContext(address)
        return ctx


# Contexts still open at interpreter exit are closed, so their unfinished tasks are cancelled
# (as Ray does for a driver's tasks) instead of running for nobody.
_open_contexts: weakref.WeakSet[FrayContext] = weakref.WeakSet()


@atexit.register
def _close_open_contexts() -> None:
    for ctx in list(_open_contexts):
        with contextlib.suppress(Exception):
            ctx.close()


def _settle(future: FrayFuture, value: Any = None, exception: BaseException | None = None) -> None:
    try:
        if exception is not None:
            future.set_exception(exception)
        else:
            future.set_result(value)
    except concurrent.futures.InvalidStateError:
        pass  # cancelled locally in the meantime


def _refused(exc: ConnectError, what: str) -> errors.ControllerError:
    """The fray error for a request the controller answered with a Connect error."""
    code = exc.code.name.lower()
    return errors.ControllerError(
        f"the controller refused {what} ({code}): {exc.message}", code=code
    )


def _submit_error(exc: Exception) -> BaseException:
    return _refused(exc, "the tasks") if isinstance(exc, ConnectError) else exc


def _is_done(x: Any) -> bool:
    """Futures are done when finished; stored objects (refs) always are."""
    return x.done() if isinstance(x, concurrent.futures.Future) else True
