"""Task futures and per-task options.

A `FrayFuture` is a `concurrent.futures.Future`; what it needs of its context is two things
(`TaskControl`): stopping the task wherever it is when the future is cancelled, and making a
direct call from the waiting thread when no pool thread took it yet. `settle` and
`settle_value` end a future once, whoever gets there first (a local cancel may have).
A large result arrives as a `StoredValue` (where its object file is): the future loads it on the
first `result()` and keeps the value (`fray.client.objects`).
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from connectrpc.errors import ConnectError

from fray import errors
from fray.wire import payload
from fray.wire.objects import StoredValue
from fray.wire.pb import controller_pb2 as pb

if TYPE_CHECKING:
    from fray.client.objects import ClientObjects

logger = logging.getLogger(__name__)


class TaskControl(Protocol):
    """What a FrayFuture asks of the context that ran it."""

    def cancel(self, future: FrayFuture) -> None:
        """Stop the (locally cancelled) task wherever it is."""

    def help(self, future: FrayFuture) -> None:
        """Make the task's direct call from this thread if no thread took it yet."""


class FrayFuture(concurrent.futures.Future[Any]):
    """The future of a task on a fray controller. `cancel()` also stops it if it is running."""

    # A large result not loaded yet, and whose objects load it (set before it is settled).
    _stored: tuple[StoredValue, ClientObjects] | None = None
    _load_lock: threading.Lock  # set with `_stored`

    def __init__(self, control: TaskControl, task_id: str) -> None:
        super().__init__()
        self._control = control
        self.task_id = task_id
        self.controller_id = ""  # set when the controller accepted the task
        self.name = ""  # the task's name (for printing its output)

    def cancel(self) -> bool:
        # Cancel locally first: the controller's answer (a cancelled task) may reach the
        # collector before this call returns, and must not turn a cancel into a failure.
        if not super().cancel():
            return False
        try:
            self._control.cancel(self)
        except (ConnectError, errors.FrayError) as exc:
            logger.warning("could not ask the controller to stop task %s: %s", self.task_id, exc)
        return True

    def result(self, timeout: float | None = None) -> Any:
        if timeout is None and not self.done():
            self._control.help(self)  # a direct call no thread took yet: make it here
        value = super().result(timeout)
        if self._stored is None:
            return value
        return self._load()

    def hold(self, stored: StoredValue, objects: ClientObjects) -> None:
        """The result will be a large object: loaded on the first `result()`."""
        self._load_lock = threading.Lock()
        self._stored = (stored, objects)
        objects.unread(stored, self)

    def _load(self) -> Any:
        """Load the large result once (ObjectLostError when it is gone) and keep the value.
        Under a lock of its own, not the future's: `done()`, `cancel()` and waits on the
        future stay free while a load (maybe a fetch from another host) runs."""
        with self._load_lock:  # other readers wait for this one's load
            held = self._stored
            if held is None:
                return self._result
            stored, objects = held
            value = objects.load_result(stored)
            with self._condition:
                self._result = value
                self._stored = None
            return value

    def ran_by(self, control: TaskControl) -> bool:
        """Whether `control` (a context's) ran this task."""
        return self._control is control

    def __repr__(self) -> str:
        return f"<FrayFuture {self.task_id} {self._state}>"


Submit = Callable[[Callable[..., Any], tuple[Any, ...], dict[str, Any], "TaskOptions"], FrayFuture]


@dataclass(frozen=True)
class TaskOptions:
    """Per-task settings: `ctx.options(timeout=5, max_retries=2).run(fn, x)`.

    `resources` and `labels` are checked already (`fray.job.context.validate_requirements`);
    `requirements` is their wire form, None when the task asks for nothing.
    """

    submit: Submit = field(repr=False, compare=False)
    timeout: float | None = None
    max_retries: int = 0
    name: str | None = None
    resources: Mapping[str, float] = field(default_factory=dict, hash=False)
    labels: Mapping[str, str] = field(default_factory=dict, hash=False)
    requirements: pb.Requirements | None = field(default=None, repr=False, compare=False)

    def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> FrayFuture:
        return self.submit(fn, args, kwargs, self)


def settle(
    future: concurrent.futures.Future[Any],
    value: Any = None,
    exception: BaseException | None = None,
) -> None:
    """End a future with a value or an exception, unless it ended already (cancelled)."""
    try:
        if exception is not None:
            future.set_exception(exception)
        else:
            future.set_result(value)
    except concurrent.futures.InvalidStateError:
        pass  # cancelled locally in the meantime


def settle_value(
    future: FrayFuture, data: bytes, task_id: str, objects: ClientObjects | None = None
) -> None:
    """End a future with a task's pickled result (a SerializationError if it does not load);
    a large result (a `StoredValue`) is loaded from `objects` when first asked for."""
    try:
        value = payload.loads(data)
    except Exception as exc:
        settle(
            future,
            exception=errors.SerializationError(
                f"the result of task {task_id} could not be unpickled here: {exc}"
            ),
        )
        return
    if isinstance(value, StoredValue) and objects is not None:
        if future.done():  # ended already (cancelled, or settled twice): nobody reads this one
            objects.release([value.object_id])
            return
        future.hold(value, objects)
        settle(future, value=value)
        if future.cancelled():  # nobody will read it
            objects.release([value.object_id])
        return
    settle(future, value=value)


def future_value(x: Any) -> Any:
    """An argument's value: a future's result (waiting for it), anything else as it is."""
    return x.result() if isinstance(x, concurrent.futures.Future) else x
