"""What tasks printed, as their workers reported it (`GetTaskLogs`, `WatchFinished`).

Each finished task's captured stdout/stderr/logging text (`pb.TaskOutput`, at most 64 KiB per
task: the worker keeps the last part) arrives with its result in `ReportResults`, for leased
and direct tasks alike; it is authoritative. While a task runs, its worker also reports what it
printed since the last report (`pb.TaskOutputChunk`, live output): the controller keeps the last
`TASK_LIVE_BYTES` of each running task's current attempt (a new attempt starts again at offset
0; chunks of a task it does not know are kept too: a direct task is reported once it ends), and
appends what is new to its owner's output stream (`OutputStreams`), which `WatchFinished`
reads with a cursor. A chunk repeating bytes already kept adds only what lies beyond them; a
gap (bytes never received) is counted as dropped. The controller keeps the outputs of the most
recent tasks, live and final, up to `DEFAULT_LOG_BYTES` in all, evicting the oldest first.

Not durable: the outputs live in memory only (they are not part of the journal) and are gone
after a controller restart; a task whose output is evicted or lost answers with no output.
Actor method calls go from client to worker and back without the controller: their output is
printed by the client but not kept here.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from fray.wire.pb import controller_pb2 as pb

DEFAULT_LOG_BYTES = 64 * 1024 * 1024  # all tasks' outputs together
TASK_LIVE_BYTES = 64 * 1024  # the last bytes of a running task's output kept
STREAM_BYTES = 1024 * 1024  # an owner's output stream keeps its last chunks up to this size
STREAM_CHUNKS = 2000  # ... and this many
STREAM_IDLE_SECONDS = 3600.0  # an owner that has not read this long is forgotten
EXPIRE_EVERY_SECONDS = 60.0


@dataclass
class _Final:
    """A finished attempt's output, as reported with its result."""

    output: pb.TaskOutput
    attempt: int
    size: int


@dataclass
class _Live:
    """A running attempt's output: `data` is what it printed from byte `base` on."""

    attempt: int
    base: int = 0
    data: bytearray = field(default_factory=bytearray)
    dropped: int = 0  # bytes of gaps never received, for information
    owner: str = ""
    name: str = ""
    pid: int = 0
    worker_id: str = ""

    @property
    def end(self) -> int:
        return self.base + len(self.data)

    def chunk(self, task_id: str, offset: int, data: bytes) -> pb.TaskOutputChunk:
        """`data`, printed from byte `offset` on, as a chunk of an owner's stream."""
        return pb.TaskOutputChunk(
            task_id=task_id,
            attempt=self.attempt,
            offset=offset,
            text=data.decode(errors="replace"),
            owner=self.owner,
            name=self.name,
            pid=self.pid,
            worker_id=self.worker_id,
        )


@dataclass
class TaskText:
    """A task's output from some offset: `text` starts at byte `start` and ends at `end`."""

    finished: bool
    start: int
    end: int
    text: str
    pid: int
    worker_id: str


def _cut(data: bytes | bytearray, start: int) -> int:
    """`start` moved forward to a UTF-8 character boundary of `data`."""
    while start < len(data) and (data[start] & 0xC0) == 0x80:
        start += 1
    return start


class TaskLogs:
    """A bounded map of task id -> its output: final (the most recently reported kept) or live
    (the running attempt's), plus the owners' output streams."""

    def __init__(
        self,
        max_bytes: int = DEFAULT_LOG_BYTES,
        *,
        task_live_bytes: int = TASK_LIVE_BYTES,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._max_bytes = max_bytes
        self._task_live_bytes = task_live_bytes
        self._entries: OrderedDict[str, _Final | _Live] = OrderedDict()
        self._live_ids: set[str] = set()  # the entries that are live
        self._bytes = 0
        self.streams = OutputStreams(clock=clock)

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size(self) -> int:
        """Bytes of output kept."""
        return self._bytes

    @staticmethod
    def _size(entry: _Final | _Live) -> int:
        return entry.size if isinstance(entry, _Final) else len(entry.data)

    def _put(self, task_id: str, entry: _Final | _Live) -> None:
        old = self._entries.pop(task_id, None)
        if old is not None:
            self._bytes -= self._size(old)
        self._entries[task_id] = entry
        self._bytes += self._size(entry)
        if isinstance(entry, _Live):
            self._live_ids.add(task_id)
        else:
            self._live_ids.discard(task_id)
        self._evict()

    def _evict(self) -> None:
        while self._bytes > self._max_bytes and len(self._entries) > 1:
            task_id, evicted = self._entries.popitem(last=False)
            self._bytes -= self._size(evicted)
            self._live_ids.discard(task_id)

    def watch(self, owner: str) -> None:
        """`owner` reads its output stream (WatchFinished with watch_output). A new stream
        starts with what the owner's running tasks printed so far (kept here), so output that
        came before its first read is not missed."""
        if self.streams.watch(owner):
            for task_id in list(self._live_ids):
                entry = self._entries[task_id]
                if isinstance(entry, _Live) and entry.owner == owner and entry.data:
                    self.streams.append(owner, entry.chunk(task_id, entry.base, bytes(entry.data)))

    def add(self, task_id: str, output: pb.TaskOutput, attempt: int = 0) -> None:
        """Keep a task's final output (replacing an earlier attempt's and the live output);
        evict the oldest to fit."""
        self._put(task_id, _Final(output, attempt, len(output.text)))

    def add_reported(
        self, request: pb.ReportResultsRequest, task_info: Callable[[str], tuple[str, str] | None]
    ) -> None:
        """Keep the live chunks and the final outputs that came with a worker's report.
        `task_info(task_id)`: the (owner, name) of a task the controller knows, else None."""
        for chunk in request.output_chunks:
            self.add_chunk(chunk, task_info(chunk.task_id))
        for result in request.results:
            if result.HasField("output"):
                self.add(result.task_id, result.output, result.attempt)
        for direct in request.direct_tasks:
            if direct.HasField("output"):
                self.add(direct.task_id, direct.output, 1)

    def add_chunk(self, chunk: pb.TaskOutputChunk, info: tuple[str, str] | None = None) -> None:
        """Keep what a running task printed beyond what is kept already, and append that part
        to its owner's stream (owner and name from `info`, else from the chunk)."""
        task_id = chunk.task_id
        entry = self._entries.get(task_id)
        if isinstance(entry, _Final) and entry.attempt >= chunk.attempt:
            return  # late: this attempt (or a later one) has finished
        if not isinstance(entry, _Live) or entry.attempt != chunk.attempt:
            if isinstance(entry, _Live) and entry.attempt > chunk.attempt:
                return  # an earlier attempt's chunk, late
            entry = _Live(attempt=chunk.attempt)
            self._put(task_id, entry)
        owner, name = info if info is not None else (chunk.owner, chunk.name)
        entry.owner, entry.name = owner or chunk.owner, name or chunk.name
        entry.pid, entry.worker_id = chunk.pid, chunk.worker_id
        data = chunk.text.encode()
        chunk_end = chunk.offset + len(data)
        if chunk_end <= entry.end:
            return  # nothing new (a repeat)
        if chunk.offset > entry.end:  # a gap: bytes we never received
            entry.dropped += chunk.offset - entry.end
            self._bytes -= len(entry.data)
            entry.data = bytearray(data)
            entry.base = chunk.offset
            self._bytes += len(data)
            new_from = chunk.offset
            new = data
        else:
            new_from = entry.end
            new = data[entry.end - chunk.offset :]
            entry.data += new
            self._bytes += len(new)
        excess = len(entry.data) - self._task_live_bytes
        if excess > 0:
            excess = _cut(entry.data, excess)
            del entry.data[:excess]
            entry.base += excess
            self._bytes -= excess
        self._entries.move_to_end(task_id)
        self._evict()
        if new and entry.owner:
            self.streams.append(entry.owner, entry.chunk(task_id, new_from, new))

    def get(self, task_id: str) -> pb.TaskOutput | None:
        """A finished task's output (None while it runs, or when it printed nothing)."""
        entry = self._entries.get(task_id)
        return entry.output if isinstance(entry, _Final) else None

    def has_live(self, task_id: str) -> bool:
        return isinstance(self._entries.get(task_id), _Live)

    def text_from(self, task_id: str, offset: int) -> TaskText | None:
        """The output from byte `offset` on (or from the oldest byte kept; from the start when
        `offset` is past the end: a new attempt started again), final or live; None if none."""
        entry = self._entries.get(task_id)
        if entry is None:
            return None
        if isinstance(entry, _Final):
            out = entry.output
            data = out.text.encode()
            base, pid, worker_id = out.dropped_bytes, out.pid, out.worker_id
        else:
            data, base, pid, worker_id = bytes(entry.data), entry.base, entry.pid, entry.worker_id
        end = base + len(data)
        start = base if offset > end else max(offset, base)
        skip = _cut(data, start - base)
        return TaskText(
            finished=isinstance(entry, _Final),
            start=base + skip,
            end=end,
            text=data[skip:].decode(errors="replace"),
            pid=pid,
            worker_id=worker_id,
        )

    def fill(self, tasks: list[pb.Task]) -> list[pb.Task]:
        """`tasks` with their outputs set (for WatchFinished answers)."""
        for task in tasks:
            output = self.get(task.task_id)
            if output is not None:
                task.output.CopyFrom(output)
        return tasks


@dataclass
class _Stream:
    """One owner's recent chunks: `chunks[i]` is at position `base + i`."""

    last_read: float
    base: int = 0
    chunks: deque[pb.TaskOutputChunk] = field(default_factory=deque)
    bytes: int = 0

    @property
    def end(self) -> int:
        return self.base + len(self.chunks)

    def pop(self) -> None:
        self.bytes -= len(self.chunks.popleft().text)
        self.base += 1


class OutputStreams:
    """Per owner, the live output of its tasks in arrival order, read with a cursor.

    Only owners that read (WatchFinished with watch_output) have a stream: output for an owner
    that does not watch is not kept here. Each stream keeps its last `max_bytes` / `max_chunks`;
    reading from a cursor forgets what lies before it; a cursor before what is kept reads from
    the oldest kept chunk, one past the end (positions of an earlier controller) from the
    start. An owner that has not read for `idle_seconds` is forgotten (checked at most once a
    minute, when output arrives or an owner reads).
    """

    def __init__(
        self,
        *,
        max_bytes: int = STREAM_BYTES,
        max_chunks: int = STREAM_CHUNKS,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._clock = clock or time.time
        self._max_bytes = max_bytes
        self._max_chunks = max_chunks
        self._streams: dict[str, _Stream] = {}
        self.idle_seconds = STREAM_IDLE_SECONDS
        self._expired_at = self._clock()

    def __len__(self) -> int:
        return len(self._streams)

    def watch(self, owner: str) -> bool:
        """`owner` reads its stream: keep its tasks' output from now on; True if its stream
        is new. Forgets the streams of owners that have not read for long (at most once a
        minute)."""
        now = self._clock()
        self._maybe_expire(now)
        stream = self._streams.get(owner)
        created = stream is None
        if stream is None:
            stream = self._streams[owner] = _Stream(last_read=now)
        stream.last_read = now
        return created

    def _maybe_expire(self, now: float) -> None:
        if now - self._expired_at > EXPIRE_EVERY_SECONDS:
            self._expired_at = now
            self.expire(now - self.idle_seconds)

    def append(self, owner: str, chunk: pb.TaskOutputChunk) -> None:
        self._maybe_expire(self._clock())
        stream = self._streams.get(owner)
        if stream is None:
            return  # nobody watches this owner's output
        stream.chunks.append(chunk)
        stream.bytes += len(chunk.text)
        while len(stream.chunks) > 1 and (
            stream.bytes > self._max_bytes or len(stream.chunks) > self._max_chunks
        ):
            stream.pop()

    def end(self, owner: str) -> int:
        """The position after the owner's newest chunk (0: no stream yet)."""
        stream = self._streams.get(owner)
        return 0 if stream is None else stream.end

    def has_new(self, owner: str, cursor: int) -> bool:
        """Whether reading from `cursor` would return chunks."""
        stream = self._streams.get(owner)
        if stream is None or not stream.chunks:
            return False
        return cursor < stream.end or cursor > stream.end

    def read(self, owner: str, cursor: int) -> tuple[list[pb.TaskOutputChunk], int]:
        """The owner's chunks from `cursor` on and the next cursor (creating its stream)."""
        self.watch(owner)
        stream = self._streams[owner]
        if cursor > stream.end or cursor < 0:
            cursor = stream.base  # not our positions (a restarted controller): all we have
        while stream.base < cursor:
            stream.pop()
        return list(stream.chunks), stream.end

    def expire(self, cutoff: float) -> int:
        """Forget the streams of owners that have not read since `cutoff`; how many."""
        gone = [owner for owner, s in self._streams.items() if s.last_read < cutoff]
        for owner in gone:
            del self._streams[owner]
        return len(gone)
