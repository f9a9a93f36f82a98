"""What tasks printed, as their workers reported it (`GetTaskLogs`, `WatchFinished`).

Each finished task's captured stdout/stderr/logging text (`pb.TaskOutput`, at most 64 KiB per
task: the worker keeps the last part) arrives with its result in `ReportResults`, for leased
and direct tasks alike. The controller keeps the outputs of the most recent tasks, up to
`DEFAULT_LOG_BYTES` in all, evicting the oldest first.

Not durable: the outputs live in memory only (they are not part of the journal) and are gone
after a controller restart; a task whose output is evicted or lost answers with no output.
Actor method calls go from client to worker and back without the controller: their output is
printed by the client but not kept here.
"""

from __future__ import annotations

from collections import OrderedDict

from fray.wire.pb import controller_pb2 as pb

DEFAULT_LOG_BYTES = 64 * 1024 * 1024  # all tasks' outputs together


class TaskLogs:
    """A bounded map of task id -> its output (the most recently reported kept)."""

    def __init__(self, max_bytes: int = DEFAULT_LOG_BYTES) -> None:
        self._max_bytes = max_bytes
        self._outputs: OrderedDict[str, pb.TaskOutput] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._outputs)

    @property
    def size(self) -> int:
        """Bytes of output kept."""
        return self._bytes

    def add(self, task_id: str, output: pb.TaskOutput) -> None:
        """Keep a task's output (replacing an earlier attempt's); evict the oldest to fit."""
        old = self._outputs.pop(task_id, None)
        if old is not None:
            self._bytes -= len(old.text)
        self._outputs[task_id] = output
        self._bytes += len(output.text)
        while self._bytes > self._max_bytes and len(self._outputs) > 1:
            _, evicted = self._outputs.popitem(last=False)
            self._bytes -= len(evicted.text)

    def add_reported(self, request: pb.ReportResultsRequest) -> None:
        """Keep the outputs that came with a worker's report."""
        for result in request.results:
            if result.HasField("output"):
                self.add(result.task_id, result.output)
        for direct in request.direct_tasks:
            if direct.HasField("output"):
                self.add(direct.task_id, direct.output)

    def get(self, task_id: str) -> pb.TaskOutput | None:
        return self._outputs.get(task_id)

    def fill(self, tasks: list[pb.Task]) -> list[pb.Task]:
        """`tasks` with their outputs set (for WatchFinished answers)."""
        for task in tasks:
            output = self._outputs.get(task.task_id)
            if output is not None:
                task.output.CopyFrom(output)
        return tasks
