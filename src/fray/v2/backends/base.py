"""What every backend's cluster shares: its namespace and the table of jobs it submitted."""

from __future__ import annotations

from fray.v2.cluster import Job
from fray.v2.job import JobTable
from fray.v2.types import JobId, Namespace

__all__ = ["BackendCluster"]


class BackendCluster:
    """The base of the backends' :class:`fray.v2.cluster.Cluster` classes: ``namespace``,
    ``terminate`` and ``list_jobs`` over :attr:`_jobs` (to which ``submit`` adds)."""

    def __init__(self, namespace: Namespace) -> None:
        self._namespace = namespace
        self._jobs = JobTable()

    @property
    def namespace(self) -> Namespace:
        return self._namespace

    def terminate(self, job_id: JobId) -> None:
        self._jobs.terminate(job_id)

    def list_jobs(self) -> list[Job]:
        return self._jobs.list()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(namespace={self._namespace!r})"
