"""The base of the backends' worker pools: an ``Executor`` handing out plain Futures.

Backends implement :meth:`FutureWorkerPool._submit` and :meth:`FutureWorkerPool._shutdown`;
this class adds the shutdown check, ``map`` and the context manager (from ``Executor``).
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future, InvalidStateError
from typing import Any

__all__ = ["FutureWorkerPool", "chain_future", "drain_calls"]


class FutureWorkerPool(Executor):
    """A :class:`fray.v2.cluster.WorkerPool` whose futures are ``concurrent.futures.Future``."""

    def __init__(self, num_workers: int) -> None:
        if num_workers < 1:
            raise ValueError(f"num_workers must be at least 1, got {num_workers}")
        self.num_workers = num_workers
        self._closed = False
        self._close_lock = threading.Lock()

    @property
    def size(self) -> int:
        """The number of workers."""
        return self.num_workers

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """Run ``fn(*args, **kwargs)`` on a worker; ``RuntimeError`` once shut down."""
        with self._close_lock:
            if self._closed:
                raise RuntimeError("cannot submit to a worker pool after shutdown")
            return self._submit(fn, args, kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop taking work and release the workers, after pending work when ``wait``."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self._shutdown(wait, cancel_futures)

    def _submit(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Future[Any]:
        raise NotImplementedError

    def _shutdown(self, wait: bool, cancel_futures: bool) -> None:
        raise NotImplementedError


def chain_future(
    inner: Future[Any], convert: Callable[[Future[Any]], Any], outer: Future[Any] | None = None
) -> Future[Any]:
    """A future completed from ``inner`` through ``convert(inner)`` (which may raise).

    Cancelling the returned future cancels ``inner`` while it has not started.
    """
    result: Future[Any] = outer if outer is not None else Future()

    def done(f: Future[Any]) -> None:
        if f.cancelled():
            result.cancel()
            return
        try:
            value = convert(f)
        except BaseException as exc:
            with contextlib.suppress(InvalidStateError):  # cancelled meanwhile
                result.set_exception(exc)
        else:
            with contextlib.suppress(InvalidStateError):
                result.set_result(value)

    def cancelled(f: Future[Any]) -> None:
        if f.cancelled():
            inner.cancel()

    result.add_done_callback(cancelled)
    inner.add_done_callback(done)
    return result


def drain_calls(calls: queue.SimpleQueue[tuple[Future[Any], Any] | None]) -> list[Future[Any]]:
    """Take every call still queued (``(future, payload)``; ``None`` stop marks are
    skipped) and return their futures, oldest first: what a pool's shutdown settles."""
    futures: list[Future[Any]] = []
    while True:
        try:
            item = calls.get_nowait()
        except queue.Empty:
            return futures
        if item is not None:
            futures.append(item[0])
