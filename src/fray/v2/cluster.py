"""The fray.v2 protocols: Cluster, Job, Resolver, ActorPool, WorkerPool, BroadcastResult.

Also the names every backend shares: :data:`CLUSTER_SPEC_ENV` and :data:`DEFAULT_NAMESPACE`.
Backends (:mod:`fray.v2.backends`) implement these protocols and import this module;
:mod:`fray.v2.factory` builds them from spec strings (``create_cluster``) and keeps the
current one (``current_cluster``). This module imports neither.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any, Protocol, runtime_checkable

from fray.v2.types import Entrypoint, EnvironmentSpec, JobId, JobStatus, Namespace, ResourceSpec

__all__ = [
    "CLUSTER_SPEC_ENV",
    "DEFAULT_NAMESPACE",
    "ActorPool",
    "BroadcastResult",
    "Cluster",
    "Job",
    "Resolver",
    "WorkerPool",
]

CLUSTER_SPEC_ENV = "FRAY_CLUSTER_SPEC"  # the spec current_cluster() reads; jobs get their own
DEFAULT_NAMESPACE = Namespace("fray")


@runtime_checkable
class Job(Protocol):
    """A submitted job."""

    @property
    def job_id(self) -> JobId:
        """The job's id, unique in its cluster."""
        ...

    def status(self) -> JobStatus:
        """The job's current status (never blocks for long)."""
        ...

    def wait(
        self, timeout: float = 300.0, *, stream_logs: bool = False, raise_on_failure: bool = True
    ) -> JobStatus:
        """Block until the job finishes and return its final status.

        Raises ``TimeoutError`` after ``timeout`` seconds (the job keeps running), and
        :class:`fray.errors.JobFailedError` (carrying the job's traceback) when the job
        failed and ``raise_on_failure`` is set. ``stream_logs`` prints the job's output
        while waiting, each line prefixed with ``[job_id]``.
        """
        ...

    def terminate(self) -> None:
        """Stop the job's code (its processes are killed) and mark it ``killed``."""
        ...


@runtime_checkable
class BroadcastResult(Protocol):
    """The results of one method called on every actor of a pool."""

    def wait_all(self, timeout: float | None = None) -> list[Any]:
        """One entry per actor, in pool order: its result, or the exception it raised.

        Raises ``TimeoutError`` if not every call finished within ``timeout`` seconds.
        """
        ...

    def wait_any(self, timeout: float | None = None) -> Any:
        """The first successful result; if every call failed, raises the first exception."""
        ...


@runtime_checkable
class ActorPool(Protocol):
    """The actors registered under one name (possibly none yet)."""

    @property
    def size(self) -> int:
        """How many actors hold the name right now."""
        ...

    def wait_for_size(self, min_size: int, timeout: float = 60.0) -> None:
        """Block until at least ``min_size`` actors hold the name; ``TimeoutError`` if not."""
        ...

    def call(self) -> Any:
        """A proxy for one actor, chosen round-robin: ``pool.call().method(*args)`` returns
        the method's result (or raises its exception)."""
        ...

    def broadcast(self) -> Any:
        """A proxy for all actors: ``pool.broadcast().method(*args)`` returns a
        :class:`BroadcastResult`."""
        ...


@runtime_checkable
class Resolver(Protocol):
    """Finds actors by name."""

    def lookup(self, name: str) -> ActorPool:
        """The pool of actors registered under ``name`` (always a pool, possibly empty)."""
        ...


@runtime_checkable
class WorkerPool(Protocol):
    """Stateless workers running submitted functions in parallel."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """Run ``fn(*args, **kwargs)`` on a worker; ``RuntimeError`` after ``shutdown``."""
        ...

    def map(
        self, fn: Callable[..., Any], *iterables: Any, timeout: float | None = None
    ) -> Iterator[Any]:
        """Like ``Executor.map``: results in input order."""
        ...

    def shutdown(self, wait: bool = True) -> None:
        """Release the workers (after the pending work when ``wait``)."""
        ...

    def __enter__(self) -> WorkerPool: ...

    def __exit__(self, *exc_info: Any) -> Any: ...


@runtime_checkable
class Cluster(Protocol):
    """Where jobs, actors and worker pools run."""

    @property
    def namespace(self) -> Namespace:
        """The namespace actor names live in."""
        ...

    def submit(
        self,
        entrypoint: Entrypoint,
        name: str,
        resources: ResourceSpec,
        environment: EnvironmentSpec | None = None,
    ) -> Job:
        """Start ``entrypoint`` as a job; a ``name`` containing ``"/"`` raises ``ValueError``."""
        ...

    def terminate(self, job_id: JobId) -> None:
        """Terminate the job with this id (:class:`~fray.errors.UnknownJobError`, a
        ``KeyError``, if unknown)."""
        ...

    def list_jobs(self) -> list[Job]:
        """The jobs submitted through this cluster object, oldest first (on the fray
        backend, whose jobs live in its controller: every job of the controller in this
        cluster's namespace, whoever submitted it)."""
        ...

    def resolver(self) -> Resolver:
        """A resolver for actors in this cluster's namespace."""
        ...

    def worker_pool(
        self,
        num_workers: int,
        resources: ResourceSpec,
        environment: EnvironmentSpec | None = None,
    ) -> WorkerPool:
        """Start ``num_workers`` workers, each with ``resources``."""
        ...
