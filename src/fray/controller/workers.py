"""The worker registry: the workers that registered, by id, with their slots, what they offer
(capacities and labels) and what their work holds of it, heartbeats, the tasks leased to them,
and the orders (cancellations, actor starts and stops) waiting for them.

Bookkeeping only: what happens to a lost worker's tasks and actors is decided by the lifecycle
modules and `ControllerState`; `Transitions` tells the registry when a task or actor leaves a
worker. Registering, leaving, draining and the counters are marked in `changes` (heartbeats
are not saved: a restarted controller gives every worker a full heartbeat timeout).
Workers with news for their lease poll (room or capacity freed, a cancellation, draining, gone)
are noted in `news`, for the service's targeted wake-ups (`long_poll.LeasePolls`).
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Mapping

from fray.controller import placement
from fray.controller.changes import Changes
from fray.controller.placement import NOTHING, Need
from fray.controller.records import InvalidRequest, NotFound, TaskRecord, WorkerRecord
from fray.wire.limits import MAX_ID_LENGTH

_MAX_CAPACITIES = 64


class WorkerRegistry:
    """Registered workers by id, and what each one holds and must be told."""

    def __init__(self, clock: Callable[[], float], changes: Changes | None = None) -> None:
        self.by_id: dict[str, WorkerRecord] = {}
        self._clock = clock
        self.changes = Changes() if changes is None else changes
        # Goes up whenever capacity may have appeared (a worker registered, work released what
        # it held): waiting actors and jobs look again when it moved since their last try.
        self.freed = 0
        # Workers with news for their lease poll since the service last looked (`take_news`):
        # room or capacity freed, a cancellation, draining, gone.
        self.news: set[str] = set()

    def take_news(self) -> set[str]:
        news = self.news
        if news:
            self.news = set()
        return news

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
        capacities: Mapping[str, float] | None = None,
    ) -> WorkerRecord:
        """Check a registration and make its record (not added yet: see `add`).

        Without `capacities` (an old client, curl) the worker offers ``cpus`` (and ``memory``
        when `memory_bytes` > 0)."""
        if slots < 1:
            raise InvalidRequest("slots must be >= 1")
        if prefetch < 0:
            raise InvalidRequest("prefetch must be >= 0")
        if len(worker_id) > MAX_ID_LENGTH:
            raise InvalidRequest(f"worker_id longer than {MAX_ID_LENGTH} characters")
        offered = _capacities(capacities, cpus, memory_bytes)
        now = self._clock()
        return WorkerRecord(
            worker_id=worker_id or uuid.uuid4().hex[:12],
            address=address,
            slots=slots,
            prefetch=prefetch,
            registered_at=now,
            last_heartbeat=now,
            cpus=offered.get("cpus", cpus),
            memory_bytes=int(offered.get("memory", memory_bytes)),
            labels=dict(labels or {}),
            capacities=offered,
        )

    def restore(self, worker: WorkerRecord) -> None:
        """A worker as it was saved (at a restart): heard from now, so that it has a whole
        heartbeat timeout to come back."""
        worker.last_heartbeat = self._clock()
        self.by_id[worker.worker_id] = worker

    def add(self, worker: WorkerRecord) -> None:
        self.by_id[worker.worker_id] = worker
        self.changes.worker(worker.worker_id)
        self.freed += 1

    def remove(self, worker_id: str) -> None:
        del self.by_id[worker_id]
        self.changes.worker(worker_id)
        self.news.add(worker_id)  # a poll of it still waiting hears it is gone

    def runs_jobs(self, worker_id: str) -> None:
        """The worker's leases list its job replicas: job replicas may be placed on it (a
        worker that does not, such as a curl user, would never start them)."""
        worker = self.by_id.get(worker_id)
        if worker is not None and not worker.runs_jobs:
            worker.runs_jobs = True
            self.freed += 1  # room for pending jobs
            self.news.add(worker_id)

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
            self.news.add(worker_id)
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

    # ---------------------------------------------------------------- what work holds

    def hold_task(self, worker: WorkerRecord, task: TaskRecord) -> None:
        """A task leased to the worker: it holds its need there until it leaves."""
        worker.task_ids[task.task_id] = None
        need = task.spec.need
        if need is not NOTHING:
            placement.hold(worker, need)

    def hold_actor(self, worker: WorkerRecord, actor_id: str, need: Need) -> None:
        """An actor placed on the worker: it holds its need there while placed."""
        worker.actor_ids[actor_id] = None
        if need is not NOTHING:
            placement.hold(worker, need)

    def hold(self, worker_id: str, need: Need) -> bool:
        """Other work (a job replica) holds `need` on the worker; False if it is not known."""
        worker = self.by_id.get(worker_id)
        if worker is None:
            return False
        placement.hold(worker, need)
        return True

    def release(self, worker_id: str, need: Need) -> None:
        """What `hold` took is given back (a no-op for a worker that is gone)."""
        worker = self.by_id.get(worker_id)
        if worker is not None and not need.empty:
            placement.release(worker, need)
            self.freed += 1
            self.news.add(worker_id)

    # ---------------------------------------------------------------- called by Transitions

    def release_task(self, worker_id: str, task_id: str, need: Need = NOTHING) -> None:
        """A task left the worker (finished, requeued, lost, handed back, cancelled): forget
        it and any cancel for it, and give back what it held."""
        worker = self.by_id.get(worker_id)
        if worker is not None:
            worker.task_ids.pop(task_id, None)
            worker.pending_cancels.discard(task_id)
            self.news.add(worker_id)  # room for another task
            if need is not NOTHING:
                placement.release(worker, need)
                self.freed += 1

    def release_actor(self, worker_id: str, actor_id: str, need: Need = NOTHING) -> None:
        """An actor no longer counts as placed on the worker; what it held is given back."""
        worker = self.by_id.get(worker_id)
        if worker is not None and actor_id in worker.actor_ids:
            del worker.actor_ids[actor_id]
            if need is not NOTHING:
                placement.release(worker, need)
                self.freed += 1
                self.news.add(worker_id)


def _capacities(
    capacities: Mapping[str, float] | None, cpus: float, memory_bytes: int
) -> dict[str, float]:
    """A worker's offered capacities, checked (InvalidRequest), or derived from cpus/memory."""
    if not capacities:
        if not math.isfinite(cpus) or cpus < 0 or memory_bytes < 0:
            raise InvalidRequest("cpus and memory_bytes must be finite and >= 0")
        derived = {"cpus": float(cpus)}
        if memory_bytes > 0:
            derived["memory"] = float(memory_bytes)
        return derived
    if len(capacities) > _MAX_CAPACITIES:
        raise InvalidRequest(f"at most {_MAX_CAPACITIES} capacities")
    out: dict[str, float] = {}
    for key, amount in capacities.items():
        if not key or len(key) > MAX_ID_LENGTH:
            raise InvalidRequest(f"capacity names must be 1 to {MAX_ID_LENGTH} long")
        if not math.isfinite(amount) or amount < 0:
            raise InvalidRequest(f"capacity {key}={amount!r} must be a finite amount >= 0")
        out[key] = float(amount)
    return out
