"""Resolving queued tasks' futures: one WatchFinished long poll at a time, from one thread.

The controller keeps, per client (`owner`), the ids of its finished tasks in finishing order;
`Collector` reads them from a cursor (which acknowledges everything before it) and resolves the
futures through the task table. Recovery, when the controller lost state:
- a new controller id in an answer (a restart): the table fails the old controller's tasks;
- our cursor past the end of its log (`not_found`), or our unread results dropped after a long
  absence (`dropped`): ask about each outstanding task (GetTask), failing the unknown ones with
  `TaskLostError`.
An unreachable controller fails the outstanding queued tasks with ControllerUnavailableError.
With a `DriverLog` (log_to_driver), the same long poll also asks for the live output of the
owner's running tasks, queued and direct (`watch_output`, from our output cursor), and prints it
as it comes; the collector then also runs while only direct tasks are outstanding.
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
from fray.client.output import DriverLog
from fray.client.tasks import FutureTable
from fray.wire.controller_client import ControllerClient
from fray.wire.pb import controller_pb2 as pb

logger = logging.getLogger(__name__)

WATCH_WAIT_MS = 10_000
LIVE_WATCH_DELAY = 0.25  # seconds: see _loop
_FINISHED_STATES = (pb.TASK_STATE_COMPLETED, pb.TASK_STATE_FAILED, pb.TASK_STATE_CANCELLED)


class Collector:
    """Long-polls WatchFinished for `owner`'s tasks and settles their futures in `table`."""

    def __init__(
        self,
        controller: ControllerClient,
        owner: str,
        table: FutureTable,
        driver_log: DriverLog | None = None,
    ) -> None:
        self._controller = controller
        self._owner = owner
        self._table = table
        self._driver_log = driver_log
        self._output_cursor = 0  # in the controller's stream of our tasks' live output
        self._queued = threading.Event()  # a task was queued (start() was called)
        self._warning = False  # no_workers started
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        # Warns when our queued tasks wait at a controller that has no worker.
        self.no_workers = NoWorkerWarning(
            controller, lambda: len(table.submitted()), lambda: table.closed
        )

    def start(self) -> None:
        """Start the collecting thread (once), for queued tasks; it ends when the table closes."""
        self._queued.set()
        with self._lock:
            if self._thread is None:
                self._start_locked()
            if not self._warning:
                self._warning = True
                self.no_workers.start()

    def _start_locked(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="fray-collect", daemon=True)
        self._thread.start()

    def task_sent(self) -> None:
        """A task was sent (queued or direct): with log_to_driver, watch its live output."""
        if self._driver_log is not None:
            self._table.accepted([], "")  # wakes a watch_request waiting for a task to watch

    def watch_output(self) -> None:
        """With log_to_driver: start the collecting thread now (not when the first task is
        sent, which must not wait for a thread to start), so that direct tasks' output is
        watched too."""
        if self._driver_log is None:
            return
        with self._lock:
            if self._thread is None:
                self._start_locked()

    def on_own_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def _learn_controller(self) -> None:
        """Learn the controller's id (watch requests name it) when no queued task told us:
        a client with only direct tasks watches their output too."""
        controller = self._controller
        while not self._table.closed:
            try:
                summary = controller.call(
                    controller.rpc.get_cluster_summary, pb.GetClusterSummaryRequest()
                )
            except Exception:
                if self._table.closed:
                    return
                logger.warning("could not reach the controller to watch task output; retrying")
                time.sleep(0.5)
                continue
            self._table.accepted([], summary.controller_id)
            return

    def _loop(self) -> None:
        if self._driver_log is not None:
            # Started with the context: leave its first moments to its first tasks' calls
            # (output comes every half second at the earliest, and the controller keeps what
            # came before we watch). A queued task ends the wait.
            self._queued.wait(LIVE_WATCH_DELAY)
            self._learn_controller()
        while True:
            request = self._table.watch_request(self._owner, WATCH_WAIT_MS)
            if request is None:
                return
            if self._driver_log is not None:
                request.watch_output = True
                request.output_cursor = self._output_cursor
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
        self._print_output(request, response)
        for task in response.finished:
            self._table.resolve(task)
        if response.dropped:  # we were away so long that unread results were dropped
            self._ask_each()

    def _print_output(
        self, request: pb.WatchFinishedRequest, response: pb.WatchFinishedResponse
    ) -> None:
        """Print the live output in an answer (before the finished tasks' rest of it)."""
        log = self._driver_log
        if log is None or not request.watch_output:
            return
        if request.controller_id and response.controller_id != request.controller_id:
            self._output_cursor = 0  # another controller: its stream starts over
            return
        self._output_cursor = response.next_output_cursor
        for chunk in response.output:
            if chunk.owner in ("", self._owner):
                log.chunk(chunk)

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
