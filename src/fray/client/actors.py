"""Actor handles on the fray backend.

`FrayContext.create_actor` registers the actor with the controller, which places it on a worker
(`fray.worker.actor_host`). A handle's calls go straight to that worker (`FrayWorker.CallActor`),
queued per handle and sent in batches by one sender at a time, so calls from one handle run in
the order they were made. The sender is a thread of the handle, or the caller itself when it
blocks on a call's result before the thread took it (no thread hand-off for a synchronous call).

Failures: a call whose worker or actor process died while it was sent fails with
`ActorDiedError` (actor calls run at most once: it may or may not have run). Later calls wait
for the controller to restart the actor elsewhere (when `max_restarts` allows) or fail with
`ActorDiedError`; calls on an actor whose constructor raised fail with `ActorCreationError`.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import logging
import threading
import time
import uuid
from collections import deque
from typing import TYPE_CHECKING, Any

from connectrpc.code import Code
from connectrpc.errors import ConnectError

from fray import errors
from fray.client.direct import never_connected
from fray.wire import payload
from fray.wire.limits import WORKER_CALL_MARGIN_MS
from fray.wire.pb import controller_pb2 as pb
from fray.wire.pb import worker_pb2 as wpb

if TYPE_CHECKING:
    from fray.client.context import FrayContext

logger = logging.getLogger(__name__)

READY_TIMEOUT = 60.0  # how long a call waits for its actor to be placed and built
_BATCH = 1000
_RESOLVE_WAIT_MS = 10_000
WAIT_MS = 5_000  # longest wait per CallActor/WaitActorCalls; a vanished host shows within it


class ActorFuture(concurrent.futures.Future[Any]):
    """The future of one actor call."""

    def __init__(self, caller: _Caller) -> None:
        super().__init__()
        self._caller = caller

    def result(self, timeout: float | None = None) -> Any:
        if not self.done():  # send it from here if no thread took it yet
            wait_ms = WAIT_MS if timeout is None else int(min(WAIT_MS, timeout * 1000))
            self._caller.help(max(1, wait_ms))
        return super().result(timeout)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        if not self.done():
            self._caller.kick()
        return super().exception(timeout)


class _Method:
    """`handle.method`: `.remote(*args, **kwargs)` calls it and returns a future."""

    def __init__(self, handle: FrayActorHandle, name: str) -> None:
        self._handle = handle
        self._name = name

    def remote(self, *args: Any, **kwargs: Any) -> ActorFuture:
        return self._handle._caller.submit(self._name, args, kwargs)


class FrayActorHandle:
    """A handle to an actor on a fray worker; it can be passed to tasks and other actors."""

    def __init__(self, ctx: FrayContext, actor: pb.Actor, methods: frozenset[str]) -> None:
        self.actor_id = actor.actor_id
        self.name = actor.name
        self.class_name = actor.class_name
        self._methods = methods
        self._ctx = ctx
        self._caller = _Caller(ctx, actor.actor_id, actor.class_name)

    def __getattr__(self, name: str) -> _Method:
        if name.startswith("_") or name not in self._methods:
            raise AttributeError(f"actor class {self.class_name} has no method {name!r}")
        return _Method(self, name)

    def __reduce__(self) -> Any:
        actor = pb.Actor(actor_id=self.actor_id, name=self.name, class_name=self.class_name)
        return _rebuild, (self._ctx.controller_address, actor.SerializeToString(), self._methods)

    def __repr__(self) -> str:
        return f"<FrayActorHandle {self.class_name} {self.actor_id}>"


def _rebuild(address: str, actor: bytes, methods: frozenset[str]) -> FrayActorHandle:
    from fray.client.context import context_for

    return FrayActorHandle(context_for(address), pb.Actor.FromString(actor), methods)


def public_methods(cls: type) -> frozenset[str]:
    return frozenset(
        name for name in dir(cls) if not name.startswith("_") and callable(getattr(cls, name))
    )


class _Caller:
    """A handle's queue of calls and whoever sends them (one sender at a time)."""

    def __init__(self, ctx: FrayContext, actor_id: str, class_name: str) -> None:
        self._ctx = ctx
        self._actor_id = actor_id
        self._class_name = class_name
        self._cond = threading.Condition()
        self._pending: deque[tuple[Any, ActorFuture]] = deque()
        self._sending = False
        self._thread: threading.Thread | None = None
        self._address = ""
        self._incarnation = 0
        self._min_incarnation = 0
        self._final: BaseException | None = None  # the actor is gone for good

    # ------------------------------------------------------------------ queueing

    def submit(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> ActorFuture:
        future = ActorFuture(self)
        waits = any(isinstance(a, concurrent.futures.Future) for a in (*args, *kwargs.values()))
        # Pickled now (an unpicklable argument fails here) unless it waits for futures.
        call: Any = (method, args, kwargs) if waits else self._encode(method, args, kwargs)
        with self._cond:
            self._pending.append((call, future))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name=f"fray-actor-{self._actor_id}", daemon=True
                )
                self._thread.start()
            alone = len(self._pending) == 1 and not self._sending
            if not alone:  # calls pile up: the caller is not waiting for each, send them now
                self._cond.notify()
        if alone:  # the caller may well wait for it and send it itself; if not, _kicker will
            _kicker.note(self)
        return future

    def kick(self) -> None:
        """Have the handle's thread send what is pending, if nobody is sending."""
        with self._cond:
            if self._pending and not self._sending:
                self._cond.notify()

    def _encode(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> wpb.ActorCall:
        return wpb.ActorCall(
            method=method,
            args=payload.dumps_arguments(args, kwargs, f"{self._class_name}.{method}"),
            object_ids=payload.object_ids_of(args, kwargs),
        )

    def killed(self) -> None:
        """The actor was killed through this handle: fail what is queued and what comes."""
        self._final = errors.ActorDiedError(
            f"{self._what()} is dead: killed", actor_id=self._actor_id
        )
        with self._cond:
            dropped = list(self._pending)
            self._pending.clear()
        for _, future in dropped:
            if future.set_running_or_notify_cancel():
                future.set_exception(self._final)

    def help(self, first_wait_ms: int = WAIT_MS) -> None:
        """Send the first pending calls from this thread if no one is sending and sending
        cannot block for long (the actor's address is known and the first call's arguments are
        ready). This thread waits at most `first_wait_ms` for their answer; the handle's thread
        does everything that may take longer, so `result(timeout)` keeps its timeout."""
        with self._cond:
            if self._sending or not self._pending:
                return
            unplaced = self._place() is None and self._final is None
            if unplaced or isinstance(self._pending[0][0], tuple):
                self._cond.notify()
                return
            self._sending = True
        self._pump(first_wait_ms, inline=True)

    def _place(self) -> tuple[str, int] | None:
        """Where to send calls without asking the controller first (one read: a batch's
        waiting thread may clear it meanwhile), or None."""
        address, incarnation = self._address, self._incarnation
        current = bool(address) and incarnation >= self._min_incarnation
        return (address, incarnation) if current else None

    def _loop(self) -> None:
        while True:
            with self._cond:
                while self._sending or not self._pending:
                    self._cond.wait()
                self._sending = True
            try:
                self._pump(WAIT_MS, inline=False)
            except Exception:  # the batch's futures are settled; keep serving the handle
                logger.exception("sending calls to %s failed", self._what())

    def _pump(self, first_wait_ms: int, inline: bool) -> None:
        """Send batches until the queue is empty (a caller sending inline sends one: the one
        with its own call, up to the first call waiting for futures, then leaves the rest to
        the handle's thread)."""
        handed_over = False
        try:
            while True:
                with self._cond:
                    count = min(len(self._pending), _BATCH)
                    if inline:  # up to the first call that waits for futures
                        head = itertools.islice(self._pending, count)
                        calls = (call for call, _ in head)
                        count = next(
                            (i for i, c in enumerate(calls) if isinstance(c, tuple)), count
                        )
                    batch = [self._pending.popleft() for _ in range(count)]
                    if not batch:
                        return
                try:
                    handed_over = self._send_batch(batch, first_wait_ms, inline)
                except BaseException as exc:  # e.g. Ctrl-C in a caller that was sending
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(
                                errors.ActorError(
                                    f"a call to {self._what()} was interrupted "
                                    f"({type(exc).__name__}) while being sent; it may or may "
                                    "not have run",
                                    actor_id=self._actor_id,
                                )
                            )
                    raise
                if inline or handed_over:
                    return
        finally:
            if not handed_over:
                self._done_sending()

    def _done_sending(self) -> None:
        with self._cond:
            self._sending = False
            self._cond.notify_all()

    # ------------------------------------------------------------------ sending

    def _send_batch(
        self, batch: list[tuple[Any, ActorFuture]], first_wait_ms: int, inline: bool
    ) -> bool:
        """Send a batch; True when a thread took over sending it (see `_call`)."""
        if self._final is not None:
            for _, future in batch:
                if future.set_running_or_notify_cancel():
                    future.set_exception(self._final)
            return False
        calls: list[wpb.ActorCall] = []
        futures: list[ActorFuture] = []
        for call, future in batch:
            if not future.set_running_or_notify_cancel():
                continue  # cancelled before it was sent
            if isinstance(call, tuple):  # waits for futures among its arguments
                if calls:  # which may be calls just before it: send those first
                    self._call(calls, futures, WAIT_MS, inline=False)
                    calls, futures = [], []
                try:
                    method, args, kwargs = call
                    args = tuple(_value(a) for a in args)
                    call = self._encode(method, args, {k: _value(v) for k, v in kwargs.items()})
                except BaseException as exc:
                    future.set_exception(exc)
                    continue
            calls.append(call)
            futures.append(future)
        return bool(calls) and self._call(calls, futures, first_wait_ms, inline)

    def _settle(self, futures: list[ActorFuture], results: list[pb.TaskResult]) -> None:
        for future, result in zip(futures, results, strict=True):
            if result.HasField("error"):
                future.set_exception(payload.exception_from_error(result.error, self._what()))
                continue
            try:
                future.set_result(payload.loads(result.value))
            except Exception as exc:
                future.set_exception(
                    errors.SerializationError(
                        f"a result of {self._what()} could not be unpickled: {exc}"
                    )
                )

    def _fail(self, futures: list[ActorFuture], exc: BaseException) -> None:
        for future in futures:
            future.set_exception(exc)

    def _what(self) -> str:
        return f"actor {self._actor_id} ({self._class_name})"

    def _call(
        self,
        calls: list[wpb.ActorCall],
        futures: list[ActorFuture],
        first_wait_ms: int,
        inline: bool,
    ) -> bool:
        """Send a batch and settle its futures (from another thread if `inline` and the answer
        takes longer than `first_wait_ms`). A caller sending inline does not wait for the
        controller to place the actor: a thread takes the batch, and the sending, over (True)."""
        for _ in range(3):  # the calls did not reach the actor: find it again, try again
            place = self._place()
            if inline and place is None and self._final is None:
                threading.Thread(
                    target=self._send_for_caller,
                    args=(calls, futures),
                    name=f"fray-actor-{self._actor_id}-send",
                    daemon=True,
                ).start()
                return True
            try:
                address, incarnation = place or self._resolve()
            except BaseException as exc:
                self._fail(futures, exc)
                return False
            request = wpb.CallActorRequest(
                actor_id=self._actor_id,
                incarnation=incarnation,
                calls=calls,
                batch_id=uuid.uuid4().hex,
                wait_ms=first_wait_ms,
            )
            client = self._ctx._workers.get(address)
            try:
                response = client.call_actor(
                    request,
                    headers=self._ctx._workers.headers,
                    timeout_ms=first_wait_ms + WORKER_CALL_MARGIN_MS,
                )
            except ConnectError as exc:
                if exc.code == Code.NOT_FOUND or never_connected(exc):
                    self._moved(incarnation)
                    continue  # it never got them: find where it is now (or that it died)
                if exc.code == Code.ABORTED:  # its process died: this incarnation is over
                    self._moved(incarnation)
                self._address = ""  # ask the controller before the next call
                self._fail(futures, self._error(exc))
                return False
            if response.done:
                self._finish(futures, response.results)
            elif inline:  # the caller waits no longer than it asked: a thread takes over
                threading.Thread(
                    target=self._wait_batch,
                    args=(client, request.batch_id, incarnation, futures),
                    name=f"fray-actor-{self._actor_id}-wait",
                    daemon=True,
                ).start()
            else:
                self._wait_batch(client, request.batch_id, incarnation, futures)
            return False
        self._fail(
            futures, errors.ActorDiedError(f"{self._what()} keeps moving", actor_id=self._actor_id)
        )
        return False

    def _send_for_caller(self, calls: list[wpb.ActorCall], futures: list[ActorFuture]) -> None:
        """Finish sending a batch a caller began, then let the next sender go."""
        try:
            self._call(calls, futures, WAIT_MS, inline=False)
        except Exception as exc:  # never leave the batch's futures unsettled
            for future in futures:
                if not future.done():
                    future.set_exception(exc)
        finally:
            self._done_sending()

    def _wait_batch(
        self, client: Any, batch_id: str, incarnation: int, futures: list[ActorFuture]
    ) -> None:
        """Long-poll a running batch until it is done (a vanished host shows within a poll)."""
        request = wpb.WaitActorCallsRequest(batch_id=batch_id, wait_ms=WAIT_MS)
        try:
            while True:
                response = client.wait_actor_calls(
                    request,
                    headers=self._ctx._workers.headers,
                    timeout_ms=WAIT_MS + WORKER_CALL_MARGIN_MS,
                )
                if response.done:
                    self._finish(futures, response.results)
                    return
        except ConnectError as exc:
            if exc.code == Code.ABORTED:  # its process died: this incarnation is over
                self._moved(incarnation)
            self._address = ""  # ask the controller before the next call
            self._fail(futures, self._died(exc))
        except Exception as exc:  # never leave the batch's futures unsettled
            self._fail(futures, exc)

    def _finish(self, futures: list[ActorFuture], results: Any) -> None:
        if len(results) != len(futures):
            self._fail(futures, errors.ActorError(f"{self._what()}: wrong number of results"))
        else:
            self._settle(futures, list(results))

    def _moved(self, incarnation: int) -> None:
        """The actor may have moved: ask the controller where it is before the next call."""
        self._min_incarnation = max(self._min_incarnation, incarnation + 1)
        self._address = ""

    def _died(self, exc: ConnectError) -> errors.ActorError:
        return errors.ActorDiedError(
            f"{self._what()} died during the call ({exc.message}); it may or may not have run",
            actor_id=self._actor_id,
        )

    def _error(self, exc: ConnectError) -> errors.ActorError:
        """The error for a CallActor that failed after it may have reached the actor."""
        if exc.code in (Code.ABORTED, Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED):
            return self._died(exc)
        return errors.ActorError(
            f"{self._what()}: the worker refused the call ({exc.code.value}: {exc.message})",
            actor_id=self._actor_id,
        )

    def _resolve(self) -> tuple[str, int]:
        """Where the actor is ready now (asking the controller when we do not know)."""
        if self._final is not None:
            raise self._final
        deadline = time.monotonic() + READY_TIMEOUT
        client = self._ctx._client
        while True:
            request = pb.GetActorRequest(
                actor_id=self._actor_id,
                wait_ms=_RESOLVE_WAIT_MS,
                min_incarnation=self._min_incarnation,
            )
            try:
                actor = client.call(client.rpc.get_actor, request, wait_ms=request.wait_ms).actor
            except ConnectError as exc:
                raise errors.ActorError(
                    f"{self._what()}: the controller said {exc.code.value}: {exc.message}",
                    actor_id=self._actor_id,
                ) from None
            if actor.state == pb.ACTOR_STATE_READY and actor.incarnation >= self._min_incarnation:
                self._address, self._incarnation = actor.address, actor.incarnation
                return self._address, self._incarnation
            if actor.state == pb.ACTOR_STATE_FAILED:
                self._final = errors.ActorCreationError(
                    f"{self._what()} could not be created: {actor.error.type}: "
                    f"{actor.error.message}",
                    actor_id=self._actor_id,
                )
                self._final.__cause__ = payload.exception_from_error(actor.error, self._what())
                raise self._final
            if actor.state == pb.ACTOR_STATE_DEAD:
                self._final = errors.ActorDiedError(
                    f"{self._what()} is dead: {actor.error.message or 'killed'}",
                    actor_id=self._actor_id,
                )
                raise self._final
            if time.monotonic() > deadline:
                state = pb.ActorState.Name(actor.state)
                raise errors.ActorError(
                    f"{self._what()} is not ready after {READY_TIMEOUT:g}s ({state})",
                    actor_id=self._actor_id,
                )


class _Kicker:
    """Starts the sending of calls that nobody sends.

    A call alone in its handle's queue is not handed to the handle's thread at once: waking a
    thread costs ~0.1 ms on the critical path, and a caller that then waits for the call sends
    it itself. This thread hands such calls over after `GRACE` seconds. It polls only while
    calls come (and for `LINGER` seconds after), so a steady stream of calls never wakes it.
    """

    GRACE = 0.001
    LINGER = 1.0

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._noted: dict[_Caller, float] = {}
        self._last = 0.0
        self._idle = False
        self._thread: threading.Thread | None = None

    def note(self, caller: _Caller) -> None:
        with self._cond:
            now = time.monotonic()
            self._noted.setdefault(caller, now)
            self._last = now
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="fray-kicker", daemon=True)
                self._thread.start()
            elif self._idle:
                self._cond.notify()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._noted and time.monotonic() - self._last > self.LINGER:
                    self._idle = True
                    self._cond.wait()
                self._idle = False
                cutoff = time.monotonic() - self.GRACE
                due = [c for c, noted in self._noted.items() if noted <= cutoff]
                for caller in due:
                    del self._noted[caller]
            for caller in due:
                caller.kick()
            time.sleep(self.GRACE)


_kicker = _Kicker()


def _value(x: Any) -> Any:
    return x.result() if isinstance(x, concurrent.futures.Future) else x
