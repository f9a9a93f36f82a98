"""The worker registry: the workers that registered, by id, with their slots, heartbeats, the
tasks leased to them, and the orders (cancellations, actor starts and stops) waiting for them.

Bookkeeping only: what happens to a lost worker's tasks and actors is decided by the lifecycle
modules and `ControllerState`; `Transitions` tells the registry when a task or actor leaves a
worker. Registering, leaving, draining and the counters are marked in `changes` (heartbeats
are not saved: a restarted controller gives every worker a full heartbeat timeout).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

from fray.controller.changes import Changes
from fray.controller.records import InvalidRequest, NotFound, WorkerRecord
from fray.wire.limits import MAX_ID_LENGTH


class WorkerRegistry:
    """Registered workers by id, and what each one holds and must be told."""

    def __init__(self, clock: Callable[[], float], changes: Changes | None = None) -> None:
        self.by_id: dict[str, WorkerRecord] = {}
        self._clock = clock
        self.changes = Changes() if changes is None else changes

    def get(self, worker_id: str) -> WorkerRecord:
        worker = self.by_id.get(worker_id)
        if worker is None:
            raise NotFound(f"worker {worker_id} not found (expired or never registered)")
        return worker

    def new_record(
        self,
        *,
        worker_id: str,
        address: str,
        slots: int,
        prefetch: int,
        cpus: float,
        memory_bytes: int,
        labels: dict[str, str] | None,
    ) -> WorkerRecord:
        """Check a registration and make its record (not added yet: see `add`)."""
        if slots < 1:
            raise InvalidRequest("slots must be >= 1")
        if prefetch < 0:
            raise InvalidRequest("prefetch must be >= 0")
        if len(worker_id) > MAX_ID_LENGTH:
            raise InvalidRequest(f"worker_id longer than {MAX_ID_LENGTH} characters")
        now = self._clock()
        return WorkerRecord(
            worker_id=worker_id or uuid.uuid4().hex[:12],
            address=address,
            slots=slots,
            prefetch=prefetch,
            registered_at=now,
            last_heartbeat=now,
            cpus=cpus,
            memory_bytes=memory_bytes,
            labels=dict(labels or {}),
        )

    def restore(self, worker: WorkerRecord) -> None:
        """A worker as it was saved (at a restart): heard from now, so that it has a whole
        heartbeat timeout to come back."""
        worker.last_heartbeat = self._clock()
        self.by_id[worker.worker_id] = worker

    def add(self, worker: WorkerRecord) -> None:
        self.by_id[worker.worker_id] = worker
        self.changes.worker(worker.worker_id)

    def remove(self, worker_id: str) -> None:
        del self.by_id[worker_id]
        self.changes.worker(worker_id)

    def touch(self, worker_id: str) -> None:
        """Its counters changed (to be saved)."""
        self.changes.worker(worker_id)

    def heartbeat(
        self, worker_id: str, draining: bool = False, direct_running: int | None = None
    ) -> list[str]:
        """Note the worker is alive; returns the cancellations it must carry out. They are
        sent again with every answer until the task leaves the worker (its end is reported), so
        a lost answer loses none (a worker ignores a cancel for a task it no longer runs). A
        draining worker (shutting down) stays draining."""
        worker = self.alive(worker_id)
        if draining and not worker.draining:
            worker.draining = True
            self.changes.worker(worker_id)
        if direct_running is not None:
            worker.direct_running = max(0, direct_running)
        return sorted(worker.pending_cancels)

    def alive(self, worker_id: str) -> WorkerRecord:
        """The worker, noted alive now (any call from it counts as a heartbeat)."""
        worker = self.get(worker_id)
        worker.last_heartbeat = self._clock()
        return worker

    def silent_since(self, cutoff: float) -> list[WorkerRecord]:
        """The workers not heard from since `cutoff`."""
        return [w for w in self.by_id.values() if w.last_heartbeat < cutoff]

    @staticmethod
    def busy(worker: WorkerRecord, running: Callable[[str], bool]) -> int:
        """Its slots running a task now: its leased tasks `running` says a slot started, plus
        its direct tasks, at most its slots."""
        started = sum(1 for task_id in worker.task_ids if running(task_id))
        return min(started + worker.direct_running, worker.slots)

    # ---------------------------------------------------------------- called by Transitions

    def release_task(self, worker_id: str, task_id: str) -> None:
        """A task left the worker (finished, requeued): forget it and any cancel for it."""
        worker = self.by_id.get(worker_id)
        if worker is not None:
            worker.task_ids.pop(task_id, None)
            worker.pending_cancels.discard(task_id)

    def release_actor(self, worker_id: str, actor_id: str) -> None:
        """An actor no longer counts as placed on the worker."""
        worker = self.by_id.get(worker_id)
        if worker is not None:
            worker.actor_ids.pop(actor_id, None)
