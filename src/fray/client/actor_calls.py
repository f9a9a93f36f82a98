"""An actor handle's queue of calls, and who sends them (one sender at a time, in order).

The sender is, by preference, the caller itself: a caller blocking on a call's result sends the
pending calls when that cannot block for long (`help`: the actor's address is known and the
first call's arguments are ready). Otherwise a sender thread of the handle does, started when
needed and ending after `IDLE_SECONDS` without calls:
- at once when calls pile up (pipelining: the caller is not waiting for each);
- `GRACE` after a lone call that nobody waits for (the process-wide kicker hands it over);
- when waiting is needed: for the actor to be (re)placed, or for argument futures.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import logging
import threading
import time
from collections import deque
from typing import Any

from fray import errors
from fray.client.actor_place import ActorLocator
from fray.client.actor_send import WAIT_MS, ActorSender, Call
from fray.client.kicker import kicker

logger = logging.getLogger(__name__)

BATCH = 1000  # calls per CallActor at most
IDLE_SECONDS = 1.0  # a sender thread with nothing to send for this long ends


class ActorFuture(concurrent.futures.Future[Any]):
    """The future of one actor call."""

    def __init__(self, caller: ActorCaller) -> None:
        super().__init__()
        self._caller = caller

    def result(self, timeout: float | None = None) -> Any:
        if not self.done():  # send it from here if no thread took it yet
            wait_ms = WAIT_MS if timeout is None else int(min(WAIT_MS, timeout * 1000))
            self._caller.help(max(1, wait_ms))
        return super().result(timeout)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        if not self.done():
            self._caller.kick()
        return super().exception(timeout)

    def kick(self) -> None:
        """Have the call sent now (someone waits for it), if nobody is sending."""
        self._caller.kick()


class ActorCaller:
    """A handle's queue of calls; `sender` sends the batches taken off it, to where
    `locator` says the actor is."""

    def __init__(self, sender: ActorSender, locator: ActorLocator) -> None:
        self._sender = sender
        self._locator = locator
        self._cond = threading.Condition()
        self._pending: deque[tuple[Call, ActorFuture]] = deque()
        self._sending = False  # someone (a caller or a thread) is sending
        self._thread: threading.Thread | None = None  # the sender thread, while it lives

    def submit(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> ActorFuture:
        future = ActorFuture(self)
        waits = any(isinstance(a, concurrent.futures.Future) for a in (*args, *kwargs.values()))
        # Pickled now (an unpicklable argument fails here) unless it waits for futures.
        call: Call = (
            (method, args, kwargs) if waits else self._sender.encode(method, args, kwargs, future)
        )
        with self._cond:
            self._pending.append((call, future))
            alone = len(self._pending) == 1 and not self._sending
            if not alone and not self._sending:  # calls pile up: send them now
                self._wake_sender()
        if alone:  # the caller may well wait for it and send it itself; if not, the kicker will
            kicker.note(self)
        return future

    def kick(self) -> None:
        """Have the sender thread send what is pending, if nobody is sending."""
        with self._cond:
            if self._pending and not self._sending:
                self._wake_sender()

    def killed(self) -> None:
        """The actor was killed through this handle: fail what is queued and what comes."""
        final = self._locator.killed()
        with self._cond:
            dropped = list(self._pending)
            self._pending.clear()
        for _, future in dropped:
            if future.set_running_or_notify_cancel():
                future.set_exception(final)

    def help(self, first_wait_ms: int = WAIT_MS) -> None:
        """Send the first pending calls from this thread if no one is sending and sending
        cannot block for long (the actor's address is known and the first call's arguments are
        ready). This thread waits at most `first_wait_ms` for their answer; the sender thread
        does everything that may take longer, so `result(timeout)` keeps its timeout."""
        with self._cond:
            if self._sending or not self._pending:
                return
            unplaced = self._locator.place() is None and self._locator.final is None
            if unplaced or isinstance(self._pending[0][0], tuple):
                self._wake_sender()
                return
            self._sending = True
        self._pump(first_wait_ms, inline=True)

    # ------------------------------------------------------------------ the sender thread

    def _wake_sender(self) -> None:
        """Wake the sender thread, or start one. Holds _cond."""
        if self._thread is not None:
            self._cond.notify()
            return
        self._thread = threading.Thread(
            target=self._loop, name=f"fray-actor-{self._sender.actor_id}", daemon=True
        )
        self._thread.start()

    def _loop(self) -> None:
        while True:
            with self._cond:
                idle_since = time.monotonic()
                while self._sending or not self._pending:
                    left = idle_since + IDLE_SECONDS - time.monotonic()
                    if left <= 0:  # whoever sends next starts another thread if needed
                        self._thread = None
                        return
                    self._cond.wait(left)
                self._sending = True
            try:
                self._pump(WAIT_MS, inline=False)
            except Exception:  # the batch's futures are settled; keep serving the handle
                logger.exception("sending calls to %s failed", self._sender.what)

    def _pump(self, first_wait_ms: int, inline: bool) -> None:
        """Send batches until the queue is empty (a caller sending inline sends one: the one
        with its own call, up to the first call waiting for futures, then leaves the rest to
        the sender thread)."""
        handed_over = False
        try:
            while True:
                with self._cond:
                    count = min(len(self._pending), BATCH)
                    if inline:  # up to the first call that waits for futures
                        head = itertools.islice(self._pending, count)
                        calls = (call for call, _ in head)
                        count = next(
                            (i for i, c in enumerate(calls) if isinstance(c, tuple)), count
                        )
                    batch = [self._pending.popleft() for _ in range(count)]
                    if not batch:
                        return
                try:
                    handed_over = self._sender.send(
                        batch, first_wait_ms, inline, self._done_sending
                    )
                except BaseException as exc:  # e.g. Ctrl-C in a caller that was sending
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(
                                errors.ActorError(
                                    f"a call to {self._sender.what} was interrupted "
                                    f"({type(exc).__name__}) while being sent; it may or may "
                                    "not have run",
                                    actor_id=self._sender.actor_id,
                                )
                            )
                    raise
                if inline or handed_over:
                    return
        finally:
            if not handed_over:
                self._done_sending()

    def _done_sending(self) -> None:
        with self._cond:
            self._sending = False
            if self._pending:  # left for the sender thread
                self._wake_sender()
