"""Per-task output capture inside an executor process.

While a task (or an actor call) runs, `sys.stdout` and `sys.stderr` are one bounded in-memory
buffer, and a handler on the root logger writes `logging` records into it, so what the task
printed is kept apart from other tasks and travels with its result (`TaskResult.output`).

Bounded: a task keeps its last `OUTPUT_LIMIT` bytes; what came before is counted
(`dropped_bytes`), not kept, so a task printing without end costs at most ~2x that in memory.
Output written below Python's `sys.stdout` (C extensions, subprocesses writing to fd 1/2) is
not captured: it goes to the worker's own stdout/stderr, as before.
A task that prints nothing costs two attribute swaps and no allocation for the result.
"""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from fray.wire.pb import controller_pb2 as pb

OUTPUT_LIMIT = 64 * 1024  # bytes kept per task (the last ones)

LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"

# (kept UTF-8 bytes, bytes dropped before them); None when the task printed nothing.
Output = tuple[bytes, int] | None


class TaskBuffer(io.TextIOBase):
    """A text stream keeping the last OUTPUT_LIMIT bytes written to it."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._size = 0
        self.dropped = 0

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
        self._chunks.append(data)
        self._size += len(data)
        if self._size > 2 * OUTPUT_LIMIT:  # amortized trim: keep memory bounded
            self._trim()
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
        if not self._size:
            return None
        self._trim()
        return self._chunks[0], self.dropped


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
def captured() -> Iterator[TaskBuffer]:
    """Point sys.stdout/sys.stderr at a fresh TaskBuffer while the block runs."""
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
