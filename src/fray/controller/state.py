"""`ControllerState`: the controller's whole state machine, as the one object the service calls.

It plays the part of a `concurrent.futures` executor for a cluster: clients `submit` tasks,
wait for them (`watch_finished_among`, `read_finished`) and `cancel` them, while workers, in
place of the executor's threads, ask for work (`lease`) and hand back results (`report`). Objects
(`put_object`) and actors (`create_actor`) ride along.

Pure Python and single-threaded: no transport, no asyncio, no locks. The Connect service
(`fray.controller.service`) calls these methods from its event loop and turns the request errors
(`records.StateError`) into Connect codes. Time comes from an injectable clock, so the machine
can be tested alone. Inside, each piece has one job:

- `transitions`: the legal moves of tasks and actors and what each move updates (read it first);
- `task_lifecycle`, `actor_lifecycle`: the rules deciding when things move;
- `tasks`, `workers`, `objects`, `finished_log`, `actors`: the registries (bookkeeping only);
- `records`: the records, states and request errors they all share;
- `changes`: what changed since the last save (marked by the registries and `Transitions`),
  which the journal (`journal`, `store`) writes to disk when the controller has durable state;
  `recovery`: putting saved state back at a restart (`restore`).

This class wires them together, and itself handles what touches tasks and actors at once: a
worker that registers, leaves or is lost.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping

from fray.controller.actor_lifecycle import ActorLifecycle
from fray.controller.actors import ActorRegistry
from fray.controller.changes import Changes
from fray.controller.finished_log import FinishedLogs
from fray.controller.job_lifecycle import JobLifecycle
from fray.controller.jobs import DEFAULT_MAX_FINISHED_JOBS, JobTable
from fray.controller.objects import ObjectStore, OwnerKey
from fray.controller.placement import NOTHING, Need, Reasons
from fray.controller.records import (
    ActorRecord,
    ActorSpec,
    ActorState,
    DirectTaskRecord,
    InvalidRequest,
    JobRecord,
    JobSpec,
    JobState,
    ReplicaUpdate,
    TaskFailure,
    TaskOutcome,
    TaskRecord,
    TaskSpec,
    TaskState,
    WorkerRecord,
    replica_key,
)
from fray.controller.recovery import SavedState, restore
from fray.controller.task_lifecycle import SHORT_TASK_SECONDS, TaskLifecycle
from fray.controller.tasks import FinishedAmong, TaskTable
from fray.controller.transitions import Transitions
from fray.controller.workers import WorkerRegistry
from fray.wire.pb import controller_pb2 as pb


class ControllerState:
    """Tasks, workers, objects and actors, and every rule about how they change.

    Clients: `submit`, `cancel`, `get_task`, `list_tasks`, `watch_finished_among`, `read_finished`.
    Workers: `register_worker`, `heartbeat`, `lease`, `report`, `record_direct`,
    `report_actor`, `reconcile_actors`, `take_actor_orders`, `unregister_worker`.
    Objects: `put_object`, `get_object`, `delete_objects`. Actors: `create_actor`, `get_actor`,
    `kill_actor`, `list_actors`. Housekeeping: `expire_workers`, `expire_finished_logs`.
    Durability: `changes` (enabled by the journal), `restore`.
    """

    def __init__(
        self,
        *,
        heartbeat_timeout: float = 10.0,
        max_infra_attempts: int = 3,
        max_finished_tasks: int = 100_000,
        clock: Callable[[], float] = time.time,
        max_finished_jobs: int = DEFAULT_MAX_FINISHED_JOBS,
    ) -> None:
        if heartbeat_timeout <= 0 or max_infra_attempts < 1 or max_finished_tasks < 1:
            raise ValueError("heartbeat_timeout, max_infra_attempts and max_finished_tasks > 0")
        self.heartbeat_timeout = heartbeat_timeout
        self.max_infra_attempts = max_infra_attempts
        self.max_finished_tasks = max_finished_tasks
        self.clock = clock
        self.changes = Changes()  # what changed since the last save (kept once enabled)
        self._tasks = TaskTable(max_finished_tasks, self.changes)
        self._workers = WorkerRegistry(clock, self.changes)
        self._objects = ObjectStore(self.changes)
        self._finished_logs = FinishedLogs(clock, self.changes)
        self._actors = ActorRegistry(self.changes)
        self.transitions = Transitions(
            self._tasks, self._workers, self._finished_logs, self._actors, clock, self.changes
        )
        self._task_rules = TaskLifecycle(
            tasks=self._tasks,
            workers=self._workers,
            objects=self._objects,
            transitions=self.transitions,
            clock=clock,
            max_infra_attempts=max_infra_attempts,
        )
        self._actor_rules = ActorLifecycle(
            actors=self._actors,
            workers=self._workers,
            objects=self._objects,
            transitions=self.transitions,
            clock=clock,
        )
        self._jobs = JobTable(max_finished_jobs, self.changes)
        self._job_rules = JobLifecycle(
            jobs=self._jobs, workers=self._workers, transitions=self.transitions, clock=clock
        )
        # Set when actors or jobs may have changed (placed, started, stopped, lost): orders may
        # wait for workers, and GetActor/GetJob polls may have an answer (see `take_wakes`).
        self.orders_changed = False

    def restore(self, saved: SavedState) -> None:
        """Put back what a controller saved, into this new state, and reconcile it (the rules
        are in `recovery`). Only what reconciling changes is marked."""
        registries = (self._tasks, self._workers, self._actors, self._objects, self._jobs)
        if any(r.by_id for r in registries):
            raise RuntimeError("restore() needs a new ControllerState")
        restore(
            saved,
            tasks=self._tasks,
            workers=self._workers,
            objects=self._objects,
            logs=self._finished_logs,
            actors=self._actors,
            task_rules=self._task_rules,
            actor_rules=self._actor_rules,
            holds=self._job_rules.restore(saved.jobs),
        )
        self._job_rules.restored()

    def saved_log(self, owner: str, since: int) -> tuple[int, int, list[tuple[int, str]]]:
        """An owner's finished log as the journal saves it (see `FinishedLogs.saved_view`)."""
        return self._finished_logs.saved_view(owner, since)

    # ------------------------------------------------------------------ read-only views

    @property
    def tasks(self) -> Mapping[str, TaskRecord]:
        return self._tasks.by_id

    @property
    def counts(self) -> Mapping[TaskState, int]:
        """How many tasks are in each state."""
        return self._tasks.counts

    @property
    def queue_depth(self) -> int:
        return self._tasks.queued

    @property
    def workers(self) -> Mapping[str, WorkerRecord]:
        return self._workers.by_id

    @property
    def objects(self) -> ObjectStore:
        """The object registry (read only: change it through the methods below)."""
        return self._objects

    @property
    def actors(self) -> Mapping[str, ActorRecord]:
        return self._actors.by_id

    def worker_busy_slots(self, worker: WorkerRecord) -> int:
        """The worker's slots running a task now (its RUNNING tasks and direct ones)."""
        tasks = self._tasks.by_id
        return self._workers.busy(worker, lambda t: tasks[t].state is TaskState.RUNNING)

    def busy_slots(self) -> int:
        """Slots running a task now, over all workers (tasks ASSIGNED to a worker and waiting
        in its local queue do not count)."""
        return sum(self.worker_busy_slots(w) for w in self._workers.by_id.values())

    # ------------------------------------------------------------------ placement

    def reasons(self) -> Reasons:
        """Why waiting work waits, per need, over the workers now (memoised: build one per
        request; see `placement.unplaceable_reason`)."""
        return Reasons(self._workers.by_id.values())

    def pending_reason(self, task: TaskRecord, reasons: Reasons | None = None) -> str:
        """Why a PENDING task waits when no worker could ever take it ("" otherwise)."""
        if task.state is not TaskState.PENDING or task.spec.need is NOTHING:
            return ""
        return (reasons or self.reasons()).of(task.spec.need)

    def actor_pending_reason(self, actor: ActorRecord, reasons: Reasons | None = None) -> str:
        """Why a PENDING or RESTARTING actor waits when no worker could ever host it."""
        if actor.state not in (ActorState.PENDING, ActorState.RESTARTING):
            return ""
        return (reasons or self.reasons()).of(actor.spec.need)

    def unplaceable(self, reasons: Reasons | None = None) -> Counter[str]:
        """Reason -> how many PENDING tasks and waiting actors no worker could ever take; over
        the queues' distinct needs, not every task."""
        reasons = reasons or self.reasons()
        out: Counter[str] = Counter()
        for need, count in self._tasks.pending_needs().items():
            if (reason := reasons.of(need)) != "":
                out[reason] += count
        for actor in self._actors.waiting():
            if (reason := reasons.of(actor.spec.need)) != "":
                out[reason] += 1
        return out

    # ------------------------------------------------------------------ clients

    def submit(self, specs: Iterable[TaskSpec]) -> list[str]:
        """Queue tasks; all or none. Returns their ids (assigning any that are empty)."""
        return self._task_rules.submit(specs)

    def get_task(self, task_id: str) -> TaskRecord:
        return self._tasks.get(task_id)

    def watch_finished_among(self, task_ids: list[str]) -> FinishedAmong:
        """The finished tasks among `task_ids`, kept up to date incrementally for a poll that
        looks again and again (WaitTasks): each look costs the tasks that finished since the
        last one (not_found for an unknown id)."""
        return FinishedAmong(self._tasks, task_ids)

    # ------------------------------------------------------------------ wake-ups

    @property
    def finished_total(self) -> int:
        """How many tasks ever finished here (it moves when any does)."""
        return self._tasks.finished_total

    def short_work_ahead(self) -> bool:
        """Whether the next tasks to lease are known to be short (`grant_size`)."""
        return self._tasks.short_work_ahead(SHORT_TASK_SECONDS)

    def pending_of(self, need: Need) -> int:
        """How many PENDING tasks ask for exactly `need`."""
        return self._tasks.pending_of(need)

    def take_wakes(self) -> tuple[dict[Need, int], set[str], bool]:
        """What changed for the workers' lease polls since the last call: tasks queued (new or
        again) by need, the workers with news of their own (room or capacity freed,
        cancellations, draining, gone), and whether actors or jobs changed (orders for
        workers may be waiting). The service wakes only the polls these concern."""
        orders, self.orders_changed = self.orders_changed, False
        return self._tasks.take_new_pending(), self._workers.take_news(), orders

    def read_finished(
        self, owner: str, cursor: int, limit: int
    ) -> tuple[list[TaskRecord], int, bool]:
        """An owner's finished tasks from position `cursor` on; acknowledges those before it.

        Returns the tasks, the next cursor, and whether entries the reader had not read were
        dropped (it then has to ask for its tasks one by one). A task evicted before its owner
        read it reads as lost. See `FinishedLogs.read` for cursors.
        """
        ids, next_cursor, dropped = self._finished_logs.read(owner, cursor, limit)
        return [self._tasks.finished_or_evicted(i) for i in ids], next_cursor, dropped

    def finished_count(self, owner: str) -> int:
        """The cursor after the owner's last finished task."""
        return self._finished_logs.count(owner)

    def active_clients(self) -> int:
        """Clients (jobs) with unfinished queued tasks."""
        return len(self._tasks.unfinished_by_owner)

    def unfinished_count(self, owner: str) -> int:
        """How many of the owner's queued tasks have not finished (PENDING or RUNNING)."""
        return self._tasks.unfinished_by_owner.get(owner, 0)

    def missing_objects(self, object_ids: Iterable[str]) -> list[str]:
        """The objects among `object_ids` that are not stored (freed, or never were)."""
        return [o for o in object_ids if not self._objects.contains(o)]

    def expire_finished_logs(self, max_idle: float) -> int:
        """Drop the unread ids of owners silent for `max_idle` seconds (clients that went away);
        their positions are kept, so a reader that comes back is told what it missed.
        Returns how many logs were emptied."""
        return self._finished_logs.expire(self.clock() - max_idle)

    def cancel(self, task_ids: Iterable[str]) -> list[TaskRecord]:
        """Cancel pending tasks at once; ask the holders of running ones to stop them."""
        return self._task_rules.cancel(task_ids)

    def list_tasks(
        self, state: TaskState | None = None, worker_id: str = "", limit: int = 1000
    ) -> list[TaskRecord]:
        """Up to `limit` tasks in `state` (None: any), of one worker or of all."""
        ids = list(self._workers.get(worker_id).task_ids) if worker_id else None
        return self._tasks.select(state, ids, limit)

    # ------------------------------------------------------------------ objects

    def put_object(
        self, data: bytes, object_id: str = "", location: pb.ObjectLocation | None = None
    ) -> str:
        """Store a small object's bytes or a large one's location; returns its id."""
        return self._objects.put(data, object_id, location)[0]

    def get_object(self, object_id: str) -> bytes | pb.ObjectLocation:
        return self._objects.get(object_id)

    def delete_objects(self, object_ids: Iterable[str]) -> int:
        return self._objects.delete(object_ids)

    def object_owners(self) -> dict[OwnerKey, pb.ObjectLocation]:
        """The processes holding located objects (one location each)."""
        return self._objects.owners()

    def drop_object_owner(self, key: OwnerKey) -> list[str]:
        """Forget the objects of a process that went away (their workers' copies are freed
        at their next lease); returns their ids."""
        return self._objects.drop_owner(key)

    # ------------------------------------------------------------------ workers

    def register_worker(
        self,
        *,
        worker_id: str = "",
        address: str = "",
        slots: int = 1,
        prefetch: int = 0,
        cpus: float = 0.0,
        memory_bytes: int = 0,
        labels: dict[str, str] | None = None,
        instance: str = "",
        capacities: Mapping[str, float] | None = None,
    ) -> WorkerRecord:
        """Add a worker. Re-registering an id replaces it; tasks it held are treated as lost,
        unless it is the same process again (`instance`): a retry whose answer was lost.
        `capacities`: what it offers (empty: ``cpus`` and ``memory`` from the arguments)."""
        known = self._workers.by_id.get(worker_id)
        if known is not None and instance and known.instance == instance:
            return self._workers.alive(worker_id)
        worker = self._workers.new_record(
            worker_id=worker_id,
            address=address,
            slots=slots,
            prefetch=prefetch,
            cpus=cpus,
            memory_bytes=memory_bytes,
            labels=labels,
            capacities=capacities,
        )
        worker.instance = instance
        if worker_id in self._workers.by_id:
            self._drop_worker(self._workers.by_id[worker_id], "re-registered")
        self._workers.add(worker)
        placed = self._actor_rules.place()  # actors waiting for a worker
        if self._job_rules.place() or placed:
            self.orders_changed = True
        return worker

    def heartbeat(
        self, worker_id: str, draining: bool = False, direct_running: int | None = None
    ) -> list[str]:
        """Note the worker is alive; returns the cancellations it must carry out (again with
        every answer until the task's end is reported, so a lost answer loses none).

        `draining` marks a worker that is shutting down: it is leased nothing more.
        """
        return self._workers.heartbeat(worker_id, draining, direct_running)

    def lease(
        self,
        worker_id: str,
        held: Iterable[str] | None = None,
        prefetch: int | None = None,
        reports_started: bool = False,
    ) -> tuple[list[TaskRecord], list[str]]:
        """Hand a worker the tasks it has room for, and its pending cancellations; requeue the
        tasks it should hold but does not list in `held` (see `TaskLifecycle.lease`)."""
        leased = self._task_rules.lease(worker_id, held, prefetch, reports_started)
        # Tasks handed back (queued again or, cancelled, finished) may have freed room for
        # waiting actors and jobs (what concerns other workers is noted for `take_wakes`).
        placed = self._actor_rules.retry()
        if self._job_rules.retry() or placed:
            self.orders_changed = True
        return leased

    def started(self, worker_id: str, starts: Iterable[tuple[str, int, float]]) -> int:
        """The worker's slots started these ASSIGNED tasks (id, attempt, seconds running):
        they are RUNNING (see `TaskLifecycle.started`)."""
        self._workers.alive(worker_id)
        return self._task_rules.started(worker_id, starts)

    def report(self, worker_id: str, outcomes: Iterable[TaskOutcome]) -> int:
        """Apply a worker's results; returns how many applied (stale reports are ignored)."""
        accepted = self._task_rules.report(worker_id, outcomes)
        placed = self._actor_rules.retry()  # finished tasks may have freed room for actors
        if self._job_rules.retry() or placed:
            self.orders_changed = True
        return accepted

    def record_direct(self, worker_id: str, records: Iterable[DirectTaskRecord]) -> int:
        """Keep finished direct tasks for ListTasks/GetTask; returns how many were new."""
        return self._task_rules.record_direct(worker_id, records)

    def unregister_worker(self, worker_id: str) -> list[str]:
        """Remove a worker that is leaving; what it still holds goes back to the queue."""
        worker = self._workers.get(worker_id)
        held = self._task_rules.hand_back_all(worker)
        self._workers.remove(worker_id)
        self._actor_rules.lose(worker, "left (shut down)")
        self._job_rules.lose_worker(worker_id, "left (shut down)")
        self.orders_changed = True
        return held

    def expire_workers(self) -> list[str]:
        """Drop workers silent past the heartbeat timeout; requeue or fail their tasks."""
        dead = self._workers.silent_since(self.clock() - self.heartbeat_timeout)
        for worker in dead:
            self._drop_worker(
                worker, f"stopped heartbeating (silent for more than {self.heartbeat_timeout:g}s)"
            )
        return [w.worker_id for w in dead]

    def _drop_worker(self, worker: WorkerRecord, reason: str) -> None:
        """A lost worker: its tasks count a loss each; its actors restart elsewhere (it is
        removed first, so that they cannot be placed on it again)."""
        self._task_rules.lose_all(worker, reason)
        self._workers.remove(worker.worker_id)
        self._actor_rules.lose(worker, reason)
        self._job_rules.lose_worker(worker.worker_id, reason)
        self.orders_changed = True

    # ------------------------------------------------------------------ actors

    def create_actor(
        self, spec: ActorSpec, get_if_exists: bool = False
    ) -> tuple[ActorRecord, bool]:
        """Register an actor and place it; returns it and whether it existed (get_if_exists)."""
        self.orders_changed = True
        return self._actor_rules.create(spec, get_if_exists)

    def get_actor(self, actor_id: str = "", name: str = "") -> ActorRecord:
        """An actor by id, or (without an id) the live actor called `name`."""
        return self._actors.get(actor_id, name)

    def list_actors(
        self, state: ActorState | None = None, name_prefix: str = ""
    ) -> list[ActorRecord]:
        """Actors in `state` (None: any) whose name starts with `name_prefix`."""
        actors = self._actors.select(state)
        if name_prefix:
            actors = [a for a in actors if a.spec.name.startswith(name_prefix)]
        return actors

    def kill_actor(self, actor_id: str) -> ActorRecord:
        """Stop an actor for good (its worker is told with its next lease)."""
        self.orders_changed = True
        return self._actor_rules.kill(actor_id)

    def report_actor(
        self,
        worker_id: str,
        actor_id: str,
        incarnation: int,
        state: ActorState,
        error: TaskFailure | None = None,
    ) -> bool:
        """A worker says it started (READY), could not construct (FAILED) or lost (DEAD) an
        actor. Stale reports (another incarnation, another worker) are ignored."""
        self.orders_changed = True
        return self._actor_rules.report(worker_id, actor_id, incarnation, state, error)

    def reconcile_actors(
        self, worker_id: str, hosted: Iterable[tuple[str, int, ActorState]]
    ) -> bool:
        """Repair lost actor messages from what a worker says it hosts, as (id, incarnation,
        CREATING or READY); True if anything changed (see `ActorLifecycle.reconcile`)."""
        changed = self._actor_rules.reconcile(worker_id, hosted)
        self.orders_changed = self.orders_changed or changed
        return changed

    def has_orders(self, worker_id: str) -> bool:
        """Actor or job orders wait for the worker's next lease (or it is gone)."""
        worker = self._workers.by_id.get(worker_id)
        if worker is None:
            return True
        jobs = self._jobs
        return bool(
            worker.actor_starts
            or worker.actor_stops
            or jobs.launches.get(worker_id)
            or jobs.stops.get(worker_id)
        )

    def take_actor_orders(self, worker_id: str) -> tuple[list[ActorRecord], list[str]]:
        """The actors a worker must start and the ids it must stop (sent with its lease)."""
        return self._actor_rules.take_orders(worker_id)

    # ------------------------------------------------------------------ jobs (job_lifecycle)

    @property
    def jobs(self) -> Mapping[str, JobRecord]:
        """Jobs by id, in submission order."""
        return self._jobs.by_id

    @property
    def job_counts(self) -> Mapping[JobState, int]:
        return self._jobs.counts

    def submit_job(self, spec: JobSpec) -> tuple[JobRecord, bool]:
        """Register a job (placed at once if it fits); returns it and whether it existed (a
        repeat by the same owner)."""
        self.orders_changed = True
        return self._job_rules.submit(spec)

    def get_job(self, job_id: str) -> JobRecord:
        return self._jobs.get(job_id)

    def list_jobs(self, state: JobState | None = None) -> list[JobRecord]:
        return [j for j in self._jobs.by_id.values() if state is None or j.state is state]

    def stop_job(self, job_id: str) -> JobRecord:
        """KILL a job at once; its placed replicas are ordered stopped."""
        self.orders_changed = True
        return self._job_rules.stop(job_id)

    def job_pending_reason(self, job: JobRecord) -> str:
        """Why a PENDING job waits when the workers could never hold it ("" otherwise)."""
        return self._job_rules.pending_reason(job)

    def unplaceable_jobs(self) -> Counter[str]:
        """Reason -> how many replicas of PENDING jobs the workers could never hold."""
        out: Counter[str] = Counter()
        for job_id in self._jobs.pending:
            job = self._jobs.by_id[job_id]
            if reason := self._job_rules.pending_reason(job):
                out[reason] += len(job.replicas)
        return out

    def place_jobs(self) -> bool:
        """Place pending jobs (and waiting actors) if capacity appeared since the last try."""
        placed = self._job_rules.retry()
        placed = self._actor_rules.retry() or placed
        self.orders_changed = self.orders_changed or placed
        return placed

    def report_jobs(self, worker_id: str, updates: Iterable[ReplicaUpdate]) -> list[str]:
        """Apply a worker's replica reports; returns the replicas it must stop."""
        stops = self._job_rules.report(worker_id, updates)
        self._actor_rules.retry()  # ended replicas may have freed room for waiting actors
        self.orders_changed = True
        return stops

    def reconcile_jobs(self, worker_id: str, listed: Iterable[str]) -> bool:
        """Repair lost job messages from the replicas a worker lists; True if anything
        changed (see `JobLifecycle.reconcile`)."""
        self._workers.runs_jobs(worker_id)
        changed = self._job_rules.reconcile(worker_id, listed)
        changed = self._job_rules.retry() or changed
        self.orders_changed = self.orders_changed or changed
        return changed

    def take_job_orders(self, worker_id: str) -> tuple[list[tuple[JobRecord, int]], list[str]]:
        """The replicas (job, index) a worker must start and those it must stop."""
        return self._job_rules.take_orders(worker_id)

    def job_replicas_on(self, worker_id: str) -> list[str]:
        """The replicas ("JOB_ID/INDEX") holding capacity on a worker."""
        return list(self._jobs.on_worker.get(worker_id, ()))

    def read_job_logs(self, job_id: str, index: int, offset: int) -> tuple[bytes, int, int, bool]:
        """A replica's output from `offset`: (data, next offset, dropped bytes before the
        data, finished: the replica ended and its output is complete)."""
        job = self._jobs.get(job_id)
        if not 0 <= index < len(job.replicas):
            raise InvalidRequest(f"job {job_id} has replicas 0 to {len(job.replicas) - 1}")
        if offset < 0:
            raise InvalidRequest("offset must be >= 0")
        replica = job.replicas[index]
        data, next_offset, dropped = self._jobs.logs.read(replica_key(job_id, index), offset)
        return data, next_offset, dropped, replica.state.final and not replica.held
