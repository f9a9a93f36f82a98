"""`fray logs TASK_ID [--follow]`: what a task printed, read through the controller.

The controller keeps each finished task's output as its worker reported it, and a running
task's recent output as its worker streams it (`GetTaskLogs`; in memory, bounded:
`fray.controller.task_logs`). Without `--follow`, a finished task's output (a task still running
prints nothing yet); with it, the output as it comes (long polls from the byte printed so far,
`follow`/`offset`), ending when the task ends.
"""

from __future__ import annotations

from typing import TextIO

from fray.wire.controller_client import ControllerClient
from fray.wire.pb import controller_pb2 as pb

_WAIT_MS = 10_000  # one long poll


def print_task_logs(
    client: ControllerClient, task_id: str, out: TextIO, *, follow: bool = False
) -> int:
    """Write task `task_id`'s output to `out` (as it comes, until the task ends, with
    `follow`); exit code 0."""
    if follow:
        return _follow(client, task_id, out)
    request = pb.GetTaskLogsRequest(task_id=task_id)
    output = client.call(client.rpc.get_task_logs, request).output
    if output.dropped_bytes:
        out.write(f"[fray: {output.dropped_bytes} earlier bytes of output dropped]\n")
    out.write(output.text)
    out.flush()
    return 0


def _follow(client: ControllerClient, task_id: str, out: TextIO) -> int:
    offset = 0
    while True:
        request = pb.GetTaskLogsRequest(
            task_id=task_id, wait_ms=_WAIT_MS, follow=True, offset=offset
        )
        response = client.call(client.rpc.get_task_logs, request)
        if response.HasField("output"):
            output = response.output
            start = output.dropped_bytes  # where the text starts
            if start > offset:
                out.write(f"[fray: {start - offset} bytes of output dropped]\n")
            elif start < offset:  # a new attempt started again
                out.write("[fray: the task started again]\n")
            out.write(output.text)
            out.flush()
        offset = response.next_offset
        if response.finished:
            return 0
