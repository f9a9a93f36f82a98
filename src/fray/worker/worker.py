"""The fray worker: registers with the controller, leases tasks and runs them in executor processes.

`Worker` is the process's main object. It composes the pieces, each in a module of its own,
and routes what crosses them:
- `registration`: registering, heartbeats, unregistering;
- `leasing`: the lease loop (one LeaseTasks long poll, adaptive prefetch) and the held leases;
- `task_queue`: tasks waiting for a slot, and the count of those running;
- `slots`: one thread and one executor process (`executor`) per unit of concurrency; a timeout
  or a cancellation kills the executor, and a new one starts;
- `direct_calls`: tasks that clients sent straight to a free slot (the direct path): their
  results go back in the RPC's answer and the controller hears of them afterwards;
- `reporter`: results (and slots' starts of leased tasks, and what running tasks print) for
  the controller, in batches (ReportResults);
- `objects`: the objects tasks name (small ones' bytes, large ones' files through the worker's
  `ObjectPlane`, served to other hosts by its object server) and the large results it owns;
- `actor_host`: the actors hosted here, each in a process of its own;
- `jobs`: the job replicas run here (processes of their own, their output streamed to the
  controller); `resources`: what the worker offers (cpus and memory default to the machine's);
- `service`: the FrayWorker RPCs and GET /healthz, served by uvicorn in a thread.

A task's outcome goes to its direct caller if it has one, else to the reporter (`_deliver`).
The queue, the direct calls, the reporter and the held leases share one mutex (what spans them
stays atomic), each with a Condition per kind of waiter: a task that arrives wakes one slot
thread, not every thread of the worker.

Shutdown (SIGTERM, Ctrl-C or `stop()`): stop leasing, stop the job replicas, let running tasks
finish for up to `shutdown_grace` seconds, stop the rest, report what finished (and the
replicas' ends), then unregister: the controller puts every task the worker still held back
in the queue; last, the object plane is closed (its files deleted). A second signal skips the
grace period.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from fray.wire import auth, serving, tls
from fray.wire.controller_client import ControllerClient
from fray.wire.limits import DEFAULT_MAX_REQUEST_BYTES
from fray.wire.objects import ObjectPlane
from fray.wire.pb import controller_pb2 as pb
from fray.worker import service
from fray.worker.actor_host import ActorHost
from fray.worker.direct_calls import DirectCalls
from fray.worker.jobs import JobReplicas
from fray.worker.leasing import DEFAULT_MAX_PREFETCH, Leaser
from fray.worker.metrics import WorkerMetrics
from fray.worker.objects import ObjectCache
from fray.worker.registration import Registration
from fray.worker.reporter import Reporter
from fray.worker.resources import offered_resources
from fray.worker.results import DIRECT_ATTEMPT, failed, handed_back
from fray.worker.slots import SlotDuties, Slots
from fray.worker.task_queue import TaskQueue

logger = logging.getLogger(__name__)

# At shutdown, how long finished direct results wait for their clients to collect them.
_DELIVERY_GRACE = 2.0
# At shutdown, how long stopped job replicas have to end and be reported.
_JOBS_GRACE = 10.0


class Worker:
    """A fray worker process. `run()` blocks until shutdown and returns the exit code.

    `tls_cert`/`tls_key` (PEM files, both or neither) make it serve HTTPS and advertise an
    ``https://`` address; `tls_ca` (default ``$FRAY_TLS_CA``) verifies an ``https://``
    controller, and is passed on to the tasks and actors it runs. Requests larger than
    `max_request_bytes` are refused (`resource_exhausted`).
    """

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
        tls_cert: str | None = None,
        tls_key: str | None = None,
        tls_ca: str | None = None,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    ) -> None:
        self.concurrency = (os.cpu_count() or 1) if concurrency is None else concurrency
        if self.concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        self.prefetch = DEFAULT_MAX_PREFETCH if prefetch is None else prefetch
        if self.prefetch < 0:
            raise ValueError("prefetch must be >= 0")
        # cpus and memory default to the machine's (slots stay `concurrency`)
        self.resources = offered_resources(resources)
        self.worker_id = worker_id or f"worker-{uuid.uuid4().hex[:8]}"
        # Tasks can tell where they run; executors inherit the environment.
        os.environ["FRAY_WORKER_ID"] = self.worker_id
        self.shutdown_grace = shutdown_grace
        token = auth.token_from_env(token)
        auth.require_token_off_loopback(host, token, "worker")
        server_tls = tls.ServerTLS.load(tls_cert, tls_key)  # HTTPS for clients (both or neither)
        self.client = ControllerClient(
            controller_address, token=token, tls_ca=tls_ca, retry_timeout=retry_timeout
        )
        # Code running here (tasks, actors) finds the same controller: get_default_job_ctx().
        os.environ["FRAY_CONTROLLER_ADDRESS"] = self.client.address
        # ... and so does fray.v2.current_cluster() (executors and actor processes inherit it).
        # A spec naming this controller (say, with a namespace) is kept; any other (a shell's
        # "local", an earlier controller's) would send that code elsewhere.
        spec = os.environ.get("FRAY_CLUSTER_SPEC", "")
        if not (spec.startswith("fray?") and f"address={self.client.address}" in spec):
            os.environ["FRAY_CLUSTER_SPEC"] = f"fray?address={self.client.address}"
        if token:
            os.environ["FRAY_TOKEN"] = token
        if self.client.tls_ca:
            os.environ[tls.CA_ENV] = os.path.abspath(self.client.tls_ca)
        self.stopping = threading.Event()  # no new work
        self.stopping_hard = threading.Event()  # no grace left
        self.stopped = threading.Event()

        if advertise_host is None:  # a wildcard address is no address for others to dial
            wildcard = host in ("0.0.0.0", "::", "")
            advertise_host = socket.gethostbyname(socket.gethostname()) if wildcard else host

        self._mutex = threading.RLock()  # see the module docstring
        # Large objects: files in this host's shared memory, served to others by its server.
        self.plane = ObjectPlane(
            self.worker_id, bind_host=host, advertise_host=advertise_host, token=token
        )
        self.objects = ObjectCache(self.client, plane=self.plane)
        self.actors = ActorHost(
            self.worker_id,
            self.client,
            self.objects.get,
            result_dir=self.objects.result_dir,
            store_result=self.objects.store_result,
        )
        self.jobs = JobReplicas(self.client, self.worker_id, self.client.address, token=token)
        self.queue = TaskQueue(self._mutex, self.concurrency, self.stopping)
        self.slots = Slots(
            self.concurrency,
            SlotDuties(
                worker_id=self.worker_id,
                next_task=self._next_task,
                finished=self._finished,
                fetch_object=self.objects.get,
                stopping_hard=self.stopping_hard,
                give_up=self.stop,
                printed=self._printed,
                result_dir=self.objects.result_dir,
                store_result=self.objects.store_result,
                more_tasks=self._more_tasks,
            ),
        )
        self.direct = DirectCalls(
            self._mutex,
            self.worker_id,
            self.queue,
            self.stopping,
            report=self._report_direct,
            stop_task=self._cancel,
        )
        self.metrics = WorkerMetrics(self.health)  # GET /metrics
        self._server = serving.Server(
            service.make_app(
                self.direct,
                self.actors,
                self.health,
                token,
                max_request_bytes,
                self.metrics,
                hint_objects=self.objects.hint,
            ),
            host,
            port,
            name="worker",
            tls=server_tls,
        )
        self.address = serving.url(advertise_host, self._server.port, secure=bool(server_tls))
        self.registration = Registration(
            self.client,
            pb.RegisterWorkerRequest(
                worker_id=self.worker_id,
                address=self.address,
                resources=self.resources,
                slots=self.concurrency,
                prefetch=self.prefetch,
                instance=uuid.uuid4().hex,  # a retry after a lost answer is a repeat
            ),
        )
        self.leaser = Leaser(
            self.client,
            self.registration,
            self._mutex,
            self.queue,
            self.actors,
            self.stopping,
            self.prefetch,
            hand_back=self._hand_back,
            cancel=self._cancel,
            forget_leased_work=self._forget_leased_work,
            jobs=self.jobs,
            objects=self.objects,
        )
        self.reporter = Reporter(
            self.client, self.worker_id, self._mutex, self.stopping_hard, self.leaser.reported
        )

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
            self.slots.start_processes()
            self.registration.register()
            self.slots.start_threads()
            for target, name in (
                (self.leaser.loop, "lease"),
                (self.reporter.loop, "report"),
                (self._heartbeat_loop, "heartbeat"),
                (self.jobs.loop, "jobs"),
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
            self.jobs.close()
            self.slots.stop_processes()
            self.objects.close()
            self.client.close()
            if in_main:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    def stop(self, *, grace: bool = True) -> None:
        """Begin shutdown (thread- and signal-safe)."""
        if not grace or self.stopping.is_set():
            self.stopping_hard.set()
        self.stopping.set()
        with self._mutex:
            self.queue.wake_all()
            self.reporter.wake_all()
            self.direct.wake_all()

    def _on_signal(self, signum: int, frame: Any) -> None:
        logger.info(
            "worker %s got %s: %s",
            self.worker_id,
            signal.Signals(signum).name,
            "stopping now" if self.stopping.is_set() else "finishing running tasks",
        )
        self.stop()

    def _drain(self) -> None:
        deadline = time.monotonic() + self.shutdown_grace
        self._heartbeat()  # tells the controller we are draining: no more leases for us
        self.jobs.stop_all(refuse=f"worker {self.worker_id} is shutting down")
        with self._mutex:
            self._hand_back(self.queue.take_all())  # unstarted tasks: others can run them now
            self.queue.wait_idle(deadline, self.stopping_hard)
        self.direct.wait_delivered(_DELIVERY_GRACE, self.stopping_hard)
        self.stopping_hard.set()
        self.reporter.wake_all()
        self.slots.kill_running(pb.ERROR_KIND_UNSPECIFIED)
        self.slots.join_threads(10)
        self.reporter.flush()
        self.jobs.shutdown(_JOBS_GRACE)  # their ends reported before we leave
        self.registration.unregister()

    def _heartbeat_loop(self) -> None:
        while not self.stopped.wait(self.registration.interval):
            self._heartbeat()
            self.direct.reap()

    def _heartbeat(self) -> None:
        draining, running = self.stopping.is_set(), self.direct.running
        for task_id in self.registration.beat(draining=draining, direct_running=running):
            self._cancel(task_id)

    # ------------------------------------------------------------------ routing outcomes

    def _next_task(self, claim: Callable[[pb.LeasedTask], None]) -> pb.LeasedTask | None:
        """A slot's next task (see `TaskQueue.next_task`); a leased one's start is reported to
        the controller (ASSIGNED -> RUNNING)."""

        def claim_and_report(task: pb.LeasedTask) -> None:
            claim(task)
            if task.attempt != DIRECT_ATTEMPT:
                self.reporter.add_started(task.task_id, task.attempt)

        return self.queue.next_task(claim_and_report)

    def _more_tasks(
        self,
        accept: Callable[[pb.LeasedTask], bool],
        limit: int,
        claim: Callable[[pb.LeasedTask], None],
    ) -> list[pb.LeasedTask]:
        """A slot's batch mates (leased tasks: their starts are reported)."""

        def claim_and_report(task: pb.LeasedTask) -> None:
            claim(task)
            self.reporter.add_started(task.task_id, task.attempt)

        return self.queue.take_more(accept, limit, claim_and_report)

    def _finished(self, result: pb.TaskResult, seconds: float) -> None:
        """A slot's task ended."""
        self.metrics.task_finished(result, seconds)
        with self._mutex:
            self.queue.done(seconds)
            self._deliver(result)
            idle = self.queue.is_idle() and self.reporter.has_results()
        if idle:  # nothing else to run: report now rather than wake the reporter thread
            self.reporter.send(blocking=False)

    def _deliver(self, result: pb.TaskResult) -> None:
        """Route a task's outcome: to its direct caller, or to the controller."""
        with self._mutex:
            if not self.direct.complete(result):
                self.reporter.add(result)

    def _printed(self, task: pb.LeasedTask, chunk: pb.TaskOutputChunk) -> None:
        """A running task printed: the chunk goes to the controller (a direct task's with its
        owner and name, which the controller does not know until it ends)."""
        if task.attempt == DIRECT_ATTEMPT:
            self.direct.describe(chunk)
        self.reporter.add_output(chunk)

    def _report_direct(self, record: pb.DirectTask) -> None:
        self.reporter.add_direct(record)

    def _hand_back(self, tasks: Iterable[pb.LeasedTask]) -> None:
        """Give back tasks we will not run (to the controller or their direct callers)."""
        with self._mutex:
            for task in list(tasks):
                self._deliver(handed_back(task))

    def _cancel(self, task_id: str) -> bool:
        """Stop a task, queued here or running; False if this worker does not have it."""
        with self._mutex:
            task = self.queue.remove(task_id)
            if task is not None:
                message = "cancelled before it started"
                kind = pb.ERROR_KIND_CANCELLED
                self._deliver(failed(task, kind, "TaskCancelledError", message, self.worker_id))
                return True
        if self.slots.kill(task_id, pb.ERROR_KIND_CANCELLED):
            logger.info("cancelled running task %s", task_id)
            return True
        return False

    def _forget_leased_work(self) -> None:
        """The controller forgot us (and requeued our leased tasks): drop them here too, and
        the actors (the controller has placed them again, or let them die)."""
        # Direct tasks are not the controller's: they stay.
        self.queue.keep_only(lambda task: self.direct.has(task.task_id))
        # Stop the running ones too: they would only block slots.
        self.slots.kill_running(
            pb.ERROR_KIND_UNSPECIFIED, only=lambda task: not self.direct.has(task.task_id)
        )
        self.actors.stop_all()
        self.jobs.stop_all()

    # ------------------------------------------------------------------ health

    @property
    def tasks_done(self) -> int:
        return self.queue.tasks_done

    def health(self) -> dict[str, Any]:
        """The body of GET /healthz."""
        with self._mutex:
            (running, queued), direct = self.queue.counts(), self.direct.running
        return {
            "status": "stopping" if self.stopping.is_set() else "ok",
            "worker_id": self.worker_id,
            "controller": self.client.address,
            "slots": self.concurrency,
            "running": running,
            "queued": queued,
            "direct": direct,
            "actors": len(self.actors),
            "job_replicas": len(self.jobs),
            "tasks_done": self.tasks_done,
            "batched_tasks": self.slots.batched,
            "cached_objects": len(self.objects.ids()),
            "cached_object_bytes": self.objects.size_bytes,
        }
