"""Long polls: RPCs that wait, server side, until they have something to answer.

A poll calls its `check` at once and again each time it is woken, until `check` returns an
answer or the poll's time is up (then it answers with nothing). All of it runs on the server's
event loop, so nothing changes between a `check` and the poll's parking.

Clients' polls (WaitTasks, WatchFinished, GetActor, GetJob) wait on broadcast `Signal`s: a
fire wakes every poll waiting on it, and each looks again. Workers' lease polls are many (one
per worker) and each wake-up costs a lease attempt, so they are woken one by one
(`LeasePolls`): a change wakes only the polls that can use it. The state notes what changed
(`ControllerState.take_wakes`) and `LeasePolls.wake_changes` turns it into wake-ups:

- tasks queued (new, or back from a worker), per need: the parked polls *with room* (their
  worker has free slots or prefetch) whose worker fits the need, oldest parked first, as many
  as the tasks need: each poll woken is expected to take about one lease's worth
  (`task_lifecycle.grant_size`). A woken poll that takes fewer of them than expected hands
  the rest on (`ran`), and so does one that ends before it looked (`done`): no task is left
  queued while a parked worker that could take it sleeps.
- news of one worker (room or capacity freed on it, a cancellation for it, draining, gone):
  that worker's polls.
- actors or jobs changed: the polls of the workers with orders waiting (actor or job starts
  and stops).
- objects freed: the polls caching them (`wake_freed`, from `ControllerService._mutated`).

A parked poll *without room* (slots and prefetch full) can only be helped by news of its own
worker, which wakes it. One with room parked because no queued task fits its worker now: only
new tasks or capacity freed on its worker change that, and both wake it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Protocol, TypeVar

from fray.controller.placement import Need, fits_now
from fray.controller.task_lifecycle import grant_size, prefetch_of

if TYPE_CHECKING:
    from fray.controller.records import TaskRecord
    from fray.controller.state import ControllerState

_T = TypeVar("_T")


class Waitable(Protocol):
    async def wait(self, timeout: float) -> None: ...


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
    signal: Waitable,
    seconds: float,
    check_open: Callable[[], None],
) -> _T | None:
    """Call `check` now and after every wake-up of `signal` until it returns non-None or
    `seconds` have passed. `check_open` runs after each wake-up (it raises once the server is
    closing)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        result = check()
        remaining = deadline - loop.time()
        if result is not None or remaining <= 0:
            return result
        await signal.wait(remaining)
        check_open()


def _expire(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class LeasePoll:
    """One LeaseTasks call: what `poll` waits on. Parked in its `LeasePolls` while it waits."""

    __slots__ = ("_polls", "worker_id", "prefetch", "cached", "_future", "cover")

    def __init__(
        self, polls: LeasePolls, worker_id: str, prefetch: int | None, cached: list[str]
    ) -> None:
        self._polls = polls
        self.worker_id = worker_id
        self.prefetch = prefetch  # what the call asks for (None: what the worker registered)
        self.cached = cached  # the objects its worker caches
        self._future: asyncio.Future[None] | None = None
        # Woken for new tasks of this need, expected to take about this many of them.
        self.cover: tuple[Need, int] | None = None

    async def wait(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        future = self._future = loop.create_future()
        self._polls._park(self)
        timer = loop.call_later(timeout, _expire, future)
        try:
            await future
        finally:
            timer.cancel()
            self._future = None
            self._polls._unpark(self)

    @property
    def parked(self) -> bool:
        return self._future is not None and not self._future.done()

    def wake(self, cover: tuple[Need, int] | None = None) -> None:
        future = self._future
        if future is not None and not future.done():
            future.set_result(None)
            self.cover = cover
            self._polls._unpark(self)
            self._polls.woken += 1


class LeasePolls:
    """The workers' parked lease polls, and which of them a change wakes (see the module)."""

    def __init__(self, state: ControllerState) -> None:
        self._state = state
        self._with_room: dict[LeasePoll, None] = {}  # parked with room, oldest first
        self._by_worker: dict[str, dict[LeasePoll, None]] = {}  # every parked poll
        self._caching: dict[LeasePoll, None] = {}  # parked polls whose workers cache objects
        self.woken = 0  # wake-ups so far (for tests and benchmarks)

    def new(self, worker_id: str, prefetch: int | None, cached: list[str]) -> LeasePoll:
        return LeasePoll(self, worker_id, prefetch, cached)

    @property
    def parked(self) -> int:
        return sum(len(polls) for polls in self._by_worker.values())

    def _park(self, poll: LeasePoll) -> None:
        self._by_worker.setdefault(poll.worker_id, {})[poll] = None
        worker = self._state.workers.get(poll.worker_id)
        if (
            worker is not None
            and not worker.draining
            and worker.slots + prefetch_of(worker, poll.prefetch) > len(worker.task_ids)
        ):
            self._with_room[poll] = None
        if poll.cached:
            self._caching[poll] = None

    def _unpark(self, poll: LeasePoll) -> None:
        self._with_room.pop(poll, None)
        self._caching.pop(poll, None)
        polls = self._by_worker.get(poll.worker_id)
        if polls is not None:
            polls.pop(poll, None)
            if not polls:
                del self._by_worker[poll.worker_id]

    def wake_changes(self) -> bool:
        """Wake the polls that the changes noted since the last call concern; returns whether
        actors or jobs changed (their clients' polls are woken by the service)."""
        new, news, orders = self._state.take_wakes()
        by_worker = self._by_worker
        if by_worker:
            for worker_id in news:
                self.wake_worker(worker_id)
            if orders:
                has_orders = self._state.has_orders
                for worker_id in [w for w in by_worker if has_orders(w)]:
                    self.wake_worker(worker_id)
        for need, count in new.items():
            self.announce(need, count)
        return orders

    def wake_worker(self, worker_id: str) -> None:
        """Wake every poll of one worker."""
        polls = self._by_worker.get(worker_id)
        if polls:
            for poll in list(polls):
                poll.wake()

    def wake_all(self) -> None:
        for polls in list(self._by_worker.values()):
            for poll in list(polls):
                poll.wake()

    def wake_freed(self, missing: Callable[[Iterable[str]], list[str]]) -> None:
        """Wake the polls whose workers cache objects that are gone (`missing` names them)."""
        for poll in [p for p in self._caching if missing(p.cached)]:
            poll.wake()

    def announce(self, need: Need, count: int) -> None:
        """`count` tasks of `need` were queued: wake parked polls with room that fit it, as
        many as they take (each is expected to take one lease's worth)."""
        if not self._with_room:
            return
        state = self._state
        pending = state.pending_of(need)
        count = min(count, pending)
        workers = state.workers
        total = len(workers)
        short = state.short_work_ahead()
        chosen: list[tuple[LeasePoll, int]] = []
        for poll in self._with_room:  # oldest parked first
            if count <= 0:
                break
            if not poll.parked:  # timed out, its coroutine not yet resumed: it will not look
                continue
            worker = workers.get(poll.worker_id)
            if worker is None or not fits_now(worker, need):
                continue
            expected = max(
                1, grant_size(worker, prefetch_of(worker, poll.prefetch), pending, total, short)
            )
            chosen.append((poll, expected))
            count -= expected
        for poll, expected in chosen:
            poll.wake((need, expected))

    def ran(
        self, poll: LeasePoll, cover: tuple[Need, int] | None, leased: list[TaskRecord]
    ) -> None:
        """A poll woken for new tasks (`cover`) looked and leased `leased`: if it took fewer of
        them than expected and some are still queued, wake others for the rest."""
        if cover is None:
            return
        need, expected = cover
        took = sum(1 for t in leased if t.spec.need == need)
        if took < expected:
            self.announce(need, expected - took)

    def done(self, poll: LeasePoll) -> None:
        """The call ends: if it was woken for new tasks and never looked, hand them on."""
        cover, poll.cover = poll.cover, None
        if cover is not None:
            self.announce(*cover)
