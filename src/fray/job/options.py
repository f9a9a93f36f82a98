"""Per-task options on the local backends: ``ctx.options(timeout=5, max_retries=2, name="x")``
returns an object whose ``run`` submits like ``ctx.run`` with those settings, as on fray.

- ``max_retries``: a task whose function raises is run again, up to this many more times; the
  last exception is the future's.
- ``timeout`` (seconds of execution): a task that has not returned by then ends its future with
  ``TaskTimeoutError``. A thread cannot be stopped, so the function itself runs on to its end
  (on ``SyncContext``, where it runs in the caller, the check happens when it returns); fray
  kills the task's process instead.
- ``name`` is only a label (fray shows it in ``fray tasks``).
- ``resources`` and ``labels`` (checked by ``fray.job.context.validate_requirements``) are kept
  but ignored: a local task runs in this process, whatever it asks for.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from fray.errors import TaskTimeoutError

__all__ = ["LocalTaskOptions", "check_options"]


def check_options(timeout: float | None, max_retries: int) -> None:
    """The checks every backend makes (ValueError)."""
    if timeout is not None and not timeout > 0:
        raise ValueError("timeout must be > 0")
    if max_retries < 0:
        raise ValueError("max_retries must be >= 0")


@dataclass(frozen=True)
class LocalTaskOptions:
    """Settings for one ``run``: see the module docstring."""

    submit: Callable[..., Future[Any]] = field(repr=False, compare=False)
    timeout: float | None = None
    max_retries: int = 0
    name: str | None = None
    resources: Mapping[str, float] = field(default_factory=dict, hash=False)  # ignored
    labels: Mapping[str, str] = field(default_factory=dict, hash=False)  # ignored

    def run(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        retries, timeout = self.max_retries, self.timeout
        label = self.name or getattr(fn, "__name__", "task")

        def attempt(*a: Any, **kw: Any) -> Any:
            started = time.monotonic()
            for tries_left in range(retries, -1, -1):
                try:
                    value = fn(*a, **kw)
                except Exception:
                    if tries_left == 0:
                        raise
                    continue
                if timeout is not None and time.monotonic() - started > timeout:
                    raise TaskTimeoutError(f"task {label} ran past its timeout of {timeout:g}s")
                return value
            raise AssertionError("unreachable")

        inner = self.submit(attempt, *args, **kwargs)
        if timeout is None or inner.done():
            return inner
        outer: Future[Any] = Future()
        message = f"task {label} ran past its timeout of {timeout:g}s"
        timer = threading.Timer(timeout, lambda: _settle(outer, TaskTimeoutError(message)))
        timer.daemon = True

        def copy(done: Future[Any]) -> None:
            timer.cancel()
            if done.cancelled():
                outer.cancel()
            elif (error := done.exception()) is not None:
                _settle(outer, error)
            else:
                _settle(outer, None, done.result())

        outer.add_done_callback(lambda f: inner.cancel() if f.cancelled() else None)
        timer.start()
        inner.add_done_callback(copy)
        return outer


def _settle(future: Future[Any], error: BaseException | None, value: Any = None) -> None:
    """End `future` unless it already ended (the first of the timer and the task wins)."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)
    except Exception:  # InvalidStateError: the other one came first
        pass
