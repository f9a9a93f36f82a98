"""Starting the sending of actor calls that nobody sends.

A call alone in its handle's queue is not handed to a sender thread at once: waking a thread
costs ~0.1 ms on the critical path, and a caller that then waits for the call sends it itself.
`Kicker` hands such calls over once they have waited `GRACE` seconds: one process-wide thread
that sleeps without a timeout while nothing is noted, and otherwise wakes at most once per
`GRACE` (so a stream of calls, noted one after the other, costs no wake-up per call).
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Kickable(Protocol):
    def kick(self) -> None:
        """Have a thread send what is pending, if nobody is sending."""


class Kicker:
    """Kicks noted callers `GRACE` seconds after they were (last) noted."""

    GRACE = 0.001

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._noted: dict[Kickable, float] = {}  # when each was last noted
        self._idle = False  # the thread waits for a note (without a timeout)
        self._thread: threading.Thread | None = None
        self.passes = 0  # times the thread woke up and looked (for tests)

    @property
    def idle(self) -> bool:
        """Whether the thread sleeps until something is noted (no timed wake-ups)."""
        return self._idle

    def note(self, caller: Kickable) -> None:
        """`caller` has a call alone in its queue, which a caller may or may not send."""
        with self._cond:
            self._noted[caller] = time.monotonic()  # the latest lone call is the one pending
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="fray-kicker", daemon=True)
                self._thread.start()
            elif self._idle:
                self._idle = False
                self._cond.notify()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._noted:
                    self._idle = True
                    self._cond.wait()
                self._idle = False
                self.passes += 1
                cutoff = time.monotonic() - self.GRACE
                due = [c for c, noted in self._noted.items() if noted <= cutoff]
                for caller in due:
                    del self._noted[caller]
                waiting = bool(self._noted)
            for caller in due:
                caller.kick()
            if waiting:  # not due yet: look again in GRACE (a note meanwhile needs no wake-up)
                time.sleep(self.GRACE)


kicker = Kicker()
