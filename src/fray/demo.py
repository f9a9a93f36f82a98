"""fray's main job, end to end: a controller, workers, and work submitted through
`create_job_ctx("fray")`, all on loopback, then a clean shutdown.

The job estimates pi by Monte Carlo: a shared configuration is stored once with `put`, many tasks
sample points, and the results are gathered as they finish (with a progress bar). It also shows a
task error coming back with its original type, and an actor keeping a running total.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any

from fray.client.context import FrayContext
from fray.job import create_job_ctx, progress
from fray.local_cluster import LocalFrayCluster

logger = logging.getLogger(__name__)


def sample_pi(seed: int, config: dict[str, Any]) -> tuple[int, int]:
    """Throw `config['samples']` darts; return (hits inside the quarter circle, throws)."""
    rng = random.Random(seed)
    n = config["samples"]
    inside = sum(1 for _ in range(n) if rng.random() ** 2 + rng.random() ** 2 <= 1.0)
    return inside, n


def check_positive(x: int) -> int:
    if x <= 0:
        raise ValueError(f"{x} is not positive")
    return x


class Tally:
    """An actor: keeps a running total between calls."""

    def __init__(self) -> None:
        self.total = 0

    def add(self, x: int) -> int:
        self.total += x
        return self.total


def main(workers: int = 2, tasks: int = 200) -> int:
    started = time.perf_counter()
    print(f"starting a local fray cluster: 1 controller + {workers} workers (loopback)")
    with LocalFrayCluster(workers=workers, concurrency=1) as cluster:
        print(f"controller at {cluster.address}")
        ctx = create_job_ctx("fray", controller_address=cluster.address)
        assert isinstance(ctx, FrayContext)
        try:
            config = ctx.put({"samples": 20_000})
            futures = [ctx.run(sample_pi, seed, config) for seed in range(tasks)]
            progress(futures, ctx)  # a bar until all are done
            results = ctx.get(futures)
            inside, total = sum(hits for hits, _ in results), sum(n for _, n in results)
            print(f"pi ~= {4 * inside / total:.5f} from {total:,} samples in {tasks} tasks")

            ready, pending = ctx.wait(
                [ctx.run(check_positive, 1), ctx.run(check_positive, 2)], num_returns=2, timeout=30
            )
            print(f"wait(): {len(ready)} ready, {len(pending)} pending -> {ctx.get(ready)}")
            try:
                ctx.get(ctx.run(check_positive, -1))
            except ValueError as exc:
                print(f"a failing task raised ValueError at the caller, as expected: {exc}")

            tally = ctx.create_actor(Tally, name="tally")
            totals = ctx.get([tally.add.remote(x) for x in range(1, 11)])
            print(f"actor 'tally': running totals {totals}")
        finally:
            ctx.close()
        codes = cluster.stop()
    print(f"shut down: exit codes {codes}")
    print(f"done in {time.perf_counter() - started:.1f}s")
    return 0 if all(code == 0 for code in codes.values()) else 1
