"""The job-context API: one small interface over every fray backend.

A :class:`JobContext` runs functions (``run``), stores objects (``put``), collects results
(``get``, ``wait``) and starts stateful actors (``create_actor``). Backends:

* ``"sync"``: runs everything immediately in the caller (:class:`fray.job.local.SyncContext`).
* ``"threadpool"``: a local thread pool (:class:`fray.job.local.ThreadPoolContext`).
* ``"ray"``: Ray tasks and actors (:class:`fray.job.ray_ctx.RayContext`).
* ``"fray"``: fray's own controller/worker service (``fray.client.FrayContext``).

Ray and the RPC client are imported only when their backend is chosen.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar, Token
from typing import Any, Literal, Protocol, runtime_checkable

__all__ = [
    "ACTOR_LIFETIMES",
    "CONTEXT_TYPES",
    "ActorLifetime",
    "JobContext",
    "create_job_ctx",
    "default_job_ctx",
    "get_default_job_ctx",
    "set_default_job_ctx",
    "validate_actor_args",
    "validate_wait_args",
]

CONTEXT_TYPES = ("auto", "sync", "threadpool", "ray", "fray")

ActorLifetime = Literal["non_detached", "detached"]
ACTOR_LIFETIMES: tuple[ActorLifetime, ...] = ("non_detached", "detached")


@runtime_checkable
class JobContext(Protocol):
    """Runs functions and actors on some backend and hands back their results.

    "Future" below means whatever ``run`` returns on the backend (a
    ``concurrent.futures.Future``, a Ray ``ObjectRef``, ...); "ref" is what ``put`` returns.
    """

    def put(self, obj: Any) -> Any:
        """Store ``obj`` and return a ref to it; pass the ref to ``get`` or ``run``."""
        ...

    def get(self, x: Any, timeout: float | None = None) -> Any:
        """Return the value of a ref or future, or a list of values for a list of them.

        Anything else is returned unchanged. A task's exception is re-raised as an instance
        of its original type. ``timeout`` (seconds, for the whole call) raises ``TimeoutError``.
        """
        ...

    def run(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Start ``fn(*args, **kwargs)`` and return a future for its result.

        Refs (and futures) passed directly as positional or keyword arguments arrive in
        ``fn`` as their values; refs nested inside other objects are passed as they are.
        """
        ...

    def wait(
        self, futures: Sequence[Any], num_returns: int = 1, timeout: float | None = None
    ) -> tuple[list[Any], list[Any]]:
        """Block until ``num_returns`` of ``futures`` are done, or ``timeout`` seconds pass.

        ``futures`` may also hold refs from ``put``, which are always ready. Returns
        ``(ready, pending)``: ``ready`` holds exactly ``num_returns`` finished futures (fewer
        only when the timeout expired), any other finished ones stay in ``pending``; both
        keep the input order. Which finished ones are picked when more than ``num_returns``
        are done is up to the backend. An empty ``futures`` gives ``([], [])``.
        Raises ``ValueError`` unless ``1 <= num_returns <= len(futures)``, on duplicate
        futures, or on a negative timeout.
        """
        ...

    def create_actor(
        self,
        actor_class: type,
        /,
        *args: Any,
        name: str | None = None,
        get_if_exists: bool = False,
        lifetime: ActorLifetime = "non_detached",
        preemptible: bool = True,
        max_restarts: int = 0,
        **kwargs: Any,
    ) -> Any:
        """Start ``actor_class(*args, **kwargs)`` as an actor and return a handle to it.

        ``handle.method.remote(*args, **kwargs)`` returns a future for ``get`` and ``wait``.
        Calls to one actor run one at a time, in the order each caller sent them. A method's
        exception is re-raised by ``get`` with its original type, and the actor lives on. If
        the constructor raises, every call fails with
        :class:`~fray.errors.ActorCreationError`.

        The keyword arguments below are reserved (never passed to ``actor_class``):

        * ``name``: a unique name; a second actor with the same name raises ``ValueError``
        * ``get_if_exists``: with ``name``, return the existing actor of that name instead
          (the new constructor arguments are then ignored)
        * ``lifetime``: ``"non_detached"`` or ``"detached"`` (outlives its creator where the
          backend supports it); anything else raises ``ValueError``
        * ``preemptible``: ``False`` asks for a node that will not be preempted
        * ``max_restarts``: how often the backend may restart the actor after it dies

        Backends that cannot honour ``lifetime``, ``preemptible`` or ``max_restarts``
        document them as no-ops.
        """
        ...


def validate_actor_args(name: str | None, get_if_exists: bool, lifetime: str) -> None:
    """Check the reserved ``create_actor`` arguments the same way for every backend."""
    if lifetime not in ACTOR_LIFETIMES:
        raise ValueError(f"lifetime must be one of {ACTOR_LIFETIMES}, got {lifetime!r}")
    if get_if_exists and name is None:
        raise ValueError("get_if_exists=True needs a name")


def validate_wait_args(
    futures: Sequence[Any], num_returns: int, timeout: float | None
) -> list[Any]:
    """Check ``wait`` arguments the same way for every backend; return ``futures`` as a list."""
    items = list(futures)
    if timeout is not None and timeout < 0:
        raise ValueError(f"timeout must be None or >= 0, got {timeout}")
    if not items:
        return items
    if not 1 <= num_returns <= len(items):
        raise ValueError(f"num_returns must be between 1 and {len(items)}, got {num_returns}")
    if len({id(f) for f in items}) != len(items):
        raise ValueError("wait() needs distinct futures")
    return items


def deadline_after(timeout: float | None) -> float | None:
    """The monotonic time at which ``timeout`` expires (``None``: never)."""
    return None if timeout is None else time.monotonic() + timeout


def time_left(deadline: float | None) -> float | None:
    """Seconds left until ``deadline``, never negative (``None``: no deadline)."""
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def _ray_is_initialized() -> bool:
    """True when Ray is already imported and initialised; never imports Ray itself."""
    ray = sys.modules.get("ray")
    return ray is not None and bool(ray.is_initialized())


def create_job_ctx(
    context_type: str = "auto",
    max_workers: int = 1,
    controller_address: str | None = None,
    **ray_options: Any,
) -> JobContext:
    """Create a job context of the given type.

    ``context_type`` is one of :data:`CONTEXT_TYPES`; ``"auto"`` picks Ray when Ray is
    already imported and initialised in this process, else a thread pool. ``max_workers``
    sizes the thread pool. ``controller_address`` is required by ``"fray"``. The remaining
    keyword options go to ``RayContext`` (task options such as ``num_cpus``) or to
    ``FrayContext``; the local backends reject them, except under ``"auto"``.
    """
    if context_type == "auto":
        if _ray_is_initialized():
            context_type = "ray"
        else:
            ray_options = {}
            context_type = "threadpool"

    if context_type in ("sync", "threadpool"):
        if ray_options:
            raise ValueError(f"{context_type!r} takes no options, got {sorted(ray_options)}")
        from fray.job.local import SyncContext, ThreadPoolContext

        return SyncContext() if context_type == "sync" else ThreadPoolContext(max_workers)
    if context_type == "ray":
        from fray.job.ray_ctx import RayContext

        return RayContext(ray_options=ray_options)
    if context_type == "fray":
        if not controller_address:
            raise ValueError("context type 'fray' needs a controller_address (host:port or URL)")
        from fray.client.context import FrayContext

        ctx: JobContext = FrayContext(controller_address, **ray_options)
        return ctx
    raise ValueError(
        f"unknown context type {context_type!r}; expected one of {', '.join(CONTEXT_TYPES)}"
    )


_default_ctx: ContextVar[JobContext | None] = ContextVar("fray_default_job_ctx", default=None)
_fallback_lock = threading.Lock()
_fallbacks: dict[str, JobContext] = {}


def _fallback_ctx() -> JobContext:
    """The process-wide context used when no default is set, cached per backend."""
    address = os.environ.get("FRAY_CONTROLLER_ADDRESS")
    if address:  # code running on a fray worker: work goes to the same controller
        from fray.client.context import context_for

        return context_for(address)
    kind = "ray" if _ray_is_initialized() else "threadpool"
    with _fallback_lock:
        ctx = _fallbacks.get(kind)
        if ctx is None:
            if kind == "ray":
                ctx = create_job_ctx("ray")
            else:
                ctx = create_job_ctx("threadpool", max_workers=min(32, (os.cpu_count() or 1) + 4))
            _fallbacks[kind] = ctx
        return ctx


def get_default_job_ctx() -> JobContext:
    """Return the default job context of the current thread or async task.

    When none was set, returns a shared process-wide context: in a fray task or actor (where
    ``$FRAY_CONTROLLER_ADDRESS`` is set) a :class:`FrayContext` bound to the same controller;
    else one chosen like ``"auto"``: a :class:`RayContext` when Ray is initialised, else a
    thread pool sized like ``ThreadPoolExecutor``'s default. Each is created on first use and
    then reused.
    """
    ctx = _default_ctx.get()
    return ctx if ctx is not None else _fallback_ctx()


def set_default_job_ctx(ctx: JobContext | None) -> Token[JobContext | None]:
    """Set (or with ``None``, clear) the default context; returns a token for ``reset``."""
    return _default_ctx.set(ctx)


@contextlib.contextmanager
def default_job_ctx(ctx: JobContext) -> Iterator[JobContext]:
    """Make ``ctx`` the default job context inside the ``with`` block, then restore.

    Uses a ``ContextVar``: the setting is local to the current thread or async task.
    """
    token = _default_ctx.set(ctx)
    try:
        yield ctx
    finally:
        _default_ctx.reset(token)
