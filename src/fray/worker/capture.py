"""Per-task output capture inside an executor process.

While a task (or an actor call) runs, `sys.stdout` and `sys.stderr` are one bounded in-memory
buffer, and a handler on the root logger writes `logging` records into it, so what the task
printed is kept apart from other tasks and travels with its result (`TaskResult.output`).

Bounded: a task keeps its last `OUTPUT_LIMIT` bytes; what came before is counted
(`dropped_bytes`), not kept, so a task printing without end costs at most ~2x that in memory.
Output written below Python's `sys.stdout` (C extensions, subprocesses writing to fd 1/2) is
not captured: it goes to the worker's own stdout/stderr, as before.
A task that prints nothing costs two attribute swaps and no allocation for the result.

Live output (`fray.worker.executor`): a buffer given a `notify` callable calls it on the first
write since the last `take_new`, and `take_new` gives what was written since the previous take
with its exact offset in everything the task printed (kept bytes start at `dropped`), so that
a reader (the executor's live-output thread) sends only new text, and only when there is some.
"""

from __future__ import annotations

import io
import logging
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from fray.wire.pb import controller_pb2 as pb

OUTPUT_LIMIT = 64 * 1024  # bytes kept per task (the last ones)

LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"

# (kept UTF-8 bytes, bytes dropped before them); None when the task printed nothing.
Output = tuple[bytes, int] | None


class TaskBuffer(io.TextIOBase):
    """A text stream keeping the last OUTPUT_LIMIT bytes written to it.

    Thread-safe (a task may print from threads of its own, and the executor's live-output
    thread takes new text while the task writes). `notify`, if given, is called (under the
    buffer's lock: it must be quick) on the first write since the last `take_new`."""

    # Defaults that a silent task's buffer never changes (cheaper than setting them each time).
    dropped = 0  # bytes written before the kept ones
    _taken = 0  # the offset up to which `take_new` gave the text
    _armed = False  # notified since the last take_new

    def __init__(
        self,
        notify: Callable[[], None] | None = None,
        lock: threading.Lock | None = None,
    ) -> None:
        """`lock`: one to share with other buffers (an executor's, made once), else a new one."""
        self._chunks: list[bytes] = []
        self._size = 0
        self._lock = threading.Lock() if lock is None else lock
        self._notify = notify

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        data = text.encode("utf-8", "backslashreplace")
        with self._lock:
            self._chunks.append(data)
            self._size += len(data)
            if self._size > 2 * OUTPUT_LIMIT:  # amortized trim: keep memory bounded
                self._trim()
            if not self._armed and self._notify is not None and data:
                self._armed = True
                self._notify()
        return len(text)

    def _trim(self) -> None:
        joined = b"".join(self._chunks)
        keep = joined[-OUTPUT_LIMIT:]
        start = 0  # do not start in the middle of a UTF-8 character
        while start < len(keep) and start < 4 and 0x80 <= keep[start] < 0xC0:
            start += 1
        keep = keep[start:]
        self.dropped += len(joined) - len(keep)
        self._chunks, self._size = [keep], len(keep)

    def output(self) -> Output:
        """What was written (the last OUTPUT_LIMIT bytes), or None if nothing was."""
        if not self._size:  # a silent task's (no lock needed to see that)
            return None
        with self._lock:
            self._trim()
            return self._chunks[0], self.dropped

    def take_new(self) -> tuple[int, bytes] | None:
        """What was written since the last take, as (offset in everything written, UTF-8
        bytes), or None if nothing was. At most the last OUTPUT_LIMIT bytes: when more came
        since the last take, the text starts at the kept bytes' offset (the gap is what was
        dropped). The next write notifies again."""
        with self._lock:
            self._armed = False
            end = self.dropped + self._size
            if end <= self._taken:
                return None
            if self._size > OUTPUT_LIMIT:
                self._trim()
            (kept,) = self._chunks = [b"".join(self._chunks)]
            start = max(self._taken, self.dropped)
            self._taken = end
            return start, kept[start - self.dropped :]


class _TaskLogHandler(logging.Handler):
    """Writes records to whatever `sys.stderr` is now (the running task's buffer)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:
            self.handleError(record)


def install_logging() -> None:
    """Make `logging` in tasks reach their output: a root handler at INFO (once per executor),
    unless the task's code configures logging itself."""
    root = logging.getLogger()
    if any(isinstance(h, _TaskLogHandler) for h in root.handlers):
        return
    handler = _TaskLogHandler()
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root.addHandler(handler)
    root.setLevel(logging.INFO)


@contextmanager
def captured(buffer: TaskBuffer | None = None) -> Iterator[TaskBuffer]:
    """Point sys.stdout/sys.stderr at `buffer` (a fresh TaskBuffer by default) while the block
    runs."""
    if buffer is None:
        buffer = TaskBuffer()
    saved = sys.stdout, sys.stderr
    sys.stdout = sys.stderr = buffer
    try:
        yield buffer
    finally:
        sys.stdout, sys.stderr = saved


def to_pb(output: Output, pid: int | None, worker_id: str) -> pb.TaskOutput | None:
    """The wire form of a task's output (worker side), or None when it printed nothing."""
    if output is None:
        return None
    data, dropped = output
    text = data.decode("utf-8", "replace")
    return pb.TaskOutput(text=text, dropped_bytes=dropped, pid=pid or 0, worker_id=worker_id)
