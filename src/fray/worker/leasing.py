"""The lease loop: the worker's one `LeaseTasks` long poll, and the leases it holds.

Each poll lists the tasks the worker holds (leased and not yet reported), the actors it hosts,
the job replicas it runs (until their end was reported) and the objects it holds (cached
copies, and the large results it owns), so the controller repairs a lost answer and names the
objects freed since (the worker drops them, deleting its files of them), and asks for
`prefetch` tasks beyond the free slots. The prefetch adapts: about `PREFETCH_SECONDS` of work
at the recent pace of tasks, so tiny tasks hide the lease round trip and long ones spread over
all the workers. An answer brings tasks (queued for the slots, or given back if the
worker began draining meanwhile), cancellations, actors and job replicas to start or stop, and
the objects to drop.

When the controller answers that it does not know this worker (it restarted without its
state, or dropped us), the worker forgets its leased work (the controller has requeued it) and
registers again; while the controller is unreachable it keeps polling. A controller restarted
on its saved state still knows the worker: the worker carries on with its tasks and actors, and
its next poll (listing them) is all the controller needs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from connectrpc.code import Code
from connectrpc.errors import ConnectError

from fray.errors import ControllerUnavailableError
from fray.wire.controller_client import ControllerClient
from fray.wire.pb import controller_pb2 as pb
from fray.worker.actor_host import ActorHost
from fray.worker.jobs import JobReplicas
from fray.worker.objects import ObjectCache
from fray.worker.registration import Registration
from fray.worker.task_queue import TaskQueue

logger = logging.getLogger(__name__)

DEFAULT_MAX_PREFETCH = 256
# Hold about this much work beyond the running tasks: enough to hide the lease round trip for
# tiny tasks, nothing for long ones (so that long tasks spread over all the workers).
PREFETCH_SECONDS = 0.05


class Leaser:
    """Runs the lease loop (`loop`, in a thread of its own) and keeps the held leases.

    `hand_back` gives back tasks the worker will not run (it is draining), `cancel` stops a task
    by id, and `forget_leased_work` drops the leased tasks queued or running here (the
    controller forgot them) and the hosted actors. `objects`, the object cache, drops what each
    answer says was freed.
    """

    def __init__(
        self,
        client: ControllerClient,
        registration: Registration,
        mutex: threading.RLock,
        queue: TaskQueue,
        actors: ActorHost,
        stopping: threading.Event,
        max_prefetch: int,
        *,
        hand_back: Callable[[Sequence[pb.LeasedTask]], None],
        cancel: Callable[[str], bool],
        forget_leased_work: Callable[[], None],
        objects: ObjectCache | None = None,
        jobs: JobReplicas | None = None,
    ) -> None:
        self._client = client
        self._registration = registration
        self._worker_id = registration.worker_id
        self._mutex = mutex
        self._queue = queue
        self._actors = actors
        self._stopping = stopping
        self._max_prefetch = max_prefetch
        self._hand_back = hand_back
        self._cancel = cancel
        self._forget_leased_work = forget_leased_work
        self._objects = objects
        self._jobs = jobs
        self._held: dict[str, pb.LeasedTask] = {}  # leased and not yet reported

    def loop(self) -> None:
        """Until the worker stops (or cannot recover from an error)."""
        while not self._stopping.is_set():
            if not self._lease_once():
                return

    def _lease_once(self) -> bool:
        """One LeaseTasks call and what its answer says; False: stop the loop. (A method of
        its own so that the answer, which holds the tasks' arguments, is not kept alive while
        the next poll waits.)"""
        with self._mutex:
            held = list(self._held)
        request = pb.LeaseTasksRequest(
            worker_id=self._worker_id,
            wait_ms=int(self._registration.interval * 1000),
            held_task_ids=held,
            reports_held=True,
            reports_started=True,  # our slots' starts go with the reporter's batches
            prefetch=self.wanted_prefetch(),
            hosted_actors=self._actors.hosted(),
            reports_actors=True,
            cached_object_ids=self._objects.ids() if self._objects is not None else (),
            job_replicas=self._jobs.listed() if self._jobs is not None else (),
            reports_jobs=self._jobs is not None,
        )
        try:
            response = self._client.call(
                self._client.rpc.lease_tasks, request, wait_ms=request.wait_ms
            )
        except Exception as exc:
            return self._recover(exc)
        if self._objects is not None and response.freed_object_ids:
            self._objects.drop(response.freed_object_ids)
        self._apply(response)
        return True

    def _apply(self, response: pb.LeaseTasksResponse) -> None:
        """Queue the leased tasks (or hand them back), carry out cancellations and actor
        orders."""
        with self._mutex:
            for task in response.tasks:
                self._held[task.task_id] = task
            if self._stopping.is_set():  # leased just before we said we are draining
                self._hand_back(response.tasks)
            else:
                self._queue.push(response.tasks)
        for task_id in response.cancel_task_ids:
            self._cancel(task_id)
        for actor_id in response.stop_actor_ids:
            self._actors.stop(actor_id)
        for spec in response.start_actors:
            self._actors.start(spec)
        if self._jobs is not None:
            self._jobs.stop(response.stop_job_replicas)
            for launch in response.start_jobs:
                self._jobs.launch(launch)  # refused (FAILED) once the worker stops

    def wanted_prefetch(self) -> int:
        """Tasks to hold beyond the slots: ~PREFETCH_SECONDS of work at the recent pace."""
        mean = self._queue.mean_task_seconds
        if mean is None:
            return min(1, self._max_prefetch)
        slots = self._queue.slots
        return min(self._max_prefetch, int(PREFETCH_SECONDS * slots / max(mean, 1e-5)))

    def reported(self, results: Sequence[pb.TaskResult]) -> None:
        """The controller has had these results (or refused them): the leases are done."""
        with self._mutex:
            for result in results:
                held = self._held.get(result.task_id)
                if held is not None and held.attempt == result.attempt:  # not a newer lease
                    del self._held[result.task_id]

    def _recover(self, exc: Exception) -> bool:
        """After a failed call: re-register if the controller forgot us. False: give up."""
        if self._stopping.is_set():
            return False
        if isinstance(exc, ConnectError) and exc.code == Code.NOT_FOUND:
            logger.warning(
                "controller does not know worker %s (%s); registering again",
                self._worker_id,
                exc.message,
            )
            with self._mutex:
                self._held.clear()  # the controller requeued them; results would be stale
            self._forget_leased_work()
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
            self._registration.register()
        except Exception as again:
            logger.warning("could not register again: %s", again)
        return True
