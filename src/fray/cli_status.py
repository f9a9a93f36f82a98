"""What `fray status`, `fray tasks` and `fray job list|status` print: a short human summary of a
cluster, tables of tasks and jobs, one job in words, or (``--json``) the controller's answers as
JSON.

Only formatting and the few read-only calls it needs (GetClusterSummary, ListWorkers,
ListActors, ListJobs); `fray.cli` and `fray.cli_job` parse the command line and handle errors.
"""

from __future__ import annotations

import shlex
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from connectrpc.code import Code
from connectrpc.errors import ConnectError
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from fray.wire.pb import controller_pb2 as pb

if TYPE_CHECKING:
    from fray.wire.controller_client import ControllerClient

__all__ = [
    "JOB_STATES",
    "TASK_STATES",
    "amounts_text",
    "job_state",
    "job_text",
    "jobs_text",
    "requirements_text",
    "status_json",
    "status_text",
    "tasks_text",
]

# Task states as `fray tasks --state` takes them, in the order a task goes through them.
TASK_STATES = ("PENDING", "ASSIGNED", "RUNNING", "COMPLETED", "FAILED", "CANCELLED")
# Job states as `fray job list --state` takes them.
JOB_STATES = ("PENDING", "RUNNING", "SUCCEEDED", "FAILED", "KILLED")
_SIZE_KEYS = ("memory", "disk")  # amounts shown as sizes
_FIRST_KEYS = ("cpus", "memory", "disk", "gpus", "tpus")  # shown first, in this order
_MAX_JOBS_SHOWN = 20  # running and pending jobs listed by `fray status`


def _as_dict(message: Message) -> dict[str, Any]:
    return MessageToDict(message, always_print_fields_with_no_presence=True)


def _fetch(
    client: ControllerClient,
) -> tuple[pb.GetClusterSummaryResponse, pb.ListWorkersResponse, pb.ListActorsResponse]:
    summary = client.call(client.rpc.get_cluster_summary, pb.GetClusterSummaryRequest())
    workers = client.call(client.rpc.list_workers, pb.ListWorkersRequest())
    actors = client.call(client.rpc.list_actors, pb.ListActorsRequest())
    return summary, workers, actors


def _live_jobs(client: ControllerClient) -> list[pb.Job] | None:
    """Running and pending jobs (None from a controller without jobs)."""
    try:
        answer = client.call(client.rpc.list_jobs, pb.ListJobsRequest())
    except ConnectError as exc:
        if exc.code is Code.UNIMPLEMENTED:
            return None
        raise
    return [j for j in answer.jobs if j.state in (pb.JOB_STATE_RUNNING, pb.JOB_STATE_PENDING)]


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


def _ordered(keys: Iterable[str]) -> list[str]:
    keys = set(keys)
    return [k for k in _FIRST_KEYS if k in keys] + sorted(keys.difference(_FIRST_KEYS))


def _amount(key: str, value: float) -> str:
    """'2', '0.5', '8GiB', '1.5GiB' (sizes for memory and disk)."""
    return _size(int(value)).replace(".0", "") if key in _SIZE_KEYS else f"{value:g}"


def amounts_text(amounts: Mapping[str, float], labels: Mapping[str, str]) -> str:
    """'cpus=2,memory=8GiB,gpus=1,gpu_type=H100': what `--resources` reads ("-": nothing)."""
    parts = [f"{k}={_amount(k, amounts[k])}" for k in _ordered(amounts)]
    parts += [f"{k}={v}" for k, v in sorted(labels.items())]
    return ",".join(parts) or "-"


def requirements_text(requirements: pb.Requirements) -> str:
    """What a task, actor or job asks of its worker ("-": nothing)."""
    return amounts_text(requirements.resources, requirements.labels)


def _capacities(worker: pb.Worker) -> str:
    """'cpus 1.5/2, memory 7GiB/8GiB, gpus 0/1': free/total of what the worker offers."""
    res = worker.resources
    total = dict(res.capacities)
    if not total:  # a controller from before capacities
        total = {
            "cpus": res.cpus,
            **({"memory": float(res.memory_bytes)} if res.memory_bytes else {}),
        }
    free = dict(worker.free) if worker.free else total  # nothing held, or not reported
    return ", ".join(
        f"{k} {_amount(k, free.get(k, 0.0))}/{_amount(k, total[k])}" for k in _ordered(total)
    )


def _labels(worker: pb.Worker) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(worker.resources.labels.items())) or "-"


def _table(header: list[str], rows: Iterable[list[str]]) -> list[str]:
    rows = list(rows)
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]


def status_text(client: ControllerClient, now: float | None = None) -> str:
    """The human summary: controller, workers (slots used/total, free/total capacities, labels,
    heartbeat age), work waiting for resources nobody offers, queue depth, tasks by state, live
    actors and jobs."""
    summary, workers, actors = _fetch(client)
    return render_status(client.address, summary, workers, actors, _live_jobs(client), now)


def render_status(
    address: str,
    summary: pb.GetClusterSummaryResponse,
    workers: pb.ListWorkersResponse,
    actors: pb.ListActorsResponse,
    jobs: list[pb.Job] | None,
    now: float | None = None,
) -> str:
    """`status_text` from the controller's answers (`jobs`: running and pending ones, None when
    the controller has no jobs)."""
    now = time.time() if now is None else now
    lines = [
        f"controller {address} (id {summary.controller_id})",
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
                    _capacities(w),
                    _labels(w),
                    age(beat) + " ago",
                    "draining" if w.draining else "",
                ]
            )
        header = ["  WORKER", "SLOTS USED", "FREE/TOTAL", "LABELS", "HEARTBEAT", ""]
        lines += _table(header, rows)
    for reason, count in sorted(summary.unplaceable.items(), key=lambda kv: (-kv[1], kv[0])):
        lines.append(f"waiting: {count} (tasks, actors, job replicas): {reason}")
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
    jobs_by_state = {
        k.upper().removeprefix("JOB_STATE_"): v for k, v in summary.jobs_by_state.items()
    }
    lines.append("jobs: " + ", ".join(f"{s.lower()} {jobs_by_state.get(s, 0)}" for s in JOB_STATES))
    if jobs:
        shown = sorted(
            jobs, key=lambda j: (j.state != pb.JOB_STATE_RUNNING, j.submitted_at.ToNanoseconds())
        )
        lines += ["  " + line for line in jobs_text(shown[:_MAX_JOBS_SHOWN], now).splitlines()]
        if len(shown) > _MAX_JOBS_SHOWN:
            lines.append(f"  ... and {len(shown) - _MAX_JOBS_SHOWN} more (`fray job list`)")
    lines.append(f"clients: {summary.active_clients} with unfinished tasks")
    lines.append(f"objects: {summary.objects} ({_size(summary.object_bytes)})")
    return "\n".join(lines)


def tasks_text(tasks: Iterable[pb.Task], now: float | None = None) -> str:
    """A table of tasks: id, name, state, worker, attempts, age (since submitted), and what it
    needs of its worker (with, for a pending task no worker could run, why)."""
    now = time.time() if now is None else now
    rows = []
    for t in tasks:
        needs = requirements_text(t.requirements)
        if t.pending_reason:
            needs = f"{needs} (waiting: {t.pending_reason})"
        rows.append(
            [
                t.task_id,
                t.name or "-",
                pb.TaskState.Name(t.state).removeprefix("TASK_STATE_")
                + (" (direct)" if t.direct else ""),
                t.worker_id or "-",
                str(t.attempts),
                age(now - t.submitted_at.ToNanoseconds() / 1e9),
                needs,
            ]
        )
    if not rows:
        return "no tasks"
    header = ["TASK", "NAME", "STATE", "WORKER", "ATTEMPTS", "AGE", "NEEDS"]
    return "\n".join(_table(header, rows))


# ---------------------------------------------------------------------- jobs


def job_state(state: int) -> str:
    """'RUNNING' for JOB_STATE_RUNNING."""
    return pb.JobState.Name(state).removeprefix("JOB_STATE_")  # type: ignore[arg-type]


def _first_line(text: str, limit: int = 80) -> str:
    line = text.strip().splitlines()[-1] if text.strip() else ""  # a traceback's last line
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _where(job: pb.Job) -> str:
    """Where a job runs, or why it waits or failed."""
    if job.state == pb.JOB_STATE_PENDING:
        return job.pending_reason or "waiting for free resources"
    if job.state == pb.JOB_STATE_RUNNING:
        workers = sorted({r.worker_id for r in job.replica_states if r.worker_id})
        more = f" +{len(workers) - 3} more" if len(workers) > 3 else ""
        return ("on " + ",".join(workers[:3]) + more) if workers else "starting"
    if job.state == pb.JOB_STATE_FAILED:
        return _first_line(job.error) or "-"
    return "-"


def _seconds(stamp: Any) -> float:
    return float(stamp.ToNanoseconds()) / 1e9


def jobs_text(jobs: Iterable[pb.Job], now: float | None = None) -> str:
    """A table of jobs: id, name, state, replicas, age (since submitted), where it runs (or why
    it waits, or how it failed)."""
    now = time.time() if now is None else now
    rows = [
        [
            j.job_id,
            j.name or "-",
            job_state(j.state),
            str(j.replicas),
            age(now - _seconds(j.submitted_at)),
            _where(j),
        ]
        for j in jobs
    ]
    if not rows:
        return "no jobs"
    return "\n".join(_table(["JOB", "NAME", "STATE", "REPLICAS", "AGE", "WHERE/WHY"], rows))


def job_text(job: pb.Job, now: float | None = None) -> str:
    """One job in words: state, command, needs, times, why it waits, its error, each replica."""
    now = time.time() if now is None else now
    lines = [f"job {job.job_id} ({job.name}): {job_state(job.state)}"]
    lines.append("command: " + (shlex.join(job.command) if job.command else "(a Python function)"))
    lines.append(f"replicas: {job.replicas}, each needs: {requirements_text(job.requirements)}")
    times = [f"submitted {age(now - _seconds(job.submitted_at))} ago"]
    if job.HasField("started_at"):
        times.append(f"started {age(now - _seconds(job.started_at))} ago")
    if job.HasField("finished_at"):
        times.append(f"finished {age(now - _seconds(job.finished_at))} ago")
    lines.append(", ".join(times) + (f" (owner {job.owner})" if job.owner else ""))
    if job.state == pb.JOB_STATE_PENDING:
        lines.append("waiting: " + (job.pending_reason or "for free resources on the workers"))
    if job.error:
        lines.append("error: " + job.error.rstrip("\n").replace("\n", "\n  "))
    for r in job.replica_states:
        where = f" on {r.worker_id}" if r.worker_id else ""
        detail = f", pid {r.pid}" if r.pid else ""
        if r.state in (pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_KILLED):
            detail += f", exit code {r.exit_code}" if r.pid or r.exit_code else ""
            if r.state == pb.JOB_STATE_FAILED and r.error:
                detail += f": {_first_line(r.error)}"
        lines.append(f"replica {r.index}: {job_state(r.state)}{where}{detail}")
    return "\n".join(lines)
