"""The table of a context's unfinished tasks and what it knows of its controller.

`FutureTable` holds the futures not finished yet (direct or queued), the controller's id and the
position (cursor) in its log of this client's finished tasks. Everything that settles a task's
future goes through it, so a future ends once and leaves the table when it does. It also
notices a new controller (a new id where a known one was: a controller restarted without its
saved state, or on another state file): the tasks the old controller had are lost, and their
futures fail with `TaskLostError`. A controller restarted on its state keeps its id, so
nothing is failed: the cursor stays valid and the futures resolve as the tasks finish.

The submitter (tasks accepted), the collector (tasks finished, restarts) and the direct path
(direct tasks finished) each use it; none of them needs the others.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from fray import errors
from fray.client.futures import FrayFuture, settle, settle_value
from fray.wire import payload
from fray.wire.pb import controller_pb2 as pb

if TYPE_CHECKING:
    from fray.client.objects import ClientObjects


class FutureTable:
    """A context's unfinished futures, by task id, and its controller's identity.
    `objects` load large results (`fray.client.objects`)."""

    def __init__(self, objects: ClientObjects | None = None) -> None:
        self._objects = objects
        self._cond = threading.Condition()
        self._futures: dict[str, FrayFuture] = {}
        self._controller_id = ""
        self._cursor = 0  # in the controller's log of our finished tasks
        self._closed = False
        # Called with (name, task_id, output) for a finished task that printed (log_to_driver).
        self.on_output: Callable[[str, str, pb.TaskOutput], None] | None = None

    @property
    def closed(self) -> bool:
        return self._closed

    def add(self, future: FrayFuture) -> bool:
        """Track a new task; False (not tracked) when its future is already done (cancelled
        while its arguments were awaited). FrayError once the table is closed."""
        with self._cond:
            if self._closed:
                raise errors.FrayError("the FrayContext is closed")
            if future.done():
                return False
            self._futures[future.task_id] = future
            return True

    def forget(self, task_id: str) -> None:
        with self._cond:
            self._futures.pop(task_id, None)

    def submitted(self) -> list[FrayFuture]:
        """The unfinished tasks the controller accepted."""
        with self._cond:
            return [f for f in self._futures.values() if f.controller_id]

    def close(self) -> list[FrayFuture] | None:
        """Stop tracking: returns the unfinished futures (None if closed already)."""
        with self._cond:
            if self._closed:
                return None
            self._closed = True
            self._cond.notify_all()
            return list(self._futures.values())

    # ------------------------------------------------------------------ the controller

    def accepted(self, futures: Iterable[FrayFuture], controller_id: str) -> None:
        """The controller `controller_id` accepted these tasks."""
        with self._cond:
            lost = self._note_controller(controller_id)
            for future in futures:
                future.controller_id = controller_id
            self._cond.notify_all()  # the collector may start watching
        self._fail_lost(lost)

    def watch_request(self, owner: str, wait_ms: int) -> pb.WatchFinishedRequest | None:
        """The next WatchFinished long poll, once there is something to watch (None: closed).

        Only once a controller accepted tasks: the request names it, so that a restarted
        controller answers at once instead of holding a stale long poll.
        """
        with self._cond:
            while not (self._futures and self._controller_id) and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            return pb.WatchFinishedRequest(
                owner=owner,
                cursor=self._cursor,
                wait_ms=wait_ms,
                controller_id=self._controller_id,
                brief=True,  # only what settles the futures
            )

    def watched(self, request: pb.WatchFinishedRequest, response: pb.WatchFinishedResponse) -> None:
        """A WatchFinished answer: move the cursor on (unless the controller changed meanwhile)
        and fail the tasks a restarted controller lost. The caller resolves the finished."""
        with self._cond:
            lost = self._note_controller(response.controller_id)
            if lost is None and self._cursor == request.cursor:
                self._cursor = response.next_cursor
        self._fail_lost(lost)

    def restarted(self, controller_id: str) -> None:
        """Our cursor is past the end of the controller's log: start over with `controller_id`
        (failing the tasks the old controller had, if it is another one)."""
        with self._cond:
            lost = self._note_controller(controller_id)
            self._cursor = 0
        self._fail_lost(lost)

    def _note_controller(self, controller_id: str) -> list[FrayFuture] | None:
        """Track the controller's identity. Holds _cond.

        When it changed (a restart that lost the state), returns the futures of the tasks the
        old one had, removed from the table; otherwise None.
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
            settle(
                future,
                exception=errors.TaskLostError(
                    f"task {future.task_id} was lost: the controller restarted",
                    task_id=future.task_id,
                ),
            )

    # ------------------------------------------------------------------ results

    def resolve(self, task: pb.Task) -> None:
        """A finished task, as the controller tells it."""
        with self._cond:
            future = self._futures.pop(task.task_id, None)
        if future is None or future.done():
            return
        if self.on_output is not None and task.HasField("output"):
            self.on_output(task.name, task.task_id, task.output)
        if task.state == pb.TASK_STATE_COMPLETED:
            settle_value(future, task.result, task.task_id, self._objects)
        else:
            settle(future, exception=payload.exception_from_error(task.error, task.task_id))

    def finish_direct(self, future: FrayFuture, result: pb.TaskResult) -> None:
        """A task finished on the direct path, as its worker tells it."""
        self.forget(future.task_id)
        if self.on_output is not None and result.HasField("output"):
            self.on_output(future.name, future.task_id, result.output)
        if result.HasField("value"):
            settle_value(future, result.value, future.task_id, self._objects)
        else:
            settle(future, exception=payload.exception_from_error(result.error, future.task_id))

    def fail(self, futures: Iterable[FrayFuture], exc: BaseException) -> None:
        futures = list(futures)
        with self._cond:
            for future in futures:
                self._futures.pop(future.task_id, None)
        for future in futures:
            settle(future, exception=exc)
