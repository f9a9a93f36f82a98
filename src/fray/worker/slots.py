"""Slots: the worker's units of concurrency, each an executor process fed by a thread of its own.

A slot thread takes the next task from the `TaskQueue`, fetches the objects it names (bytes, or
files for large ones), sends it to its executor process over a pipe (`fray.worker.executor`)
and waits for the outcome, which it hands to `finished`; a large result the executor stored as
a file goes through `store_result` first (`fray.worker.objects`). What the task prints while it
runs comes before the outcome, as "out" messages (`fray.worker.executor`): each goes to
`printed` as a `pb.TaskOutputChunk`. A timeout or a cancellation (`kill`) kills the executor;
the slot then says why the task ended and starts a new executor. A slot that keeps failing to
run tasks at all stops the worker rather than eat the cluster's tasks.

Batches. A pipe round trip per task costs ~70 µs of CPU in the two processes (mostly waking
each other up) against ~8 µs when several tasks go in one message (docs/design.md, "Tiny tasks
and one-at-a-time calls"). So when a leased task is known to be short (the tasks of its
function in the last batch or run on this slot took under `SHORT_SECONDS` each), the slot also
claims up to `BATCH_MAX - 1` tasks of the same function queued behind it (leased, without a
timeout or objects; at most its share of the queue when other slots are idle) and sends them
in one message; the executor answers each as it ends. All are RUNNING from then on (the mates
a few ms early). Stopping a task of a batch (a cancel) marks it: its answer, when it comes,
is replaced by the cancellation; one that does not answer within `STOP_WAIT` seconds of its
turn is running and hangs, so the executor is killed. A hard stop (shutdown) kills the
executor at once. After a death the answers already sent are still read, in order; the task
without one is the one that was running, and the tasks after it never started: they are
handed back.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from connectrpc.code import Code
from connectrpc.errors import ConnectError

from fray.errors import ObjectLostError
from fray.wire.pb import controller_pb2 as pb
from fray.worker import capture, executor
from fray.worker.executor import ObjectData, ObjectFile
from fray.worker.results import DIRECT_ATTEMPT, failed

logger = logging.getLogger(__name__)

_MAX_SLOT_FAILURES = 3
BATCH_MAX = 32  # tasks per message to the executor
SHORT_SECONDS = 0.002  # a function's tasks that ran under this long make the next ones batchable
STOP_WAIT = 0.5  # a stopped task of a batch not answered this long after its turn is killed

# (accept, limit, claim) -> up to `limit` queued tasks from the front that `accept` takes, each
# claimed (under the queue's lock) and reported started; see `TaskQueue.take_more`.
TakeMore = Callable[
    [Callable[[pb.LeasedTask], bool], int, Callable[[pb.LeasedTask], None]], list[pb.LeasedTask]
]


@dataclass(frozen=True)
class SlotDuties:
    """What a slot needs from the rest of the worker."""

    worker_id: str
    # Block until a task is queued and take it (None: stop); the callable given claims it.
    next_task: Callable[[Callable[[pb.LeasedTask], None]], pb.LeasedTask | None]
    finished: Callable[[pb.TaskResult, float], None]  # a task's result, and its run time
    fetch_object: Callable[[str], ObjectData]
    stopping_hard: threading.Event  # no grace left: executors are not restarted
    give_up: Callable[[], None]  # stop the worker (a slot keeps failing)
    # What a running task printed (its task, and the chunk with what the slot knows of it).
    printed: Callable[[pb.LeasedTask, pb.TaskOutputChunk], None] = lambda task, chunk: None
    # Where executors write large results (None: inline), and how such a result (by id)
    # becomes the task's result bytes.
    result_dir: Callable[[], str | None] = lambda: None
    store_result: Callable[[str], bytes] | None = None
    more_tasks: TakeMore | None = None  # batch mates (None: one task at a time)


class Slot:
    """One executor process and the thread that feeds it."""

    def __init__(self, duties: SlotDuties, index: int) -> None:
        self._duties = duties
        self.index = index
        self.lock = threading.Lock()
        self.current: pb.LeasedTask | None = None
        self.kill_reason: pb.ErrorKind | None = None
        self.batch: set[str] = set()  # ids of the batch in flight not ended yet (under `lock`)
        self.stopped: dict[str, pb.ErrorKind] = {}  # tasks of the batch stopped, and why
        self._short: bytes | None = None  # the function whose last tasks here were short
        self._batch_tasks: list[pb.LeasedTask] | None = None  # the batch in flight
        self._awaiting: tuple[str, float] = ("", 0.0)  # the batch's task answered next, since
        self.batched = 0  # tasks that ran as batch mates
        self.process: Any = None
        self.conn: Any = None
        self.failures = 0  # consecutive failures to run a task at all
        self.thread = threading.Thread(target=self._loop, name=f"fray-slot-{index}", daemon=True)

    def start_process(self) -> None:
        ctx = executor.context()
        parent, child = ctx.Pipe()
        process = ctx.Process(
            target=executor.main,
            args=(child, os.getpid(), self._duties.result_dir()),
            daemon=True,
            name=f"fray-executor-{self.index}",
        )
        process.start()
        child.close()
        self.process, self.conn = process, parent

    def stop_process(self) -> None:
        if self.conn is not None:
            self.conn.close()
        if self.process is not None:
            self.process.join(2)
            if self.process.is_alive():
                self.process.kill()
                self.process.join(2)

    def _restart_process(self) -> None:
        self.stop_process()
        if not self._duties.stopping_hard.is_set():
            self.start_process()

    def kill(self, task_id: str, reason: pb.ErrorKind) -> bool:
        """Stop the task if this slot runs it (alone, or in its batch)."""
        with self.lock:
            if task_id in self.batch:  # its answer is replaced (see the module docstring)
                self.stopped[task_id] = reason
                timer = threading.Timer(STOP_WAIT, self._stop_if_hung, args=(task_id,))
                timer.daemon = True
                timer.start()
                return True
            if self.current is None or self.current.task_id != task_id:
                return False
            self.kill_reason = reason
            if self.process is not None:
                self.process.kill()
            return True

    def _claim(self, task: pb.LeasedTask) -> None:
        with self.lock:
            self.current, self.kill_reason = task, None

    def _claim_mate(self, task: pb.LeasedTask) -> None:
        with self.lock:
            self.batch.add(task.task_id)  # a stop finds it from now on

    def kill_all(self, reason: pb.ErrorKind, only: Callable[[pb.LeasedTask], bool]) -> None:
        """Stop what this slot runs (the tasks `only` accepts); a batch's at once."""
        with self.lock:
            batch = self._batch_tasks
            if batch is None:
                current = self.current
                if current is not None and only(current):
                    self.kill_reason = reason
                    if self.process is not None:
                        self.process.kill()
                return
            chosen = [t.task_id for t in batch if t.task_id in self.batch and only(t)]
            for task_id in chosen:
                self.stopped[task_id] = reason
            if chosen and self.process is not None:
                self.process.kill()

    def _loop(self) -> None:
        duties = self._duties
        while True:
            task = duties.next_task(self._claim)  # also makes it this slot's `current`
            if task is None:
                return
            mates = self._take_mates(task)
            if mates:
                self._run_batch([task, *mates])
                del mates
                continue
            started = time.perf_counter()
            try:
                result = self._execute(task)
                self.failures = 0
            except Exception as exc:  # a bug or a failed executor restart: never strand a task
                result = self._failed(task, exc)
            seconds = time.perf_counter() - started
            short = seconds < SHORT_SECONDS and result.HasField("value")
            self._short = task.function if short else None
            self._end(task, result, seconds)
            del task, result  # not kept (arguments, value) while the next task is awaited

    def _failed(self, task: pb.LeasedTask, exc: Exception) -> pb.TaskResult:
        duties = self._duties
        logger.exception("slot %d failed running task %s", self.index, task.task_id)
        self.failures += 1
        if self.failures >= _MAX_SLOT_FAILURES:  # do not eat the cluster's tasks
            logger.error("slot %d keeps failing; stopping the worker", self.index)
            duties.give_up()
        time.sleep(1)  # do not spin if the executor cannot start
        return failed(
            task,
            pb.ERROR_KIND_WORKER_LOST,
            type(exc).__qualname__,
            f"worker {duties.worker_id} failed to run it: {exc}",
            duties.worker_id,
        )

    def _end(self, task: pb.LeasedTask, result: pb.TaskResult, seconds: float) -> None:
        """A task of this slot ended after `seconds`: to `finished`."""
        with self.lock:
            self.current = None
            self.batch.discard(task.task_id)
        result.run_seconds = seconds
        self._duties.finished(result, seconds)

    # ------------------------------------------------------------------ batches

    def _take_mates(self, task: pb.LeasedTask) -> list[pb.LeasedTask]:
        """Queued tasks to run in one message with `task` (claimed as its batch): see the
        module docstring."""
        take = self._duties.more_tasks
        if take is None or not _batchable(task) or task.function != self._short:
            return []
        function = task.function

        def accept(mate: pb.LeasedTask) -> bool:
            return _batchable(mate) and mate.function == function

        mates = take(accept, BATCH_MAX - 1, self._claim_mate)
        self.batched += len(mates)
        return mates

    def _run_batch(self, tasks: list[pb.LeasedTask]) -> None:
        """Run claimed `tasks` (the first is `current`) from one message to the executor,
        which answers each as it ends; each goes to `finished` in turn (see the module
        docstring). Every task of the batch ends, whatever fails."""
        with self.lock:
            self._batch_tasks = tasks
            self.batch.update(t.task_id for t in tasks)
            if self.kill_reason is not None:  # the first was stopped before the batch went
                self.stopped[tasks[0].task_id] = self.kill_reason
            self.current, self.kill_reason = None, None
        started = last = time.perf_counter()
        ended, alive = 0, True
        try:
            with contextlib.suppress(OSError):  # (the executor is gone: the first task says why)
                self.conn.send_bytes(pickle.dumps([(t.function, t.args, []) for t in tasks], 5))
            for task in tasks:
                if not alive:  # it never started: it runs again, elsewhere or here
                    result = self._handed_back(task)
                elif (outcome := self._batch_outcome(task)) is not None:
                    result = self._stopped_or(task, self._result_of(task, *outcome))
                else:  # the executor died running this task (or was killed)
                    alive = False
                    result = self._died_in_batch(task)
                now = time.perf_counter()
                self._end(task, result, now - last)
                last, ended = now, ended + 1
            self.failures = 0
        except Exception as exc:  # a bug, or a failed restart: never strand a task
            alive = False
            if ended < len(tasks):
                self._end(tasks[ended], self._failed(tasks[ended], exc), 0.0)
            for task in tasks[ended + 1 :]:
                self._end(task, self._handed_back(task), 0.0)
        finally:
            with self.lock:
                self._batch_tasks = None
                self.batch.clear()
                self.stopped.clear()
                self._awaiting = ("", 0.0)
        mean = (time.perf_counter() - started) / len(tasks)
        self._short = tasks[0].function if alive and mean < SHORT_SECONDS else None

    def _batch_outcome(self, task: pb.LeasedTask) -> executor.Outcome | None:
        """The executor's answer for `task`, the next of its batch (None: the executor died);
        "out" messages go to `printed`."""
        self._awaiting = (task.task_id, time.monotonic())  # for `_stop_if_hung`
        while True:
            try:
                kind, first, second = pickle.loads(self.conn.recv_bytes())
            except (EOFError, OSError):
                return None
            if kind != "out":
                return kind, first, second
            self._printed(task, first, second)

    def _stop_if_hung(self, task_id: str) -> None:
        """(A timer thread, STOP_WAIT after a stop of a batch's task.) Kill the executor if
        the task is still unanswered STOP_WAIT after its turn came: it runs and does not end."""
        with self.lock:
            if task_id not in self.batch:
                return  # it ended
            awaited, since = self._awaiting
            left = STOP_WAIT - (time.monotonic() - since) if awaited == task_id else STOP_WAIT
            if left <= 0:
                if self.process is not None:
                    self.process.kill()
                return
        timer = threading.Timer(left, self._stop_if_hung, args=(task_id,))
        timer.daemon = True
        timer.start()

    def _result_of(
        self, task: pb.LeasedTask, status: str, data: bytes, output: capture.Output
    ) -> pb.TaskResult:
        """The result of a task from its executor's answer."""
        worker_id = self._duties.worker_id
        result = pb.TaskResult(task_id=task.task_id, attempt=task.attempt)
        if status == "ok":
            result.value = data
        elif status == "stored":
            result = self._stored(task, result, data.decode())
        else:
            result.error.ParseFromString(data)
            result.error.worker_id = worker_id
        if output is not None:
            result.output.CopyFrom(capture.to_pb(output, self.process.pid, worker_id))
        return result

    def _stopped_or(self, task: pb.LeasedTask, result: pb.TaskResult) -> pb.TaskResult:
        """A task of the batch cancelled before it answered ends cancelled, though it ran."""
        with self.lock:
            reason = self.stopped.get(task.task_id)
        if reason == pb.ERROR_KIND_CANCELLED:
            worker_id = self._duties.worker_id
            return failed(task, reason, "TaskCancelledError", "cancelled", worker_id)
        return result

    def _died_in_batch(self, task: pb.LeasedTask) -> pb.TaskResult:
        """The executor died running `task`: say why (its stop, or a death); a new one."""
        with self.lock:
            self.kill_reason = self.stopped.get(task.task_id)
        result = pb.TaskResult(task_id=task.task_id, attempt=task.attempt)
        return self._after_death(task, result)

    @staticmethod
    def _handed_back(task: pb.LeasedTask) -> pb.TaskResult:
        result = pb.TaskResult(task_id=task.task_id, attempt=task.attempt)
        result.handed_back = True  # not run: the controller queues it again
        return result

    def _execute(self, task: pb.LeasedTask) -> pb.TaskResult:
        worker_id = self._duties.worker_id
        result = pb.TaskResult(task_id=task.task_id, attempt=task.attempt)
        try:
            fetch = self._duties.fetch_object
            objects = {oid: fetch(oid) for oid in task.object_ids} if task.object_ids else {}
        except Exception as exc:
            # A missing object is final; an unreachable controller is an infrastructure failure.
            missing = isinstance(exc, ObjectLostError) or (
                isinstance(exc, ConnectError) and exc.code == Code.NOT_FOUND
            )
            return failed(
                task,
                pb.ERROR_KIND_DESERIALIZATION if missing else pb.ERROR_KIND_WORKER_LOST,
                type(exc).__qualname__,
                f"could not fetch the task's objects: {exc}",
                worker_id,
            )
        try:
            self._send(task, objects)
            status, data, output = self._await_outcome(task)
        except (EOFError, OSError):
            return self._after_death(task, result)
        with self.lock:
            killed = self.kill_reason is not None
            self.current = None  # from here on a kill must not hit the (next) executor
        if killed:  # the result won a race with a kill: the executor is gone all the same
            self._restart_process()
        return self._result_of(task, status, data, output)

    def _send(self, task: pb.LeasedTask, objects: dict[str, ObjectData]) -> None:
        """The task to the executor: a header, then the objects' bytes as they are (not
        re-pickled); objects that are files go in the header."""
        inline = list(objects)
        files = {o: d for o, d in objects.items() if isinstance(d, ObjectFile)} if inline else None
        header: tuple[object, ...] = (task.function, task.args, inline)
        if files:
            inline = [oid for oid in inline if oid not in files]
            header = (task.function, task.args, inline, files)
        self.conn.send_bytes(pickle.dumps(header, protocol=5))
        for oid in inline:
            self.conn.send_bytes(objects[oid])  # bytes (files went in the header)

    def _stored(self, task: pb.LeasedTask, result: pb.TaskResult, object_id: str) -> pb.TaskResult:
        """The result of a task whose value the executor stored as a file (`object_id`)."""
        store = self._duties.store_result
        try:
            if store is None:
                raise RuntimeError("this worker cannot store large results")
            result.value = store(object_id)
            result.stored_object_id = object_id
            return result
        except Exception as exc:
            logger.warning("could not store the result of task %s: %s", task.task_id, exc)
            message = f"could not store the task's large result: {exc}"
            kind, worker_id = pb.ERROR_KIND_WORKER_LOST, self._duties.worker_id
            return failed(task, kind, type(exc).__qualname__, message, worker_id)

    def _await_outcome(self, task: pb.LeasedTask) -> tuple[str, bytes, capture.Output]:
        """The executor's reply, the task's "out" messages before it handed to `printed`; the
        executor is killed at the task's timeout (EOFError or OSError then)."""
        timeout = task.timeout_seconds or None
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if deadline is not None and not self.conn.poll(max(0.0, deadline - time.monotonic())):
                self.kill(task.task_id, pb.ERROR_KIND_TIMEOUT)
                deadline = None  # read what it sent before it died, then EOFError
            kind, first, second = pickle.loads(self.conn.recv_bytes())
            if kind != "out":
                return kind, first, second
            self._printed(task, first, second)

    def _printed(self, task: pb.LeasedTask, offset: int, data: bytes) -> None:
        worker_id = self._duties.worker_id
        chunk = pb.TaskOutputChunk(
            task_id=task.task_id,
            attempt=1 if task.attempt == DIRECT_ATTEMPT else task.attempt,
            offset=offset,
            text=data.decode("utf-8", "replace"),
            pid=self.process.pid or 0,
            worker_id=worker_id,
        )
        try:
            self._duties.printed(task, chunk)
        except Exception:  # output is diagnostic: never let it fail the task
            logger.exception("slot %d could not forward output of %s", self.index, task.task_id)

    def _after_death(self, task: pb.LeasedTask, result: pb.TaskResult) -> pb.TaskResult:
        """The executor died: say why, and start a new one."""
        with self.lock:
            self.current = None  # a late kill must not hit the next executor
            reason = self.kill_reason
        self.process.join(5)
        exit_code = self.process.exitcode
        self._restart_process()
        worker_id = self._duties.worker_id
        if reason == pb.ERROR_KIND_TIMEOUT:
            message = f"ran longer than its timeout of {task.timeout_seconds:g}s and was stopped"
            logger.info("task %s timed out after %gs; stopped", task.task_id, task.timeout_seconds)
            return failed(task, reason, "TaskTimeoutError", message, worker_id)
        if reason == pb.ERROR_KIND_CANCELLED:
            return failed(task, reason, "TaskCancelledError", "cancelled", worker_id)
        if reason is not None:  # stopped by a shutdown that ran out of grace
            result.handed_back = True
            return result
        message = (
            f"the executor process running task {task.task_id} on worker {worker_id} "
            f"died (exit code {exit_code})"
        )
        return failed(task, pb.ERROR_KIND_WORKER_LOST, "ExecutorDied", message, worker_id)


def _batchable(task: pb.LeasedTask) -> bool:
    """Whether a task may run in a batch: leased (not direct), no timeout, no objects."""
    return task.attempt != DIRECT_ATTEMPT and not task.timeout_seconds and not task.object_ids


class Slots:
    """The worker's slots: started, searched for a task to stop, and stopped together."""

    def __init__(self, count: int, duties: SlotDuties) -> None:
        self._slots = [Slot(duties, i) for i in range(count)]

    def start_processes(self) -> None:
        for slot in self._slots:
            slot.start_process()

    def start_threads(self) -> None:
        for slot in self._slots:
            slot.thread.start()

    @property
    def batched(self) -> int:
        """Tasks that ran as batch mates (see the module docstring), in all."""
        return sum(slot.batched for slot in self._slots)

    def kill(self, task_id: str, reason: pb.ErrorKind) -> bool:
        """Stop a running task; False if no slot runs it."""
        return any(slot.kill(task_id, reason) for slot in self._slots)

    def kill_running(
        self, reason: pb.ErrorKind, only: Callable[[pb.LeasedTask], bool] = lambda _: True
    ) -> None:
        """Stop every running task (those `only` accepts)."""
        for slot in self._slots:
            slot.kill_all(reason, only)

    def join_threads(self, timeout: float) -> None:
        for slot in self._slots:
            slot.thread.join(timeout)

    def stop_processes(self) -> None:
        for slot in self._slots:
            slot.stop_process()
