"""Sending a batch of actor calls to the actor's worker and settling their futures.

`ActorSender.send` takes a batch off a handle's queue: calls that wait for futures among their
arguments are pickled once those are done (the calls before them are sent first, keeping the
order), then the batch goes to the worker hosting the actor in one `CallActor`; a batch that
takes longer than the call's wait continues with `WaitActorCalls` long polls, so a stuck or
vanished host ends its calls within `WAIT_MS` plus a margin.

At most once: a batch that may have reached the actor is never sent again; its calls fail with
`ActorDiedError` when the worker or the actor process died. Calls that provably did not reach
it (`not_found`, a refused connection) go where the controller says the actor is now.

Large arguments go as an object of the context's (freed when the call's future is done), and
large results come back as one, loaded when the batch's answer is read
(`fray.client.objects`).
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from connectrpc.code import Code
from connectrpc.errors import ConnectError

from fray import errors
from fray.client.actor_place import ActorLocator
from fray.client.connections import WorkerClients, never_connected
from fray.client.futures import future_value
from fray.client.objects import ClientObjects, pack_arguments
from fray.client.output import DriverLog
from fray.wire import payload
from fray.wire.limits import WORKER_CALL_MARGIN_MS, WORKER_WAIT_MS
from fray.wire.objects import StoredValue
from fray.wire.pb import controller_pb2 as pb
from fray.wire.pb import worker_pb2 as wpb

logger = logging.getLogger(__name__)

WAIT_MS = WORKER_WAIT_MS  # longest wait per CallActor/WaitActorCalls

Future = concurrent.futures.Future[Any]
# A queued call: an encoded ActorCall, or (method, args, kwargs) while it waits for futures.
Call = wpb.ActorCall | tuple[str, tuple[Any, ...], dict[str, Any]]


class ActorSender:
    """Sends batches of calls to one actor (found by `locator`) and settles their futures."""

    def __init__(
        self,
        workers: WorkerClients,
        locator: ActorLocator,
        actor_id: str,
        class_name: str,
        driver_log: DriverLog | None = None,
        objects: ClientObjects | None = None,
    ) -> None:
        self._driver_log = driver_log
        self._objects_of_context = objects
        self._workers = workers
        self._locator = locator
        self.actor_id = actor_id
        self._class_name = class_name
        self.what = f"actor {actor_id} ({class_name})"

    def encode(
        self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any], future: Future
    ) -> wpb.ActorCall:
        """Pickle a call (an unpicklable argument fails here, named); large arguments become
        an object, freed when `future` is done."""
        name = f"{self._class_name}.{method}"
        data, object_ids, _ = pack_arguments(self._objects_of_context, args, kwargs, name, future)
        return wpb.ActorCall(method=method, args=data, object_ids=object_ids)

    def _objects(self) -> ClientObjects:
        found = self._objects_of_context
        if found is None:  # handles are always made with a context's link
            raise errors.FrayError(f"{self.what}: no FrayContext to hold large objects")
        return found

    def send(
        self,
        batch: Sequence[tuple[Call, Future]],
        first_wait_ms: int,
        inline: bool,
        release: Callable[[], None],
    ) -> bool:
        """Send a batch and settle its futures. A caller sending `inline` waits at most
        `first_wait_ms` for the answer (a thread takes the wait over) and does not wait for
        the controller to place the actor: a thread takes the batch, and the sending, over.
        True in that case; that thread calls `release` when it is done."""
        final = self._locator.final
        if final is not None:
            for _, future in batch:
                if future.set_running_or_notify_cancel():
                    future.set_exception(final)
            return False
        calls: list[wpb.ActorCall] = []
        futures: list[Future] = []
        for call, future in batch:
            if not future.set_running_or_notify_cancel():
                continue  # cancelled before it was sent
            if isinstance(call, tuple):  # waits for futures among its arguments
                if calls:  # which may be calls just before it: send those first
                    self._call(calls, futures, WAIT_MS, False, release)
                    calls, futures = [], []
                try:
                    method, args, kwargs = call
                    args = tuple(future_value(a) for a in args)
                    kwargs = {k: future_value(v) for k, v in kwargs.items()}
                    call = self.encode(method, args, kwargs, future)
                except BaseException as exc:
                    future.set_exception(exc)
                    continue
            calls.append(call)
            futures.append(future)
        return bool(calls) and self._call(calls, futures, first_wait_ms, inline, release)

    def _call(
        self,
        calls: list[wpb.ActorCall],
        futures: list[Future],
        first_wait_ms: int,
        inline: bool,
        release: Callable[[], None],
    ) -> bool:
        for _ in range(3):  # the calls did not reach the actor: find it again, try again
            place = self._locator.place()
            if inline and place is None and self._locator.final is None:
                threading.Thread(
                    target=self._send_for_caller,
                    args=(calls, futures, release),
                    name=f"fray-actor-{self.actor_id}-send",
                    daemon=True,
                ).start()
                return True
            try:
                address, incarnation = place or self._locator.resolve()
            except BaseException as exc:
                _fail(futures, exc)
                return False
            request = wpb.CallActorRequest(
                actor_id=self.actor_id,
                incarnation=incarnation,
                calls=calls,
                batch_id=uuid.uuid4().hex,
                wait_ms=first_wait_ms,
            )
            client = self._workers.get(address)
            try:
                response = client.call_actor(
                    request,
                    headers=self._workers.headers,
                    timeout_ms=first_wait_ms + WORKER_CALL_MARGIN_MS,
                )
            except ConnectError as exc:
                if exc.code == Code.NOT_FOUND or never_connected(exc):
                    self._locator.moved(incarnation)
                    continue  # it never got them: find where it is now (or that it died)
                if exc.code == Code.ABORTED:  # its process died: this incarnation is over
                    self._locator.moved(incarnation)
                self._locator.forget()
                _fail(futures, self._error(exc))
                return False
            if response.done:
                self._finish(futures, response.results)
            elif inline:  # the caller waits no longer than it asked: a thread takes over
                threading.Thread(
                    target=self._wait_batch,
                    args=(client, request.batch_id, incarnation, futures),
                    name=f"fray-actor-{self.actor_id}-wait",
                    daemon=True,
                ).start()
            else:
                self._wait_batch(client, request.batch_id, incarnation, futures)
            return False
        _fail(futures, errors.ActorDiedError(f"{self.what} keeps moving", actor_id=self.actor_id))
        return False

    def _send_for_caller(
        self, calls: list[wpb.ActorCall], futures: list[Future], release: Callable[[], None]
    ) -> None:
        """Finish sending a batch a caller began, then let the next sender go."""
        try:
            self._call(calls, futures, WAIT_MS, False, release)
        except Exception as exc:  # never leave the batch's futures unsettled
            for future in futures:
                if not future.done():
                    future.set_exception(exc)
        finally:
            release()

    def _wait_batch(
        self, client: Any, batch_id: str, incarnation: int, futures: list[Future]
    ) -> None:
        """Long-poll a running batch until it is done (a vanished host shows within a poll)."""
        request = wpb.WaitActorCallsRequest(batch_id=batch_id, wait_ms=WAIT_MS)
        try:
            while True:
                response = client.wait_actor_calls(
                    request,
                    headers=self._workers.headers,
                    timeout_ms=WAIT_MS + WORKER_CALL_MARGIN_MS,
                )
                if response.done:
                    self._finish(futures, response.results)
                    return
        except ConnectError as exc:
            if exc.code == Code.ABORTED:  # its process died: this incarnation is over
                self._locator.moved(incarnation)
            self._locator.forget()
            _fail(futures, self._died(exc))
        except Exception as exc:  # never leave the batch's futures unsettled
            _fail(futures, exc)

    def _finish(self, futures: list[Future], results: Any) -> None:
        if len(results) != len(futures):
            _fail(futures, errors.ActorError(f"{self.what}: wrong number of results"))
            return
        result: pb.TaskResult
        for future, result in zip(futures, results, strict=True):
            if self._driver_log is not None and result.HasField("output"):
                self._driver_log.task(self._class_name, self.actor_id, result.output)
            if result.HasField("error"):
                future.set_exception(payload.exception_from_error(result.error, self.what))
                continue
            try:
                value = payload.loads(result.value)
            except Exception as exc:
                future.set_exception(
                    errors.SerializationError(
                        f"a result of {self.what} could not be unpickled: {exc}"
                    )
                )
                continue
            if isinstance(value, StoredValue):  # a large result: load it (and free it)
                try:
                    value = self._objects().load_result(value)
                except Exception as exc:  # ObjectLostError: its worker is gone
                    future.set_exception(exc)
                    continue
            future.set_result(value)

    def _died(self, exc: ConnectError) -> errors.ActorError:
        return errors.ActorDiedError(
            f"{self.what} died during the call ({exc.message}); it may or may not have run",
            actor_id=self.actor_id,
        )

    def _error(self, exc: ConnectError) -> errors.ActorError:
        """The error for a CallActor that failed after it may have reached the actor."""
        if exc.code in (Code.ABORTED, Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED):
            return self._died(exc)
        return errors.ActorError(
            f"{self.what}: the worker refused the call ({exc.code.value}: {exc.message})",
            actor_id=self.actor_id,
        )


def _fail(futures: list[Future], exc: BaseException) -> None:
    for future in futures:
        future.set_exception(exc)
