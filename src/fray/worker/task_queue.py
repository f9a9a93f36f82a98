"""The worker's local queue: tasks waiting for a slot, and the count of those running.

Leased tasks join at the back (`push`); a direct task joins at the front (`push_front`) and only
when a slot is free for it (`has_free_slot`). Each slot thread blocks in `next_task` and is woken
alone: a task that arrives wakes one slot thread, not every thread of the worker (a worker-wide
wake-up cost 0.7 ms per hand-off, against 0.13 ms; docs/design.md, "Measured choices").

The queue works under the worker's one mutex (shared with the direct-call table, the reporter
and the lease loop, so that what spans them stays atomic), with a Condition of its own for each
kind of waiter: slot threads (`next_task`) and the shutdown waiting for running tasks
(`wait_idle`). It also keeps the recent pace of tasks, which the lease loop's prefetch follows.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable

from fray.wire.pb import controller_pb2 as pb


class TaskQueue:
    """Tasks waiting for one of `slots` slots, FIFO (direct tasks first)."""

    def __init__(self, mutex: threading.RLock, slots: int, stopping: threading.Event) -> None:
        self.slots = slots
        self._mutex = mutex
        self._stopping = stopping  # once set, slots take no more tasks
        self._work = threading.Condition(mutex)  # slot threads wait here
        self._idle = threading.Condition(mutex)  # the shutdown waits here for running tasks
        self._queue: deque[pb.LeasedTask] = deque()
        self._running = 0
        self.mean_task_seconds: float | None = None  # moving average of run times
        self.tasks_done = 0

    def push(self, tasks: Iterable[pb.LeasedTask]) -> None:
        """Queue leased tasks at the back; wakes a slot thread per task."""
        with self._mutex:
            before = len(self._queue)
            self._queue.extend(tasks)
            self._work.notify(len(self._queue) - before)

    def has_free_slot(self) -> bool:
        """Whether a task queued now would start at once."""
        with self._mutex:
            return self._running + len(self._queue) < self.slots

    def push_front(self, task: pb.LeasedTask) -> None:
        """Queue a task ahead of the others; wakes one slot thread."""
        with self._mutex:
            self._queue.appendleft(task)
            self._work.notify()

    def next_task(self, claim: Callable[[pb.LeasedTask], None]) -> pb.LeasedTask | None:
        """Block until a task is queued and take it (None once the worker stops).

        `claim` runs under the mutex before the task leaves the queue's lock: a cancellation
        (which searches the queue under the same lock) then finds the task in the queue or in
        the slot that claimed it, never in neither.
        """
        with self._mutex:
            while not self._queue or self._stopping.is_set():
                if self._stopping.is_set():
                    return None
                self._work.wait()
            self._running += 1
            task = self._queue.popleft()
            claim(task)
            return task

    def take_more(
        self,
        accept: Callable[[pb.LeasedTask], bool],
        limit: int,
        claim: Callable[[pb.LeasedTask], None],
    ) -> list[pb.LeasedTask]:
        """Take up to `limit` tasks from the front while `accept` takes them, without waiting
        (a slot's batch mates), and no more than this slot's share of the queue when other
        slots are idle; each is claimed like `next_task`'s."""
        taken: list[pb.LeasedTask] = []
        with self._mutex:
            idle = max(0, self.slots - self._running)
            limit = min(limit, len(self._queue) // (idle + 1))
            while self._queue and len(taken) < limit and not self._stopping.is_set():
                if not accept(self._queue[0]):
                    break
                task = self._queue.popleft()
                self._running += 1
                claim(task)
                taken.append(task)
        return taken

    def done(self, seconds: float) -> None:
        """A slot finished a task that took `seconds`."""
        with self._mutex:
            mean = self.mean_task_seconds
            self.mean_task_seconds = seconds if mean is None else 0.8 * mean + 0.2 * seconds
            self._running -= 1
            self.tasks_done += 1
            self._idle.notify_all()

    def remove(self, task_id: str) -> pb.LeasedTask | None:
        """Take a task out of the queue (None if it is not waiting here)."""
        with self._mutex:
            for task in self._queue:
                if task.task_id == task_id:
                    self._queue.remove(task)
                    return task
            return None

    def take_all(self) -> list[pb.LeasedTask]:
        """Empty the queue; returns what waited."""
        with self._mutex:
            tasks = list(self._queue)
            self._queue.clear()
            return tasks

    def keep_only(self, keep: Callable[[pb.LeasedTask], bool]) -> None:
        """Drop the waiting tasks that `keep` rejects."""
        with self._mutex:
            self._queue = deque(t for t in self._queue if keep(t))

    def is_idle(self) -> bool:
        """Nothing queued and nothing running (a batch's tasks run until each is done)."""
        return not self._queue and not self._running

    def counts(self) -> tuple[int, int]:
        """(running, queued)."""
        with self._mutex:
            return self._running, len(self._queue)

    def wait_idle(self, deadline: float, hard_stop: threading.Event) -> None:
        """Until no task runs, `deadline` (monotonic) passes, or `hard_stop` is set (and woken
        through `wake_all`)."""
        with self._mutex:
            while self._running and not hard_stop.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self._idle.wait(remaining)

    def wake_all(self) -> None:
        """Wake every waiter, to see that the worker is stopping."""
        with self._mutex:
            self._work.notify_all()
            self._idle.notify_all()
