"""What job replicas print (stdout and stderr merged), as their workers stream it (`ReportJobs`).

Each replica's output is a byte stream; a worker sends new bytes with the offset they start at,
and the controller appends only what lies beyond what it has (so a repeated update is harmless).
Per replica the last `MAX_REPLICA_BYTES` are kept, the older ones dropped and counted; all
replicas together keep at most `MAX_TOTAL_BYTES`, taken first from the replicas that ended
longest ago. Not durable (like task output): after a controller restart a replica's output
starts again where its worker's next update starts, and what came before counts as dropped.
"""

from __future__ import annotations

from collections import OrderedDict

MAX_REPLICA_BYTES = 1 << 20
MAX_TOTAL_BYTES = 256 << 20


class ReplicaLog:
    """One replica's output: the bytes kept, from byte `start` of its stream."""

    __slots__ = ("data", "start")

    def __init__(self) -> None:
        self.data = bytearray()
        self.start = 0

    @property
    def end(self) -> int:
        """The offset after the last byte received."""
        return self.start + len(self.data)

    def append(self, offset: int, chunk: bytes, max_bytes: int) -> int:
        """Add the part of `chunk` (bytes from `offset` on) beyond `end`; returns the change of
        the bytes kept. A chunk past `end` (bytes this controller never got: it restarted)
        counts what lies between as dropped."""
        before = len(self.data)
        if offset > self.end:
            self.data.clear()
            self.start = offset
        skip = self.end - offset
        if skip < len(chunk):
            self.data += chunk[skip:] if skip else chunk
        excess = len(self.data) - max_bytes
        if excess > 0:
            del self.data[:excess]
            self.start += excess
        return len(self.data) - before

    def read(self, offset: int) -> tuple[bytes, int, int]:
        """(the bytes from `offset`, or from the oldest kept; the next offset; bytes before
        the data that are no longer kept)."""
        if offset >= self.end:
            return b"", max(offset, self.end), 0
        dropped = max(0, self.start - offset)
        begin = max(offset, self.start)
        return bytes(self.data[begin - self.start :]), self.end, dropped

    def forget(self) -> int:
        """Drop the bytes kept (counted as dropped for readers); returns how many."""
        size = len(self.data)
        self.start += size
        self.data = bytearray()
        return size


class JobLogs:
    """Every replica's output by key ("JOB_ID/INDEX"), bounded per replica and in all."""

    def __init__(
        self, max_replica_bytes: int = MAX_REPLICA_BYTES, max_total_bytes: int = MAX_TOTAL_BYTES
    ) -> None:
        self._max_replica = max_replica_bytes
        self._max_total = max_total_bytes
        self._logs: dict[str, ReplicaLog] = {}
        self._ended: OrderedDict[str, None] = OrderedDict()  # oldest end first
        self.size = 0  # bytes kept in all

    def append(self, key: str, offset: int, chunk: bytes) -> bool:
        """Add a replica's output (see `ReplicaLog.append`); True if anything was new."""
        log = self._logs.get(key)
        if log is None:
            log = self._logs[key] = ReplicaLog()
        end = log.end
        self.size += log.append(offset, chunk, self._max_replica)
        self._trim()
        return log.end != end

    def read(self, key: str, offset: int) -> tuple[bytes, int, int]:
        """See `ReplicaLog.read` (a replica that printed nothing reads as empty)."""
        log = self._logs.get(key)
        if log is None:
            return b"", offset, 0
        return log.read(offset)

    def end(self, key: str) -> int:
        """The offset after the last byte received of the replica."""
        log = self._logs.get(key)
        return 0 if log is None else log.end

    def ended(self, key: str) -> None:
        """The replica's output is complete: its bytes go first when room is needed."""
        if key in self._logs:
            self._ended[key] = None
            self._trim()

    def drop(self, keys: list[str]) -> None:
        """Forget these replicas' outputs (their job was forgotten)."""
        for key in keys:
            log = self._logs.pop(key, None)
            if log is not None:
                self.size -= len(log.data)
            self._ended.pop(key, None)

    def _trim(self) -> None:
        while self.size > self._max_total and self._ended:
            key, _ = self._ended.popitem(last=False)
            self.size -= self._logs[key].forget()
