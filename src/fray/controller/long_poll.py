"""Long polls: RPCs that wait, server side, until they have something to answer.

A poll calls its `check` at once and again each time its `Signal` fires, until `check` returns
an answer or the poll's time is up (then it answers with nothing). RPCs that change the state
fire the signals of the polls they may concern; a fire wakes every poll waiting on that signal,
and each looks again. All of it runs on the server's event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

_T = TypeVar("_T")

# A poll answers this long before the client's own deadline (Connect-Timeout-Ms) runs out.
CLIENT_DEADLINE_MARGIN_SECONDS = 0.2


class Signal:
    """A broadcast wake-up: `wait` sleeps until the next `fire` or a timeout."""

    def __init__(self) -> None:
        self._future: asyncio.Future[None] | None = None

    async def wait(self, timeout: float) -> None:
        if self._future is None:
            self._future = asyncio.get_running_loop().create_future()
        await asyncio.wait([self._future], timeout=timeout)

    def fire(self) -> None:
        if self._future is not None:
            self._future.set_result(None)
            self._future = None


def poll_seconds(wait_ms: int, cap_seconds: float, client_timeout_ms: float | None) -> float:
    """How long a poll may wait: what it asks for, at most `cap_seconds`, and answering before
    the client gives up."""
    wait = min(wait_ms / 1000, cap_seconds)
    if client_timeout_ms is not None:
        wait = min(wait, max(0.0, client_timeout_ms / 1000 - CLIENT_DEADLINE_MARGIN_SECONDS))
    return wait


async def poll(
    check: Callable[[], _T | None],
    signal: Signal,
    seconds: float,
    check_open: Callable[[], None],
) -> _T | None:
    """Call `check` now and after every fire of `signal` until it returns non-None or `seconds`
    have passed. `check_open` runs after each wake-up (it raises once the server is closing)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        result = check()
        remaining = deadline - loop.time()
        if result is not None or remaining <= 0:
            return result
        await signal.wait(remaining)
        check_open()
