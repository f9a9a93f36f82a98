"""FrayContext: the JobContext that runs work on a fray controller's workers.

`run` pickles the call at once (so an unpicklable argument fails in the caller, naming it) and
returns a `FrayFuture`. A task goes straight to a worker with a free slot when there is one (the
direct path, `fray.client.direct`); otherwise a submitter thread queues tasks at the controller
in batches (`fray.client.submitter`), and a collector thread long-polls WatchFinished to resolve
futures as they finish (`fray.client.collector`). Futures never hang: a task that is lost, an
unreachable controller and a controller restart all end them with a typed error.

`FrayContext` is the API and the wiring: the task table (`fray.client.tasks`), the submitter,
the collector, the direct path, the router between them (`fray.client.routing`), the actor
directory (`fray.client.actors`) and the objects (`fray.client.objects`: large ones stay in
this process's files) each get only what they use.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import contextlib
import itertools
import logging
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from connectrpc.errors import ConnectError

from fray import errors
from fray.client.actors import ActorDirectory, ActorFuture, FrayActorHandle
from fray.client.collector import Collector
from fray.client.connections import ClientLink, WorkerClients
from fray.client.direct import DirectPath
from fray.client.futures import FrayFuture, TaskOptions, future_value, settle
from fray.client.objects import ClientObjects, pack_arguments
from fray.client.output import DriverLog
from fray.client.routing import TaskRouter
from fray.client.submitter import Submitter
from fray.client.tasks import FutureTable
from fray.common.deadlines import deadline_after, time_left
from fray.job.context import validate_actor_args, validate_requirements, validate_wait_args
from fray.wire import auth, payload
from fray.wire.controller_client import DEFAULT_RETRY_TIMEOUT, ControllerClient
from fray.wire.payload import ObjectRef
from fray.wire.pb import controller_pb2 as pb
from fray.wire.probe import DEFAULT_PROBE_TIMEOUT, probe

logger = logging.getLogger(__name__)

_WAIT_SLICE_MS = 10_000

__all__ = ["FrayContext", "FrayFuture", "ObjectRef", "TaskOptions", "context_for"]


class FrayContext:
    """Runs functions on the workers of the fray controller at `controller_address`.

    `token` (default: $FRAY_TOKEN) is sent as a bearer token. ``https://`` controllers and
    workers are verified with `tls_ca` (default: $FRAY_TLS_CA), a PEM CA bundle, or else the
    system store. Calls that cannot reach the controller are retried for `retry_timeout`
    seconds, then fail with ControllerUnavailableError (at once when the TLS handshake fails).
    `direct=False` sends every task through the controller's queue (no direct path).
    A new context asks the controller for its summary first, for up to `probe_timeout` seconds
    (None: no check): an address where no fray controller answers, or where something else
    answers (a worker, another server), fails here with ControllerUnavailableError saying so;
    a malformed address raises ValueError at once. A controller that goes away later is retried
    for `retry_timeout` as usual.
    `log_to_driver` (default True) prints what each task and actor call printed (stdout,
    stderr, logging) to this process's stderr, each line prefixed with the task's name, pid,
    worker and id (`fray.client.output`): a task's output as it runs (about every half second),
    an actor call's when it finishes.
    """

    def __init__(
        self,
        controller_address: str,
        *,
        token: str | None = None,
        tls_ca: str | None = None,
        retry_timeout: float = DEFAULT_RETRY_TIMEOUT,
        direct: bool = True,
        log_to_driver: bool = True,
        probe_timeout: float | None = DEFAULT_PROBE_TIMEOUT,
    ) -> None:
        self._client = ControllerClient(
            controller_address, token=token, tls_ca=tls_ca, retry_timeout=retry_timeout
        )
        if probe_timeout is not None:
            try:
                probe(self._client, probe_timeout)
            except BaseException:
                self._client.close()
                raise
        token = auth.token_from_env(token)
        self._workers = WorkerClients(token, self._client.tls_ca)
        self.owner = f"client-{uuid.uuid4().hex[:12]}"
        self._objects = ClientObjects(self._client, self.owner, token)
        self._ids = itertools.count()
        self._table = FutureTable(self._objects)
        self._driver_log = DriverLog() if log_to_driver else None
        if self._driver_log is not None:
            self._table.on_output = self._driver_log.task
        self._collector = Collector(self._client, self.owner, self._table, self._driver_log)
        if direct:
            self._collector.watch_output()  # direct tasks' live output too (log_to_driver)
        self._submitter = Submitter(self._client, self._table, on_start=self._collector.start)
        self._direct = (
            DirectPath(
                self._client,
                self._workers,
                self._table.finish_direct,
                self._submitter.requeue,
                locate=self._objects.locations,
            )
            if direct
            else None
        )
        self._router = TaskRouter(
            self._table, self._submitter, self._direct, self._client, self._on_own_thread
        )
        self._link = ClientLink(
            self._client, self._workers, self.owner, _shared_link, self._driver_log, self._objects
        )
        self._actors = ActorDirectory(self._link)
        _open_contexts.add(self)

    @property
    def controller_address(self) -> str:
        return self._client.address

    # ------------------------------------------------------------------ JobContext

    def put(self, obj: Any) -> ObjectRef:
        """Store `obj` once; tasks given the ref receive the object.

        A small object (pickled, at most `FRAY_OBJECT_INLINE_BYTES`, 256 KiB) is kept by the
        controller. A larger one stays in this process, in a file (shared memory, or disk
        beyond the store's budget) that workers on this host map and others fetch from this
        process; the controller only knows where it is. It lives until `free`, or until this
        context closes (or its process ends): then tasks given its ref fail with
        ObjectLostError.
        """
        return self._objects.put(obj)

    def get(self, x: Any, timeout: float | None = None) -> Any:
        """The value of a future or ref, or the values of a list of them (in order)."""
        if isinstance(x, list | tuple):
            deadline = deadline_after(timeout)
            return [self.get(item, time_left(deadline)) for item in x]
        if isinstance(x, concurrent.futures.Future):
            return x.result(timeout)
        if isinstance(x, ObjectRef):
            return self._objects.get(x)
        return x

    def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> FrayFuture:
        """Run `fn(*args, **kwargs)` on a worker; refs among the arguments arrive as objects."""
        return self._submit(fn, args, kwargs, None)

    def options(
        self,
        *,
        timeout: float | None = None,
        max_retries: int = 0,
        name: str | None = None,
        resources: Mapping[str, float | str] | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> TaskOptions:
        """Settings for the next `run`: execution timeout (s), retries of user errors, a name,
        and what the task needs of its worker.

        `resources` (``{"cpus": 2, "gpus": 1, "memory": "8GiB"}``) are held on the worker
        while the task runs; `labels` (``{"gpu_type": "T4"}``; ``"a|b"`` accepts either) must
        match the worker's. Both are checked here (ValueError, see
        `fray.job.context.validate_requirements`). A task that asks for something always goes
        through the controller's queue, which leases it only to a worker where it fits now; one
        that no worker could ever run stays PENDING with a `pending_reason`, and this context
        logs a warning naming the reason (`fray.client.no_workers`).
        """
        if timeout is not None and timeout <= 0:
            raise ValueError("timeout must be > 0")
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        amounts, wanted = validate_requirements(resources, labels)
        return TaskOptions(
            self._submit,
            timeout,
            max_retries,
            name,
            amounts,
            wanted,
            _requirements(amounts, wanted),
        )

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
                f.kick()  # we wait for it: send it now
        deadline = deadline_after(timeout)
        while True:
            # One snapshot: `done` and `waiting` must agree, or the controller is asked for
            # more than are missing and the wait lasts its whole slice.
            waiting = [f for f in futures if not _is_done(f)]
            done = len(futures) - len(waiting)
            remaining = time_left(deadline)
            if done >= num_returns or remaining == 0:
                break
            self._router.flush()
            slice_ms = (
                _WAIT_SLICE_MS if remaining is None else min(_WAIT_SLICE_MS, remaining * 1000)
            )
            on_controller = [
                f
                for f in waiting
                if isinstance(f, FrayFuture) and f.ran_by(self._router) and f.controller_id
            ]
            if len(on_controller) < len(waiting):
                # Some are not at the controller (on the direct path, waiting for arguments,
                # or not ours): wait here; the collector resolves the others meanwhile.
                concurrent.futures.wait(
                    waiting, slice_ms / 1000, concurrent.futures.FIRST_COMPLETED
                )
                continue
            self._collector.wait_for(
                on_controller, min(num_returns - done, len(on_controller)), int(slice_ms)
            )
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
        resources: Mapping[str, float | str] | None = None,
        labels: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> FrayActorHandle:
        """Start `cls(*args, **kwargs)` on a worker; see `fray.client.actors`.

        `name` must be unique among live actors (ValueError), unless `get_if_exists`, which
        returns the live actor of that name. Non-detached actors are killed when this context
        closes; `lifetime="detached"` ones live until killed. `max_restarts`: times the actor
        is re-created, with fresh state, after its worker or process dies. `preemptible` is
        accepted for compatibility: fray workers have no preemptible kind. `resources` and
        `labels`, as for `options`, are held on the actor's worker for its whole life (checked
        here, ValueError); the actor waits PENDING until a worker where they fit is free.
        """
        validate_actor_args(name or None, get_if_exists, lifetime)  # "" is no name either
        if max_restarts < 0:
            raise ValueError("max_restarts must be >= 0")
        amounts, wanted = validate_requirements(resources, labels)
        return self._actors.create(
            cls,
            args,
            kwargs,
            name=name,
            get_if_exists=get_if_exists,
            detached=lifetime == "detached",
            max_restarts=max_restarts,
            requirements=_requirements(amounts, wanted),
        )

    def actor_handle(self, actor: pb.Actor, methods: frozenset[str]) -> FrayActorHandle:
        """A handle, on this context, to an actor someone created (found with `ListActors` or
        `GetActor`); `methods` are the method names it may call."""
        return FrayActorHandle(self._link, actor, methods)

    def kill_actor(self, handle: FrayActorHandle) -> None:
        """Stop an actor for good; its pending and later calls fail with ActorDiedError."""
        self._actors.kill(handle)

    # ------------------------------------------------------------------ extras

    def cancel(self, futures: Iterable[FrayFuture]) -> None:
        """Cancel tasks: queued ones at once, running ones are stopped on their workers."""
        for future in futures:
            future.cancel()

    def free(self, refs: Iterable[ObjectRef]) -> int:
        """Delete stored objects (and this process's files of them); how many existed."""
        return self._objects.free([r.object_id for r in refs])

    def close(self) -> None:
        """Cancel this context's unfinished tasks, stop its threads; their futures fail with
        FrayError. Also done at interpreter exit for contexts still open."""
        if self._table.closed:
            return
        self._submitter.close()  # first: nothing queued from now on is sent
        self._collector.no_workers.stop()
        outstanding = self._table.close()
        if outstanding is None:
            return  # closed meanwhile by another thread
        # Their futures fail first: a cancellation's answer must not settle them differently.
        self._table.fail(outstanding, errors.FrayError("the FrayContext was closed"))
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
        self._actors.kill_owned()  # non-detached actors live as long as their creator
        self._objects.close()  # our files go: the controller forgets them first
        self._client.close()
        self._workers.close()
        _open_contexts.discard(self)

    def __enter__(self) -> FrayContext:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ submission

    def _on_own_thread(self) -> bool:
        return self._submitter.on_own_thread() or self._collector.on_own_thread()

    def _submit(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        options: TaskOptions | None,
    ) -> FrayFuture:
        if not callable(fn):
            raise TypeError(f"run() needs a callable, got {type(fn).__qualname__}")
        future = FrayFuture(self._router, f"{self.owner[7:]}-{next(self._ids)}")
        future.name = (options.name if options else None) or payload.describe(fn)
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
                values = tuple(future_value(a) for a in args)
                self._enqueue(
                    future, fn, values, {k: future_value(v) for k, v in kwargs.items()}, options
                )
            except BaseException as exc:
                settle(future, exception=exc)

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
        name = future.name or (options.name if options else None) or payload.describe(fn)
        data, object_ids, _ = pack_arguments(self._objects, args, kwargs, name, future)
        spec = pb.TaskSpec(
            task_id=future.task_id,
            function=payload.dumps_function(fn),
            args=data,
            object_ids=object_ids,
            name=name,
            timeout_seconds=(options.timeout or 0.0) if options else 0.0,
            max_retries=options.max_retries if options else 0,
            owner=self.owner,
            requirements=options.requirements if options else None,
        )
        self._router.send(spec, future)
        self._collector.task_sent()  # log_to_driver: print its output while it runs


_shared: dict[str, FrayContext] = {}
_shared_lock = threading.Lock()


def context_for(address: str) -> FrayContext:
    """This process's shared FrayContext for a controller (created on first use): what code
    running on a worker gets from get_default_job_ctx(), and what unpickled handles use."""
    with _shared_lock:
        ctx = _shared.get(address)
        if ctx is None or ctx._table.closed:
            ctx = _shared[address] = FrayContext(address, probe_timeout=None)  # known good
        return ctx


def _shared_link(address: str) -> ClientLink:
    """The link of this process's shared context: how an unpickled actor handle finds one."""
    return context_for(address)._link


# Contexts still open at interpreter exit are closed, so their unfinished tasks are cancelled
# and their non-detached actors killed (as Ray does for a driver's), instead of running for
# nobody. Held strongly until close(): a context that only an actor handle (or nothing) still
# refers to is open all the same, like a thread pool that was never shut down.
_open_contexts: set[FrayContext] = set()


@atexit.register
def _close_open_contexts() -> None:
    for ctx in list(_open_contexts):
        with contextlib.suppress(Exception):
            ctx.close()


def _requirements(resources: dict[str, float], labels: dict[str, str]) -> pb.Requirements | None:
    """The wire form of checked resources and labels; None when they ask for nothing."""
    if not resources and not labels:
        return None
    return pb.Requirements(resources=resources, labels=labels)


def _is_done(x: Any) -> bool:
    """Futures are done when finished; stored objects (refs) always are."""
    return x.done() if isinstance(x, concurrent.futures.Future) else True
