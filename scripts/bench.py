"""Benchmark fray's backends against each other through the JobContext API.

Usage:
    .venv/bin/python scripts/bench.py [--backends fray,ray,threadpool] [--tasks 10000]
        [--round-trips 1000] [--object-mb 100] [--repeat 3] [-q/--quiet]

Backends, measured one at a time (each is shut down before the next starts; Ray last):
    fray        LocalFrayCluster(workers=2, concurrency=1) + create_job_ctx("fray")
    ray         ray.init(num_cpus=2) + create_job_ctx("ray")
    threadpool  create_job_ctx("threadpool", max_workers=2)

Workloads (the same code for every backend; only ctx.run, ctx.get and ctx.put):
    throughput    submit --tasks no-op tasks, then one get of the list; tasks/s, best of --repeat
                  (fray: also with durable controller state, `--state` on a temporary file, in
                  a second cluster; runs alternate between the two, so that the machine's
                  noise hits both alike)
    round trip    ctx.get(ctx.run(noop)), --round-trips times one at a time; p50 and p99 in ms
    large object  ctx.put(--object-mb MB), then ctx.get(ctx.run(len, ref)); MB/s, best of --repeat
                  (bytes, then a float64 numpy array of the same size with ctx.run(nbytes, ref))
    actor call    ctx.get(actor.ping.remote()), --round-trips times one at a time; p50 in ms
    actor calls   --actor-calls calls to one actor submitted at once, then one get; calls/s,
                  best of --repeat

Progress goes to stderr, the Markdown table to stdout. A backend that fails shows its error in the
table instead of stopping the run (the exit status is then 1). --quiet sets every log (this
process, Ray, fray's controller and workers) to WARNING.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.metadata
import logging
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import cloudpickle

BACKENDS = ("fray", "ray", "threadpool")
TARGET_TASKS_PER_S = 10_000.0  # no-op tasks, controller + 2 workers on 2 cores (issue 11)
TARGET_P50_MS = 1.0
TARGET_ACTOR_P50_MS = 0.6
# Against Ray in the same run (issue 11): fray's one-at-a-time latencies at most these shares.
TARGET_P50_VS_RAY = 0.4
TARGET_ACTOR_P50_VS_RAY = 0.6
TARGET_ACTOR_CALLS_PER_S = 8_000.0
TARGET_DURABLE_SHARE = 0.7  # durable controller state keeps this share of the throughput
TARGET_OBJECT_VS_RAY = 1.5  # 100 MB put+task, bytes and numpy, at least this times Ray's (issue 11)
WARMUP_TASKS = 200
WARMUP_ROUND_TRIPS = 100
GET_TIMEOUT = 600.0  # seconds for any single get: a stuck backend fails instead of hanging
MB = 1_000_000

# Remote workers cannot import this script: ship its functions by value. (Run as a script this
# module is __main__, which cloudpickle already pickles by value; this also covers `import bench`.)
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def noop() -> None:
    """The task of the throughput and round-trip workloads."""


def nbytes(value: Any) -> int:
    """The task of the numpy large-object workload (its array is mapped, not read)."""
    return int(value.nbytes)


def whereami() -> int:
    """The process a task runs in (to check that remote tasks really run remotely)."""
    return os.getpid()


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class Result:
    """One backend's row: a number or an error message per workload."""

    backend: str
    throughput: float | str | None = None  # tasks/s
    p50_ms: float | str | None = None
    p99_ms: float | str | None = None
    mb_per_s: float | str | None = None
    numpy_mb_per_s: float | str | None = None
    actor_p50_ms: float | str | None = None
    actor_calls_per_s: float | str | None = None
    durable_throughput: float | str | None = None  # tasks/s, fray with --state
    notes: list[str] = field(default_factory=list)

    def fail_rest(self, message: str) -> None:
        """Put `message` in the first cell not measured yet, and '-' in those after it."""
        for name in CELLS:
            if getattr(self, name) is None:
                setattr(self, name, message)
                message = "-"


CELLS = (
    "throughput",
    "p50_ms",
    "p99_ms",
    "mb_per_s",
    "numpy_mb_per_s",
    "actor_p50_ms",
    "actor_calls_per_s",
    "durable_throughput",
)


class Echo:
    """The benchmark's actor."""

    def ping(self) -> None:
        return None


def error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ").replace("|", "/")
    return "error: " + (text if len(text) <= 120 else text[:117] + "...")


# ---------------------------------------------------------------------- workloads


def bench_throughput(ctx: Any, name: str, tasks: int, repeat: int) -> float:
    """Best tasks/s over `repeat` runs of `tasks` no-ops submitted at once."""
    throughput_warm_up(ctx, name)
    return max(throughput_run(ctx, name, tasks, f"{i + 1}/{repeat}") for i in range(repeat))


def throughput_warm_up(ctx: Any, name: str) -> None:
    progress(f"{name}: throughput warm-up ({WARMUP_TASKS} tasks)")
    ctx.get([ctx.run(noop) for _ in range(WARMUP_TASKS)], timeout=GET_TIMEOUT)


def throughput_run(ctx: Any, name: str, tasks: int, which: str) -> float:
    """Tasks/s of one run of `tasks` no-ops submitted at once, then one get."""
    progress(f"{name}: throughput run {which} ({tasks:,} tasks)")
    started = time.perf_counter()
    futures = [ctx.run(noop) for _ in range(tasks)]
    ctx.get(futures, timeout=GET_TIMEOUT)
    seconds = time.perf_counter() - started
    progress(f"{name}:   {tasks / seconds:,.0f} tasks/s ({seconds:.2f}s)")
    return tasks / seconds


def bench_fray_throughputs(ctx: Any, args: argparse.Namespace, result: Result) -> None:
    """fray's throughput in memory (`ctx`) and with durable controller state, by turns."""
    name, durable_name = "fray", "fray (durable)"
    with contextlib.ExitStack() as stack:
        durable: Any = None
        try:
            durable = stack.enter_context(durable_fray(args))
            throughput_warm_up(durable, durable_name)
        except Exception as exc:
            progress(f"{durable_name}: failed: {exc!r}")
            result.durable_throughput, durable = error_text(exc), None
        throughput_warm_up(ctx, name)
        best = best_durable = 0.0
        for i in range(args.repeat):
            which = f"{i + 1}/{args.repeat}"
            best = max(best, throughput_run(ctx, name, args.tasks, which))
            if durable is None:
                continue
            try:
                best_durable = max(
                    best_durable, throughput_run(durable, durable_name, args.tasks, which)
                )
            except Exception as exc:
                progress(f"{durable_name}: failed: {exc!r}")
                result.durable_throughput, durable = error_text(exc), None
        result.throughput = best
        if durable is not None:
            result.durable_throughput = best_durable


def bench_round_trip(ctx: Any, name: str, count: int) -> tuple[float, float]:
    """p50 and p99 (ms) of `count` sequential ctx.get(ctx.run(noop)) calls."""
    progress(f"{name}: round-trip warm-up ({WARMUP_ROUND_TRIPS} calls)")
    for _ in range(WARMUP_ROUND_TRIPS):
        ctx.get(ctx.run(noop), timeout=GET_TIMEOUT)
    progress(f"{name}: round trips ({count:,} calls)")
    samples = []
    for _ in range(count):
        started = time.perf_counter_ns()
        ctx.get(ctx.run(noop), timeout=GET_TIMEOUT)
        samples.append((time.perf_counter_ns() - started) / 1e6)
    samples.sort()
    p50, p99 = percentile(samples, 50), percentile(samples, 99)
    progress(
        f"{name}:   p50 {p50:.3f} ms, p99 {p99:.3f} ms, max {samples[-1]:.3f} ms, "
        f"mean {statistics.fmean(samples):.3f} ms"
    )
    return p50, p99


def percentile(sorted_samples: list[float], pct: float) -> float:
    """Nearest-rank percentile of already sorted samples."""
    rank = max(1, -(-len(sorted_samples) * pct // 100))  # ceil(n * pct / 100)
    return sorted_samples[int(rank) - 1]


def bench_large_object(
    ctx: Any, name: str, data: Any, repeat: int, size_of: Callable[[Any], int] = len
) -> float:
    """Best MB/s over `repeat` runs of put(data) + get(run(size_of, ref)), timed together."""
    size = size_of(data)
    size_mb = size / MB
    best = 0.0
    for i in range(repeat):
        progress(
            f"{name}: large object run {i + 1}/{repeat} ({size_mb:g} MB, {type(data).__name__})"
        )
        started = time.perf_counter()
        ref = ctx.put(data)
        length = ctx.get(ctx.run(size_of, ref), timeout=GET_TIMEOUT)
        seconds = time.perf_counter() - started
        if length != size:
            raise RuntimeError(f"{size_of.__name__}() on the worker gave {length}, not {size}")
        progress(f"{name}:   {size_mb / seconds:,.1f} MB/s ({seconds:.2f}s)")
        best = max(best, size_mb / seconds)
        # Untimed clean-up, so that runs do not pile objects up: Ray frees a ref once it is
        # dropped; fray keeps objects in its controller until they are freed explicitly.
        free = getattr(ctx, "free", None)
        if callable(free):
            free([ref])
        del ref
        gc.collect()
    return best


def bench_actor_call(ctx: Any, name: str, count: int) -> float:
    """p50 (ms) of `count` sequential ctx.get(actor.ping.remote()) calls."""
    actor = ctx.create_actor(Echo)
    for _ in range(WARMUP_ROUND_TRIPS):
        ctx.get(actor.ping.remote(), timeout=GET_TIMEOUT)
    progress(f"{name}: actor calls one at a time ({count:,} calls)")
    samples = []
    for _ in range(count):
        started = time.perf_counter_ns()
        ctx.get(actor.ping.remote(), timeout=GET_TIMEOUT)
        samples.append((time.perf_counter_ns() - started) / 1e6)
    samples.sort()
    p50 = percentile(samples, 50)
    progress(f"{name}:   p50 {p50:.3f} ms, p99 {percentile(samples, 99):.3f} ms")
    return p50


def bench_actor_pipelined(ctx: Any, name: str, calls: int, repeat: int) -> float:
    """Best calls/s over `repeat` runs of `calls` calls to one actor submitted at once."""
    actor = ctx.create_actor(Echo)
    ctx.get([actor.ping.remote() for _ in range(WARMUP_TASKS)], timeout=GET_TIMEOUT)
    best = 0.0
    for i in range(repeat):
        progress(f"{name}: pipelined actor calls run {i + 1}/{repeat} ({calls:,} calls)")
        started = time.perf_counter()
        ctx.get([actor.ping.remote() for _ in range(calls)], timeout=GET_TIMEOUT)
        seconds = time.perf_counter() - started
        progress(f"{name}:   {calls / seconds:,.0f} calls/s ({seconds:.2f}s)")
        best = max(best, calls / seconds)
    return best


def run_workloads(ctx: Any, name: str, args: argparse.Namespace, result: Result) -> None:
    """Every workload in turn; one failing does not skip the others."""

    def throughput() -> None:
        if name == "fray":
            bench_fray_throughputs(ctx, args, result)
        else:
            result.throughput = bench_throughput(ctx, name, args.tasks, args.repeat)

    def round_trip() -> None:
        result.p50_ms, result.p99_ms = bench_round_trip(ctx, name, args.round_trips)

    def large_object() -> None:
        data = os.urandom(args.object_mb * MB)
        result.mb_per_s = bench_large_object(ctx, name, data, args.repeat)

    def large_array() -> None:
        try:
            import numpy as np
        except ImportError:
            result.numpy_mb_per_s = "numpy not installed"
            return
        array = np.random.default_rng(0).random(args.object_mb * MB // 8)
        result.numpy_mb_per_s = bench_large_object(ctx, name, array, args.repeat, nbytes)

    def actor_call() -> None:
        result.actor_p50_ms = bench_actor_call(ctx, name, args.round_trips)

    def actor_calls() -> None:
        result.actor_calls_per_s = bench_actor_pipelined(ctx, name, args.actor_calls, args.repeat)

    steps: list[tuple[Callable[[], None], tuple[str, ...]]] = [
        (throughput, ("throughput",)),
        (round_trip, ("p50_ms", "p99_ms")),
        (large_object, ("mb_per_s",)),
        (large_array, ("numpy_mb_per_s",)),
        (actor_call, ("actor_p50_ms",)),
        (actor_calls, ("actor_calls_per_s",)),
    ]
    for fn, cells in steps:
        try:
            fn()
        except Exception as exc:
            progress(f"{name}: {fn.__name__} failed: {exc!r}")
            for i, cell_name in enumerate(cells):
                setattr(result, cell_name, error_text(exc) if i == 0 else "-")


def check_remote(ctx: Any, name: str, expect_remote: bool) -> None:
    """One task first: the script's functions must unpickle (by value) where tasks run."""
    pid = ctx.get(ctx.run(whereami), timeout=GET_TIMEOUT)
    if expect_remote and pid == os.getpid():
        raise RuntimeError(f"{name} ran the task in the driver process")
    where = f"pid {pid}" + (" (driver)" if pid == os.getpid() else "")
    progress(f"{name}: a task defined in this script ran in {where}")


# ---------------------------------------------------------------------- backends


@contextlib.contextmanager
def fray_backend(args: argparse.Namespace, result: Result) -> Iterator[Any]:
    from fray.job import create_job_ctx
    from fray.local_cluster import LocalFrayCluster

    env = {"FRAY_LOG_LEVEL": "WARNING"} if args.quiet else {}
    progress("fray: starting a LocalFrayCluster (1 controller + 2 workers, concurrency 1)")
    started = time.perf_counter()
    with LocalFrayCluster(workers=2, concurrency=1, env=env) as cluster:
        ctx: Any = create_job_ctx("fray", controller_address=cluster.address)
        result.notes.append(f"fray start-up {time.perf_counter() - started:.1f}s")
        try:
            yield ctx
        finally:
            ctx.close()
            progress("fray: stopping the cluster")
            codes = cluster.stop()
            if any(code != 0 for code in codes.values()):
                result.notes.append(f"fray exit codes {codes}")


@contextlib.contextmanager
def durable_fray(args: argparse.Namespace) -> Iterator[Any]:
    """A second fray cluster (like `fray_backend`'s) whose controller journals its state to a
    temporary file; yields a context on it."""
    import tempfile

    from fray.job import create_job_ctx
    from fray.local_cluster import LocalFrayCluster

    env = {"FRAY_LOG_LEVEL": "WARNING"} if args.quiet else {}
    progress("fray (durable): a second LocalFrayCluster, with durable controller state (--state)")
    with (
        tempfile.TemporaryDirectory(prefix="fray-bench-") as tmp,
        LocalFrayCluster(
            workers=2, concurrency=1, env=env, state=os.path.join(tmp, "state.db")
        ) as cluster,
    ):
        ctx: Any = create_job_ctx("fray", controller_address=cluster.address)
        try:
            yield ctx
        finally:
            ctx.close()
            cluster.stop()


@contextlib.contextmanager
def ray_backend(args: argparse.Namespace, result: Result) -> Iterator[Any]:
    import ray
    import ray.cloudpickle

    from fray.job import create_job_ctx

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    progress("ray: ray.init(num_cpus=2)")
    started = time.perf_counter()
    try:
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.WARNING if args.quiet else logging.INFO,
        )
        ctx = create_job_ctx("ray")
        result.notes.append(f"ray start-up {time.perf_counter() - started:.1f}s")
        yield ctx
    finally:
        progress("ray: ray.shutdown()")
        ray.shutdown()


@contextlib.contextmanager
def threadpool_backend(args: argparse.Namespace, result: Result) -> Iterator[Any]:
    from fray.job import create_job_ctx

    ctx: Any = create_job_ctx("threadpool", max_workers=2)
    try:
        yield ctx
    finally:
        ctx.shutdown()


BACKEND_FACTORIES: dict[str, Callable[[argparse.Namespace, Result], Any]] = {
    "fray": fray_backend,
    "ray": ray_backend,
    "threadpool": threadpool_backend,
}


def bench_backend(name: str, args: argparse.Namespace) -> Result:
    result = Result(name)
    started = time.perf_counter()
    try:
        with BACKEND_FACTORIES[name](args, result) as ctx:
            check_remote(ctx, name, expect_remote=name != "threadpool")
            run_workloads(ctx, name, args, result)
    except Exception as exc:
        progress(f"{name}: failed: {exc!r}")
        result.fail_rest(error_text(exc))
    progress(f"{name}: done in {time.perf_counter() - started:.1f}s")
    return result


# ---------------------------------------------------------------------- report


def cell(value: float | str | None, fmt: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return format(value, fmt)


def machine() -> str:
    try:
        ray_version = importlib.metadata.version("ray")
    except importlib.metadata.PackageNotFoundError:
        ray_version = "not installed"
    return (
        f"{os.cpu_count()} CPUs, {platform.system()} {platform.machine()}, "
        f"Python {platform.python_version()}, Ray {ray_version}, "
        f"fray {importlib.metadata.version('fray')}"
    )


def report(results: list[Result], args: argparse.Namespace, seconds: float) -> str:
    lines = [
        f"Machine: {machine()}",
        "",
        f"| backend | throughput (tasks/s, best of {args.repeat}) | round trip p50 (ms) "
        f"| round trip p99 (ms) | large object {args.object_mb} MB (MB/s, best of {args.repeat}) "
        f"| large numpy array {args.object_mb} MB (MB/s, best of {args.repeat}) "
        f"| actor call p50 (ms) | actor calls/s (pipelined, best of {args.repeat}) "
        f"| throughput, durable state (tasks/s, best of {args.repeat}) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.backend} | {cell(r.throughput, ',.0f')} | {cell(r.p50_ms, '.3f')} "
            f"| {cell(r.p99_ms, '.3f')} | {cell(r.mb_per_s, ',.1f')} "
            f"| {cell(r.numpy_mb_per_s, ',.1f')} "
            f"| {cell(r.actor_p50_ms, '.3f')} | {cell(r.actor_calls_per_s, ',.0f')} "
            f"| {cell(r.durable_throughput, ',.0f')} |"
        )
    lines += [
        "",
        f"- throughput: {args.tasks:,} no-op tasks submitted at once, then one `ctx.get(list)`; "
        f"after a {WARMUP_TASKS}-task warm-up; best of {args.repeat} runs.",
        f"- round trip: `ctx.get(ctx.run(noop))` {args.round_trips:,} times in a row after "
        f"{WARMUP_ROUND_TRIPS} warm-up calls; nearest-rank percentiles.",
        f"- large object: `ref = ctx.put(data)` ({args.object_mb} MB of random bytes) and "
        f"`ctx.get(ctx.run(len, ref))` timed together; MB = 10^6 bytes; best of {args.repeat}. "
        "Large numpy array: the same with a float64 array and `ctx.run(nbytes, ref)`. Each "
        "object is freed after its run, untimed.",
        "- fray: LocalFrayCluster(workers=2, concurrency=1) on loopback; "
        "ray: ray.init(num_cpus=2); threadpool: max_workers=2. One backend runs at a time.",
        "- throughput, durable state: the same workload on a second fray cluster whose "
        "controller journals its state to SQLite (`fray controller --state FILE`): every "
        "submit, lease, report and acknowledgement is committed before it is answered. Its "
        "runs alternate with the in-memory ones (both clusters are up during throughput).",
        "- threadpool `put` wraps the object without copying it: its large-object figure only "
        "measures call overhead.",
        f"- actor call: `ctx.get(actor.ping.remote())` {args.round_trips:,} times in a row on one "
        f"actor after {WARMUP_ROUND_TRIPS} warm-up calls; actor calls: {args.actor_calls:,} "
        "`ping.remote()` calls to one actor submitted at once, then one `ctx.get(list)`.",
    ]
    notes = [note for r in results for note in r.notes]
    if notes:
        lines.append(f"- {'; '.join(notes)}.")
    lines += ["", "Targets (fray):"]
    fray = next((r for r in results if r.backend == "fray"), Result("fray"))
    tput, p50 = fray.throughput, fray.p50_ms
    actor_p50, actor_rate = fray.actor_p50_ms, fray.actor_calls_per_s
    durable = fray.durable_throughput
    share = (
        durable / tput
        if isinstance(durable, float) and isinstance(tput, float) and tput > 0
        else None
    )
    ray = next((r for r in results if r.backend == "ray"), Result("ray"))

    def versus_ray(goal: str, ours: Any, theirs: Any, share: float) -> tuple[str, Any, bool]:
        goal = f"{goal} <= {share:g}x Ray's (same run)"
        if not (isinstance(ours, float) and isinstance(theirs, float) and theirs > 0):
            return goal, None, False
        ratio = ours / theirs
        return goal, f"{ours:.3f} / {theirs:.3f} ms = {ratio:.2f}x", ratio <= share

    def faster_than_ray(goal: str, ours: Any, theirs: Any, times: float) -> tuple[str, Any, bool]:
        goal = f"{goal} >= {times:g}x Ray's (same run)"
        if not (isinstance(ours, float) and isinstance(theirs, float) and theirs > 0):
            return goal, None, False
        ratio = ours / theirs
        return goal, f"{ours:,.0f} / {theirs:,.0f} MB/s = {ratio:.2f}x", ratio >= times

    targets = [
        (
            f"throughput >= {TARGET_TASKS_PER_S:,.0f} tasks/s",
            f"{tput:,.0f} tasks/s" if isinstance(tput, float) else None,
            isinstance(tput, float) and tput >= TARGET_TASKS_PER_S,
        ),
        (
            f"round-trip p50 <= {TARGET_P50_MS:g} ms",
            f"{p50:.3f} ms" if isinstance(p50, float) else None,
            isinstance(p50, float) and p50 <= TARGET_P50_MS,
        ),
        (
            f"actor call p50 <= {TARGET_ACTOR_P50_MS:g} ms",
            f"{actor_p50:.3f} ms" if isinstance(actor_p50, float) else None,
            isinstance(actor_p50, float) and actor_p50 <= TARGET_ACTOR_P50_MS,
        ),
        versus_ray("round-trip p50", p50, ray.p50_ms, TARGET_P50_VS_RAY),
        versus_ray("actor call p50", actor_p50, ray.actor_p50_ms, TARGET_ACTOR_P50_VS_RAY),
        faster_than_ray(
            f"large object put+task, {args.object_mb} MB bytes",
            fray.mb_per_s,
            ray.mb_per_s,
            TARGET_OBJECT_VS_RAY,
        ),
        faster_than_ray(
            f"large object put+task, {args.object_mb} MB numpy",
            fray.numpy_mb_per_s,
            ray.numpy_mb_per_s,
            TARGET_OBJECT_VS_RAY,
        ),
        (
            f"pipelined actor calls >= {TARGET_ACTOR_CALLS_PER_S:,.0f}/s",
            f"{actor_rate:,.0f}/s" if isinstance(actor_rate, float) else None,
            isinstance(actor_rate, float) and actor_rate >= TARGET_ACTOR_CALLS_PER_S,
        ),
        (
            f"durable-state throughput >= {TARGET_DURABLE_SHARE:.0%} of in-memory",
            f"{durable:,.0f} tasks/s = {share:.0%}" if share is not None else None,
            share is not None and share >= TARGET_DURABLE_SHARE,
        ),
    ]
    for goal, measured, met in targets:
        verdict = "met" if met else "NOT met"
        status = "not measured" if measured is None else f"{verdict} ({measured})"
        lines.append(f"- {goal}: {status}")
    lines += ["", f"Total time: {seconds:.1f}s"]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--backends",
        default=",".join(BACKENDS),
        help="comma-separated, in table order; ray is always measured last (default: %(default)s)",
    )
    parser.add_argument("--tasks", type=int, default=10_000, help="tasks per throughput run")
    parser.add_argument("--round-trips", type=int, default=1_000, help="round trips timed")
    parser.add_argument("--object-mb", type=int, default=100, help="size of the large object")
    parser.add_argument(
        "--actor-calls", type=int, default=20_000, help="calls per pipelined actor run"
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs of throughput and large object")
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="logs at WARNING (here, in Ray and in fray)"
    )
    args = parser.parse_args(argv)
    args.backends = list(dict.fromkeys(b.strip() for b in args.backends.split(",") if b.strip()))
    unknown = sorted(set(args.backends) - set(BACKENDS))
    if unknown or not args.backends:
        parser.error(f"unknown backends {unknown}; choose from {', '.join(BACKENDS)}")
    if min(args.tasks, args.round_trips, args.object_mb, args.repeat, args.actor_calls) < 1:
        parser.error("--tasks, --round-trips, --object-mb, --actor-calls and --repeat must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    started = time.perf_counter()
    # Ray goes last: it leaves threads and imported modules behind in this process after
    # ray.shutdown(), which must not weigh on the backends measured after it.
    order = sorted(args.backends, key=lambda name: name == "ray")
    by_name = {name: bench_backend(name, args) for name in order}
    results = [by_name[name] for name in args.backends]
    print(report(results, args, time.perf_counter() - started), flush=True)
    cells = [getattr(r, name) for r in results for name in CELLS]
    return 1 if any(isinstance(c, str) and c.startswith("error") for c in cells) else 0


if __name__ == "__main__":
    sys.exit(main())
