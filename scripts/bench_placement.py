"""What resource-aware placement costs a lease: `ControllerState.lease` in process, no RPC.

Usage:
    .venv/bin/python scripts/bench_placement.py [--workers 1000] [--tasks 100000]
        [--leases 3000] [--rounds 3] [--seed 1]

A cluster of --workers workers with mixed offers (most CPU-only, some with GPUs and a
`gpu_type` label, a few with TPUs in one zone) and --tasks queued tasks in a handful of
distinct needs (mostly none). Each scenario times --leases lease calls (a worker with 8 slots
and no prefetch takes up to 8 tasks a call; the tasks it got are then reported done, untimed,
so that it has room again), --rounds times on the same queue, and prints the round with the
lowest mean (a shared machine's noise only ever adds): mean, p50 and p99 in µs per call, and the
mean per task leased:

    plain          every task asks for nothing, CPU-only workers lease
    mixed          the mix below, random workers lease
    fits nothing   only GPU/TPU tasks queued, a CPU-only worker leases (and gets none)

Run against an older fray (PYTHONPATH=old/src) it measures the plain scenario only (the API
without needs), for a before/after figure of the common case.
"""

from __future__ import annotations

import argparse
import inspect
import random
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from fray.controller.records import TaskOutcome, TaskSpec
from fray.controller.state import ControllerState

try:
    from fray.controller.placement import NOTHING, Need
except ImportError:  # an older fray: plain tasks only
    Need = None  # type: ignore[assignment,misc]
    NOTHING = None  # type: ignore[assignment]

SLOTS = 8
HAS_NEEDS = (
    Need is not None
    and "capacities" in inspect.signature(ControllerState.register_worker).parameters
)


def needs_mix() -> list[tuple[float, Any]]:
    """(share of the tasks, need): mostly nothing."""
    assert Need is not None
    return [
        (0.90, NOTHING),
        (0.04, Need.of({"cpus": 2})),
        (0.03, Need.of({"gpus": 1})),
        (0.02, Need.of({"gpus": 1}, {"gpu_type": "H100"})),
        (0.01, Need.of({"tpus": 4}, {"zone": "us-east1"})),
    ]


def offer(i: int, workers: int) -> tuple[dict[str, float], dict[str, str]]:
    """Worker i's capacities and labels: 8% GPU workers, 2% TPU workers, the rest CPU-only."""
    if i < workers * 0.08:
        return {"cpus": 32, "gpus": 8, "memory": 256e9}, {"gpu_type": "H100" if i % 2 else "A100"}
    if i < workers * 0.10:
        return {"cpus": 32, "tpus": 8, "memory": 256e9}, {"zone": "us-east1"}
    return {"cpus": 16, "memory": 64e9}, {}


def build(workers: int) -> tuple[ControllerState, list[str]]:
    state = ControllerState(heartbeat_timeout=1e9, max_finished_tasks=1_000)
    ids = []
    for i in range(workers):
        capacities, labels = offer(i, workers)
        extra: dict[str, Any] = {"capacities": capacities} if HAS_NEEDS else {}
        worker = state.register_worker(
            worker_id=f"w{i}", slots=SLOTS, labels=labels, cpus=capacities["cpus"], **extra
        )
        ids.append(worker.worker_id)
    return state, ids


def fill(state: ControllerState, tasks: int, pick: Callable[[], Any]) -> None:
    """Queue `tasks` more tasks, each with the need `pick` gives."""
    batch = []
    for i in range(tasks):
        need = pick()
        kwargs = {"need": need} if HAS_NEEDS else {}
        batch.append(TaskSpec(function=b"f", args=b"a", owner="bench", **kwargs))
        if len(batch) == 10_000 or i == tasks - 1:
            state.submit(batch)
            batch = []


def measure(
    state: ControllerState, pick_worker: Callable[[], str], leases: int
) -> tuple[list[float], int]:
    """Time `leases` lease calls; returns the µs of each, and the tasks leased in all."""
    times, leased_total = [], 0
    clock = time.perf_counter_ns
    for _ in range(leases):
        worker_id = pick_worker()
        start = clock()
        leased, _ = state.lease(worker_id, prefetch=0)
        times.append((clock() - start) / 1000)
        leased_total += len(leased)
        if leased:
            state.report(worker_id, [TaskOutcome(t.task_id, t.attempts, value=b"") for t in leased])
    return times, leased_total


def best_of(
    args: argparse.Namespace,
    state: ControllerState,
    pick_need: Callable[[], Any],
    pick_worker: Callable[[], str],
) -> tuple[list[float], int]:
    """The round with the lowest mean; the queue is topped up to --tasks before each."""
    runs = []
    for _ in range(args.rounds):
        fill(state, args.tasks - state.queue_depth, pick_need)
        runs.append(measure(state, pick_worker, args.leases))
    return min(runs, key=lambda run: statistics.fmean(run[0]))


def row(name: str, times: list[float], leased: int) -> str:
    times_sorted = sorted(times)
    p50 = times_sorted[len(times_sorted) // 2]
    p99 = times_sorted[min(len(times_sorted) - 1, int(len(times_sorted) * 0.99))]
    mean = statistics.fmean(times)
    per_task = f"{sum(times) / leased:,.2f}" if leased else "-"
    return (
        f"| {name} | {len(times):,} | {leased / len(times):.1f} | {mean:,.1f} | {p50:,.1f} "
        f"| {p99:,.1f} | {per_task} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=1_000)
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--leases", type=int, default=3_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    cpu_only = [f"w{i}" for i in range(args.workers) if i >= args.workers * 0.10]
    lines = [
        f"{args.workers:,} workers, {args.tasks:,} tasks queued, {SLOTS} slots a worker, "
        f"{'with' if HAS_NEEDS else 'WITHOUT'} needs (Python {sys.version.split()[0]})",
        "",
        "| scenario | lease calls | tasks a call | mean µs/call | p50 µs/call | p99 µs/call "
        "| µs/task |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]

    state, _ = build(args.workers)
    plain = best_of(args, state, lambda: NOTHING, lambda: rng.choice(cpu_only))
    lines.append(row("plain", *plain))

    if HAS_NEEDS:
        mix = needs_mix()
        shares, kinds = [s for s, _ in mix], [n for _, n in mix]
        state, ids = build(args.workers)
        mixed = best_of(args, state, lambda: rng.choices(kinds, shares)[0], lambda: rng.choice(ids))
        lines.append(row("mixed", *mixed))

        state, _ = build(args.workers)
        special = [n for n in kinds if n is not NOTHING and "cpus" not in dict(n.resources)]
        times, leased = best_of(
            args, state, lambda: rng.choice(special), lambda: rng.choice(cpu_only)
        )
        assert leased == 0, "a CPU-only worker got GPU/TPU work"
        lines.append(row("fits nothing", times, leased))
        reasons = state.unplaceable()
        start = time.perf_counter_ns()
        state.unplaceable()
        lines += [
            "",
            f"GetClusterSummary's unplaceable over that queue: "
            f"{(time.perf_counter_ns() - start) / 1000:,.0f} µs ({dict(reasons) or 'none'})",
        ]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
