"""Printing what remote tasks printed (`log_to_driver`, as in Ray).

When a task finishes, its captured stdout/stderr/logging text (`pb.TaskOutput`, at most the
last 64 KiB per task, kept by the worker) comes with its result: in the direct path's answer,
in `WatchFinished` entries, and in actor call results. A `DriverLog` prints it to the client's
stderr, each line prefixed with where it ran::

    (score pid=4242 worker=w-1a2b task=6f3e9c01) loaded 1000 rows

Bounded: besides the per-task limit, a client prints at most `RATE_BYTES` per second of task
output (with a burst of `BURST_BYTES`); beyond that, whole task outputs are skipped and one line
says how many bytes were (`fray logs TASK_ID` still has them while the controller keeps them).
Output is printed when a task ends, not while it runs.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

from fray.wire.pb import controller_pb2 as pb

RATE_BYTES = 1024 * 1024  # per second, all tasks together
BURST_BYTES = 4 * 1024 * 1024


def prefix(name: str, task_id: str, output: pb.TaskOutput) -> str:
    """`(name pid=... worker=... task=...)`: where a line of output came from."""
    return f"({name} pid={output.pid} worker={output.worker_id} task={task_id})"


def render(name: str, task_id: str, output: pb.TaskOutput) -> str:
    """The output as lines, each prefixed; a first line says how much was dropped."""
    head = prefix(name, task_id, output)
    lines = []
    if output.dropped_bytes:
        lines.append(f"{head} [fray: {output.dropped_bytes} earlier bytes of output dropped]")
    lines.extend(f"{head} {line}" for line in output.text.splitlines())
    return "".join(line + "\n" for line in lines)


class DriverLog:
    """Prints tasks' outputs to `stream` (default: sys.stderr at the time), rate limited."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self._allowance = float(BURST_BYTES)
        self._last = time.monotonic()
        self._skipped = 0

    def task(self, name: str, task_id: str, output: pb.TaskOutput) -> None:
        """Print one finished task's output (nothing if it printed nothing)."""
        if not output.text and not output.dropped_bytes:
            return
        text = render(name, task_id, output)
        with self._lock:
            now = time.monotonic()
            self._allowance = min(BURST_BYTES, self._allowance + (now - self._last) * RATE_BYTES)
            self._last = now
            if len(output.text) > self._allowance:
                self._skipped += len(output.text)
                return
            self._allowance -= len(output.text)
            if self._skipped:
                text = (
                    f"[fray: {self._skipped} bytes of task output not printed (more than "
                    f"{RATE_BYTES} bytes/s); see `fray logs TASK_ID`]\n" + text
                )
                self._skipped = 0
            stream = self._stream or sys.stderr
            try:
                stream.write(text)
                stream.flush()
            except (OSError, ValueError):  # a closed stream: nothing to print to
                pass
