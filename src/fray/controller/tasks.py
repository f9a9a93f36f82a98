"""The task table: every task the controller knows, by id; how many are in each state; the FIFO
queue of PENDING tasks; and the bounded memory of finished ones.

Bookkeeping only, no decisions: `Transitions.move` tells the table when a task changes state
(`recount`, `requeue_front`, `retire`), and `task_lifecycle` adds tasks and takes them off the
queue. Finished tasks are kept up to a limit; past it the oldest are forgotten (evicted).
What it adds and forgets is marked in `changes`, for the journal.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable

from fray.controller.changes import Changes
from fray.controller.records import (
    ErrorKind,
    NotFound,
    TaskFailure,
    TaskRecord,
    TaskSpec,
    TaskState,
)


class TaskTable:
    """Tasks by id, counts by state, the PENDING queue, and eviction of the oldest finished."""

    def __init__(self, max_finished: int, changes: Changes | None = None) -> None:
        self.max_finished = max_finished
        self.changes = Changes() if changes is None else changes
        self.by_id: dict[str, TaskRecord] = {}
        self.counts: dict[TaskState, int] = {s: 0 for s in TaskState}
        self._queue: deque[str] = deque()  # PENDING task ids, oldest first (may hold stale ids)
        self._finished: deque[str] = deque()  # finished task ids, oldest first, for eviction
        # Queued tasks not finished yet, by owner (the service caps them per client).
        self.unfinished_by_owner: Counter[str] = Counter()

    @property
    def queued(self) -> int:
        return self.counts[TaskState.PENDING]

    def get(self, task_id: str) -> TaskRecord:
        task = self.by_id.get(task_id)
        if task is None:
            raise NotFound(f"task {task_id} not found")
        return task

    def add_pending(self, task: TaskRecord) -> None:
        """A new PENDING task, at the back of the queue. It may replace the record of a direct
        task with its id (the client queues a task whose worker's answer it lost)."""
        replaced = self.by_id.get(task.task_id)
        if replaced is not None:
            assert replaced.direct, f"task {task.task_id} replaces a queued task"
            self.counts[replaced.state] -= 1
            self._finished.remove(task.task_id)
            self.changes.gone_row(replaced.saved_row)
        self.by_id[task.task_id] = task
        self.counts[TaskState.PENDING] += 1
        self._queue.append(task.task_id)
        self.unfinished_by_owner[task.spec.owner] += 1
        self.changes.new_task(task.task_id)

    def add_finished(self, task: TaskRecord) -> None:
        """A task that arrives finished (a direct task's record); `evict` afterwards."""
        self.by_id[task.task_id] = task
        self.counts[task.state] += 1
        self._finished.append(task.task_id)
        self.changes.new_task(task.task_id)

    def restore(self, task: TaskRecord) -> None:
        """A task as it was saved (at a restart): PENDING ones join the back of the queue,
        finished ones the back of the eviction order (give them oldest first)."""
        self.by_id[task.task_id] = task
        self.counts[task.state] += 1
        if task.state is TaskState.PENDING:
            self._queue.append(task.task_id)
        elif task.state.finished:
            self._finished.append(task.task_id)
        if not task.state.finished and not task.direct:
            self.unfinished_by_owner[task.spec.owner] += 1

    def next_pending(self) -> TaskRecord | None:
        """Take the oldest PENDING task off the queue (None: the queue is empty)."""
        while self._queue:
            task = self.by_id.get(self._queue.popleft())
            if task is not None and task.state is TaskState.PENDING:
                return task
            # cancelled or evicted while queued: a stale id
        return None

    # ---------------------------------------------------------------- called by Transitions

    def recount(self, was: TaskState, to: TaskState) -> None:
        self.counts[was] -= 1
        self.counts[to] += 1

    def requeue_front(self, task_id: str) -> None:
        """A task back from a worker is older than anything queued after it."""
        self._queue.appendleft(task_id)

    def retire(self, task_id: str) -> None:
        """Note a task finished; forget the oldest finished tasks past the limit."""
        self._finished.append(task_id)
        owner = self.by_id[task_id].spec.owner
        self.unfinished_by_owner[owner] -= 1
        if self.unfinished_by_owner[owner] <= 0:
            del self.unfinished_by_owner[owner]
        self.evict()

    def evict(self) -> None:
        while len(self._finished) > self.max_finished:
            task_id = self._finished.popleft()
            task = self.by_id.pop(task_id, None)
            if task is not None:
                self.counts[task.state] -= 1
                self.changes.gone_row(task.saved_row)
            # Its id stays in its owner's finished log (if unread): it reads as lost there.

    # ---------------------------------------------------------------- reading

    def finished_or_evicted(self, task_id: str) -> TaskRecord:
        """A finished task, or, if it was forgotten before its owner read it, a stand-in that
        reads as lost."""
        task = self.by_id.get(task_id)
        if task is not None:
            return task
        message = (
            f"its result was dropped before it was read: the controller keeps "
            f"{self.max_finished} finished tasks"
        )
        return TaskRecord(
            spec=TaskSpec(function=b"", args=b"", task_id=task_id),
            submitted_at=0.0,
            state=TaskState.FAILED,
            error=TaskFailure(ErrorKind.WORKER_LOST, "ResultEvicted", message),
        )

    def select(
        self, state: TaskState | None, task_ids: Iterable[str] | None, limit: int
    ) -> list[TaskRecord]:
        """Up to `limit` tasks (among `task_ids`, or all) in `state` (or any), oldest first."""
        out: list[TaskRecord] = []
        for task_id in self.by_id if task_ids is None else task_ids:
            task = self.by_id[task_id]
            if state is None or task.state is state:
                out.append(task)
                if len(out) >= limit:
                    break
        return out
