"""Slots: the worker's units of concurrency, each an executor process fed by a thread of its own.

A slot thread takes the next task from the `TaskQueue`, fetches the objects it names (bytes, or
files for large ones), sends it to its executor process over a pipe (`fray.worker.executor`)
and waits for the outcome, which it hands to `finished`; a large result the executor stored as
a file goes through `store_result` first (`fray.worker.objects`). What the task prints while it
runs comes before the outcome, as "out" messages (`fray.worker.executor`): each goes to
`printed` as a `pb.TaskOutputChunk`. A timeout or a cancellation (`kill`) kills the executor;
the slot then says why the task ended and starts a new executor. A slot that keeps failing to
run tasks at all stops the worker rather than eat the cluster's tasks.
"""

from __future__ import annotations

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


class Slot:
    """One executor process and the thread that feeds it."""

    def __init__(self, duties: SlotDuties, index: int) -> None:
        self._duties = duties
        self.index = index
        self.lock = threading.Lock()
        self.current: pb.LeasedTask | None = None
        self.kill_reason: pb.ErrorKind | None = None
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
        """Stop the task if this slot is running it."""
        with self.lock:
            if self.current is None or self.current.task_id != task_id:
                return False
            self.kill_reason = reason
            if self.process is not None:
                self.process.kill()
            return True

    def _claim(self, task: pb.LeasedTask) -> None:
        with self.lock:
            self.current, self.kill_reason = task, None

    def _loop(self) -> None:
        duties = self._duties
        while True:
            task = duties.next_task(self._claim)  # also makes it this slot's `current`
            if task is None:
                return
            started = time.perf_counter()
            try:
                result = self._execute(task)
                self.failures = 0
            except Exception as exc:  # a bug or a failed executor restart: never strand a task
                logger.exception("slot %d failed running task %s", self.index, task.task_id)
                self.failures += 1
                if self.failures >= _MAX_SLOT_FAILURES:  # do not eat the cluster's tasks
                    logger.error("slot %d keeps failing; stopping the worker", self.index)
                    duties.give_up()
                result = failed(
                    task,
                    pb.ERROR_KIND_WORKER_LOST,
                    type(exc).__qualname__,
                    f"worker {duties.worker_id} failed to run it: {exc}",
                    duties.worker_id,
                )
                time.sleep(1)  # do not spin if the executor cannot start
            with self.lock:
                self.current = None
            seconds = time.perf_counter() - started
            result.run_seconds = seconds
            duties.finished(result, seconds)
            del task, result  # not kept (arguments, value) while the next task is awaited

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

    def kill(self, task_id: str, reason: pb.ErrorKind) -> bool:
        """Stop a running task; False if no slot runs it."""
        return any(slot.kill(task_id, reason) for slot in self._slots)

    def kill_running(
        self, reason: pb.ErrorKind, only: Callable[[pb.LeasedTask], bool] = lambda _: True
    ) -> None:
        """Stop every running task (those `only` accepts)."""
        for slot in self._slots:
            current = slot.current
            if current is not None and only(current):
                slot.kill(current.task_id, reason)

    def join_threads(self, timeout: float) -> None:
        for slot in self._slots:
            slot.thread.join(timeout)

    def stop_processes(self) -> None:
        for slot in self._slots:
            slot.stop_process()
