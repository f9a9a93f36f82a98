"""The fray.v2 protocols (Cluster, Job, Resolver, ActorPool, WorkerPool) and cluster lookup.

``create_cluster(spec)`` builds a cluster from a spec string; ``current_cluster()`` returns
the one in force: a context-local override (:func:`use_cluster`) first, then
``$FRAY_CLUSTER_SPEC``, else a local cluster. Specs:

* ``""`` or ``"local"`` (optionally ``"local?namespace=NAME"``): :mod:`fray.v2.backends.local`
* ``"ray"``, ``"ray?namespace=NAME"``, ``"ray?address=ADDRESS"`` (both may be combined):
  :mod:`fray.v2.backends.ray`
* ``"iris..."``: needs Marin's ``iris`` package.

Backends are imported only when chosen, so ``import fray.v2`` does not import Ray.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextvars import ContextVar, Token
from typing import Any, Protocol, runtime_checkable
from urllib.parse import parse_qsl

from fray.v2.types import Entrypoint, EnvironmentSpec, JobId, JobStatus, Namespace, ResourceSpec

__all__ = [
    "CLUSTER_SPEC_ENV",
    "DEFAULT_NAMESPACE",
    "SPEC_FORMS",
    "ActorPool",
    "BroadcastResult",
    "Cluster",
    "Job",
    "Resolver",
    "WorkerPool",
    "create_cluster",
    "current_cluster",
    "parse_cluster_spec",
    "set_current_cluster",
    "use_cluster",
]

CLUSTER_SPEC_ENV = "FRAY_CLUSTER_SPEC"
DEFAULT_NAMESPACE = Namespace("fray")
SPEC_FORMS = (
    '"" or "local"',
    '"local?namespace=NAME"',
    '"ray"',
    '"ray?namespace=NAME"',
    '"ray?address=ADDRESS"',
    '"ray?namespace=NAME&address=ADDRESS"',
    '"iris..." (needs Marin\'s iris package)',
)
_OPTIONS = {"local": ("namespace",), "ray": ("namespace", "address")}


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
        :class:`fray.v2.job.JobFailedError` (carrying the job's traceback) when the job
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
        """Terminate the job with this id (``KeyError`` if unknown)."""
        ...

    def list_jobs(self) -> list[Job]:
        """The jobs submitted through this cluster object, oldest first."""
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


def _bad_spec(spec: str, why: str) -> ValueError:
    return ValueError(f"bad cluster spec {spec!r}: {why}; accepted forms: {', '.join(SPEC_FORMS)}")


def parse_cluster_spec(spec: str) -> tuple[str, dict[str, str]]:
    """Split a spec into ``(backend, options)``; ``ValueError`` naming the accepted forms."""
    backend, sep, query = spec.strip().partition("?")
    backend = backend or "local"
    if backend.startswith("iris"):
        return "iris", {"spec": spec}
    if backend not in _OPTIONS:
        raise _bad_spec(spec, f"unknown backend {backend!r}")
    if sep and not query:
        raise _bad_spec(spec, "empty option list after '?'")
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError as exc:
        raise _bad_spec(spec, f"malformed options ({exc})") from None
    options: dict[str, str] = {}
    for key, value in pairs:
        if key not in _OPTIONS[backend]:
            raise _bad_spec(spec, f"unknown option {key!r} for {backend!r}")
        if key in options:
            raise _bad_spec(spec, f"option {key!r} given twice")
        if not value:
            raise _bad_spec(spec, f"option {key!r} needs a value")
        options[key] = value
    return backend, options


def create_cluster(spec: str = "local") -> Cluster:
    """Create a new cluster object from ``spec`` (see the module docstring for the forms)."""
    backend, options = parse_cluster_spec(spec)
    if backend == "local":
        from fray.v2.backends.local import LocalCluster

        return LocalCluster(namespace=Namespace(options.get("namespace", DEFAULT_NAMESPACE)))
    if backend == "ray":
        from fray.v2.backends.ray import RayCluster

        return RayCluster(
            namespace=Namespace(options.get("namespace", DEFAULT_NAMESPACE)),
            address=options.get("address"),
        )
    if importlib.util.find_spec("iris") is None:
        raise ValueError(
            f"cluster spec {spec!r} needs Marin's 'iris' package, which is not installed; "
            f"use one of: {', '.join(SPEC_FORMS[:-1])}"
        )
    raise NotImplementedError(
        f"cluster spec {spec!r}: the 'iris' package is installed, but this fray has no Iris "
        "adapter yet"
    )


_override: ContextVar[Cluster | None] = ContextVar("fray_v2_cluster", default=None)
_cache_lock = threading.Lock()
_cache: dict[str, Cluster] = {}


def current_cluster() -> Cluster:
    """The cluster in force: the :func:`use_cluster` override of this thread or task, else
    the one ``$FRAY_CLUSTER_SPEC`` names (default local), created once per spec and reused."""
    cluster = _override.get()
    if cluster is not None:
        return cluster
    spec = os.environ.get(CLUSTER_SPEC_ENV, "")
    with _cache_lock:
        cluster = _cache.get(spec)
        if cluster is None:
            cluster = _cache[spec] = create_cluster(spec)
        return cluster


def set_current_cluster(cluster: Cluster | None) -> Token[Cluster | None]:
    """Override (``None``: clear) the current cluster; returns a token for ``reset``."""
    return _override.set(cluster)


@contextlib.contextmanager
def use_cluster(cluster: Cluster) -> Iterator[Cluster]:
    """Make ``cluster`` the current cluster inside the ``with`` block (context-local)."""
    token = _override.set(cluster)
    try:
        yield cluster
    finally:
        _override.reset(token)
