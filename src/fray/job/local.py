"""In-process job contexts: :class:`SyncContext` and :class:`ThreadPoolContext`.

Both return ``concurrent.futures.Future`` objects from ``run`` and :class:`LocalRef` objects
from ``put``. Tasks run in a copy of the caller's ``contextvars`` context, so they see the
caller's default job context.

``resources`` and ``labels`` (of ``options`` and ``create_actor``) are checked as on every
backend, then ignored: everything runs in this process, which has whatever it has.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextvars
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

from fray.common.deadlines import deadline_after, time_left
from fray.errors import ActorCreationError
from fray.job.context import (
    ActorLifetime,
    validate_actor_args,
    validate_requirements,
    validate_wait_args,
)
from fray.job.options import LocalTaskOptions, check_options

__all__ = ["LocalActorHandle", "LocalRef", "SyncContext", "ThreadPoolContext"]

P = ParamSpec("P")
T = TypeVar("T")


class LocalRef:
    """A ref returned by ``put`` on a local context: it just holds the object."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"LocalRef({type(self.value).__name__} at {id(self):#x})"


def _resolve(x: Any) -> Any:
    """The value behind a top-level task argument (refs and futures are resolved)."""
    if isinstance(x, LocalRef):
        return x.value
    if isinstance(x, Future):
        return x.result()
    return x


def _call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    args = tuple(_resolve(a) for a in args)
    kwargs = {k: _resolve(v) for k, v in kwargs.items()}
    return fn(*args, **kwargs)


def _get_one(x: Any, timeout: float | None) -> Any:
    if isinstance(x, LocalRef):
        return x.value
    if isinstance(x, Future):
        return x.result(timeout)
    return x


def _is_ready(x: Any) -> bool:
    if isinstance(x, LocalRef):
        return True
    if isinstance(x, Future):
        return x.done()
    raise TypeError(f"wait() expects futures or refs, got {type(x).__name__}")


class _InlineExecutor(Executor):
    """An executor that runs each call immediately and returns a finished future."""

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        future: Future[T] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as exc:
            future.set_exception(exc)
        return future


class _SerialInlineExecutor(_InlineExecutor):
    """An inline executor that runs one call at a time: the executor of a sync actor.

    Re-entrant, so an actor method may call its own actor without deadlocking.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        with self._lock:
            return super().submit(fn, *args, **kwargs)


class _ActorMethod:
    """``handle.method``: call ``.remote(*args, **kwargs)`` to queue a call."""

    def __init__(self, handle: LocalActorHandle, name: str) -> None:
        self._handle = handle
        self._name = name

    def remote(self, *args: Any, **kwargs: Any) -> Future[Any]:
        return self._handle._submit(self._name, args, kwargs)


class LocalActorHandle:
    """A handle to a local actor; its calls run one at a time on the actor's executor."""

    def __init__(
        self, cls: type, executor: Executor, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        self._cls = cls
        self._executor = executor
        self._actor_id = uuid.uuid4().hex
        # Built on the actor's own executor, so it runs before any call.
        self._instance = self._executor.submit(
            contextvars.copy_context().run, _call, cls, args, kwargs
        )

    def __getattr__(self, name: str) -> _ActorMethod:
        if name.startswith("__") or name in ("_cls", "_executor", "_instance", "_actor_id"):
            raise AttributeError(name)
        if not callable(getattr(self._cls, name, None)):
            raise AttributeError(f"actor class {self._cls.__name__} has no method {name!r}")
        return _ActorMethod(self, name)

    def _get_instance(self) -> Any:
        """The actor object; raises ``ActorCreationError`` if its constructor failed."""
        error = self._instance.exception()
        if error is not None:
            raise ActorCreationError(
                f"actor {self._cls.__name__} ({self._actor_id}) failed in its constructor: "
                f"{error!r}",
                actor_id=self._actor_id,
            ) from error
        return self._instance.result()

    def _submit(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Future[Any]:
        def call() -> Any:
            return _call(getattr(self._get_instance(), name), args, kwargs)

        return self._executor.submit(contextvars.copy_context().run, call)

    def __repr__(self) -> str:
        return f"<LocalActorHandle {self._cls.__name__} {self._actor_id}>"


class _LocalContext:
    """What the local contexts share; subclasses pick the executors."""

    def __init__(self, executor: Executor) -> None:
        self._executor = executor
        self._lock = threading.RLock()
        self._named_actors: dict[str, LocalActorHandle] = {}

    def _actor_executor(self, cls: type) -> Executor:
        raise NotImplementedError

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        raise NotImplementedError

    def options(
        self,
        *,
        timeout: float | None = None,
        max_retries: int = 0,
        name: str | None = None,
        resources: Mapping[str, float | str] | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> LocalTaskOptions:
        """Settings for the next ``run``, as on fray (see :mod:`fray.job.options`);
        ``resources`` and ``labels`` are checked, then ignored."""
        check_options(timeout, max_retries)
        amounts, wanted = validate_requirements(resources, labels)
        return LocalTaskOptions(self.run, timeout, max_retries, name, amounts, wanted)

    def close(self) -> None:
        """Release the context (``shutdown()``); also what ``with ctx:`` does at the end."""
        self.shutdown()

    def put(self, obj: Any) -> LocalRef:
        """Wrap ``obj`` in a :class:`LocalRef` (no copy is made)."""
        return LocalRef(obj)

    def get(self, x: Any, timeout: float | None = None) -> Any:
        """See :meth:`fray.job.context.JobContext.get`; lists and tuples give lists."""
        if isinstance(x, list | tuple):
            deadline = deadline_after(timeout)
            return [_get_one(item, time_left(deadline)) for item in x]
        return _get_one(x, timeout)

    def run(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """Submit ``fn``; top-level refs and futures among the arguments are resolved."""
        return self._executor.submit(contextvars.copy_context().run, _call, fn, args, kwargs)

    def wait(
        self, futures: Sequence[Any], num_returns: int = 1, timeout: float | None = None
    ) -> tuple[list[Any], list[Any]]:
        """See :meth:`fray.job.context.JobContext.wait`; refs count as ready."""
        items = validate_wait_args(futures, num_returns, timeout)
        if not items:
            return [], []
        deadline = deadline_after(timeout)
        while True:
            done = [_is_ready(x) for x in items]
            left = time_left(deadline)
            if sum(done) >= num_returns or left == 0:
                break
            pending = [x for x, d in zip(items, done, strict=True) if not d]
            cf.wait(pending, timeout=left, return_when=cf.FIRST_COMPLETED)
        ready: list[Any] = []
        rest: list[Any] = []
        for x, d in zip(items, done, strict=True):
            (ready if d and len(ready) < num_returns else rest).append(x)
        return ready, rest

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
    ) -> LocalActorHandle:
        """Start ``actor_class(*args, **kwargs)`` as an actor (see ``JobContext.create_actor``).

        Names are unique within this context; ``get_if_exists`` returns the handle of the
        actor already holding the name. ``lifetime``, ``preemptible``, ``max_restarts``,
        ``resources`` and ``labels`` are no-ops here (``lifetime``, ``resources`` and
        ``labels`` are still checked): local actors live in this process as long as this
        context, and are never restarted.
        """
        validate_actor_args(name, get_if_exists, lifetime)
        validate_requirements(resources, labels)
        if name is None:
            return LocalActorHandle(actor_class, self._actor_executor(actor_class), args, kwargs)
        # Held while the handle is made, so a racing get_if_exists finds the one actor. A sync
        # constructor runs under it too; the lock is re-entrant for nested create_actor calls.
        with self._lock:
            handle = self._named_actors.get(name)
            if handle is not None:
                if get_if_exists:
                    return handle
                raise ValueError(f"an actor named {name!r} already exists")
            handle = LocalActorHandle(actor_class, self._actor_executor(actor_class), args, kwargs)
            self._named_actors[name] = handle
            return handle


class SyncContext(_LocalContext):
    """Runs every task and actor call immediately in the calling thread.

    ``run`` returns an already-finished future; the task's exception, if any, is stored in it.
    Calls to one actor from several threads take turns.
    """

    def __init__(self) -> None:
        super().__init__(_InlineExecutor())

    def _actor_executor(self, cls: type) -> Executor:
        return _SerialInlineExecutor()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Nothing to release; present so every local context can be shut down alike."""

    def __enter__(self) -> SyncContext:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()


class ThreadPoolContext(_LocalContext):
    """Runs tasks on a ``ThreadPoolExecutor``; each actor gets its own single thread.

    ``max_workers=None`` uses ``ThreadPoolExecutor``'s default size.
    """

    def __init__(self, max_workers: int | None = None) -> None:
        super().__init__(ThreadPoolExecutor(max_workers, thread_name_prefix="fray-task"))
        self._actor_executors: list[ThreadPoolExecutor] = []

    def _actor_executor(self, cls: type) -> Executor:
        executor = ThreadPoolExecutor(1, thread_name_prefix=f"fray-actor-{cls.__name__}")
        with self._lock:
            self._actor_executors.append(executor)
        return executor

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Shut down the task pool and the actor threads (see ``Executor.shutdown``)."""
        self._executor.shutdown(wait, cancel_futures=cancel_futures)
        with self._lock:
            executors = list(self._actor_executors)
        for executor in executors:
            executor.shutdown(wait, cancel_futures=cancel_futures)

    def __enter__(self) -> ThreadPoolContext:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()
