"""The client end of the direct path: tasks sent straight to a worker with a free slot.

`FrayContext` offers every task to `DirectPath.try_send` before queuing it at the controller,
except those with requirements (resources, labels), which only the controller places
(`fray.client.routing`): a free slot says nothing of a worker's free GPUs.
When a worker seems to have a free slot (the controller's ListWorkers, refreshed at most every
`REFRESH_SECONDS`, minus this client's own calls in flight), the task goes to that worker in one
RPC (`FrayWorker.RunTask`), made from a small pool of daemon threads; the answer carries the
result. The request also says where the task's objects that this client stored are, so that
the worker opens them without asking the controller. Otherwise, or when the worker refuses the
task, gives it back, dies or stops answering, the task is queued at the controller after all
(`requeue`), where the usual retry budget holds.

A caller that blocks on the future before a thread took the call makes it itself (`help`): a
one-at-a-time `ctx.get(ctx.run(f))` then costs no thread hand-offs on the client.

A call thread that has had nothing to do for `IDLE_SECONDS` ends; the view of the workers is
refreshed by a thread that sleeps until a task wants a fresh view.

A call that lasts longer than `WAIT_MS` continues with `WaitTask` long polls, so a worker that
vanishes without closing the connection is noticed within `WAIT_MS` plus a margin (~7 s); the
worker, for its part, cancels a direct task whose client stopped polling for it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from connectrpc.code import Code
from connectrpc.errors import ConnectError

from fray.client.connections import WorkerClients, never_connected
from fray.wire.controller_client import ControllerClient
from fray.wire.limits import WORKER_CALL_MARGIN_MS, WORKER_WAIT_MS
from fray.wire.pb import controller_pb2 as pb
from fray.wire.pb import worker_pb2 as wpb
from fray.wire.pb.worker_connect import FrayWorkerClientSync

logger = logging.getLogger(__name__)

REFRESH_SECONDS = 0.5
IDLE_SECONDS = 10.0  # a call thread with nothing to do for this long ends
WAIT_MS = WORKER_WAIT_MS
_CALL_TIMEOUT_MS = WAIT_MS + WORKER_CALL_MARGIN_MS
_BACK_OFF_SECONDS = 0.25  # a worker that refused a task is not offered another for this long
_LOST_REST_SECONDS = 5.0  # nor one that lost a task (until the controller has expired it)

# complete(future, result) settles a future; requeue(spec, future, lost) queues the task at the
# controller (lost: the worker may have died running it).
Complete = Callable[[Any, pb.TaskResult], None]
Requeue = Callable[[pb.TaskSpec, Any, bool], None]
Locate = Callable[[Sequence[str]], Mapping[str, pb.ObjectLocation]]


@dataclass
class _WorkerView:
    worker_id: str
    address: str
    free: int  # free slots as the controller last saw them, not counting our calls
    ours: int = 0  # our calls in flight there
    resting_until: float = 0.0

    @property
    def room(self) -> int:
        return self.free - self.ours


@dataclass
class _Call:
    worker: _WorkerView
    spec: pb.TaskSpec
    future: Any
    claimed: bool = False  # a thread (pool or caller) is making it


class _Refused(Exception):
    """The worker did not take the task (no free slot, or draining)."""


class _Lost(Exception):
    """The worker died, vanished or forgot the task. `maybe_ran`: it may have run, or still
    be running there (False when the connection was refused: it never got the task)."""

    def __init__(self, message: str, *, maybe_ran: bool) -> None:
        super().__init__(message)
        self.maybe_ran = maybe_ran


_MAYBE_RAN = (Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED, Code.INTERNAL, Code.UNKNOWN)


class DirectPath:
    """Sends tasks to workers' free slots; see the module docstring."""

    def __init__(
        self,
        controller: ControllerClient,
        workers: WorkerClients,
        complete: Complete,
        requeue: Requeue,
        *,
        locate: Locate | None = None,
        max_in_flight: int = 32,
    ) -> None:
        self._controller = controller
        self._worker_clients = workers
        self._headers = workers.headers
        self._complete = complete
        self._requeue = requeue
        self._locate = locate  # where the client's own objects are (sent with their tasks)
        self._max_in_flight = max_in_flight
        self._lock = threading.Lock()
        self._workers: dict[str, _WorkerView] = {}
        self._refreshed = 0.0
        self._refresh_wanted = threading.Event()
        self._view_thread: threading.Thread | None = None
        self._in_flight: dict[str, _Call] = {}  # by task id
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []  # call threads, at most max_in_flight
        self._idle_threads = 0
        self._closed = False

    # ------------------------------------------------------------------ sending

    def try_send(self, spec: pb.TaskSpec, future: Any) -> bool:
        """Send the task to a worker with a free slot; False (nothing done) when none has one."""
        worker = self._reserve()
        if worker is None:
            return False
        call = _Call(worker, spec, future)
        with self._lock:
            self._in_flight[spec.task_id] = call
        self._dispatch(call)
        return True

    def _dispatch(self, call: _Call) -> None:
        """Hand a call to the pool (a thread per call in flight, started when needed). Under
        the lock, so that an idle thread that is leaving sees the call queued for it."""
        with self._lock:
            if self._idle_threads == 0 and len(self._threads) < self._max_in_flight:
                thread = threading.Thread(target=self._call_loop, name="fray-direct", daemon=True)
                self._threads.append(thread)
                thread.start()
            else:
                self._idle_threads -= 1
            self._calls.put(call)

    def help(self, task_id: str) -> None:
        """Make the call of `task_id` in this thread if no thread has taken it yet."""
        with self._lock:
            call = self._in_flight.get(task_id)
            if call is None or call.claimed:
                return
            call.claimed = True
        try:
            self._make(call)
        except BaseException:  # e.g. Ctrl-C while waiting: a pool thread takes over the call
            with self._lock:
                call.claimed = False
            self._dispatch(call)  # RunTask is idempotent: it finds the task already there
            raise

    def _reserve(self) -> _WorkerView | None:
        now = time.monotonic()
        if not self._refreshed:
            self._refresh()  # the first time: we know of no worker yet
        elif now - self._refreshed > REFRESH_SECONDS:
            self._refresh_soon()
        with self._lock:
            if self._closed or len(self._in_flight) >= self._max_in_flight:
                return None
            ready = [w for w in self._workers.values() if w.room > 0 and w.resting_until <= now]
            if not ready:
                return None
            best = max(ready, key=lambda w: w.room)
            best.ours += 1
            return best

    def _call_loop(self) -> None:
        while True:
            try:
                call = self._calls.get(timeout=IDLE_SECONDS)
            except queue.Empty:
                with self._lock:
                    if not self._calls.empty():
                        continue  # a call was handed to the idle threads meanwhile
                    self._idle_threads -= 1  # idle for long: leave (a new one starts if needed)
                    self._threads.remove(threading.current_thread())
                    return
            if call is None:
                return
            with self._lock:
                claimed, call.claimed = call.claimed, True
            if not claimed:
                self._make(call)
            with self._lock:
                self._idle_threads += 1

    def _make(self, call: _Call) -> None:
        try:
            self._send(call.worker, call.spec, call.future)
        except Exception:  # never strand a future
            logger.exception("direct call of task %s failed", call.spec.task_id)
            self._requeue(call.spec, call.future, True)
        # Released only once the future is settled or the task requeued: until then a cancel
        # finds the call here.
        with self._lock:
            call.worker.ours -= 1
            self._in_flight.pop(call.spec.task_id, None)

    def _rest(self, worker: _WorkerView, seconds: float) -> None:
        with self._lock:
            worker.resting_until = time.monotonic() + seconds

    def _send(self, worker: _WorkerView, spec: pb.TaskSpec, future: Any) -> None:
        try:
            result = self._run(worker, spec)
        except _Refused:  # busy or draining: the task did not start there
            self._rest(worker, _BACK_OFF_SECONDS)
            if not future.done():
                self._requeue(spec, future, False)
            return
        except _Lost as exc:
            self._rest(worker, _LOST_REST_SECONDS)  # do not offer it more until it shows up again
            if not future.done():
                logger.info(
                    "lost task %s on worker %s (%s); queuing it",
                    spec.task_id,
                    worker.worker_id,
                    exc,
                )
                self._requeue(spec, future, exc.maybe_ran)
            if exc.maybe_ran:  # in case it comes back: the task is queued elsewhere
                threading.Thread(
                    target=self._cancel_on, args=(worker, spec.task_id), daemon=True
                ).start()
            return
        if result.handed_back:
            if not future.done():
                self._requeue(spec, future, False)
        elif result.HasField("error") and result.error.kind == pb.ERROR_KIND_WORKER_LOST:
            if not future.done():  # its executor died: a worker failure, retried on the queue
                self._requeue(spec, future, True)
        else:
            self._complete(future, result)

    def _run(self, worker: _WorkerView, spec: pb.TaskSpec) -> pb.TaskResult:
        """RunTask, then WaitTask until the task is done. Raises _Refused or _Lost."""
        client = self._client(worker.address)
        request = wpb.RunTaskRequest(task=spec, wait_ms=WAIT_MS)
        if spec.object_ids and self._locate is not None:
            for object_id, location in self._locate(spec.object_ids).items():
                request.object_locations[object_id].CopyFrom(location)
        try:
            response: wpb.RunTaskResponse | wpb.WaitTaskResponse = self._call(
                client.run_task, request
            )
        except ConnectError as exc:
            if exc.code in (Code.RESOURCE_EXHAUSTED, Code.FAILED_PRECONDITION):
                raise _Refused(exc.message) from None
            if exc.code != Code.UNAVAILABLE:
                logger.warning(
                    "worker %s refused task %s (%s: %s)",
                    worker.worker_id,
                    spec.task_id,
                    exc.code.value,
                    exc.message,
                )
            # A refused connection or request never delivered the task; a broken one may have.
            maybe_ran = exc.code in _MAYBE_RAN and not never_connected(exc)
            raise _Lost(exc.message, maybe_ran=maybe_ran) from None
        while not response.done:
            try:
                response = self._call(
                    client.wait_task, wpb.WaitTaskRequest(task_id=spec.task_id, wait_ms=WAIT_MS)
                )
            except ConnectError as exc:  # it was running there: it may still be
                raise _Lost(exc.message, maybe_ran=True) from None
        return response.result

    def _call(self, method: Callable[..., Any], request: Any) -> Any:
        """A worker call that gets one more try after a connection failure (RunTask and
        WaitTask are idempotent). A timeout is not retried: the worker is stuck."""
        try:
            return method(request, headers=self._headers, timeout_ms=_CALL_TIMEOUT_MS)
        except ConnectError as exc:
            if exc.code != Code.UNAVAILABLE or never_connected(exc):
                raise
        time.sleep(0.05)
        try:
            return method(request, headers=self._headers, timeout_ms=_CALL_TIMEOUT_MS)
        except ConnectError as exc:  # the first try broke off: the task may have got there
            raise _Lost(exc.message, maybe_ran=True) from None

    # ------------------------------------------------------------------ cancelling

    def cancel(self, task_id: str) -> bool:
        """Stop a task sent directly; False if it is not one of ours in flight."""
        with self._lock:
            call = self._in_flight.get(task_id)
        if call is None:
            return False
        self._cancel_on(call.worker, task_id)
        return True

    def _cancel_on(self, worker: _WorkerView, task_id: str) -> None:
        try:
            self._client(worker.address).cancel_task(
                wpb.CancelTaskRequest(task_id=task_id), headers=self._headers, timeout_ms=2000
            )
        except ConnectError as exc:  # the worker is gone: so is the task
            logger.debug("could not cancel task %s on %s: %s", task_id, worker.worker_id, exc)

    def close(self, timeout: float = 2.0) -> None:
        """Stop the tasks in flight (at once, waiting at most `timeout`) and the threads."""
        with self._lock:
            self._closed = True
            in_flight = list(self._in_flight.values())
            threads = list(self._threads)
        cancels = [
            threading.Thread(target=self._cancel_on, args=(c.worker, c.spec.task_id), daemon=True)
            for c in in_flight
        ]
        for thread in cancels:
            thread.start()
        deadline = time.monotonic() + timeout
        for thread in cancels:
            thread.join(max(0.0, deadline - time.monotonic()))
        for _ in threads:
            self._calls.put(None)
        self._refresh_wanted.set()

    # ------------------------------------------------------------------ the workers' slots

    def _client(self, address: str) -> FrayWorkerClientSync:
        return self._worker_clients.get(address)

    def _refresh_soon(self) -> None:
        with self._lock:
            if self._view_thread is None:
                self._view_thread = threading.Thread(
                    target=self._refresh_loop, name="fray-direct-view", daemon=True
                )
                self._view_thread.start()
        self._refresh_wanted.set()

    def _refresh_loop(self) -> None:
        while True:
            self._refresh_wanted.wait()
            if self._closed:
                return
            self._refresh_wanted.clear()
            self._refresh()
            time.sleep(REFRESH_SECONDS)

    def _refresh(self) -> None:
        """Learn the workers and their free slots from the controller (one try)."""
        self._refreshed = time.monotonic()
        try:
            response = self._controller.call(
                self._controller.rpc.list_workers,
                pb.ListWorkersRequest(),
                retry_timeout=0,
                quiet=True,
            )
        except Exception as exc:  # the queue path reports an unreachable controller
            logger.debug("could not list workers: %s", exc)
            return
        with self._lock:
            listed = {}
            for w in response.workers:
                if w.draining or not w.address:
                    continue
                view = self._workers.get(w.worker_id) or _WorkerView(w.worker_id, w.address, 0)
                # The worker's count of direct tasks may include ours already.
                others = max(0, w.direct_running - view.ours)
                view.address, view.free = w.address, w.slots - len(w.task_ids) - others
                listed[w.worker_id] = view
            self._workers = listed  # calls in flight keep (and release) their views
