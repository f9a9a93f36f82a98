"""Resolving queued tasks' futures: one WatchFinished long poll at a time, from one thread.

The controller keeps, per client (`owner`), the ids of its finished tasks in finishing order;
`Collector` reads them from a cursor (which acknowledges everything before it) and resolves the
futures through the task table. Recovery, when the controller lost state:
- a new controller id in an answer (a restart): the table fails the old controller's tasks;
- our cursor past the end of its log (`not_found`), or our unread results dropped after a long
  absence (`dropped`): ask about each outstanding task (GetTask), failing the unknown ones with
  `TaskLostError`.
An unreachable controller fails the outstanding queued tasks with ControllerUnavailableError.
`wait_for` is `FrayContext.wait`'s long poll on the controller (WaitTasks), resolved the same way.
"""

from __future__ import annotations

import logging
import threading
import time

from connectrpc.code import Code
from connectrpc.errors import ConnectError

from fray import errors
from fray.client.connections import refused
from fray.client.futures import FrayFuture
from fray.client.no_workers import NoWorkerWarning
from fray.client.tasks import FutureTable
from fray.wire.controller_client import ControllerClient
from fray.wire.pb import controller_pb2 as pb

logger = logging.getLogger(__name__)

WATCH_WAIT_MS = 10_000
_FINISHED_STATES = (pb.TASK_STATE_COMPLETED, pb.TASK_STATE_FAILED, pb.TASK_STATE_CANCELLED)


class Collector:
    """Long-polls WatchFinished for `owner`'s tasks and settles their futures in `table`."""

    def __init__(self, controller: ControllerClient, owner: str, table: FutureTable) -> None:
        self._controller = controller
        self._owner = owner
        self._table = table
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        # Warns when our queued tasks wait at a controller that has no worker.
        self.no_workers = NoWorkerWarning(
            controller, lambda: len(table.submitted()), lambda: table.closed
        )

    def start(self) -> None:
        """Start the collecting thread (once); it ends when the table closes."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="fray-collect", daemon=True)
                self._thread.start()
                self.no_workers.start()

    def on_own_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def _loop(self) -> None:
        while True:
            request = self._table.watch_request(self._owner, WATCH_WAIT_MS)
            if request is None:
                return
            try:
                self._collect(request)
            except Exception:  # the collector must not die: every future would hang
                if self._table.closed:
                    return
                logger.exception("watching results failed; retrying")
                time.sleep(0.5)

    def _collect(self, request: pb.WatchFinishedRequest) -> None:
        controller = self._controller
        try:
            response = controller.call(
                controller.rpc.watch_finished, request, wait_ms=WATCH_WAIT_MS
            )
        except errors.ControllerUnavailableError as exc:
            self._table.fail(self._table.submitted(), exc)
            return
        except ConnectError as exc:
            if exc.code != Code.NOT_FOUND:
                raise
            self.check_lost()  # our cursor is past its end: it lost state we could not see
            return
        self._table.watched(request, response)
        for task in response.finished:
            self._table.resolve(task)
        if response.dropped:  # we were away so long that unread results were dropped
            self._ask_each()

    def wait_for(self, futures: list[FrayFuture], min_finished: int, wait_ms: int) -> None:
        """Wait on the controller (WaitTasks) until `min_finished` of these accepted tasks
        finished or `wait_ms` passed, and resolve the finished ones."""
        controller = self._controller
        request = pb.WaitTasksRequest(
            task_ids=[f.task_id for f in futures],
            min_finished=min_finished,
            wait_ms=wait_ms,
            include_results=True,
        )
        try:
            response = controller.call(controller.rpc.wait_tasks, request, wait_ms=wait_ms)
        except ConnectError as exc:
            if exc.code != Code.NOT_FOUND:
                raise refused(exc, "WaitTasks") from None
            self.check_lost()
            return
        for task in response.finished:
            self._table.resolve(task)

    def check_lost(self) -> None:
        """Our cursor is past the end of the controller's log: it lost state without our
        noticing a new controller id. Learn its id, then ask about each outstanding task."""
        controller = self._controller
        summary = controller.call(controller.rpc.get_cluster_summary, pb.GetClusterSummaryRequest())
        self._table.restarted(summary.controller_id)
        self._ask_each()

    def _ask_each(self) -> None:
        """Resolve outstanding tasks one by one (GetTask): finished ones get their result,
        unknown ones fail with TaskLostError."""
        controller = self._controller
        for future in self._table.submitted():
            request = pb.GetTaskRequest(task_id=future.task_id, include_result=True)
            try:
                task = controller.call(controller.rpc.get_task, request).task
            except errors.ControllerUnavailableError as exc:
                self._table.fail(self._table.submitted(), exc)
                return
            except ConnectError as exc:
                if exc.code != Code.NOT_FOUND:
                    raise
                self._table.fail(
                    [future],
                    errors.TaskLostError(
                        f"task {future.task_id} was lost: the controller no longer knows it",
                        task_id=future.task_id,
                    ),
                )
                continue
            if task.state in _FINISHED_STATES:
                self._table.resolve(task)
