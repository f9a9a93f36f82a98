"""Queuing tasks at the controller: batched SubmitTasks calls from one thread.

Tasks that do not go (or no longer go) the direct path wait in `Submitter`'s list; its thread,
started with the first of them, sends them in batches of up to `BATCH` and tells the task table
which controller accepted them. A batch the controller refuses, or cannot be reached for, fails
its futures. `flush` waits until every task queued so far was sent (or refused).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from connectrpc.code import Code
from connectrpc.errors import ConnectError

from fray.client.connections import refused
from fray.client.futures import FrayFuture
from fray.client.tasks import FutureTable
from fray.common.batching import batch_length
from fray.wire.controller_client import ControllerClient
from fray.wire.pb import controller_pb2 as pb

logger = logging.getLogger(__name__)

BATCH = 2000
BATCH_BYTES = 16 << 20  # a batch's tasks by size: large arguments go a few at a time


class Submitter:
    """Sends queued tasks to the controller in batches, from a thread of its own.

    `on_start` is called once, when the thread starts (with the first queued task).
    """

    def __init__(
        self, controller: ControllerClient, table: FutureTable, on_start: Callable[[], None]
    ) -> None:
        self._controller = controller
        self._table = table
        self._on_start = on_start
        self._cond = threading.Condition()
        self._batch_bytes = BATCH_BYTES  # smaller after the controller found a batch too large
        self._unsent: list[tuple[pb.TaskSpec, FrayFuture]] = []
        self._in_flight = 0  # tasks being submitted right now
        self._closed = False
        self._thread: threading.Thread | None = None

    def has_backlog(self) -> bool:
        """Whether tasks are waiting to be sent (a hint: read without the lock)."""
        return bool(self._unsent)

    def on_own_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def queue(self, spec: pb.TaskSpec, future: FrayFuture) -> None:
        """Queue a task at the controller (not if its future is done or we are closed)."""
        with self._cond:
            # Checked under the lock that `take` searches the list with: a cancel either
            # finds the task there or this sees the future cancelled.
            if self._closed or future.done():
                return  # close() fails the future; a cancelled one is not queued
            self._unsent.append((spec, future))
            self._cond.notify_all()
            start = self._thread is None
            if start:
                self._thread = threading.Thread(target=self._loop, name="fray-submit", daemon=True)
                self._thread.start()
        if start:
            self._on_start()

    def requeue(self, spec: pb.TaskSpec, future: FrayFuture, lost: bool) -> None:
        """A task the direct path could not finish: queue it at the controller. `lost`: the
        worker may have died running it, which counts against its attempt budget."""
        if future.done():
            return
        if lost:
            spec.infra_failures += 1
        self.queue(spec, future)

    def take(self, future: FrayFuture) -> bool:
        """Remove a task that is still waiting to be sent; False if it is not waiting."""
        with self._cond:
            for i, (_, queued) in enumerate(self._unsent):
                if queued is future:
                    del self._unsent[i]
                    return True
        return False

    def flush(self) -> None:
        """Wait until every task queued so far has been accepted (or refused)."""
        with self._cond:
            while (self._unsent or self._in_flight) and not self._closed:
                self._cond.wait()

    def close(self) -> None:
        """Send nothing more; the thread ends and `flush` returns."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._unsent and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                sizes = (spec.ByteSize() for spec, _ in self._unsent)
                count = batch_length(sizes, BATCH, self._batch_bytes)
                batch = self._unsent[:count]
                del self._unsent[:count]
                self._in_flight = len(batch)
            futures = [f for _, f in batch]
            try:
                controller_id = self._send(pb.SubmitTasksRequest(tasks=[s for s, _ in batch]))
            except Exception as exc:
                too_large = (
                    isinstance(exc, ConnectError)
                    and exc.code == Code.RESOURCE_EXHAUSTED
                    and "max-request-bytes" in exc.message  # not the per-client cap
                )
                if too_large and len(batch) > 1:
                    with self._cond:  # over the controller's request size: fewer at a time
                        self._batch_bytes = max(1, self._batch_bytes // 4)
                        self._unsent[:0] = batch
                    self._sent()
                    continue
                self._sent()
                error = refused(exc, "the tasks") if isinstance(exc, ConnectError) else exc
                self._table.fail(futures, error)
                continue
            self._table.accepted(futures, controller_id)
            self._sent()

    def _sent(self) -> None:
        with self._cond:
            self._in_flight = 0
            self._cond.notify_all()

    def _send(self, request: pb.SubmitTasksRequest) -> str:
        """Submit a batch; returns the controller's id.

        A batch is all or none and its ids are ours, so `already_exists` means an earlier try
        of this very call got through (its answer was lost): the batch is accepted.
        """
        controller = self._controller
        try:
            return controller.call(controller.rpc.submit_tasks, request).controller_id
        except ConnectError as exc:
            if exc.code != Code.ALREADY_EXISTS:
                raise
        summary = controller.call(controller.rpc.get_cluster_summary, pb.GetClusterSummaryRequest())
        return summary.controller_id
