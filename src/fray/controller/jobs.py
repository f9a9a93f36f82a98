"""The job registry: jobs by id in submission order, counts by state, the replicas placed on
each worker, the orders (launches, stops) waiting for workers, the replicas' output, and the
bound on finished jobs (the oldest finished are forgotten).

Bookkeeping only: when jobs move is decided in `job_lifecycle`. Additions, changes and
forgotten jobs are marked in `changes` for the journal; orders and output are not saved.
"""

from __future__ import annotations

from collections import Counter, OrderedDict

from fray.controller.changes import Changes
from fray.controller.job_logs import JobLogs
from fray.controller.records import JobRecord, JobState, NotFound, ReplicaRecord, replica_key

DEFAULT_MAX_FINISHED_JOBS = 1000


class JobTable:
    """Jobs by id, and what each worker runs and must be told about them."""

    def __init__(
        self, max_finished: int = DEFAULT_MAX_FINISHED_JOBS, changes: Changes | None = None
    ) -> None:
        self.by_id: dict[str, JobRecord] = {}  # submission order
        self.counts: Counter[JobState] = Counter()
        self.pending: dict[str, None] = {}  # PENDING jobs, oldest first
        self.on_worker: dict[str, dict[str, None]] = {}  # worker -> replica keys held there
        self.launches: dict[str, list[str]] = {}  # worker -> replicas to start (not sent yet)
        self.stops: dict[str, dict[str, None]] = {}  # worker -> replicas to stop (not sent yet)
        self.logs = JobLogs()
        self._finished: OrderedDict[str, None] = OrderedDict()  # oldest end first
        self._max_finished = max_finished
        self._seq = 0
        self.changes = Changes() if changes is None else changes

    def get(self, job_id: str) -> JobRecord:
        job = self.by_id.get(job_id)
        if job is None:
            raise NotFound(f"job {job_id} not found")
        return job

    def replica(self, key: str) -> tuple[JobRecord, ReplicaRecord] | None:
        """The job and replica a "JOB_ID/INDEX" names (None: no such replica)."""
        job_id, _, index = key.rpartition("/")
        job = self.by_id.get(job_id)
        if job is None or not index.isdigit() or int(index) >= len(job.replicas):
            return None
        return job, job.replicas[int(index)]

    def add(self, job: JobRecord) -> None:
        self._seq += 1
        job.seq = self._seq
        self.by_id[job.job_id] = job
        self.counts[job.state] += 1
        self.pending[job.job_id] = None
        self.changes.new_job(job.job_id)

    def restore(self, job: JobRecord) -> None:
        """A job as saved (in submission order; finished ones are bounded by `evict`)."""
        self._seq = max(self._seq, job.seq)
        self.by_id[job.job_id] = job
        self.counts[job.state] += 1
        if job.state is JobState.PENDING:
            self.pending[job.job_id] = None
        elif job.state.final:
            self._finished[job.job_id] = None

    def sort_finished(self) -> None:
        """Finished jobs in the order they finished (after a restore)."""
        ids = sorted(self._finished, key=lambda i: self.by_id[i].finished_at or 0.0)
        self._finished = OrderedDict.fromkeys(ids)

    def moved(self, job: JobRecord, was: JobState) -> None:
        """The job went from `was` to its current state."""
        self.counts[was] -= 1
        self.counts[job.state] += 1
        if was is JobState.PENDING:
            self.pending.pop(job.job_id, None)
        if job.state.final:
            self._finished[job.job_id] = None
            self.evict()

    def evict(self) -> None:
        """Forget the oldest finished jobs beyond the bound (keeping those still holding a
        worker's capacity: a stop not confirmed yet)."""
        excess = len(self._finished) - self._max_finished
        for job_id in list(self._finished):
            if excess <= 0:
                break
            job = self.by_id[job_id]
            if any(r.held for r in job.replicas):
                continue
            del self._finished[job_id]
            del self.by_id[job_id]
            self.counts[job.state] -= 1
            self.logs.drop([replica_key(job_id, r.index) for r in job.replicas])
            self.changes.job(job_id)
            excess -= 1

    # ---------------------------------------------------------------- per worker

    def place(self, worker_id: str, key: str, launch: bool = True) -> None:
        """The replica `key` is held on the worker (and is to be started there)."""
        self.on_worker.setdefault(worker_id, {})[key] = None
        if launch:
            self.launches.setdefault(worker_id, []).append(key)

    def unplace(self, worker_id: str, key: str) -> None:
        """The replica no longer holds anything on the worker (nor waits to be started)."""
        held = self.on_worker.get(worker_id)
        if held is not None:
            held.pop(key, None)
            if not held:
                del self.on_worker[worker_id]
        self.launched(worker_id, key)

    def launched(self, worker_id: str, key: str) -> None:
        """The worker has the replica: a launch waiting for it is not needed."""
        launches = self.launches.get(worker_id)
        if launches and key in launches:
            launches.remove(key)

    def stop(self, worker_id: str, key: str) -> None:
        self.stops.setdefault(worker_id, {})[key] = None

    def take_orders(self, worker_id: str) -> tuple[list[str], list[str]]:
        """The replicas a worker must start and those it must stop (sent with its lease)."""
        return self.launches.pop(worker_id, []), list(self.stops.pop(worker_id, {}))

    def take_stops(self, worker_id: str) -> list[str]:
        return list(self.stops.pop(worker_id, {}))

    def forget_worker(self, worker_id: str) -> list[str]:
        """The worker is gone: its orders are dropped; returns the replicas it held."""
        self.launches.pop(worker_id, None)
        self.stops.pop(worker_id, None)
        return list(self.on_worker.pop(worker_id, {}))
