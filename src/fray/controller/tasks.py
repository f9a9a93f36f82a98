"""The task table: every task the controller knows, by id; how many are in each state; the
PENDING queues; and the bounded memory of finished ones.

Bookkeeping only, no decisions: `Transitions.move` tells the table when a task changes state
(`recount`, `requeue_front`, `retire`), and `task_lifecycle` adds tasks and takes them off the
queues. Finished tasks are kept up to a limit; past it the oldest are forgotten (evicted).
What it adds and forgets is marked in `changes`, for the journal.

The PENDING queue is one FIFO per distinct `placement.Need` (few in practice), so that a task
no worker can take now blocks nobody behind it: a lease takes the oldest task among the
queues whose need fits the worker (`next_pending`). Queued tasks carry a submission number,
which orders the queues' heads; a task back from a worker keeps its number (its place).
Tasks that ask for nothing (the usual case) live in a queue of bare ids at no extra cost: one
queued while no other queue exists is older than every task in the other queues to come, so
it needs no number (0), and while no other queue exists a lease pops it as a plain FIFO.

Memory: a function pickle is kept once per distinct content, shared by the unfinished tasks that
carry it (counted; forgotten with the last). For the service's wake-ups the table notes the
tasks queued since it last looked (`take_new_pending`) and counts finishes (`finished_total`,
which `FinishedAmong` uses to look only at what finished since).
"""

from __future__ import annotations

import itertools
import sys
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable
from typing import Any

from fray.controller.changes import Changes
from fray.controller.placement import NOTHING, Need
from fray.controller.records import (
    ErrorKind,
    NotFound,
    TaskFailure,
    TaskRecord,
    TaskSpec,
    TaskState,
)

_Queue = deque[tuple[int, str]]  # (submission number, task id), oldest first; may hold stale ids
_RUN_SECONDS_KEPT = 256  # functions whose recent run time is kept


class TaskTable:
    """Tasks by id, counts by state, the PENDING queues, and eviction of the oldest finished."""

    def __init__(self, max_finished: int, changes: Changes | None = None) -> None:
        self.max_finished = max_finished
        self.changes = Changes() if changes is None else changes
        self.by_id: dict[str, TaskRecord] = {}
        self.counts: dict[TaskState, int] = {s: 0 for s in TaskState}
        self._plain: deque[str] = deque()  # PENDING tasks asking for nothing (may be stale)
        self._plain_seq: dict[str, int] = {}  # numbers of those queued beside other queues
        self._queues: dict[Need, _Queue] = {}  # the others, one FIFO per need (while any
        # of its tasks is PENDING)
        self._need_counts: dict[Need, int] = {}  # PENDING tasks per need (not NOTHING)
        self._seq = 0  # the last submission number given
        self._held_seq: dict[str, int] = {}  # leased tasks' numbers (not NOTHING ones)
        self._finished: deque[str] = deque()  # finished task ids, oldest first, for eviction
        # Queued tasks not finished yet, by owner (the service caps them per client).
        self.unfinished_by_owner: Counter[str] = Counter()
        # Each distinct function pickle is kept once (its content is the key), with the number
        # of unfinished tasks holding it; forgotten when none does (a finished task drops its
        # function). Tasks of one client mostly share a handful of functions.
        self._functions: dict[bytes, list[Any]] = {}  # pickle -> [the one copy, tasks]
        # How long the tasks of the latest functions ran (a moving average; `record_run`),
        # kept past their last task: the next batch of a function is known at once.
        self._run_seconds: OrderedDict[bytes, float] = OrderedDict()
        # For the service's wake-ups: tasks queued (again) since it last looked, by need, and
        # how many tasks ever finished (the newest ids are at the end of `_finished`).
        self.new_pending: dict[Need, int] = {}
        self.finished_total = 0

    @property
    def queued(self) -> int:
        return self.counts[TaskState.PENDING]

    def get(self, task_id: str) -> TaskRecord:
        task = self.by_id.get(task_id)
        if task is None:
            raise NotFound(f"task {task_id} not found")
        return task

    def add_pending(self, task: TaskRecord) -> None:
        """A new PENDING task, at the back of its queue. It may replace the record of a direct
        task with its id (the client queues a task whose worker's answer it lost)."""
        replaced = self.by_id.get(task.task_id)
        if replaced is not None:
            assert replaced.direct, f"task {task.task_id} replaces a queued task"
            self.counts[replaced.state] -= 1
            self._finished.remove(task.task_id)
            self.changes.gone_row(replaced.saved_row)
        self._intern(task.spec)
        self.by_id[task.task_id] = task
        self.counts[TaskState.PENDING] += 1
        self._seq += 1
        self._enqueue(task, self._seq)
        self.unfinished_by_owner[task.spec.owner] += 1
        self.changes.new_task(task.task_id)

    def _intern(self, spec: TaskSpec) -> None:
        """Share the spec's function pickle (and owner and name) with the tasks that have the
        same: each task's message brought its own copy."""
        entry = self._functions.get(spec.function)
        if entry is None:
            self._functions[spec.function] = [spec.function, 1]
        else:
            entry[1] += 1
            spec.function = entry[0]
        spec.owner = sys.intern(spec.owner)
        spec.name = sys.intern(spec.name)

    def _release_function(self, spec: TaskSpec) -> None:
        """An unfinished task finishes: its function's count goes down (forgotten at 0)."""
        entry = self._functions.get(spec.function)
        if entry is not None:
            entry[1] -= 1
            if entry[1] <= 0:
                del self._functions[spec.function]

    def record_run(self, spec: TaskSpec, seconds: float) -> None:
        """A task of `spec`'s function ran `seconds` (call before it finishes): its function's
        recent run time follows (a moving average)."""
        runs, function = self._run_seconds, spec.function
        before = runs.get(function)
        runs[function] = seconds if before is None else 0.8 * before + 0.2 * seconds
        runs.move_to_end(function)
        if len(runs) > _RUN_SECONDS_KEPT:
            runs.popitem(last=False)

    def short_work_ahead(self, short_seconds: float) -> bool:
        """Whether the next task to lease asks for nothing and its function's tasks recently
        ran under `short_seconds` (False when not known: nothing of it finished yet)."""
        if self._queues or not self._plain:
            return False
        task = self.by_id.get(self._plain[0])
        if task is None or task.state is not TaskState.PENDING:  # a stale id: not known
            return False
        seconds = self._run_seconds.get(task.spec.function)
        return seconds is not None and seconds < short_seconds

    @property
    def distinct_functions(self) -> int:
        """Function pickles held (once each) for unfinished tasks."""
        return len(self._functions)

    def _enqueue(self, task: TaskRecord, seq: int, front: bool = False) -> None:
        need = task.spec.need
        if need is not NOTHING and need.empty:
            need = task.spec.need = NOTHING  # one queue for "nothing", however it was built
        self.new_pending[need] = self.new_pending.get(need, 0) + 1
        if need is NOTHING:
            if front:  # back from a worker: older than anything queued (number 0)
                self._plain.appendleft(task.task_id)
            else:
                self._plain.append(task.task_id)
                if self._queues or self._held_seq:  # a task with a need may come back
                    self._plain_seq[task.task_id] = seq
            return
        queue = self._queues.get(need)
        if queue is None:
            queue = self._queues[need] = deque()
        self._need_counts[need] = self._need_counts.get(need, 0) + 1
        if front:
            queue.appendleft((seq, task.task_id))
        else:
            queue.append((seq, task.task_id))

    def add_finished(self, task: TaskRecord) -> None:
        """A task that arrives finished (a direct task's record); `evict` afterwards."""
        self.by_id[task.task_id] = task
        self.counts[task.state] += 1
        self._finished.append(task.task_id)
        self.finished_total += 1
        self.changes.new_task(task.task_id)

    def restore(self, task: TaskRecord) -> None:
        """A task as it was saved (at a restart): PENDING ones join the back of their queue,
        finished ones the back of the eviction order (give unfinished ones in submission order,
        finished ones oldest first)."""
        if not task.state.finished:
            self._intern(task.spec)
        self.by_id[task.task_id] = task
        self.counts[task.state] += 1
        if task.state is TaskState.PENDING:
            self._seq += 1
            self._enqueue(task, self._seq)
        elif task.state.held:
            self._seq += 1
            if task.spec.need is not NOTHING:
                self._held_seq[task.task_id] = self._seq
        elif task.state.finished:
            self._finished.append(task.task_id)
        if not task.state.finished and not task.direct:
            self.unfinished_by_owner[task.spec.owner] += 1

    def next_pending(self, fits: Callable[[Need], bool] | None = None) -> TaskRecord | None:
        """Take the oldest PENDING task whose need `fits` (None: any) off its queue (None:
        nothing queued fits). Tasks that ask for nothing always fit."""
        if not self._queues:  # only plain tasks queued: a FIFO, as cheap as can be
            plain, by_id = self._plain, self.by_id
            while plain:
                task_id = plain.popleft()
                if self._plain_seq:
                    self._plain_seq.pop(task_id, None)
                task = by_id.get(task_id)
                if task is not None and task.state is TaskState.PENDING:
                    return task
                # cancelled or evicted while queued: a stale id
            return None
        by_id, plain, plain_seq = self.by_id, self._plain, self._plain_seq
        while True:  # again after a stale id (cancelled while queued)
            best: _Queue | None = None
            best_seq = 0
            for need, queue in self._queues.items():  # each holds a PENDING task
                if (
                    queue
                    and (best is None or queue[0][0] < best_seq)
                    and (fits is None or fits(need))
                ):
                    best, best_seq = queue, queue[0][0]
            if plain and (best is None or plain_seq.get(plain[0], 0) < best_seq):
                task_id = plain.popleft()
                plain_seq.pop(task_id, None)
                task = by_id.get(task_id)
                if task is not None and task.state is TaskState.PENDING:
                    return task
                continue
            if best is None:
                return None
            seq, task_id = best.popleft()
            task = by_id.get(task_id)
            if task is not None and task.state is TaskState.PENDING:
                self._held_seq[task_id] = seq
                return task

    def pending_of(self, need: Need) -> int:
        """How many PENDING tasks ask for exactly `need`."""
        if need is NOTHING:
            return self.counts[TaskState.PENDING] - sum(self._need_counts.values())
        return self._need_counts.get(need, 0)

    def take_new_pending(self) -> dict[Need, int]:
        """Tasks queued (new or back from a worker) since the last call, by need."""
        new = self.new_pending
        if new:
            self.new_pending = {}
        return new

    def finished_since(self, mark: int) -> Iterable[str] | None:
        """The ids of the tasks that finished since `finished_total` was `mark` (newest first;
        may hold a few more), or None when some of them were forgotten since (look at every
        task again)."""
        count = self.finished_total - mark
        if count > len(self._finished):
            return None
        return itertools.islice(reversed(self._finished), count)

    def pending_needs(self) -> dict[Need, int]:
        """How many PENDING tasks ask for each need (NOTHING included when any)."""
        out = {n: c for n, c in self._need_counts.items() if c > 0}
        plain = self.counts[TaskState.PENDING] - sum(out.values())
        if plain > 0:
            out[NOTHING] = plain
        return out

    def queued_fitting(self, fits: Callable[[Need], bool]) -> int:
        """How many PENDING tasks a worker could take now (their need `fits`): its share of
        the queue is counted over these."""
        pending = self.counts[TaskState.PENDING]
        if not self._need_counts:
            return pending
        others = 0
        for need, count in self._need_counts.items():
            pending -= count
            if count and fits(need):
                others += count
        return pending + others

    # ---------------------------------------------------------------- called by Transitions

    def recount(self, task: TaskRecord, to: TaskState) -> None:
        """The task moves from its state to `to` (it is still in its old state)."""
        was = task.state
        self.counts[was] -= 1
        self.counts[to] += 1
        if to.finished and not was.finished:
            self._release_function(task.spec)
        if was is TaskState.PENDING and (need := task.spec.need) is not NOTHING:
            left = self._need_counts[need] - 1
            if left:
                self._need_counts[need] = left
            else:  # its queue holds nothing but stale ids now
                del self._need_counts[need]
                del self._queues[need]

    def requeue_front(self, task_id: str) -> None:
        """A task back from a worker: ahead of everything in its queue, with its old number
        (its place among the other queues; a task asking for nothing: ahead of all)."""
        self._enqueue(self.by_id[task_id], self._held_seq.pop(task_id, 0), front=True)

    def retire(self, task_id: str) -> None:
        """Note a task finished; forget the oldest finished tasks past the limit."""
        self._finished.append(task_id)
        self.finished_total += 1
        spec = self.by_id[task_id].spec
        if spec.need is not NOTHING:
            self._held_seq.pop(task_id, None)
        owner = spec.owner
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


class FinishedAmong:
    """The finished tasks among a fixed list of ids, looked at again and again (a WaitTasks
    poll): `update` looks only at the tasks that finished since the last look (the table's
    newest finished ids), not at every id again; after many finishes (more than the table
    keeps) it looks at the unfinished ids again. A task that finished is never unfinished
    again, so what was found stays found."""

    def __init__(self, table: TaskTable, task_ids: list[str]) -> None:
        self._table = table
        self._ids = task_ids
        self._mark = table.finished_total
        self._found: dict[str, TaskRecord] = {}
        self._waiting: set[str] = set()
        for task_id in task_ids:  # not_found for an unknown id
            task = table.get(task_id)
            if task.state.finished:
                self._found[task_id] = task
            else:
                self._waiting.add(task_id)

    @property
    def count(self) -> int:
        """How many of the ids are known finished."""
        return len(self._found)

    def update(self) -> int:
        """Look at what finished since the last look; returns `count`."""
        table, waiting = self._table, self._waiting
        if table.finished_total == self._mark or not waiting:
            return len(self._found)
        since = table.finished_since(self._mark)
        if since is None or table.finished_total - self._mark > len(waiting):
            since = list(waiting)  # fewer to look at, or the newest were forgotten
        self._mark = table.finished_total
        for task_id in since:
            if task_id in waiting:
                task = table.get(task_id)
                if task.state.finished:
                    self._found[task_id] = task
                    waiting.discard(task_id)
        return len(self._found)

    def answer(self) -> tuple[list[TaskRecord], int]:
        """The finished tasks (in the order of the ids) and how many are not finished."""
        found = self._found
        return [found[i] for i in self._ids if i in found], len(self._waiting)
