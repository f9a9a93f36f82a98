"""The job-context API: the :class:`JobContext` protocol and the checks every backend shares.

A :class:`JobContext` runs functions (``run``), stores objects (``put``), collects results
(``get``, ``wait``) and starts stateful actors (``create_actor``). The backends implement it:

* ``"sync"`` and ``"threadpool"``: :mod:`fray.job.local`;
* ``"ray"``: :mod:`fray.job.ray_ctx`;
* ``"fray"``: fray's own controller/worker service (``fray.client.context.FrayContext``).

This module imports no backend: backends import it. :mod:`fray.job.factory` picks and builds
a backend (``create_job_ctx``) and holds the default context.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol, runtime_checkable

__all__ = [
    "ACTOR_LIFETIMES",
    "ActorLifetime",
    "JobContext",
    "validate_actor_args",
    "validate_wait_args",
]

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

    def options(
        self, *, timeout: float | None = None, max_retries: int = 0, name: str | None = None
    ) -> Any:
        """Settings for one task: ``ctx.options(timeout=5, max_retries=1).run(fn, x)``.

        ``timeout``: seconds of execution, after which the task's future fails (fray and Ray
        stop the task; a thread cannot be stopped, see :mod:`fray.job.options`);
        ``max_retries``: how often a task whose function raises is run again; ``name``: a
        label. ValueError for ``timeout <= 0`` or ``max_retries < 0``.
        """
        ...

    def close(self) -> None:
        """Release the context (threads, connections; fray also cancels its unfinished
        tasks). ``with ctx:`` calls it at the end of the block."""
        ...

    def __enter__(self) -> Any: ...

    def __exit__(self, *exc_info: object) -> None: ...


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
