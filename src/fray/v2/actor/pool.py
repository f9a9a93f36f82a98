"""Actor pools: round-robin calls and broadcasts over the actors holding one name.

A backend describes each registered actor as an :class:`ActorEndpoint` and gives the pool
a function listing the current endpoints; the pool asks it afresh on each use, so actors
registered after the lookup join the pool.
"""

from __future__ import annotations

import concurrent.futures as cf
import itertools
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any, Protocol

from fray.errors import NoActorError

__all__ = ["ActorEndpoint", "FutureBroadcastResult", "RoundRobinActorPool"]


class ActorEndpoint(Protocol):
    """One registered actor, as a backend reaches it."""

    @property
    def endpoint_id(self) -> str:
        """Stable and unique among the endpoints of one name."""
        ...

    def call(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Call ``method`` and return its result (or raise its exception)."""
        ...

    def submit(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Future[Any]:
        """Call ``method`` without waiting; the future holds its result or exception."""
        ...


class FutureBroadcastResult:
    """A :class:`fray.v2.cluster.BroadcastResult` over one future per actor."""

    def __init__(self, futures: Sequence[Future[Any]]) -> None:
        self.futures = list(futures)

    def __len__(self) -> int:
        return len(self.futures)

    def wait_all(self, timeout: float | None = None) -> list[Any]:
        """Each actor's result or exception, in pool order; ``TimeoutError`` if any is late."""
        _, not_done = cf.wait(self.futures, timeout=timeout)
        if not_done:
            raise TimeoutError(
                f"{len(not_done)} of {len(self.futures)} broadcast calls not done after {timeout}s"
            )
        return [_outcome(f) for f in self.futures]

    def wait_any(self, timeout: float | None = None) -> Any:
        """The first successful result; raises the first failure when all failed."""
        if not self.futures:
            raise NoActorError("the broadcast reached no actor")
        first_error: BaseException | None = None
        try:
            for future in cf.as_completed(self.futures, timeout=timeout):
                error = future.exception()
                if error is None:
                    return future.result()
                first_error = first_error or error
        except cf.TimeoutError:
            raise TimeoutError(f"no broadcast call succeeded within {timeout}s") from None
        assert first_error is not None
        raise first_error


def _outcome(future: Future[Any]) -> Any:
    error = future.exception()
    return error if error is not None else future.result()


class _CallProxy:
    """``proxy.method(*args, **kwargs)`` calls ``method`` on one endpoint."""

    def __init__(self, endpoint: ActorEndpoint) -> None:
        self._endpoint = endpoint

    def __getattr__(self, method: str) -> Callable[..., Any]:
        if method.startswith("__"):
            raise AttributeError(method)
        endpoint = self._endpoint

        def call(*args: Any, **kwargs: Any) -> Any:
            return endpoint.call(method, args, kwargs)

        call.__name__ = method
        return call


class _BroadcastProxy:
    """``proxy.method(*args, **kwargs)`` calls ``method`` on every endpoint at once."""

    def __init__(self, endpoints: Sequence[ActorEndpoint]) -> None:
        self._endpoints = list(endpoints)

    def __getattr__(self, method: str) -> Callable[..., FutureBroadcastResult]:
        if method.startswith("__"):
            raise AttributeError(method)
        endpoints = self._endpoints

        def broadcast(*args: Any, **kwargs: Any) -> FutureBroadcastResult:
            return FutureBroadcastResult([e.submit(method, args, kwargs) for e in endpoints])

        broadcast.__name__ = method
        return broadcast


class RoundRobinActorPool:
    """A :class:`fray.v2.cluster.ActorPool` over the endpoints ``members()`` lists."""

    def __init__(self, name: str, members: Callable[[], list[ActorEndpoint]]) -> None:
        self.name = name
        self._members = members
        self._counter = itertools.count()
        self._lock = threading.Lock()

    @property
    def size(self) -> int:
        return len(self._members())

    def endpoints(self) -> list[ActorEndpoint]:
        """The actors holding the name right now, in a stable order."""
        return sorted(self._members(), key=lambda e: e.endpoint_id)

    def wait_for_size(self, min_size: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        delay = 0.02
        while True:
            size = self.size
            if size >= min_size:
                return
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(
                    f"only {size} actor(s) named {self.name!r} after {timeout}s, wanted {min_size}"
                )
            time.sleep(min(delay, left))
            delay = min(delay * 2, 0.5)

    def call(self) -> Any:
        endpoints = self.endpoints()
        if not endpoints:
            raise NoActorError(f"no actor named {self.name!r} is registered")
        with self._lock:
            index = next(self._counter)
        return _CallProxy(endpoints[index % len(endpoints)])

    def broadcast(self) -> Any:
        return _BroadcastProxy(self.endpoints())

    def __repr__(self) -> str:
        return f"RoundRobinActorPool({self.name!r}, size={self.size})"
