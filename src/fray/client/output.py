"""Printing what remote tasks printed (`log_to_driver`, as in Ray).

When a task finishes, its captured stdout/stderr/logging text (`pb.TaskOutput`, at most the
last 64 KiB per task, kept by the worker) comes with its result: in the direct path's answer,
in `WatchFinished` entries, and in actor call results. A `DriverLog` prints it to the client's
stderr, each line prefixed with where it ran::

    (score pid=4242 worker=w-1a2b task=6f3e9c01) loaded 1000 rows

Bounded: besides the per-task limit, a client prints at most `RATE_BYTES` per second of task
output (with a burst of `BURST_BYTES`); beyond that, whole task outputs are skipped and one line
says how many bytes were (`fray logs TASK_ID` still has them while the controller keeps them).
While a task runs, what it prints arrives in chunks (`pb.TaskOutputChunk`, from the owner's
output stream in `WatchFinished` answers): `DriverLog.chunk` prints its complete lines as they
come and remembers, per task, how many bytes it printed; when the task ends, `DriverLog.task`
prints only what lies beyond them (the final output's `dropped_bytes` places its text), so
nothing is printed twice, whichever way (controller or direct answer) the final output came.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TextIO

from fray.wire.pb import controller_pb2 as pb

RATE_BYTES = 1024 * 1024  # per second, all tasks together
BURST_BYTES = 4 * 1024 * 1024
MAX_LIVE_TASKS = 10_000  # tasks whose printed offsets are remembered (the oldest forgotten)


@dataclass
class _Printed:
    """A running task's live output so far: bytes up to `printed` went out; `pending` (a line
    not finished yet) follows them."""

    attempt: int
    printed: int = 0
    pending: bytearray = field(default_factory=bytearray)


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
        self._live: OrderedDict[str, _Printed] = OrderedDict()
        # Tasks whose final output was printed: their late chunks print nothing.
        self._ended: OrderedDict[str, None] = OrderedDict()

    def chunk(self, chunk: pb.TaskOutputChunk) -> None:
        """Print the complete lines of a running task's chunk not printed yet (a repeat prints
        nothing; a new attempt starts again at offset 0; bytes missed are said to be)."""
        data = chunk.text.encode()
        head = prefix(
            chunk.name, chunk.task_id, pb.TaskOutput(pid=chunk.pid, worker_id=chunk.worker_id)
        )
        with self._lock:
            if chunk.task_id in self._ended:
                return  # its final output was printed (a direct answer can beat its chunks)
            state = self._live.get(chunk.task_id)
            if state is None or chunk.attempt > state.attempt:
                state = self._live[chunk.task_id] = _Printed(chunk.attempt)
                while len(self._live) > MAX_LIVE_TASKS:
                    self._live.popitem(last=False)
            elif chunk.attempt < state.attempt:
                return  # an earlier attempt's, late
            received = state.printed + len(state.pending)
            lines = []
            if chunk.offset > received:  # bytes we never got: finish the line, say so
                if state.pending:
                    lines.append(f"{head} {state.pending.decode(errors='replace')}")
                lines.append(f"{head} [fray: {chunk.offset - received} bytes of output dropped]")
                state.pending.clear()
                state.printed = chunk.offset
                received = chunk.offset
            if chunk.offset + len(data) <= received:
                return
            state.pending += data[received - chunk.offset :]
            cut = state.pending.rfind(b"\n") + 1
            if cut:
                text = state.pending[:cut].decode(errors="replace")
                lines.extend(f"{head} {line}" for line in text.splitlines())
                del state.pending[:cut]
                state.printed += cut
            if lines:
                self._write_locked("".join(line + "\n" for line in lines), cut)

    def task(self, name: str, task_id: str, output: pb.TaskOutput) -> None:
        """Print one finished task's output (nothing if it printed nothing), without what its
        live chunks printed already."""
        with self._lock:
            state = self._live.pop(task_id, None)
            self._ended[task_id] = None
            while len(self._ended) > MAX_LIVE_TASKS:
                self._ended.popitem(last=False)
        if state is not None and state.printed:
            data = output.text.encode()
            skip = state.printed - output.dropped_bytes  # bytes of `text` printed already
            if skip >= len(data):
                return
            if skip > 0:
                output = pb.TaskOutput(
                    text=data[skip:].decode(errors="replace"),
                    pid=output.pid,
                    worker_id=output.worker_id,
                )
            else:  # printed less than where the text starts: what lies between is dropped
                output = pb.TaskOutput(
                    text=output.text,
                    dropped_bytes=-skip,
                    pid=output.pid,
                    worker_id=output.worker_id,
                )
        if not output.text and not output.dropped_bytes:
            return
        with self._lock:
            self._write_locked(render(name, task_id, output), len(output.text))

    def _write_locked(self, text: str, size: int) -> None:
        """Write `text` (`size` bytes of task output) unless over the rate. Holds _lock."""
        now = time.monotonic()
        self._allowance = min(BURST_BYTES, self._allowance + (now - self._last) * RATE_BYTES)
        self._last = now
        if size > self._allowance:
            self._skipped += size
            return
        self._allowance -= size
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
