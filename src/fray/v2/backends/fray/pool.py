"""fray.v2 worker pools on fray: ``num_workers`` fray actors running submitted functions.

Each pool worker is a fray actor (:class:`PoolWorker`, in a process of its own on some fray
worker, holding the pool's requirements for its life) that applies the pool's ``env_vars``
and ``workspace`` (working directory, first on ``sys.path``) to its process when it starts.
One dispatcher thread per actor takes the next queued call when its actor is idle (placed,
started and done with its last call), so a long call never holds up the others, and an actor
still waiting for resources takes no call. Calls travel cloudpickled (pickling errors surface
in ``submit``); a call's exception is re-raised with its own type. An actor whose process
dies fails its current call (``RuntimeError``) and is replaced at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import sys
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import Any

import cloudpickle

from fray.client.actors import FrayActorHandle
from fray.client.context import FrayContext
from fray.errors import ActorCreationError, ActorDiedError, ActorError, FrayError
from fray.v2.worker_pool import FutureWorkerPool, drain_calls

__all__ = ["FrayWorkerPool", "PoolWorker"]

logger = logging.getLogger(__name__)

_READY_POLL = 1.0  # seconds between checks for a shutdown while an actor is not placed yet
_WARN_AFTER = 5.0  # seconds an actor waits to be placed before the pool says why


def _copy(source: Future[Any], target: Future[Any]) -> None:
    """Settle ``target`` (already running) as ``source`` was settled."""
    if source.cancelled():
        target.set_exception(RuntimeError("the pool was shut down before the call ran"))
    elif (error := source.exception()) is not None:
        target.set_exception(error)
    else:
        target.set_result(source.result())


class PoolWorker:
    """The actor class of one pool worker: it runs whatever function it is sent."""

    def __init__(self, env_vars: Mapping[str, str], workspace: str | None) -> None:
        os.environ.update(env_vars)
        if workspace:
            os.chdir(workspace)
            sys.path.insert(0, workspace)

    def ready(self) -> bool:
        """Answers once the actor is placed and constructed."""
        return True

    def run(self, payload: bytes) -> Any:
        fn, args, kwargs = cloudpickle.loads(payload)
        del payload
        return fn(*args, **kwargs)


class FrayWorkerPool(FutureWorkerPool):
    """``num_workers`` :class:`PoolWorker` actors created through ``ctx`` (see the module
    docstring); ``resources`` and ``labels`` are what each actor holds on its worker."""

    def __init__(
        self,
        ctx: FrayContext,
        num_workers: int,
        env_vars: Mapping[str, str],
        workspace: str | None,
        resources: Mapping[str, float],
        labels: Mapping[str, str],
        why_waiting: Callable[[str], str] | None = None,
    ) -> None:
        super().__init__(num_workers)
        self._ctx = ctx
        # The controller's reason an actor waits (its pending_reason), for one warning.
        self._why_waiting = why_waiting
        self._warned = False
        self._queued = 0  # calls submitted and not taken yet
        self._cancelling = False  # shutdown(cancel_futures=True)
        self._unstartable: BaseException | None = None
        self._args = (dict(env_vars), workspace)
        self._resources = dict(resources)
        self._labels = dict(labels)
        self._queue: queue.SimpleQueue[tuple[Future[Any], bytes] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._actors: list[FrayActorHandle] = []
        try:
            handles = [self._new_actor() for _ in range(num_workers)]
        except BaseException:
            self._kill_actors()
            raise
        self._threads = [
            threading.Thread(
                target=self._serve, args=(handle,), daemon=True, name=f"fray-v2-pool-{i}"
            )
            for i, handle in enumerate(handles)
        ]
        for thread in self._threads:
            thread.start()

    def _new_actor(self) -> FrayActorHandle:
        handle = self._ctx.create_actor(
            PoolWorker, *self._args, resources=self._resources, labels=self._labels
        )
        with self._lock:
            self._actors.append(handle)
        return handle

    def _serve(self, handle: FrayActorHandle | None) -> None:
        """One actor's dispatcher: once its actor takes calls, it runs the next queued call
        whenever the actor is idle."""
        while True:
            if handle is not None and not self._await_ready(handle):
                return  # the pool was shut down before its actor started
            item = self._queue.get()
            if item is None:
                return
            with self._lock:
                self._queued -= 1
            future, payload = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                if handle is None:  # its replacement could not be made: try again
                    handle = self._new_actor()
                value = handle.run.remote(payload).result()
            except ActorDiedError as exc:
                if handle is None or exc.actor_id != handle.actor_id:  # the function's own
                    future.set_exception(exc)
                    continue
                if not exc.call_sent:  # it died while idle: the call never ran, retry it
                    handle = self._replace(handle)
                    with self._lock:
                        self._queued += 1
                    self._requeue(future, payload)
                    continue
                future.set_exception(RuntimeError(f"the pool's worker actor died: {exc}"))
                handle = self._replace(handle)
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(value)

    def _await_ready(self, handle: FrayActorHandle) -> bool:
        """Wait until the actor takes calls (placed where its resources fit, constructed);
        False once the pool is shut down with nothing left for it to run (or cancelling). An
        actor that cannot start is "ready": its calls fail with the reason (or it is replaced,
        if it died). Logs the controller's reason once when the actor waits for long."""
        ready = handle.ready.remote()
        waited = 0.0
        while True:
            try:
                ready.result(timeout=_READY_POLL)
                return True
            except TimeoutError:
                waited += _READY_POLL
                if waited >= _WARN_AFTER:
                    self._warn_waiting(handle)
            except (ActorCreationError, ActorDiedError):
                return True
            except ActorError as exc:  # not placed within the client's wait
                if self._closed:  # nothing will place it for the calls left: fail them
                    self._unstartable = exc
                    return False
                ready = handle.ready.remote()
            except FrayError:  # its context was closed
                return not self._closed
            if self._closed and (self._cancelling or not self._queued):
                return False

    def _warn_waiting(self, handle: FrayActorHandle) -> None:
        with self._lock:
            if self._warned or self._why_waiting is None:
                return
            self._warned = True
        try:
            reason = self._why_waiting(handle.actor_id)
        except Exception:  # only a warning
            return
        logger.warning(
            "worker pool actor %s is not placed after %.0fs%s",
            handle.actor_id,
            _WARN_AFTER,
            f": {reason}" if reason else " (every worker that fits is busy)",
        )

    def _requeue(self, future: Future[Any], payload: bytes) -> None:
        """Run a call that never reached its actor again (a fresh future state)."""
        retry: Future[Any] = Future()
        retry.add_done_callback(lambda f: _copy(f, future))
        self._queue.put((retry, payload))

    def _replace(self, dead: FrayActorHandle) -> FrayActorHandle | None:
        """A new actor for one that died (None once the pool is shut down, or if it cannot
        be made now: the next call tries again)."""
        self._forget(dead)
        if self._closed:
            return None
        logger.warning("a pool worker actor (%s) died; another replaces it", dead.actor_id)
        try:
            return self._new_actor()
        except Exception as exc:
            logger.warning("could not start a pool worker actor: %s", exc)
            return None

    def _forget(self, dead: FrayActorHandle) -> None:
        with self._lock:
            if dead in self._actors:
                self._actors.remove(dead)

    def _submit(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Future[Any]:
        payload = cloudpickle.dumps((fn, args, kwargs))  # pickling errors surface here
        future: Future[Any] = Future()
        with self._lock:
            self._queued += 1
        self._queue.put((future, payload))
        return future

    def _shutdown(self, wait: bool, cancel_futures: bool) -> None:
        self._cancelling = cancel_futures
        if cancel_futures:
            for future in drain_calls(self._queue):
                future.cancel()
        for _ in self._threads:
            self._queue.put(None)

        def release() -> None:
            for thread in self._threads:
                thread.join()
            self._kill_actors()
            # Calls no actor could take (none started before the shutdown).
            for future in drain_calls(self._queue):
                if self._unstartable is not None and future.set_running_or_notify_cancel():
                    future.set_exception(
                        RuntimeError(f"no pool worker actor could start: {self._unstartable}")
                    )
                else:
                    future.cancel()

        if wait:
            release()
        else:
            threading.Thread(target=release, daemon=True, name="fray-v2-pool-stop").start()

    def _kill_actors(self) -> None:
        with self._lock:
            actors, self._actors = self._actors, []
        for handle in actors:
            with contextlib.suppress(FrayError):
                self._ctx.kill_actor(handle)
