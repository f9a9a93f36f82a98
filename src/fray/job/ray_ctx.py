"""The Ray job context: tasks are Ray tasks, refs are ``ObjectRef``s, actors are Ray actors.

This module imports Ray; ``fray.job`` imports it only when a Ray context is asked for.
``RayContext`` does not start Ray itself: call ``ray.init`` first, or let Ray start a local
instance on first use as it normally does.
"""

from __future__ import annotations

import inspect
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

import ray

from fray.job.context import deadline_after, time_left, validate_wait_args

__all__ = ["RayContext"]

_CACHE_SIZE = 1024


def _make_invoker() -> Callable[..., Any]:
    # A nested function, so cloudpickle ships it by value: workers need not import fray.
    def invoke(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    return invoke


class RayContext:
    """Runs tasks and actors on the Ray cluster this process is connected to.

    ``ray_options`` are ``ray.remote`` options for tasks (``num_cpus``, ``max_retries``, ...);
    ``actor_options`` are those for actors (``num_cpus``, ``max_restarts``, ...). They are kept
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
        """``ray.get`` for refs and lists of refs; also takes ``concurrent.futures.Future``s."""
        if isinstance(x, ray.ObjectRef):
            return ray.get(x, timeout=timeout)
        if isinstance(x, Future):
            return x.result(timeout)
        if isinstance(x, list | tuple):
            if all(isinstance(item, ray.ObjectRef) for item in x):
                return ray.get(list(x), timeout=timeout)
            deadline = deadline_after(timeout)
            return [self.get(item, time_left(deadline)) for item in x]
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

    def create_actor(self, cls: type, /, *args: Any, name: str | None = None, **kwargs: Any) -> Any:
        """Start a Ray actor; the handle is Ray's own (``handle.method.remote(...)``)."""
        options = dict(self.actor_options)
        if name is not None:
            options["name"] = name
        actor_cls: Any = ray.remote(cls)
        if options:
            actor_cls = actor_cls.options(**options)
        return actor_cls.remote(*args, **kwargs)

    def __repr__(self) -> str:
        return f"RayContext(ray_options={self.ray_options!r}, actor_options={self.actor_options!r})"
