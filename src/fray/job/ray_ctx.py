"""The Ray job context: tasks are Ray tasks, refs are ``ObjectRef``s, actors are Ray actors.

This module imports Ray; ``fray.job`` imports it only when a Ray context is asked for.
``RayContext`` does not start Ray itself: call ``ray.init`` first, or let Ray start a local
instance on first use as it normally does.

``resources`` and ``labels`` (of ``options`` and ``create_actor``) become Ray options
(:func:`ray_requirements`): ``cpus`` -> ``num_cpus``, ``gpus`` -> ``num_gpus``, ``memory`` ->
``memory`` (bytes), any other amount (``disk`` too) -> ``resources={name: amount}`` (a custom
Ray resource, which some node must declare); labels -> ``label_selector`` (Ray matches node
labels, e.g. ``ray start --labels``), ``"a|b"`` as ``"in(a,b)"``.
"""

from __future__ import annotations

import inspect
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from typing import Any

import ray

from fray.common.deadlines import deadline_after, time_left
from fray.common.remote_errors import with_remote_traceback
from fray.errors import ActorCreationError
from fray.job.context import (
    ActorLifetime,
    validate_actor_args,
    validate_requirements,
    validate_wait_args,
)
from fray.job.options import check_options

__all__ = ["RayContext", "ray_requirements"]

_CACHE_SIZE = 1024
# The node label Ray sets from RAY_NODE_MARKET_TYPE: "spot" or "on-demand".
_MARKET_TYPE_LABEL = "ray.io/market-type"


def ray_requirements(resources: Mapping[str, float], labels: Mapping[str, str]) -> dict[str, Any]:
    """Ray options asking for checked ``resources`` and ``labels`` (see the module docstring)."""
    options: dict[str, Any] = {}
    custom: dict[str, float] = {}
    for key, amount in resources.items():
        if key == "cpus":
            options["num_cpus"] = amount
        elif key == "gpus":
            options["num_gpus"] = amount
        elif key == "memory":
            options["memory"] = int(amount)
        else:
            custom[key] = amount
    if custom:
        options["resources"] = custom
    if labels:
        options["label_selector"] = {
            key: f"in({','.join(value.split('|'))})" if "|" in value else value
            for key, value in labels.items()
        }
    return options


def _merged(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` Ray options with ``extra`` on top; ``resources`` and ``label_selector`` are
    merged key by key."""
    merged = {**base, **extra}
    for key in ("resources", "label_selector"):
        if key in base and key in extra:
            merged[key] = {**base[key], **extra[key]}
    return merged


def _make_invoker() -> Callable[..., Any]:
    # A nested function, so cloudpickle ships it by value: workers need not import fray.
    def invoke(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    return invoke


class RayContext:
    """Runs tasks and actors on the Ray cluster this process is connected to.

    ``ray_options`` are ``ray.remote`` options for tasks (``num_cpus``, ``max_retries``, ...);
    ``actor_options`` are those for actors (``num_cpus``, ``resources``, ...); ``create_actor``'s
    own arguments set ``name``, ``lifetime``, ``max_restarts`` and so on. The two are kept
    apart because Ray rejects task-only options on actors and vice versa.
    """

    def __init__(
        self, ray_options: dict[str, Any] | None = None, actor_options: dict[str, Any] | None = None
    ) -> None:
        self.ray_options = dict(ray_options or {})
        self.actor_options = dict(actor_options or {})
        self._lock = threading.Lock()
        # Remote wrappers of plain functions, least recently used first. Bounded and
        # strong: a Ray remote function keeps its function alive, so weak keys would not help.
        self._remote_fns: OrderedDict[Callable[..., Any], Any] = OrderedDict()
        self._invoker: Any = None

    def _remote(self, fn: Callable[..., Any]) -> Any:
        remote = ray.remote(fn)
        return remote.options(**self.ray_options) if self.ray_options else remote

    def _remote_fn(self, fn: Callable[..., Any]) -> Any:
        """The cached Ray remote function for a plain Python function."""
        with self._lock:
            remote = self._remote_fns.get(fn)
            if remote is not None:
                self._remote_fns.move_to_end(fn)
                return remote
        remote = self._remote(fn)
        with self._lock:
            self._remote_fns[fn] = remote
            if len(self._remote_fns) > _CACHE_SIZE:
                self._remote_fns.popitem(last=False)
        return remote

    def put(self, obj: Any) -> ray.ObjectRef:
        """``ray.put(obj)``."""
        return ray.put(obj)

    def get(self, x: Any, timeout: float | None = None) -> Any:
        """``ray.get`` for refs and lists of refs; also takes ``concurrent.futures.Future``s.

        A call on an actor whose constructor raised gives ``ActorCreationError``.
        """
        try:
            return self._get(x, timeout)
        except ray.exceptions.RayActorError as exc:
            if not exc.actor_init_failed:
                raise
            actor_id = exc.actor_id or ""
            message = f"actor {actor_id} failed in its constructor"
            error = with_remote_traceback(ActorCreationError(message, actor_id=actor_id), str(exc))
            raise error from error.__cause__

    def _get(self, x: Any, timeout: float | None) -> Any:
        if isinstance(x, ray.ObjectRef):
            return ray.get(x, timeout=timeout)
        if isinstance(x, Future):
            return x.result(timeout)
        if isinstance(x, list | tuple):
            if all(isinstance(item, ray.ObjectRef) for item in x):
                return ray.get(list(x), timeout=timeout)
            deadline = deadline_after(timeout)
            return [self._get(item, time_left(deadline)) for item in x]
        return x

    def run(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> ray.ObjectRef:
        """Submit ``fn`` as a Ray task; other callables than functions go through a wrapper."""
        if inspect.isfunction(fn):
            return self._remote_fn(fn).remote(*args, **kwargs)
        with self._lock:
            if self._invoker is None:
                self._invoker = self._remote(_make_invoker())
            invoker = self._invoker
        return invoker.remote(fn, *args, **kwargs)

    def wait(
        self, futures: Sequence[Any], num_returns: int = 1, timeout: float | None = None
    ) -> tuple[list[Any], list[Any]]:
        """``ray.wait``, after the common argument checks of ``JobContext.wait``."""
        items = validate_wait_args(futures, num_returns, timeout)
        if not items:
            return [], []
        ready, pending = ray.wait(items, num_returns=num_returns, timeout=timeout)
        return list(ready), list(pending)

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
        """Start a Ray actor; the handle is Ray's own (``handle.method.remote()`` gives refs).

        The reserved arguments become Ray actor options, on top of ``actor_options``:

        * ``name``: a named actor in the current Ray namespace; ``get_if_exists`` is Ray's
          option of that name (it returns a handle to the live actor of that name).
        * ``lifetime``: Ray's ``lifetime``; a ``"detached"`` actor outlives its creator and
          this driver, until ``ray.kill``.
        * ``max_restarts``: Ray's ``max_restarts``.
        * ``preemptible=False`` adds ``{"ray.io/market-type": "!spot"}`` to the actor's
          ``label_selector``: Ray places it only on nodes not labelled as spot instances.
          Ray labels a node from its ``RAY_NODE_MARKET_TYPE`` environment variable (e.g.
          ``spot``, ``on-demand``); nodes without the label, such as a local single-node
          Ray, qualify.
        * ``resources``, ``labels``: :func:`ray_requirements` (``num_cpus``, ``num_gpus``,
          ``memory``, ``resources``, ``label_selector``), on top of ``actor_options``.

        If the constructor raises, ``get`` on any call raises ``ActorCreationError``, whose
        ``__cause__`` is a ``RemoteTraceback`` with Ray's message and the constructor's
        traceback (Ray keeps only that text, not the exception object).
        """
        validate_actor_args(name, get_if_exists, lifetime)
        options = _merged(
            self.actor_options, ray_requirements(*validate_requirements(resources, labels))
        )
        options.update(lifetime=lifetime, max_restarts=max_restarts)
        if name is not None:
            options.update(name=name, get_if_exists=get_if_exists)
        if not preemptible:
            selector = {**options.get("label_selector", {}), _MARKET_TYPE_LABEL: "!spot"}
            options["label_selector"] = selector
        return ray.remote(actor_class).options(**options).remote(*args, **kwargs)

    def options(
        self,
        *,
        timeout: float | None = None,
        max_retries: int = 0,
        name: str | None = None,
        resources: Mapping[str, float | str] | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> RayTaskOptions:
        """Settings for the next ``run``, as on fray: ``max_retries`` becomes Ray's
        ``max_retries`` with ``retry_exceptions=True`` (a raising function is run again);
        ``name`` Ray's task name; ``timeout`` (seconds) cancels the task with
        ``ray.cancel(force=True)`` when it has not finished by then (its ``get`` then raises
        Ray's ``TaskCancelledError``); ``resources`` and ``labels``: :func:`ray_requirements`,
        on top of ``ray_options``."""
        check_options(timeout, max_retries)
        requirements = ray_requirements(*validate_requirements(resources, labels))
        return RayTaskOptions(self, timeout, max_retries, name, requirements)

    def close(self) -> None:
        """Nothing to release (this process stays connected to Ray; ``ray.shutdown()`` ends
        that); present so that every backend closes alike, and for ``with ctx:``."""

    def __enter__(self) -> RayContext:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RayContext(ray_options={self.ray_options!r}, actor_options={self.actor_options!r})"


class RayTaskOptions:
    """What ``RayContext.options`` returns: ``run`` submits one task with those settings."""

    def __init__(
        self,
        ctx: RayContext,
        timeout: float | None,
        max_retries: int,
        name: str | None,
        requirements: dict[str, Any] | None = None,
    ) -> None:
        self._ctx, self.timeout, self.max_retries, self.name = ctx, timeout, max_retries, name
        self.requirements = dict(requirements or {})  # Ray options: ray_requirements(...)

    def run(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> ray.ObjectRef:
        options = _merged(self._ctx.ray_options, self.requirements)
        options.update(max_retries=self.max_retries, retry_exceptions=self.max_retries > 0)
        if self.name:
            options["name"] = self.name
        if inspect.isfunction(fn):
            ref = ray.remote(fn).options(**options).remote(*args, **kwargs)
        else:
            ref = ray.remote(_make_invoker()).options(**options).remote(fn, *args, **kwargs)
        if self.timeout is not None:
            timer = threading.Timer(self.timeout, _cancel_unless_done, (ref,))
            timer.daemon = True
            timer.start()
        return ref


def _cancel_unless_done(ref: ray.ObjectRef) -> None:
    ready, _ = ray.wait([ref], timeout=0)
    if not ready:
        ray.cancel(ref, force=True)
