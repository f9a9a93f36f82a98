"""The direct-call table: tasks that clients sent straight to this worker (`FrayWorker.RunTask`).

A direct task is taken only when a slot is free right now; it goes to the front of the local
queue and runs like a leased task (as attempt 0, see `results.DIRECT_ATTEMPT`). Its result is
set on the call's future, which the RPC handlers wait on (`fray.worker.service`), and is kept for
`RESULT_KEEP_SECONDS` for a client whose answer got lost; a `RunTask` for a task id that is here
answers from the same call. The controller hears of finished direct tasks afterwards, through
the reporter's batches (`report`).

A direct task nobody has asked about for `ORPHAN_SECONDS` lost its client (it died, or gave the
task up and queued it at the controller): `reap` stops it. A cancel that arrives before its task
is remembered (bounded), and the task is then refused as cancelled.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from fray.wire.pb import controller_pb2 as pb
from fray.worker.results import DIRECT_ATTEMPT, failed
from fray.worker.task_queue import TaskQueue

logger = logging.getLogger(__name__)

# A direct task's result is kept this long after it ends, for a client whose answer got lost.
RESULT_KEEP_SECONDS = 30.0
# A direct task nobody has polled for this long lost its client: it is stopped.
ORPHAN_SECONDS = 15.0
_MAX_CANCELLED_EARLY = 10_000


class WorkerBusy(Exception):
    """No free slot (Connect `resource_exhausted`)."""


class WorkerDraining(Exception):
    """The worker is shutting down (Connect `failed_precondition`; `unavailable` is left to
    transport failures, after which a client cannot know whether the task started)."""


class UnknownTask(Exception):
    """No such direct task here, or its result was already forgotten (Connect `not_found`)."""


@dataclass
class DirectCall:
    """A task a client sent straight to this worker (FrayWorker.RunTask)."""

    spec: pb.TaskSpec  # without function and arguments (not kept once it runs)
    started_at: float  # wall clock, for the controller's record
    future: concurrent.futures.Future[pb.TaskResult] = field(
        default_factory=concurrent.futures.Future
    )
    delivered: bool = False  # a client got the result
    ended: float = 0.0  # monotonic time the result was set
    waiting: int = 0  # RunTask/WaitTask calls waiting for it now
    last_seen: float = field(default_factory=time.monotonic)  # when a client last asked


def direct_record(call: DirectCall, result: pb.TaskResult) -> pb.DirectTask | None:
    """What the controller keeps of a finished direct task (None: not final, the client will
    queue it again)."""
    if result.HasField("value"):
        state = pb.TASK_STATE_COMPLETED
    elif result.HasField("error") and result.error.kind != pb.ERROR_KIND_WORKER_LOST:
        cancelled = result.error.kind == pb.ERROR_KIND_CANCELLED
        state = pb.TASK_STATE_CANCELLED if cancelled else pb.TASK_STATE_FAILED
    else:
        return None
    record = pb.DirectTask(
        task_id=call.spec.task_id,
        name=call.spec.name,
        owner=call.spec.owner,
        timeout_seconds=call.spec.timeout_seconds,
        state=state,
        error=result.error if result.HasField("error") else None,
        output=result.output if result.HasField("output") else None,
    )
    record.started_at.FromNanoseconds(int(call.started_at * 1e9))
    record.finished_at.FromNanoseconds(time.time_ns())
    return record


class DirectCalls:
    """The direct calls by task id, until their results are forgotten.

    Works under the worker's one mutex (admission and the local queue change together).
    `report` takes the record of a finished call for the controller (called under the mutex);
    `stop_task` stops a queued or running task by id (called without it).
    """

    def __init__(
        self,
        mutex: threading.RLock,
        worker_id: str,
        queue: TaskQueue,
        stopping: threading.Event,
        report: Callable[[pb.DirectTask], None],
        stop_task: Callable[[str], bool],
    ) -> None:
        self._mutex = mutex
        self._worker_id = worker_id
        self._queue = queue
        self._stopping = stopping
        self._report = report
        self._stop_task = stop_task
        self._ended_cv = threading.Condition(mutex)  # the shutdown waits here for deliveries
        self._calls: dict[str, DirectCall] = {}
        self._ended: deque[tuple[float, str]] = deque()  # (ended, task id), oldest first
        self._running = 0  # calls not finished yet
        self._cancelled_early: OrderedDict[str, None] = OrderedDict()  # before they arrived

    @property
    def running(self) -> int:
        """Direct calls not finished yet."""
        with self._mutex:
            return self._running

    def has(self, task_id: str) -> bool:
        return task_id in self._calls

    def run(self, spec: pb.TaskSpec) -> DirectCall:
        """Take a task a client sent straight here, if a slot is free (else `WorkerBusy`)."""
        with self._mutex:
            self._forget_old()
            call = self._calls.get(spec.task_id)
            if call is not None:  # the client's retry of a call whose answer it lost
                return call
            if self._stopping.is_set():
                raise WorkerDraining(f"worker {self._worker_id} is shutting down")
            light = pb.TaskSpec(
                task_id=spec.task_id,
                name=spec.name,
                owner=spec.owner,
                timeout_seconds=spec.timeout_seconds,
            )
            call = DirectCall(spec=light, started_at=time.time())
            if spec.task_id in self._cancelled_early:
                del self._cancelled_early[spec.task_id]
                self._calls[spec.task_id] = call
                self._running += 1
                task = pb.LeasedTask(task_id=spec.task_id, attempt=DIRECT_ATTEMPT)
                kind, worker_id = pb.ERROR_KIND_CANCELLED, self._worker_id
                self.complete(failed(task, kind, "TaskCancelledError", "cancelled", worker_id))
                return call
            if not self._queue.has_free_slot():
                raise WorkerBusy(f"worker {self._worker_id} has no free slot")
            self._calls[spec.task_id] = call
            self._running += 1
            self._queue.push_front(
                pb.LeasedTask(
                    task_id=spec.task_id,
                    attempt=DIRECT_ATTEMPT,
                    name=spec.name,
                    function=spec.function,
                    args=spec.args,
                    object_ids=spec.object_ids,
                    timeout_seconds=spec.timeout_seconds,
                )
            )
            return call

    def get(self, task_id: str) -> DirectCall:
        """The call for `task_id` (else `UnknownTask`)."""
        with self._mutex:
            call = self._calls.get(task_id)
        if call is None:
            raise UnknownTask(f"worker {self._worker_id} has no task {task_id}")
        return call

    def describe(self, chunk: pb.TaskOutputChunk) -> None:
        """Fill in the owner and name of a direct task's output chunk."""
        with self._mutex:
            call = self._calls.get(chunk.task_id)
        if call is not None:
            chunk.owner, chunk.name = call.spec.owner, call.spec.name

    def complete(self, result: pb.TaskResult) -> bool:
        """Give a result to its direct call; False if it is not one (a leased task's, or a
        call that already has its result)."""
        with self._mutex:
            call = self._calls.get(result.task_id) if result.attempt == DIRECT_ATTEMPT else None
            if call is None or call.future.done():
                return False
            call.ended = time.monotonic()
            call.future.set_result(result)
            self._running -= 1
            self._ended.append((call.ended, result.task_id))
            record = direct_record(call, result)
            if record is not None:
                self._report(record)
            self._ended_cv.notify_all()
            return True

    def cancel(self, task_id: str) -> bool:
        """Stop a direct task; one not here yet is refused when it arrives."""
        with self._mutex:
            call = self._calls.get(task_id)
            if call is None:
                self._cancelled_early[task_id] = None
                while len(self._cancelled_early) > _MAX_CANCELLED_EARLY:
                    self._cancelled_early.popitem(last=False)
                return False
        return call.future.done() or self._stop_task(task_id)

    def reap(self) -> None:
        """Forget old results; stop direct tasks whose client is gone (it stopped polling: it
        died, or gave the task up and queued it elsewhere)."""
        cutoff = time.monotonic() - ORPHAN_SECONDS
        with self._mutex:
            self._forget_old()
            orphans = [
                task_id
                for task_id, call in self._calls.items()
                if not call.future.done() and call.waiting == 0 and call.last_seen < cutoff
            ]
        for task_id in orphans:
            logger.warning("direct task %s: its client stopped asking for it; stopping it", task_id)
            self._stop_task(task_id)

    def _forget_old(self) -> None:
        """Drop results kept past RESULT_KEEP_SECONDS. Holds the mutex."""
        cutoff = time.monotonic() - RESULT_KEEP_SECONDS
        while self._ended and self._ended[0][0] < cutoff:
            del self._calls[self._ended.popleft()[1]]

    def wait_delivered(self, grace: float, hard_stop: threading.Event) -> None:
        """At shutdown: give clients up to `grace` seconds to collect finished results."""
        deadline = time.monotonic() + grace
        with self._mutex:
            while any(not self._calls[t].delivered for _, t in self._ended):
                if hard_stop.is_set():
                    return
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                # `delivered` is set by the RPC handlers without the mutex: look again soon.
                self._ended_cv.wait(min(remaining, 0.05))

    def wake_all(self) -> None:
        """Wake the shutdown's wait, to see that there is no grace left."""
        with self._mutex:
            self._ended_cv.notify_all()
