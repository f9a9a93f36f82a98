"""Per-client logs of finished tasks, which `WatchFinished` reads with a cursor.

Each owner (a client) has a log of the ids of its queued tasks, in the order they finished. A
position in the log is a cursor. Reading from cursor N acknowledges the entries before N: the
log forgets them while positions keep counting, so it holds only what its reader has not
confirmed, and re-reading the same cursor (after a lost answer) gives the same ids. The ids of
an owner silent for long (a client that went away) are dropped, positions kept: a reader that
comes back is told it missed some (`dropped`). Logs that grow or shrink are marked in
`changes`, for the journal.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from fray.controller.changes import Changes
from fray.controller.records import InvalidRequest, NotFound


@dataclass
class _OwnerLog:
    """One owner's unacknowledged ids; the `base` entries before them were acknowledged."""

    last_read: float
    base: int = 0
    ids: deque[str] = field(default_factory=deque)
    dropped_until: int = 0  # entries before this were dropped unread (an idle owner)


class FinishedLogs:
    """The finished-task logs of all owners."""

    def __init__(self, clock: Callable[[], float], changes: Changes | None = None) -> None:
        self._clock = clock
        self._logs: dict[str, _OwnerLog] = {}
        self.changes = Changes() if changes is None else changes

    def _log(self, owner: str) -> _OwnerLog:
        log = self._logs.get(owner)
        if log is None:
            log = self._logs[owner] = _OwnerLog(last_read=self._clock())
        return log

    def append(self, owner: str, task_id: str) -> None:
        """`task_id` of `owner` finished (called by Transitions)."""
        self._log(owner).ids.append(task_id)
        self.changes.owner(owner)

    def read(self, owner: str, cursor: int, limit: int) -> tuple[list[str], int, bool]:
        """An owner's finished ids from position `cursor` on; acknowledges those before it.

        Returns up to `limit` ids (at least 1), the next cursor, and whether entries the reader
        had not read were dropped. A cursor past the end of the log (the controller lost its
        state, e.g. it restarted) raises NotFound; one before what was acknowledged reads from
        the oldest entry still kept.
        """
        if not owner:
            raise InvalidRequest("owner is empty")
        log = self._log(owner)
        log.last_read = self._clock()
        end = log.base + len(log.ids)
        if cursor > end or cursor < 0:
            raise NotFound(f"cursor {cursor} is not in the finished log of {owner} (0..{end})")
        dropped = cursor < log.dropped_until
        cursor = max(cursor, log.base)  # entries before base were acknowledged or dropped
        if log.base < cursor:
            self.changes.owner(owner)
        while log.base < cursor:
            log.ids.popleft()
            log.base += 1
        limit = max(1, limit)
        ids = list(itertools.islice(log.ids, limit))
        return ids, cursor + min(len(log.ids), limit), dropped

    def count(self, owner: str) -> int:
        """The position after the owner's last entry: how many of its tasks finished so far."""
        log = self._logs.get(owner)
        return 0 if log is None else log.base + len(log.ids)

    def kept(self, owner: str) -> tuple[int, list[str]]:
        """The position of the owner's first kept entry, and the kept ids (for inspection)."""
        log = self._logs.get(owner)
        return (0, []) if log is None else (log.base, list(log.ids))

    def expire(self, cutoff: float) -> int:
        """Drop the unread ids of owners that have not read since `cutoff`, keeping their
        positions. Returns how many logs were emptied."""
        emptied = 0
        for owner, log in self._logs.items():
            if log.last_read < cutoff and log.ids:
                log.base += len(log.ids)
                log.dropped_until = log.base
                log.ids = deque()
                self.changes.owner(owner)
                emptied += 1
        return emptied

    # ---------------------------------------------------------------- saving and restoring

    def saved_view(self, owner: str, since: int) -> tuple[int, int, list[tuple[int, str]]]:
        """For the journal: the owner's `base` and `dropped_until`, and its kept entries at
        positions `since` and after, as (position, id)."""
        log = self._logs.get(owner)
        if log is None:
            return 0, 0, []
        end = log.base + len(log.ids)
        start = max(since, log.base)
        newest = list(itertools.islice(reversed(log.ids), end - start))
        newest.reverse()
        return log.base, log.dropped_until, list(enumerate(newest, start))

    def restore(self, owner: str, base: int, dropped_until: int, ids: list[str]) -> None:
        """An owner's log as it was saved (at a restart); it counts as read just now."""
        self._logs[owner] = _OwnerLog(
            last_read=self._clock(), base=base, ids=deque(ids), dropped_until=dropped_until
        )
