"""The fray worker: registers with the controller, leases tasks and runs them in executor processes.

Threads of a running worker:
- the lease loop long-polls LeaseTasks and queues what it gets (and carries out cancellations);
- one slot thread per unit of concurrency feeds tasks to its own executor process
  (`fray.worker.executor`) and kills it on timeout or cancellation, then starts a new one;
- the reporter sends finished tasks back in batches (ReportResults);
- the heartbeat thread keeps the registration alive (also while draining at shutdown);
- a uvicorn thread serves the FrayWorker RPCs (`fray.worker.service`): clients send
  tasks straight to a free slot there (the direct path), and GET /healthz.

A direct task takes a slot only when one is free; it runs like a leased task, its result goes
back in the RPC's answer, and the controller hears of it afterwards (in the report batches).

Shutdown (SIGTERM, Ctrl-C or `stop()`): stop leasing, let running tasks finish for up to
`shutdown_grace` seconds, stop the rest, report what finished, then unregister: the controller
puts every task the worker still held back in the queue. A second signal skips the grace period.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import pickle
import signal
import socket
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from connectrpc.code import Code
from connectrpc.errors import ConnectError

from fray.errors import ControllerUnavailableError
from fray.wire import auth, serving
from fray.wire.controller_client import ControllerClient
from fray.wire.pb import controller_pb2 as pb
from fray.worker import executor
from fray.worker import service as worker_service
from fray.worker.actor_host import ActorHost

logger = logging.getLogger(__name__)

_OBJECT_CACHE_BYTES = 1 << 30
_REPORT_BATCH = 1000
DEFAULT_MAX_PREFETCH = 256
# Hold about this much work beyond the running tasks: enough to hide the lease round trip for
# tiny tasks, nothing for long ones (so that long tasks spread over all the workers).
_PREFETCH_SECONDS = 0.05
_MAX_SLOT_FAILURES = 3
# A direct task's result is kept this long after it ends, for a client whose answer got lost.
RESULT_KEEP_SECONDS = 30.0
# A direct task nobody has polled for this long lost its client: it is stopped.
ORPHAN_SECONDS = 15.0
# Direct tasks run as attempt 0; leased tasks count attempts from 1, so the two never mix up
# even when a client requeued a task whose direct call here is still running.
_DIRECT_ATTEMPT = 0
# At shutdown, how long finished direct results wait for their clients to collect them.
_DELIVERY_GRACE = 2.0
# Finished direct tasks are reported to the controller in batches gathered this long.
_DIRECT_REPORT_DELAY = 0.5


def _failed(
    task: pb.LeasedTask, kind: pb.ErrorKind, type_name: str, message: str, worker_id: str
) -> pb.TaskResult:
    """The report of a task that ended with an error raised by the worker itself."""
    error = pb.TaskError(kind=kind, type=type_name, message=message, worker_id=worker_id)
    return pb.TaskResult(task_id=task.task_id, attempt=task.attempt, error=error)


@dataclass
class DirectCall:
    """A task a client sent straight to this worker (FrayWorker.RunTask)."""

    spec: pb.TaskSpec  # without function and arguments (not kept once it runs)
    started_at: float  # wall clock, for the controller's record
    future: concurrent.futures.Future[pb.TaskResult] = field(
        default_factory=concurrent.futures.Future
    )
    delivered: bool = False  # a client got the result
    ended: float = 0.0  # monotonic time the result was set
    waiting: int = 0  # RunTask/WaitTask calls waiting for it now
    last_seen: float = field(default_factory=time.monotonic)  # when a client last asked


def _direct_record(call: DirectCall, result: pb.TaskResult) -> pb.DirectTask | None:
    """What the controller keeps of a finished direct task (None: not final, the client will
    queue it again)."""
    if result.HasField("value"):
        state = pb.TASK_STATE_COMPLETED
    elif result.HasField("error") and result.error.kind != pb.ERROR_KIND_WORKER_LOST:
        cancelled = result.error.kind == pb.ERROR_KIND_CANCELLED
        state = pb.TASK_STATE_CANCELLED if cancelled else pb.TASK_STATE_FAILED
    else:
        return None
    record = pb.DirectTask(
        task_id=call.spec.task_id,
        name=call.spec.name,
        owner=call.spec.owner,
        timeout_seconds=call.spec.timeout_seconds,
        state=state,
        error=result.error if result.HasField("error") else None,
    )
    record.started_at.FromNanoseconds(int(call.started_at * 1e9))
    record.finished_at.FromNanoseconds(time.time_ns())
    return record


class _Slot:
    """One executor process and the thread that feeds it."""

    def __init__(self, worker: Worker, index: int) -> None:
        self.worker = worker
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
            args=(child, os.getpid()),
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
        if not self.worker.stopping_hard.is_set():
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

    def _loop(self) -> None:
        while True:
            task = self.worker.next_task(self)  # also makes it this slot's `current`
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
                    self.worker.stop()
                result = _failed(
                    task,
                    pb.ERROR_KIND_WORKER_LOST,
                    type(exc).__qualname__,
                    f"worker {self.worker.worker_id} failed to run it: {exc}",
                    self.worker.worker_id,
                )
                time.sleep(1)  # do not spin if the executor cannot start
            with self.lock:
                self.current = None
            self.worker.finished(result, time.perf_counter() - started)

    def _execute(self, task: pb.LeasedTask) -> pb.TaskResult:
        worker_id = self.worker.worker_id
        result = pb.TaskResult(task_id=task.task_id, attempt=task.attempt)
        try:
            objects = {oid: self.worker.fetch_object(oid) for oid in task.object_ids}
        except Exception as exc:
            # A missing object is final; an unreachable controller is an infrastructure failure.
            missing = isinstance(exc, ConnectError) and exc.code == Code.NOT_FOUND
            return _failed(
                task,
                pb.ERROR_KIND_DESERIALIZATION if missing else pb.ERROR_KIND_WORKER_LOST,
                type(exc).__qualname__,
                f"could not fetch the task's objects: {exc}",
                worker_id,
            )
        try:
            header = (task.function, task.args, list(objects))
            self.conn.send_bytes(pickle.dumps(header, protocol=5))
            for data in objects.values():  # large objects go as they are, not re-pickled
                self.conn.send_bytes(data)
            timeout = task.timeout_seconds or None
            if timeout is not None and not self.conn.poll(timeout):
                self.kill(task.task_id, pb.ERROR_KIND_TIMEOUT)
            status, data = pickle.loads(self.conn.recv_bytes())
        except (EOFError, OSError):
            return self._after_death(task, result)
        with self.lock:
            killed = self.kill_reason is not None
            self.current = None  # from here on a kill must not hit the (next) executor
        if killed:  # the result won a race with a kill: the executor is gone all the same
            self._restart_process()
        if status == "ok":
            result.value = data
        else:
            result.error.ParseFromString(data)
            result.error.worker_id = worker_id
        return result

    def _after_death(self, task: pb.LeasedTask, result: pb.TaskResult) -> pb.TaskResult:
        """The executor died: say why, and start a new one."""
        with self.lock:
            self.current = None  # a late kill must not hit the next executor
            reason = self.kill_reason
        self.process.join(5)
        exit_code = self.process.exitcode
        self._restart_process()
        worker_id = self.worker.worker_id
        if reason == pb.ERROR_KIND_TIMEOUT:
            message = f"ran longer than its timeout of {task.timeout_seconds:g}s and was stopped"
            logger.info("task %s timed out after %gs; stopped", task.task_id, task.timeout_seconds)
            return _failed(task, reason, "TaskTimeoutError", message, worker_id)
        if reason == pb.ERROR_KIND_CANCELLED:
            return _failed(task, reason, "TaskCancelledError", "cancelled", worker_id)
        if reason is not None:  # stopped by a shutdown that ran out of grace
            result.handed_back = True
            return result
        message = (
            f"the executor process running task {task.task_id} on worker {worker_id} "
            f"died (exit code {exit_code})"
        )
        return _failed(task, pb.ERROR_KIND_WORKER_LOST, "ExecutorDied", message, worker_id)


class Worker:
    """A fray worker process. `run()` blocks until shutdown and returns the exit code."""

    def __init__(
        self,
        controller_address: str,
        *,
        concurrency: int | None = None,
        prefetch: int | None = None,
        resources: pb.Resources | None = None,
        worker_id: str = "",
        token: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        advertise_host: str | None = None,
        shutdown_grace: float = 30.0,
        retry_timeout: float = 60.0,
    ) -> None:
        self.concurrency = (os.cpu_count() or 1) if concurrency is None else concurrency
        if self.concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        self.prefetch = DEFAULT_MAX_PREFETCH if prefetch is None else prefetch
        if self.prefetch < 0:
            raise ValueError("prefetch must be >= 0")
        self._mean_task_seconds: float | None = None  # moving average of run times
        self.resources = (
            pb.Resources(cpus=float(self.concurrency)) if resources is None else resources
        )
        self.worker_id = worker_id or f"worker-{uuid.uuid4().hex[:8]}"
        # Tasks can tell where they run; executors inherit the environment.
        os.environ["FRAY_WORKER_ID"] = self.worker_id
        self.shutdown_grace = shutdown_grace
        token = auth.token_from_env(token)
        auth.require_token_off_loopback(host, token, "worker")
        self.client = ControllerClient(controller_address, token=token, retry_timeout=retry_timeout)
        # Code running here (tasks, actors) finds the same controller: get_default_job_ctx().
        os.environ["FRAY_CONTROLLER_ADDRESS"] = self.client.address
        if token:
            os.environ["FRAY_TOKEN"] = token
        self.actors = ActorHost(self)
        self.heartbeat_interval = 1.0
        self.stopping = threading.Event()  # no new work
        self.stopping_hard = threading.Event()  # no grace left
        self.stopped = threading.Event()

        # One mutex, three wake-ups: slot threads wait for `_work`, the reporter for `_reports`,
        # and the rest (shutdown waiting for running tasks) for `_lock`. A task that arrives
        # wakes one slot thread, not every thread of the worker.
        mutex = threading.RLock()
        self._lock = threading.Condition(mutex)
        self._work = threading.Condition(mutex)
        self._reports = threading.Condition(mutex)
        self._held: dict[str, pb.LeasedTask] = {}  # leased and not yet reported
        self._queue: deque[pb.LeasedTask] = deque()  # leased, not started
        self._running = 0
        self._outbox: deque[pb.TaskResult] = deque()
        self._direct: dict[str, DirectCall] = {}  # by task id, until forgotten
        self._direct_ended: deque[tuple[float, str]] = deque()  # (ended, task id), oldest first
        self._direct_running = 0  # direct calls not finished yet
        self._direct_outbox: deque[pb.DirectTask] = deque()  # for the controller
        self._direct_due = 0.0  # when the oldest of them should be sent
        self._cancelled_early: OrderedDict[str, None] = OrderedDict()  # before they arrived
        self._send_lock = threading.Lock()
        self._objects: OrderedDict[str, Any] = OrderedDict()
        self._object_bytes = 0
        self._object_lock = threading.Lock()
        self._slots = [_Slot(self, i) for i in range(self.concurrency)]
        self._server = serving.Server(
            worker_service.make_app(self, token), host, port, name="worker"
        )
        if advertise_host is None:  # a wildcard address is no address for others to dial
            wildcard = host in ("0.0.0.0", "::", "")
            advertise_host = socket.gethostbyname(socket.gethostname()) if wildcard else host
        self.address = serving.url(advertise_host, self._server.port)
        self.tasks_done = 0

    # ------------------------------------------------------------------ life cycle

    def run(self) -> int:
        """Register, serve until stopped, shut down gracefully. Returns 0 on a clean exit."""
        in_main = threading.current_thread() is threading.main_thread()
        if in_main:
            previous = {
                s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)
            }
        try:
            self._server.start()
            for slot in self._slots:
                slot.start_process()
            self._register()
            for slot in self._slots:
                slot.thread.start()
            for target, name in (
                (self._lease_loop, "lease"),
                (self._report_loop, "report"),
                (self._heartbeat_loop, "heartbeat"),
            ):
                threading.Thread(target=target, name=f"fray-{name}", daemon=True).start()
            logger.info(
                "worker %s serving %s with %d slots; health at %s/healthz",
                self.worker_id,
                self.client.address,
                self.concurrency,
                self.address,
            )
            while not self.stopping.wait(3600):  # signals interrupt the wait
                pass
            self._drain()
            return 0
        finally:
            self.stopped.set()
            self._server.stop()
            self.actors.stop_all()
            for slot in self._slots:
                slot.stop_process()
            self.client.close()
            if in_main:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    def stop(self, *, grace: bool = True) -> None:
        """Begin shutdown (thread- and signal-safe)."""
        if not grace or self.stopping.is_set():
            self.stopping_hard.set()
        self.stopping.set()
        with self._lock:
            self._lock.notify_all()
            self._work.notify_all()
            self._reports.notify_all()

    def _on_signal(self, signum: int, frame: Any) -> None:
        logger.info(
            "worker %s got %s: %s",
            self.worker_id,
            signal.Signals(signum).name,
            "stopping now" if self.stopping.is_set() else "finishing running tasks",
        )
        self.stop()

    def _register(self) -> None:
        request = pb.RegisterWorkerRequest(
            worker_id=self.worker_id,
            address=self.address,
            resources=self.resources,
            slots=self.concurrency,
            prefetch=self.prefetch,
        )
        response = self.client.call(self.client.rpc.register_worker, request)
        self.heartbeat_interval = response.heartbeat_interval_ms / 1000

    def _drain(self) -> None:
        deadline = time.monotonic() + self.shutdown_grace
        self._heartbeat()  # tells the controller we are draining: no more leases for us
        with self._lock:
            self._hand_back(self._queue)  # unstarted tasks: others can run them now
            self._queue.clear()
            while self._running and not self.stopping_hard.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._lock.wait(remaining)
        self._wait_for_direct_delivery()
        self.stopping_hard.set()
        with self._lock:
            self._reports.notify_all()
        for slot in self._slots:
            current = slot.current
            if current is not None:
                slot.kill(current.task_id, pb.ERROR_KIND_UNSPECIFIED)
        for slot in self._slots:
            slot.thread.join(10)
        self._flush_reports()
        try:
            response = self.client.call(
                self.client.rpc.unregister_worker,
                pb.UnregisterWorkerRequest(worker_id=self.worker_id),
                retry_timeout=5,
            )
            logger.info(
                "worker %s unregistered; %d tasks handed back",
                self.worker_id,
                len(response.requeued_task_ids),
            )
        except (ConnectError, ControllerUnavailableError) as exc:
            logger.warning("could not unregister worker %s: %s", self.worker_id, exc)

    # ------------------------------------------------------------------ work queue

    def next_task(self, slot: _Slot) -> pb.LeasedTask | None:
        """Block until a task is queued, and give it to `slot`; None when the worker stops.

        The task becomes the slot's `current` under the same lock that `_cancel` searches the
        queue with, so a cancellation always finds it in one place or the other.
        """
        with self._lock:
            while not self._queue or self.stopping.is_set():
                if self.stopping.is_set():
                    return None
                self._work.wait()
            self._running += 1
            task = self._queue.popleft()
            with slot.lock:
                slot.current, slot.kill_reason = task, None
            return task

    def finished(self, result: pb.TaskResult, seconds: float) -> None:
        with self._lock:
            mean = self._mean_task_seconds
            self._mean_task_seconds = seconds if mean is None else 0.8 * mean + 0.2 * seconds
            self._running -= 1
            self.tasks_done += 1
            self._deliver(result)
            idle = not self._queue and bool(self._outbox)
        if idle:  # nothing else to run: report now rather than wake the reporter thread
            self._send_reports(blocking=False)

    def _deliver(self, result: pb.TaskResult) -> None:
        """Route a task's outcome: to its direct caller, or to the controller. Holds _lock."""
        call = self._direct.get(result.task_id) if result.attempt == _DIRECT_ATTEMPT else None
        if call is None or call.future.done():
            self._outbox.append(result)
            self._reports.notify()
        else:
            call.ended = time.monotonic()
            call.future.set_result(result)
            self._direct_running -= 1
            self._direct_ended.append((call.ended, result.task_id))
            record = _direct_record(call, result)
            if record is not None:
                if not self._direct_outbox:
                    self._direct_due = time.monotonic() + _DIRECT_REPORT_DELAY
                    self._reports.notify()
                self._direct_outbox.append(record)
        self._lock.notify_all()

    def _cancel(self, task_id: str) -> bool:
        """Stop a task, queued here or running; False if this worker does not have it."""
        with self._lock:
            for task in self._queue:
                if task.task_id == task_id:
                    self._queue.remove(task)
                    self._deliver(
                        _failed(
                            task,
                            pb.ERROR_KIND_CANCELLED,
                            "TaskCancelledError",
                            "cancelled before it started",
                            self.worker_id,
                        )
                    )
                    return True
        for slot in self._slots:
            if slot.kill(task_id, pb.ERROR_KIND_CANCELLED):
                logger.info("cancelled running task %s", task_id)
                return True
        return False

    # ------------------------------------------------------------------ the direct path

    def run_direct(self, spec: pb.TaskSpec) -> DirectCall:
        """Take a task a client sent straight here, if a slot is free (else WorkerBusy)."""
        with self._lock:
            self._forget_old_direct()
            call = self._direct.get(spec.task_id)
            if call is not None:  # the client's retry of a call whose answer it lost
                return call
            if self.stopping.is_set():
                raise worker_service.WorkerDraining(f"worker {self.worker_id} is shutting down")
            light = pb.TaskSpec(
                task_id=spec.task_id,
                name=spec.name,
                owner=spec.owner,
                timeout_seconds=spec.timeout_seconds,
            )
            call = DirectCall(spec=light, started_at=time.time())
            if spec.task_id in self._cancelled_early:
                del self._cancelled_early[spec.task_id]
                self._direct[spec.task_id] = call
                self._direct_running += 1
                task = pb.LeasedTask(task_id=spec.task_id, attempt=_DIRECT_ATTEMPT)
                self._deliver(
                    _failed(
                        task,
                        pb.ERROR_KIND_CANCELLED,
                        "TaskCancelledError",
                        "cancelled",
                        self.worker_id,
                    )
                )
                return call
            if self._running + len(self._queue) >= self.concurrency:
                raise worker_service.WorkerBusy(f"worker {self.worker_id} has no free slot")
            self._direct[spec.task_id] = call
            self._direct_running += 1
            self._queue.appendleft(
                pb.LeasedTask(
                    task_id=spec.task_id,
                    attempt=_DIRECT_ATTEMPT,
                    name=spec.name,
                    function=spec.function,
                    args=spec.args,
                    object_ids=spec.object_ids,
                    timeout_seconds=spec.timeout_seconds,
                )
            )
            self._work.notify()
            return call

    def direct_call(self, task_id: str) -> DirectCall:
        with self._lock:
            call = self._direct.get(task_id)
        if call is None:
            raise worker_service.UnknownTask(f"worker {self.worker_id} has no task {task_id}")
        return call

    def cancel_direct(self, task_id: str) -> bool:
        """Stop a direct task; one not here yet is refused when it arrives."""
        with self._lock:
            call = self._direct.get(task_id)
            if call is None:
                self._cancelled_early[task_id] = None
                while len(self._cancelled_early) > 10_000:
                    self._cancelled_early.popitem(last=False)
                return False
        return call.future.done() or self._cancel(task_id)

    def _forget_old_direct(self) -> None:
        """Drop results kept past RESULT_KEEP_SECONDS. Holds _lock."""
        cutoff = time.monotonic() - RESULT_KEEP_SECONDS
        while self._direct_ended and self._direct_ended[0][0] < cutoff:
            del self._direct[self._direct_ended.popleft()[1]]

    def _wait_for_direct_delivery(self) -> None:
        """At shutdown: give clients a moment to collect finished direct results."""
        deadline = time.monotonic() + _DELIVERY_GRACE
        with self._lock:
            while any(not self._direct[t].delivered for _, t in self._direct_ended):
                if self.stopping_hard.is_set():
                    return
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self._lock.wait(min(remaining, 0.05))

    def fetch_object(self, object_id: str) -> bytes:
        """An object's pickled bytes, from the local cache or the controller."""
        with self._object_lock:
            data = self._objects.get(object_id)
            if data is not None:
                self._objects.move_to_end(object_id)
                return data
        data = self.client.call(
            self.client.rpc.get_object, pb.GetObjectRequest(object_id=object_id)
        ).data
        with self._object_lock:
            self._objects[object_id] = data
            self._object_bytes += len(data)
            while self._object_bytes > _OBJECT_CACHE_BYTES and len(self._objects) > 1:
                _, old = self._objects.popitem(last=False)
                self._object_bytes -= len(old)
        return data

    # ------------------------------------------------------------------ loops

    def _lease_loop(self) -> None:
        while not self.stopping.is_set():
            with self._lock:
                held = list(self._held)
            request = pb.LeaseTasksRequest(
                worker_id=self.worker_id,
                wait_ms=int(self.heartbeat_interval * 1000),
                held_task_ids=held,
                reports_held=True,
                prefetch=self._wanted_prefetch(),
                hosted_actors=self.actors.hosted(),
                reports_actors=True,
            )
            try:
                response = self.client.call(
                    self.client.rpc.lease_tasks, request, wait_ms=request.wait_ms
                )
            except Exception as exc:
                if not self._recover(exc):
                    return
                continue
            with self._lock:
                for task in response.tasks:
                    self._held[task.task_id] = task
                if self.stopping.is_set():  # leased just before we said we are draining
                    self._hand_back(response.tasks)
                else:
                    self._queue.extend(response.tasks)
                    self._work.notify(len(response.tasks))
            for task_id in response.cancel_task_ids:
                self._cancel(task_id)
            for actor_id in response.stop_actor_ids:
                self.actors.stop(actor_id)
            for spec in response.start_actors:
                self.actors.start(spec)

    def _wanted_prefetch(self) -> int:
        """Tasks to hold beyond the slots: ~_PREFETCH_SECONDS of work at the recent pace."""
        mean = self._mean_task_seconds
        if mean is None:
            return min(1, self.prefetch)
        return min(self.prefetch, int(_PREFETCH_SECONDS * self.concurrency / max(mean, 1e-5)))

    def _recover(self, exc: Exception) -> bool:
        """After a failed call: re-register if the controller forgot us. False: give up."""
        if self.stopping.is_set():
            return False
        if isinstance(exc, ConnectError) and exc.code == Code.NOT_FOUND:
            logger.warning(
                "controller does not know worker %s (%s); registering again",
                self.worker_id,
                exc.message,
            )
            with self._lock:
                self._held.clear()  # the controller requeued them; results would be stale
                # Direct tasks are not the controller's: they stay.
                self._queue = deque(t for t in self._queue if t.task_id in self._direct)
            for slot in self._slots:  # and stop the ones running: they would only block slots
                current = slot.current
                if current is not None and current.task_id not in self._direct:
                    slot.kill(current.task_id, pb.ERROR_KIND_UNSPECIFIED)
            self.actors.stop_all()  # the controller has placed them again, or let them die
        elif isinstance(exc, ControllerUnavailableError):
            # It may come back with our registration intact: keep polling, register only if
            # it answers that it forgot us.
            logger.warning("%s; still trying", exc)
            return True
        else:
            logger.exception("unexpected error talking to the controller")
            time.sleep(1)
            return True
        try:
            self._register()
        except Exception as again:
            logger.warning("could not register again: %s", again)
        return True

    def _report_loop(self) -> None:
        while not self.stopping_hard.is_set() or self._outbox or self._direct_outbox:
            with self._lock:
                while not self._outbox and not self.stopping_hard.is_set():
                    if not self._direct_outbox:
                        self._reports.wait()
                        continue
                    # Records of direct tasks are for the record only: gather them a while.
                    left = self._direct_due - time.monotonic()
                    if left <= 0 or len(self._direct_outbox) >= _REPORT_BATCH:
                        break
                    self._reports.wait(left)
            self._send_reports()

    def _flush_reports(self) -> None:
        """Deliver every result, including a batch the report thread has in flight."""
        while True:
            self._send_reports()
            with self._lock:
                if not self._outbox and not self._direct_outbox:
                    return

    def _send_reports(self, blocking: bool = True) -> None:
        if not self._send_lock.acquire(blocking):
            return  # a batch is in flight; its sender (or the reporter) takes ours next
        try:  # one batch in flight at a time
            with self._lock:
                batch = [
                    self._outbox.popleft() for _ in range(min(len(self._outbox), _REPORT_BATCH))
                ]
                direct = [
                    self._direct_outbox.popleft()
                    for _ in range(min(len(self._direct_outbox), _REPORT_BATCH))
                ]
            if not batch and not direct:
                return
            request = pb.ReportResultsRequest(
                worker_id=self.worker_id, results=batch, direct_tasks=direct
            )
            try:
                self.client.call(self.client.rpc.report_results, request)
            except ConnectError as exc:
                logger.warning(
                    "results of %d tasks were refused (%s); the controller requeued them",
                    len(batch),
                    exc.message,
                )
            except ControllerUnavailableError as exc:
                logger.error("results of %d tasks could not be delivered: %s", len(batch), exc)
            with self._lock:
                for result in batch:
                    held = self._held.get(result.task_id)
                    if held is not None and held.attempt == result.attempt:  # not a newer lease
                        del self._held[result.task_id]
        finally:
            self._send_lock.release()

    def _heartbeat_loop(self) -> None:
        while not self.stopped.wait(self.heartbeat_interval):
            self._heartbeat()
            self._reap_direct()

    def _reap_direct(self) -> None:
        """Forget old direct results; stop direct tasks whose client is gone (it stopped
        polling: it died, or gave the task up and queued it elsewhere)."""
        cutoff = time.monotonic() - ORPHAN_SECONDS
        with self._lock:
            self._forget_old_direct()
            orphans = [
                task_id
                for task_id, call in self._direct.items()
                if not call.future.done() and call.waiting == 0 and call.last_seen < cutoff
            ]
        for task_id in orphans:
            logger.warning("direct task %s: its client stopped asking for it; stopping it", task_id)
            self._cancel(task_id)

    def _heartbeat(self) -> None:
        with self._lock:
            direct_running = self._direct_running
        request = pb.HeartbeatRequest(
            worker_id=self.worker_id,
            draining=self.stopping.is_set(),
            direct_running=direct_running,
        )
        try:
            response = self.client.call(
                self.client.rpc.heartbeat,
                request,
                retry_timeout=self.heartbeat_interval,
                quiet=True,  # the lease loop already says when the controller is away
            )
        except Exception as exc:
            logger.debug("heartbeat failed: %s", exc)
            return
        for task_id in response.cancel_task_ids:
            self._cancel(task_id)

    def _hand_back(self, tasks: Iterable[pb.LeasedTask]) -> None:
        """Give back tasks we will not run (to the controller or their direct callers).
        Holds _lock."""
        for task in list(tasks):
            self._deliver(
                pb.TaskResult(task_id=task.task_id, attempt=task.attempt, handed_back=True)
            )

    def health(self) -> dict[str, Any]:
        with self._lock:
            running, queued = self._running, len(self._queue)
            direct = self._direct_running
        return {
            "status": "stopping" if self.stopping.is_set() else "ok",
            "worker_id": self.worker_id,
            "controller": self.client.address,
            "slots": self.concurrency,
            "running": running,
            "queued": queued,
            "direct": direct,
            "actors": len(self.actors),
            "tasks_done": self.tasks_done,
        }
