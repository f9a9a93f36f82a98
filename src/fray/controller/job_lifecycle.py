"""The rules of a job's life at the controller: submitting it, placing its replicas as a gang,
the workers' reports, stopping it, a lost worker, and repairing lost messages.

- **Gang placement** (`place`): a PENDING job is placed all at once or not at all. Replicas are
  identical, so each live, non-draining worker can take as many as its free capacities hold
  (`placement.fits_now`, then the arithmetic for more); replicas are spread over the workers
  running the fewest job replicas. Placed replicas are RUNNING (pid 0 until their worker
  reports the start), hold their need (`placement.hold`) and their worker gets a `JobLaunch`
  with its next lease. A job that does not fit is skipped: pending jobs block neither each
  other nor tasks. Placement is tried again whenever capacity may have appeared (a worker
  registered, a replica released, a job submitted; the service also tries after every change).
- **Reports** (`report`): RUNNING with a pid (started), then SUCCEEDED, FAILED or KILLED; the
  replica's hold is released at its end. A failed (or unasked-for killed) replica fails the job
  and the others are ordered stopped; all SUCCEEDED: the job SUCCEEDED.
- **Stop** (`stop`): the job and its unfinished replicas are KILLED at once; placed replicas
  keep their hold until their worker reports their end (or is lost); a launch not sent yet is
  simply dropped.
- **Worker lost** (`lose_worker`): its running replicas are FAILED "worker W lost ...", their
  jobs FAILED, the others stopped. Jobs are never retried.
- **Reconcile** (`reconcile`, from the replicas a worker lists in LeaseTasks): a replica placed
  there, unfinished, not listed and never confirmed started gets its launch again; one confirmed
  started is FAILED "its process was lost"; a final one not listed is released; listed replicas
  that are final, or not placed there, are ordered stopped.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections import Counter
from collections.abc import Callable, Iterable

from fray.controller.jobs import JobTable
from fray.controller.placement import Need, Offer, could_fit, fits_now, unplaceable_reason
from fray.controller.records import (
    AlreadyExists,
    InvalidRequest,
    JobRecord,
    JobSpec,
    JobState,
    ReplicaRecord,
    ReplicaUpdate,
    replica_key,
)
from fray.controller.transitions import Transitions
from fray.controller.workers import WorkerRegistry
from fray.wire.limits import MAX_ID_LENGTH

logger = logging.getLogger(__name__)

MAX_REPLICAS = 1000
_EPSILON = 1e-9


class JobLifecycle:
    """Submits, places, stops and reconciles jobs."""

    def __init__(
        self,
        *,
        jobs: JobTable,
        workers: WorkerRegistry,
        transitions: Transitions,
        clock: Callable[[], float],
    ) -> None:
        self._jobs, self._workers, self._transitions = jobs, workers, transitions
        self._clock = clock
        self._tried_at = -1  # `WorkerRegistry.freed` as of the last `place`

    # ---------------------------------------------------------------- clients

    def submit(self, spec: JobSpec) -> tuple[JobRecord, bool]:
        """Register a job and try to place it; returns it and whether it existed already (a
        repeat of the same job_id by the same owner: SubmitJob is safe to retry)."""
        _check(spec)
        if spec.job_id:
            known = self._jobs.by_id.get(spec.job_id)
            if known is not None:
                if known.spec.owner == spec.owner:
                    return known, True
                raise AlreadyExists(f"job {spec.job_id} already exists (another owner's)")
        else:
            spec.job_id = f"{spec.name}-{uuid.uuid4().hex[:8]}"
        job = JobRecord(
            spec=spec,
            submitted_at=self._clock(),
            replicas=[ReplicaRecord(index=i) for i in range(spec.replicas)],
        )
        self._jobs.add(job)
        self.place()
        return job, False

    def stop(self, job_id: str) -> JobRecord:
        """KILL a job at once (a finished one is left as it is); its placed replicas are
        ordered stopped."""
        job = self._jobs.get(job_id)
        if not job.state.final:
            self._end(job, JobState.KILLED)
        return job

    def pending_reason(self, job: JobRecord) -> str:
        """Why a PENDING job cannot be placed on the workers there are, even idle ("": it
        could, or it is not PENDING)."""
        if job.state is not JobState.PENDING:
            return ""
        need, workers = job.spec.need, list(self._workers.by_id.values())
        reason = unplaceable_reason(need, workers)
        if reason or need.empty:
            return reason
        room = sum(
            _room(w, need, job.spec.replicas, used=False)
            for w in workers
            if not w.draining and could_fit(w, need)
        )
        if room < job.spec.replicas:
            return (
                f"the workers could hold at most {room} of its {job.spec.replicas} "
                f"replicas needing {need}"
            )
        return ""

    # ---------------------------------------------------------------- placement

    def retry(self) -> bool:
        """Place pending jobs again if capacity may have appeared since the last try (cheap
        otherwise); True if any was placed."""
        if not self._jobs.pending or self._workers.freed == self._tried_at:
            return False
        return self.place()

    def place(self) -> bool:
        """Place every PENDING job that fits now, oldest first; True if any was placed."""
        self._tried_at = self._workers.freed
        placed = False
        for job_id in list(self._jobs.pending):
            placed = self._place(self._jobs.by_id[job_id]) or placed
        return placed

    def _place(self, job: JobRecord) -> bool:
        need, count = job.spec.need, len(job.replicas)
        room: dict[str, int] = {}
        for worker in self._workers.by_id.values():
            if worker.runs_jobs and fits_now(worker, need):
                room[worker.worker_id] = _room(worker, need, count)
        if sum(room.values()) < count:
            return False
        running = {w: len(self._jobs.on_worker.get(w, ())) for w in room}
        chosen: Counter[str] = Counter()
        for replica in job.replicas:
            worker_id = min(
                (w for w in room if chosen[w] < room[w]), key=lambda w: running[w] + chosen[w]
            )
            chosen[worker_id] += 1
            self._workers.hold(worker_id, need)
            replica.worker_id, replica.held = worker_id, True
            self._transitions.move_job(job, JobState.RUNNING, replica)
            self._jobs.place(worker_id, replica_key(job.job_id, replica.index))
        self._move(job, JobState.RUNNING)
        logger.info("job %s placed on %s", job.job_id, dict(chosen))
        return True

    # ---------------------------------------------------------------- workers

    def take_orders(self, worker_id: str) -> tuple[list[tuple[JobRecord, int]], list[str]]:
        """The replicas a worker must start (job, index) and those it must stop."""
        keys, stops = self._jobs.take_orders(worker_id)
        launches = []
        for key in keys:
            found = self._jobs.replica(key)
            if found is None:
                continue
            job, replica = found
            if replica.state is JobState.RUNNING and replica.worker_id == worker_id:
                launches.append((job, replica.index))
        return launches, stops

    def report(self, worker_id: str, updates: Iterable[ReplicaUpdate]) -> list[str]:
        """Apply a worker's replica reports; returns the replicas it must stop (those it reports
        running that were stopped or are not its, and the stops waiting for it)."""
        self._workers.alive(worker_id)
        updates = list(updates)
        for update in updates:
            if update.state is JobState.PENDING:
                raise InvalidRequest(
                    f"replica {update.job_id}/{update.index}: state must be RUNNING, "
                    "SUCCEEDED, FAILED or KILLED"
                )
            if update.output_offset < 0 or update.index < 0:
                raise InvalidRequest(
                    f"replica {update.job_id}/{update.index}: index and output_offset must be >= 0"
                )
        for update in updates:
            key = replica_key(update.job_id, update.index)
            found = self._jobs.replica(key)
            mine = found is not None and found[1].worker_id == worker_id and found[1].held
            if found is None or not mine:
                if update.state is JobState.RUNNING:
                    self._jobs.stop(worker_id, key)  # not one of its replicas (any more)
                continue
            job, replica = found
            if update.output:
                self._jobs.logs.append(key, update.output_offset, update.output)
            if update.state is JobState.RUNNING:
                self._started(job, replica, worker_id, update.pid)
            else:
                self._ended(job, replica, update)
        return self._jobs.take_stops(worker_id)

    def _started(self, job: JobRecord, replica: ReplicaRecord, worker_id: str, pid: int) -> None:
        if replica.state.final:
            self._jobs.stop(worker_id, replica_key(job.job_id, replica.index))
        elif not replica.pid and pid > 0:
            replica.pid, replica.started_at = pid, self._clock()
            self._jobs.changes.job(job.job_id)
            self._jobs.launched(worker_id, replica_key(job.job_id, replica.index))

    def _ended(self, job: JobRecord, replica: ReplicaRecord, update: ReplicaUpdate) -> None:
        """A replica's end, as its worker reports it: its hold is released."""
        replica.pid = replica.pid or update.pid
        replica.exit_code = update.exit_code
        if not replica.state.final:
            replica.error = update.error
            if update.state is JobState.KILLED and not replica.error:  # not asked to
                replica.error = f"its worker {replica.worker_id} stopped it"
            elif update.state is JobState.FAILED and not replica.error:
                replica.error = f"the job's process exited with code {update.exit_code}"
            self._transitions.move_job(job, update.state, replica)
        self._release(job, replica)
        if job.state.final:
            return
        if update.state is not JobState.SUCCEEDED:
            self._end(job, JobState.FAILED, f"replica {replica.index}: {replica.error}")
        elif all(r.state is JobState.SUCCEEDED for r in job.replicas):
            self._move(job, JobState.SUCCEEDED)

    def reconcile(self, worker_id: str, listed: Iterable[str]) -> bool:
        """Repair lost messages from the replicas a worker says it runs (see the module
        docstring); True if anything changed."""
        self._workers.get(worker_id)
        seen = set(listed)
        changed = False
        waiting = set(self._jobs.launches.get(worker_id, ()))
        for key in list(self._jobs.on_worker.get(worker_id, ())):
            job, replica = self._jobs.replica(key) or _missing(key)
            if key in seen:
                self._jobs.launched(worker_id, key)  # it has it: no launch again
                if replica.state.final:
                    self._jobs.stop(worker_id, key)
                    changed = True
                continue
            if key in waiting:
                continue  # not told yet
            changed = True
            if replica.state.final:
                self._release(job, replica)  # it never started, or its end was reported
            elif not replica.pid:
                self._jobs.launches.setdefault(worker_id, []).append(key)  # the order was lost
            else:
                self._fail(job, replica, "its process was lost")
        for key in seen - set(self._jobs.on_worker.get(worker_id, ())):
            self._jobs.stop(worker_id, key)
            changed = True
        return changed

    def lose_worker(self, worker_id: str, reason: str) -> None:
        """The worker is gone (lost, or left; out of the registry already): its unfinished
        replicas FAIL, and their jobs."""
        for key in self._jobs.forget_worker(worker_id):
            job, replica = self._jobs.replica(key) or _missing(key)
            replica.held = False  # (the worker and what it held are gone)
            self._jobs.logs.ended(key)
            self._jobs.changes.job(job.job_id)  # saved: held no more
            if not replica.state.final:
                self._fail(job, replica, f"worker {worker_id} lost ({reason})")
        self._jobs.evict()
        self.place()

    def restore(self, jobs: Iterable[JobRecord]) -> list[tuple[str, Need]]:
        """Jobs as saved (at a restart, before the workers are); returns (worker id, need) of
        the replicas holding capacity, for `recovery` to hold again. Then `restored`."""
        holds = []
        for job in jobs:
            self._jobs.restore(job)
            for replica in job.replicas:
                if replica.held:
                    holds.append((replica.worker_id, job.spec.need))
                    key = replica_key(job.job_id, replica.index)
                    self._jobs.place(replica.worker_id, key, launch=False)
        self._jobs.sort_finished()
        return holds

    def restored(self) -> None:
        """After the workers are back: replicas held on a worker that was not saved are lost
        (cannot happen: a worker leaves the registry in the same step as its replicas); launch
        orders are not saved (a worker's next lease gets the missing ones again)."""
        for worker_id in list(self._jobs.on_worker):
            if worker_id not in self._workers.by_id:
                self.lose_worker(worker_id, "was not known after a controller restart")
        self._jobs.evict()
        self.place()

    # ---------------------------------------------------------------- moves

    def _fail(self, job: JobRecord, replica: ReplicaRecord, error: str) -> None:
        """An unfinished replica FAILED (its hold released); its job fails."""
        replica.error = error
        self._transitions.move_job(job, JobState.FAILED, replica)
        self._release(job, replica)
        if not job.state.final:
            self._end(job, JobState.FAILED, f"replica {replica.index}: {error}")

    def _end(self, job: JobRecord, to: JobState, error: str = "") -> None:
        """The job ends (FAILED or KILLED): its unfinished replicas are KILLED and stopped."""
        job.error = error
        self._move(job, to)
        for replica in job.replicas:
            if replica.state.final:
                continue
            placed = replica.state is JobState.RUNNING
            self._transitions.move_job(job, JobState.KILLED, replica)
            if not placed:
                continue
            key = replica_key(job.job_id, replica.index)
            if key in self._jobs.launches.get(replica.worker_id, ()):  # not told yet
                self._release(job, replica)
            else:
                self._jobs.stop(replica.worker_id, key)

    def _move(self, job: JobRecord, to: JobState) -> None:
        was = job.state
        self._transitions.move_job(job, to)
        self._jobs.moved(job, was)

    def _release(self, job: JobRecord, replica: ReplicaRecord) -> None:
        """The replica no longer holds its need on its worker; placement may go on."""
        if not replica.held:
            return
        replica.held = False
        key = replica_key(job.job_id, replica.index)
        self._jobs.unplace(replica.worker_id, key)
        self._jobs.logs.ended(key)
        self._jobs.changes.job(job.job_id)
        self._workers.release(replica.worker_id, job.spec.need)
        if job.state.final and not any(r.held for r in job.replicas):
            self._jobs.evict()
        self.retry()


def _room(worker: Offer, need: Need, most: int, used: bool = True) -> int:
    """How many replicas needing `need` fit on the worker's free (or, `used` False, whole)
    capacities, at most `most` (labels and draining are checked by the caller)."""
    if need.empty:
        return most
    room = most
    for key, amount in need.resources:
        free = worker.capacities.get(key, 0.0) - (worker.used.get(key, 0.0) if used else 0.0)
        room = min(room, max(0, math.floor((free + _EPSILON) / amount)))
    return room


def _missing(key: str) -> tuple[JobRecord, ReplicaRecord]:
    raise AssertionError(f"replica {key} is held on a worker but not known")


def _check(spec: JobSpec) -> None:
    """`InvalidRequest` naming what is wrong with a submitted job."""
    if not spec.name or "/" in spec.name:
        raise InvalidRequest("job name must be non-empty and hold no '/'")
    if len(spec.name) > MAX_ID_LENGTH - 9:
        raise InvalidRequest(f"job name longer than {MAX_ID_LENGTH - 9} characters")
    if "\0" in spec.name:
        raise InvalidRequest("job name must hold no NUL character")
    if "/" in spec.job_id or "\0" in spec.job_id or len(spec.job_id) > MAX_ID_LENGTH:
        raise InvalidRequest(
            f"job_id must hold no '/' or NUL and be at most {MAX_ID_LENGTH} characters long"
        )
    if len(spec.owner) > MAX_ID_LENGTH:
        raise InvalidRequest(f"owner longer than {MAX_ID_LENGTH} characters")
    if bool(spec.entrypoint) == bool(spec.command):
        raise InvalidRequest("give exactly one of entrypoint and command")
    if spec.command and not spec.command[0]:
        raise InvalidRequest("command[0] (the program) is empty")
    if spec.replicas == 0:
        spec.replicas = 1
    if not 1 <= spec.replicas <= MAX_REPLICAS:
        raise InvalidRequest(f"replicas must be from 1 to {MAX_REPLICAS}")
    for name, value in spec.env.items():
        if not name or "=" in name or "\0" in name or "\0" in value:
            raise InvalidRequest(f"env {name!r}: names must be non-empty, without '=' or NUL")
    if "\0" in spec.working_dir or any("\0" in arg for arg in spec.command):
        raise InvalidRequest("command and working_dir must hold no NUL character")
