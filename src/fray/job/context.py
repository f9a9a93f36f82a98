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

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, Protocol, runtime_checkable

from fray.common.sizes import parse_bytes

__all__ = [
    "ACTOR_LIFETIMES",
    "ActorLifetime",
    "JobContext",
    "validate_actor_args",
    "validate_requirements",
    "validate_wait_args",
]

ActorLifetime = Literal["non_detached", "detached"]
ACTOR_LIFETIMES: tuple[ActorLifetime, ...] = ("non_detached", "detached")
SIZE_RESOURCES = ("memory", "disk")  # amounts in bytes, also given as sizes ("8GiB")
MAX_REQUIREMENT_KEYS = 64  # resources or labels one request may name
MAX_REQUIREMENT_NAME = 128  # characters of a resource or label name, or of a label value


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
        resources: Mapping[str, float | str] | None = None,
        labels: Mapping[str, str] | None = None,
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
        * ``resources``, ``labels``: what the actor holds on its worker for its life and the
          labels that worker must carry, as for ``options`` (see ``validate_requirements``)

        Backends that cannot honour ``lifetime``, ``preemptible``, ``max_restarts``,
        ``resources`` or ``labels`` document them as no-ops (they still check them).
        """
        ...

    def options(
        self,
        *,
        timeout: float | None = None,
        max_retries: int = 0,
        name: str | None = None,
        resources: Mapping[str, float | str] | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> Any:
        """Settings for one task: ``ctx.options(timeout=5, max_retries=1).run(fn, x)``.

        ``timeout``: seconds of execution, after which the task's future fails (fray and Ray
        stop the task; a thread cannot be stopped, see :mod:`fray.job.options`);
        ``max_retries``: how often a task whose function raises is run again; ``name``: a
        label. ``resources`` (``{"cpus": 2, "gpus": 1, "memory": "8GiB"}``): amounts the task
        holds on its worker while it runs; ``labels`` (``{"gpu_type": "T4"}``, ``"a|b"``
        accepts either): what its worker must carry. ValueError for ``timeout <= 0``,
        ``max_retries < 0`` or bad resources or labels (``validate_requirements``).
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


def validate_requirements(
    resources: Mapping[str, float | str] | None, labels: Mapping[str, str] | None
) -> tuple[dict[str, float], dict[str, str]]:
    """Check what a task or actor asks of its worker, the same way for every backend.

    Returns ``(resources, labels)`` as plain dicts: amounts as floats, zero amounts dropped
    (asking for ``gpus=0`` is asking for nothing), ``memory`` and ``disk`` in bytes (a size
    string such as ``"8GiB"`` is read by :func:`fray.common.sizes.parse_bytes`). ValueError
    (naming the entry) for a name that is not a non-empty string, an amount that is not a
    finite number >= 0, a label value that is not a non-empty string, or too many entries.
    """
    amounts: dict[str, float] = {}
    for key, value in _entries(resources, "resources").items():
        _check_name(key, "resource")
        if isinstance(value, str) and key in SIZE_RESOURCES:
            amount = float(parse_bytes(value))
        elif isinstance(value, numbers.Real) and not isinstance(value, bool):
            try:
                amount = float(value)
            except OverflowError:  # an int beyond any float
                amount = math.inf
        else:
            kind = "a number or a size such as '8GiB'" if key in SIZE_RESOURCES else "a number"
            raise ValueError(f"resource {key!r} must be {kind}, got {value!r}")
        if not math.isfinite(amount) or amount < 0:
            raise ValueError(f"resource {key!r} must be a finite amount >= 0, got {value!r}")
        if amount > 0:
            amounts[key] = amount
    wanted: dict[str, str] = {}
    for key, value in _entries(labels, "labels").items():
        _check_name(key, "label")
        if not isinstance(value, str) or not value or len(value) > MAX_REQUIREMENT_NAME:
            raise ValueError(
                f"label {key!r} must be a string of 1 to {MAX_REQUIREMENT_NAME} characters, "
                f"got {value!r}"
            )
        wanted[key] = value
    return amounts, wanted


def _entries(given: Mapping[str, Any] | None, what: str) -> Mapping[str, Any]:
    if given is None:
        return {}
    if not isinstance(given, Mapping):
        raise ValueError(f"{what} must be a mapping of names to values, got {given!r}")
    if len(given) > MAX_REQUIREMENT_KEYS:
        raise ValueError(f"at most {MAX_REQUIREMENT_KEYS} {what}, got {len(given)}")
    return given


def _check_name(key: object, what: str) -> None:
    if not isinstance(key, str) or not key or len(key) > MAX_REQUIREMENT_NAME:
        raise ValueError(
            f"{what} names must be strings of 1 to {MAX_REQUIREMENT_NAME} characters, got {key!r}"
        )


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
