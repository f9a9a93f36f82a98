"""What `fray status` and `fray tasks` print: a short human summary of a cluster, a table of
tasks, or (``--json``) the controller's answers as JSON.

Only formatting and the few read-only calls it needs (GetClusterSummary, ListWorkers,
ListActors, ListTasks); `fray.cli` parses the command line and handles errors.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from fray.wire.pb import controller_pb2 as pb

if TYPE_CHECKING:
    from fray.wire.controller_client import ControllerClient

__all__ = ["TASK_STATES", "status_json", "status_text", "tasks_text"]

# Task states as `fray tasks --state` takes them, in the order a task goes through them.
TASK_STATES = ("PENDING", "ASSIGNED", "RUNNING", "COMPLETED", "FAILED", "CANCELLED")


def _as_dict(message: Message) -> dict[str, Any]:
    return MessageToDict(message, always_print_fields_with_no_presence=True)


def _fetch(
    client: ControllerClient,
) -> tuple[pb.GetClusterSummaryResponse, pb.ListWorkersResponse, pb.ListActorsResponse]:
    summary = client.call(client.rpc.get_cluster_summary, pb.GetClusterSummaryRequest())
    workers = client.call(client.rpc.list_workers, pb.ListWorkersRequest())
    actors = client.call(client.rpc.list_actors, pb.ListActorsRequest())
    return summary, workers, actors


def status_json(client: ControllerClient) -> dict[str, Any]:
    """The machine form: {"summary": ..., "workers": [...], "actors": [...]} (proto3 JSON)."""
    summary, workers, actors = _fetch(client)
    return {
        "summary": _as_dict(summary),
        "workers": _as_dict(workers)["workers"],
        "actors": _as_dict(actors)["actors"],
    }


def age(seconds: float) -> str:
    """'0.4s', '12s', '3m05s', '2h10m', '3d4h'."""
    seconds = max(0.0, seconds)
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600}h"


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{n}B"  # unreachable


def _resources(worker: pb.Worker) -> str:
    res = worker.resources
    parts = [f"cpus={res.cpus:g}"]
    if res.memory_bytes:
        parts.append(f"memory={_size(res.memory_bytes)}")
    parts += [f"{k}={v}" for k, v in sorted(res.labels.items())]
    return ",".join(parts)


def _table(header: list[str], rows: Iterable[list[str]]) -> list[str]:
    rows = list(rows)
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]


def status_text(client: ControllerClient, now: float | None = None) -> str:
    """The human summary: controller, workers (slots used/total, resources, heartbeat age),
    queue depth, tasks by state, live actors and jobs."""
    summary, workers, actors = _fetch(client)
    now = time.time() if now is None else now
    lines = [
        f"controller {client.address} (id {summary.controller_id})",
        f"workers: {summary.workers}, slots busy {summary.busy_slots}/{summary.total_slots}",
    ]
    if workers.workers:
        rows = []
        for w in workers.workers:
            beat = now - w.last_heartbeat.ToNanoseconds() / 1e9
            held = len(w.task_ids) + w.direct_running
            waiting = max(0, held - w.busy_slots)
            rows.append(
                [
                    "  " + w.worker_id,
                    f"{w.busy_slots}/{w.slots}" + (f" (+{waiting} waiting)" if waiting else ""),
                    _resources(w),
                    age(beat) + " ago",
                    "draining" if w.draining else "",
                ]
            )
        lines += _table(["  WORKER", "SLOTS USED", "RESOURCES", "HEARTBEAT", ""], rows)
    counts = summary.tasks_by_state
    by_state = ", ".join(f"{s.lower()} {counts.get(s, 0)}" for s in TASK_STATES)
    direct = sum(w.direct_running for w in workers.workers)  # known to the controller when done
    if direct:
        by_state = by_state.replace(", completed", f" (+{direct} direct), completed")
    lines.append(f"queue depth: {summary.queue_depth}")
    lines.append(f"tasks: {by_state}")
    live = Counter(
        pb.ActorState.Name(a.state).removeprefix("ACTOR_STATE_").lower()
        for a in actors.actors
        if a.state not in (pb.ACTOR_STATE_FAILED, pb.ACTOR_STATE_DEAD)
    )
    detail = ", ".join(f"{state} {n}" for state, n in sorted(live.items()))
    lines.append(f"actors: {sum(live.values())} live" + (f" ({detail})" if detail else ""))
    lines.append(f"jobs: {summary.active_clients} with unfinished tasks")
    lines.append(f"objects: {summary.objects} ({_size(summary.object_bytes)})")
    return "\n".join(lines)


def tasks_text(tasks: Iterable[pb.Task], now: float | None = None) -> str:
    """A table of tasks: id, name, state, worker, attempts, age (since submitted)."""
    now = time.time() if now is None else now
    rows = [
        [
            t.task_id,
            t.name or "-",
            pb.TaskState.Name(t.state).removeprefix("TASK_STATE_")
            + (" (direct)" if t.direct else ""),
            t.worker_id or "-",
            str(t.attempts),
            age(now - t.submitted_at.ToNanoseconds() / 1e9),
        ]
        for t in tasks
    ]
    if not rows:
        return "no tasks"
    return "\n".join(_table(["TASK", "NAME", "STATE", "WORKER", "ATTEMPTS", "AGE"], rows))
