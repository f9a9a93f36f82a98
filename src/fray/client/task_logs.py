"""`fray logs TASK_ID [--follow]`: what a task printed, read through the controller.

The controller keeps each finished task's output as its worker reported it (`GetTaskLogs`;
in memory, bounded: `fray.controller.task_logs`). Output arrives when the task finishes, so
`--follow` waits (in long polls) for the task to finish and then prints it; without it, a task
still running prints nothing yet.
"""

from __future__ import annotations

from typing import TextIO

from fray.wire.controller_client import ControllerClient
from fray.wire.pb import controller_pb2 as pb

_WAIT_MS = 10_000  # one long poll


def print_task_logs(
    client: ControllerClient, task_id: str, out: TextIO, *, follow: bool = False
) -> int:
    """Write task `task_id`'s output to `out` (after it finishes, with `follow`); exit code 0."""
    request = pb.GetTaskLogsRequest(task_id=task_id, wait_ms=_WAIT_MS if follow else 0)
    while True:
        response = client.call(client.rpc.get_task_logs, request)
        if response.finished or not follow:
            break
    output = response.output
    if output.dropped_bytes:
        out.write(f"[fray: {output.dropped_bytes} earlier bytes of output dropped]\n")
    out.write(output.text)
    out.flush()
    return 0
