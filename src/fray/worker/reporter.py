"""The reporter: sends finished tasks to the controller in batches (`ReportResults`).

Two outboxes: results of leased tasks (the controller waits for them: they go as soon as the
reporter thread wakes, or at once from the slot that finished the last queued task), and records
of finished direct tasks (for the controller's books only: gathered for `DIRECT_REPORT_DELAY`
and sent with the next batch; reporting each at once cost ~1 ms of a direct round trip's p50,
docs/design.md, "Measured choices"). With them go the leased tasks a slot has started since the
last batch (`add_started`, sent at once like results): the controller moves those from ASSIGNED
to RUNNING, so that RUNNING means running. One batch is in flight at a time.

What running tasks print comes as `pb.TaskOutputChunk`s (`add_output`, from the slots); they go
within `OUTPUT_REPORT_DELAY` of the first one waiting, with the next batch, whether or not
results wait. A task's chunks always go before its result or in the same request (a batch of
results takes the chunks of its tasks along). Chunk text per request is bounded
(`OUTPUT_REQUEST_BYTES`, besides the chunks of the batch's results), and so is what waits while
the controller is away: past `OUTPUT_TASK_BACKLOG` bytes of a task or `OUTPUT_BACKLOG` in all,
the oldest chunks (of that task, or of the task waiting longest) are dropped; the task's result
still carries the last 64 KiB it printed.

The outboxes live under the worker's one mutex, with a Condition of their own that only the
reporter thread waits on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

from connectrpc.code import Code
from connectrpc.errors import ConnectError

from fray.common.batching import batch_length
from fray.errors import ControllerUnavailableError
from fray.wire.controller_client import ControllerClient
from fray.wire.pb import controller_pb2 as pb

logger = logging.getLogger(__name__)

REPORT_BATCH = 1000
# While results and starts come in fast, the reporter gathers them this long (or until this
# many wait) before a ReportResults: each RPC costs the worker and the controller about as much
# as tens of no-op tasks. Nothing waits on it: the slot that finishes the last queued task
# sends at once (`Worker._finished`).
GATHER_SECONDS = 0.002
GATHER_COUNT = 64
REPORT_BATCH_BYTES = 16 << 20  # results per ReportResults, by size (at least one)
# Finished direct tasks are reported to the controller in batches gathered this long.
DIRECT_REPORT_DELAY = 0.5
# What running tasks print is sent this long after the first chunk waiting.
OUTPUT_REPORT_DELAY = 0.25
OUTPUT_REQUEST_BYTES = 1 << 20  # chunks per request, by size (besides the results' own)
OUTPUT_TASK_BACKLOG = 256 << 10  # chunks of one task kept while they cannot be sent
OUTPUT_BACKLOG = 4 << 20  # chunks of all tasks kept while they cannot be sent


class Reporter:
    """Batches results for the controller.

    `sent` is told which leased results the controller has had (or refused), after each batch.
    After `stopping_hard` is set, the reporter thread sends what is left and ends.
    """

    def __init__(
        self,
        client: ControllerClient,
        worker_id: str,
        mutex: threading.RLock,
        stopping_hard: threading.Event,
        sent: Callable[[list[pb.TaskResult]], None],
    ) -> None:
        self._client = client
        self._worker_id = worker_id
        self._mutex = mutex
        self._stopping_hard = stopping_hard
        self._sent = sent
        self._wake = threading.Condition(mutex)  # the reporter thread waits here
        self._outbox: deque[pb.TaskResult] = deque()
        self._batch_bytes = REPORT_BATCH_BYTES
        self._direct_outbox: deque[pb.DirectTask] = deque()  # for the controller's books
        self._direct_due = 0.0  # when the oldest of them should be sent
        # Leased tasks a slot started: (task id, attempt, time.monotonic() at the start).
        self._started: list[tuple[str, int, float]] = []
        # What running tasks printed, by task id (oldest first), and their sizes.
        self._output: OrderedDict[str, deque[pb.TaskOutputChunk]] = OrderedDict()
        self._output_bytes: dict[str, int] = {}
        self._output_total = 0
        self._output_due = 0.0  # when the oldest chunk waiting should be sent
        self.output_dropped = 0  # chunks dropped to bound the backlog
        self._send_lock = threading.Lock()
        self._gathering = False  # the reporter thread waits GATHER_SECONDS for more

    def add(self, result: pb.TaskResult) -> None:
        """Queue a leased task's result; wakes the reporter thread."""
        with self._mutex:
            self._outbox.append(result)
            self._notify()

    def add_started(self, task_id: str, attempt: int) -> None:
        """A slot started a leased task (the controller moves it from ASSIGNED to RUNNING);
        wakes the reporter thread."""
        with self._mutex:
            self._started.append((task_id, attempt, time.monotonic()))
            self._notify()

    def _notify(self) -> None:
        """Wake the reporter thread for news to send, unless it is gathering and the batch is
        not full yet. Holds the mutex."""
        if not self._gathering or len(self._outbox) + len(self._started) >= GATHER_COUNT:
            self._wake.notify()

    def add_direct(self, record: pb.DirectTask) -> None:
        """Queue a finished direct task's record, to go within DIRECT_REPORT_DELAY."""
        with self._mutex:
            if not self._direct_outbox:
                self._direct_due = time.monotonic() + DIRECT_REPORT_DELAY
                self._wake.notify()
            self._direct_outbox.append(record)

    def add_output(self, chunk: pb.TaskOutputChunk) -> None:
        """Queue what a running task printed, to go within OUTPUT_REPORT_DELAY."""
        with self._mutex:
            if not self._output:
                self._output_due = time.monotonic() + OUTPUT_REPORT_DELAY
                self._wake.notify()
            self._keep_output([chunk], front=False)

    def _keep_output(self, chunks: list[pb.TaskOutputChunk], front: bool) -> None:
        """Queue chunks (in their order) after a task's others, or before them (chunks given
        back); then drop the oldest past the backlog bounds. Holds the mutex."""
        touched = []
        for chunk in reversed(chunks) if front else chunks:
            task_id = chunk.task_id
            queue = self._output.get(task_id)
            if queue is None:
                queue = self._output[task_id] = deque()
                if front:
                    self._output.move_to_end(task_id, last=False)
            if front:
                queue.appendleft(chunk)
            else:
                queue.append(chunk)
            size = chunk.ByteSize()
            self._output_bytes[task_id] = self._output_bytes.get(task_id, 0) + size
            self._output_total += size
            touched.append(task_id)
        for task_id in touched:
            while self._output_bytes.get(task_id, 0) > OUTPUT_TASK_BACKLOG:
                if len(self._output[task_id]) == 1:
                    break  # the newest stays
                self._drop_oldest(task_id)
        while self._output_total > OUTPUT_BACKLOG and self._output:
            self._drop_oldest(next(iter(self._output)))

    def _drop_oldest(self, task_id: str) -> None:
        queue = self._output[task_id]
        self._forget_output(queue.popleft())
        if not queue:
            del self._output[task_id]
        self.output_dropped += 1
        if self.output_dropped == 1 or self.output_dropped % 1000 == 0:
            logger.warning(
                "output of running tasks piles up (the controller is slow or away): %d "
                "chunks dropped so far (results still carry each task's last 64 KiB)",
                self.output_dropped,
            )

    def _forget_output(self, chunk: pb.TaskOutputChunk) -> None:
        """Account for a chunk taken out of the backlog. Holds the mutex."""
        size = chunk.ByteSize()
        self._output_total -= size
        left = self._output_bytes[chunk.task_id] - size
        if left > 0:
            self._output_bytes[chunk.task_id] = left
        else:
            del self._output_bytes[chunk.task_id]

    def _take_output(self, task_ids: set[str]) -> list[pb.TaskOutputChunk]:
        """The chunks of the next request: all those of `task_ids` (whose results or records
        go in it), then others up to OUTPUT_REQUEST_BYTES. Holds the mutex."""
        taken: list[pb.TaskOutputChunk] = []
        for task_id in task_ids:
            queue = self._output.pop(task_id, None)
            if queue is not None:
                for chunk in queue:
                    self._forget_output(chunk)
                taken.extend(queue)
        budget = OUTPUT_REQUEST_BYTES
        while self._output:
            task_id, queue = next(iter(self._output.items()))
            size = queue[0].ByteSize()
            if size > budget and taken:
                break
            budget -= size
            chunk = queue.popleft()
            self._forget_output(chunk)
            taken.append(chunk)
            if not queue:
                del self._output[task_id]
        return taken

    def has_results(self) -> bool:
        """Whether leased results wait to be sent."""
        return bool(self._outbox)

    def wake_all(self) -> None:
        """Wake the reporter thread, to see that the worker is stopping."""
        with self._mutex:
            self._wake.notify_all()

    def loop(self) -> None:
        """The reporter thread: until `stopping_hard` is set and nothing is left to send."""
        while not self._stopping_hard.is_set() or self._pending():
            with self._mutex:
                while not self._outbox and not self._started and not self._stopping_hard.is_set():
                    due = self._due()
                    if due is None:
                        self._wake.wait()
                        continue
                    left = due - time.monotonic()
                    if left <= 0:
                        break
                    self._wake.wait(left)
                self._gather()
            self.send()

    def _gather(self) -> None:
        """Let results and starts that keep coming fill the batch, for up to GATHER_SECONDS.
        Holds the mutex."""
        deadline = time.monotonic() + GATHER_SECONDS
        self._gathering = True
        try:
            while len(self._outbox) + len(self._started) < GATHER_COUNT:
                left = deadline - time.monotonic()
                if left <= 0 or self._stopping_hard.is_set():
                    return
                self._wake.wait(left)
        finally:
            self._gathering = False

    def _pending(self) -> bool:
        """Whether anything waits to be sent."""
        return bool(self._outbox or self._direct_outbox or self._started or self._output)

    def _due(self) -> float | None:
        """When what waits without hurry should go (None: nothing does). Records of direct
        tasks are for the record only: they are gathered a while; so are output chunks, for
        less. Holds the mutex."""
        dues = []
        if self._direct_outbox:
            full = len(self._direct_outbox) >= REPORT_BATCH
            dues.append(0.0 if full else self._direct_due)
        if self._output:
            dues.append(self._output_due)
        return min(dues) if dues else None

    def _take_results(self) -> list[pb.TaskResult]:
        """The next batch of results: up to REPORT_BATCH of them and REPORT_BATCH_BYTES with
        the output chunks of their tasks (at least one). Holds the mutex."""
        waiting = self._output_bytes
        if waiting:
            sizes = (result.ByteSize() + waiting.get(result.task_id, 0) for result in self._outbox)
        else:
            sizes = (result.ByteSize() for result in self._outbox)
        count = batch_length(sizes, REPORT_BATCH, self._batch_bytes)
        return [self._outbox.popleft() for _ in range(count)]

    def _give_back(self, batch: list[pb.TaskResult]) -> None:
        """Put results back at the front of the outbox, in their order."""
        with self._mutex:
            self._outbox.extendleft(reversed(batch))
            self._wake.notify()

    def _keep_records(
        self,
        direct: list[pb.DirectTask],
        started: list[Any],
        output: list[pb.TaskOutputChunk],
    ) -> None:
        """Put direct-task records, start notes and output chunks back, for the next batch."""
        with self._mutex:
            self._direct_outbox.extendleft(reversed(direct))
            self._started[:0] = started
            if output:
                if not self._output:
                    self._output_due = time.monotonic()
                self._keep_output(output, front=True)

    def _too_large(self, batch: list[pb.TaskResult], why: str) -> None:
        """The controller refused a batch as too large: send fewer results at a time, and a
        result too large on its own as an error (the task fails instead of running again)."""
        if len(batch) > 1:
            self._batch_bytes = max(1, self._batch_bytes // 4)
            self._give_back(batch)
            return
        (result,) = batch
        logger.error(
            "the result of task %s is too large for the controller: %s", result.task_id, why
        )
        failed = pb.TaskResult(
            task_id=result.task_id,
            attempt=result.attempt,
            error=pb.TaskError(
                kind=pb.ERROR_KIND_USER,
                type="fray.errors.ResultTooLargeError",
                message=(
                    f"the result ({result.ByteSize():,} bytes) is larger than the controller "
                    f"accepts: {why}"
                ),
            ),
        )
        self._give_back([failed])

    def flush(self) -> None:
        """Deliver every result, including a batch the reporter thread has in flight."""
        while True:
            self.send()
            with self._mutex:
                if not self._pending():
                    return

    def send(self, blocking: bool = True) -> None:
        """Send one batch (nothing if there is none, or, unless `blocking`, if a batch is
        already in flight: its sender takes ours next)."""
        if not self._send_lock.acquire(blocking):
            return
        try:  # one batch in flight at a time
            with self._mutex:
                batch = self._take_results()
                direct = [
                    self._direct_outbox.popleft()
                    for _ in range(min(len(self._direct_outbox), REPORT_BATCH))
                ]
                started, self._started = self._started, []
                output = self._take_output(
                    {r.task_id for r in batch} | {r.task_id for r in direct}
                    if self._output
                    else set()
                )
            if not batch and not direct and not started and not output:
                return
            now = time.monotonic()
            request = pb.ReportResultsRequest(
                worker_id=self._worker_id,
                results=batch,
                direct_tasks=direct,
                started=[
                    pb.TaskStarted(
                        task_id=task_id, attempt=attempt, running_for_ms=int((now - t0) * 1000)
                    )
                    for task_id, attempt, t0 in started
                ],
                output_chunks=output,
            )
            try:
                self._client.call(self._client.rpc.report_results, request)
            except ConnectError as exc:
                if exc.code == Code.RESOURCE_EXHAUSTED and batch:
                    self._keep_records(direct, started, output)
                    self._too_large(batch, exc.message)  # smaller batches, or an error result
                    return
                logger.warning(
                    "results of %d tasks were refused (%s); the controller requeued them",
                    len(batch),
                    exc.message,
                )
            except ControllerUnavailableError as exc:
                if not self._stopping_hard.is_set():  # keep them: the controller may come back
                    logger.warning("controller unreachable; %d results kept: %s", len(batch), exc)
                    self._keep_records(direct, started, output)
                    self._give_back(batch)
                    return
                logger.error("results of %d tasks could not be delivered: %s", len(batch), exc)
            self._sent(batch)
        finally:
            self._send_lock.release()
