"""Benchmark large objects on fray next to Ray: puts, large arguments and large results.

Usage:
    .venv/bin/python scripts/bench_objects.py [--backends fray,fray-remote,ray] [--mb 100]
        [--repeat 3] [--gb-object] [-q/--quiet]

Backends (one at a time, Ray last):
    fray         LocalFrayCluster(workers=2) + create_job_ctx("fray"): this process and the
                 workers share a host, so objects are files in /dev/shm mapped by the reader
    fray-remote  the same, with the controller and workers told they are on another host
                 (FRAY_OBJECT_HOST): every object crosses as a byte stream from its owner
    ray          ray.init(num_cpus=2) + create_job_ctx("ray")

Workloads (MB/s = --mb * 10^6 bytes / seconds; best of --repeat):
    put+task bytes   ref = ctx.put(bytes); ctx.get(ctx.run(len, ref))
    put+task numpy   ref = ctx.put(float64 array); ctx.get(ctx.run(nbytes, ref))
    large argument   ctx.get(ctx.run(nbytes, array))   (the array passed directly)
    large result     ctx.get(ctx.run(make_array, n))   (made on the worker, read here)
    1 GB object      (--gb-object) put+task numpy of 1,000 MB once: seconds

fray rows also show the controller's resident memory (RSS) before and after the workloads: the
bytes of large objects never pass through the controller, so it stays flat.
Progress goes to stderr, the Markdown table to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import cloudpickle
import numpy as np

MB = 1_000_000
GET_TIMEOUT = 600.0
BACKENDS = ("fray", "fray-remote", "ray")

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def nbytes(x: Any) -> int:
    return int(x.nbytes)


def make_array(n: int) -> Any:
    return np.ones(n // 8, dtype=np.float64)


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class Row:
    backend: str
    cells: dict[str, float | str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


WORKLOADS = ("put+task bytes", "put+task numpy", "large argument", "large result")


def best_rate(name: str, what: str, size: int, repeat: int, run: Callable[[], int]) -> float:
    best = 0.0
    for i in range(repeat):
        gc.collect()
        started = time.perf_counter()
        got = run()
        seconds = time.perf_counter() - started
        if got != size:
            raise RuntimeError(f"{what}: the task saw {got} bytes, expected {size}")
        progress(f"{name}: {what} {i + 1}/{repeat}: {size / MB / seconds:,.0f} MB/s")
        best = max(best, size / MB / seconds)
    return best


def put_and_run(ctx: Any, value: Any, fn: Callable[[Any], int]) -> int:
    ref = ctx.put(value)
    try:
        return int(ctx.get(ctx.run(fn, ref), timeout=GET_TIMEOUT))
    finally:
        free = getattr(ctx, "free", None)
        if callable(free):
            free([ref])


def run_workloads(ctx: Any, name: str, args: argparse.Namespace, row: Row) -> None:
    size = args.mb * MB
    data = os.urandom(size)
    array = np.random.default_rng(0).random(size // 8)
    runs: dict[str, Callable[[], int]] = {
        "put+task bytes": lambda: put_and_run(ctx, data, len),
        "put+task numpy": lambda: put_and_run(ctx, array, nbytes),
        "large argument": lambda: int(ctx.get(ctx.run(nbytes, array), timeout=GET_TIMEOUT)),
        "large result": lambda: int(ctx.get(ctx.run(make_array, size), timeout=GET_TIMEOUT).nbytes),
    }
    for what, run in runs.items():
        try:
            row.cells[what] = best_rate(name, what, size, args.repeat, run)
        except Exception as exc:
            progress(f"{name}: {what} failed: {exc!r}")
            row.cells[what] = f"error: {type(exc).__name__}: {exc}"[:120]
    if args.gb_object:
        big = np.ones(1000 * MB // 8)
        try:
            started = time.perf_counter()
            got = put_and_run(ctx, big, nbytes)
            seconds = time.perf_counter() - started
            row.cells["1 GB object"] = seconds if got == big.nbytes else "wrong size"
            progress(f"{name}: 1 GB object: {seconds:.2f}s")
        except Exception as exc:
            row.cells["1 GB object"] = f"error: {type(exc).__name__}: {exc}"[:120]
        del big


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


@contextlib.contextmanager
def fray_backend(args: argparse.Namespace, row: Row, remote: bool) -> Iterator[Any]:
    from fray.job import create_job_ctx
    from fray.local_cluster import LocalFrayCluster

    env = {"FRAY_LOG_LEVEL": "WARNING"} if args.quiet else {}
    if remote:
        env["FRAY_OBJECT_HOST"] = "bench-other-host"
    with LocalFrayCluster(workers=2, concurrency=1, env=env) as cluster:
        assert cluster.controller is not None
        pid = cluster.controller.pid
        ctx: Any = create_job_ctx("fray", controller_address=cluster.address)
        before = rss_mb(pid)
        try:
            yield ctx
        finally:
            row.cells["controller RSS"] = f"{before:,.0f} → {rss_mb(pid):,.0f} MB"
            ctx.close()
            cluster.stop()


@contextlib.contextmanager
def ray_backend(args: argparse.Namespace, row: Row) -> Iterator[Any]:
    import ray
    import ray.cloudpickle

    from fray.job import create_job_ctx

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.WARNING if args.quiet else logging.INFO,
    )
    try:
        yield create_job_ctx("ray")
    finally:
        ray.shutdown()


def bench(name: str, args: argparse.Namespace) -> Row:
    row = Row(name)
    progress(f"{name}: starting")
    factory: Any
    if name == "ray":
        factory = ray_backend(args, row)
    else:
        factory = fray_backend(args, row, remote=name == "fray-remote")
    try:
        with factory as ctx:
            run_workloads(ctx, name, args, row)
    except Exception as exc:
        progress(f"{name}: failed: {exc!r}")
        row.notes.append(f"failed: {exc!r}")
    return row


def cell(value: float | str | None, fmt: str) -> str:
    if value is None:
        return "-"
    return value if isinstance(value, str) else format(value, fmt)


def report(rows: list[Row], args: argparse.Namespace) -> str:
    extra = ["1 GB object"] if args.gb_object else []
    header = [f"{w} (MB/s)" for w in WORKLOADS] + [f"{e} (s)" for e in extra]
    lines = [
        f"{os.cpu_count()} CPUs; objects of {args.mb} MB; best of {args.repeat}",
        "",
        "| backend | " + " | ".join(header) + " | controller RSS |",
        "|---|" + "---:|" * (len(header) + 1),
    ]
    for row in rows:
        cells = [cell(row.cells.get(w), ",.0f") for w in WORKLOADS]
        cells += [cell(row.cells.get(e), ".2f") for e in extra]
        rss = row.cells.get("controller RSS", "-")
        lines.append(f"| {row.backend} | " + " | ".join(cells) + f" | {rss} |")
    ray_row = next((r for r in rows if r.backend == "ray"), None)
    fray_row = next((r for r in rows if r.backend == "fray"), None)
    if ray_row and fray_row:
        lines += ["", "fray / Ray (same run):"]
        for w in WORKLOADS:
            a, b = fray_row.cells.get(w), ray_row.cells.get(w)
            if isinstance(a, float) and isinstance(b, float) and b > 0:
                lines.append(f"- {w}: {a / b:.2f}x")
    for row in rows:
        for note in row.notes:
            lines.append(f"- {row.backend}: {note}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--mb", type=int, default=100, help="object size in MB (10^6 bytes)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--gb-object", action="store_true", help="also move one 1 GB object")
    parser.add_argument("-q", "--quiet", action="store_true")
    args = parser.parse_args(argv)
    names = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = sorted(set(names) - set(BACKENDS))
    if unknown:
        parser.error(f"unknown backends {unknown}; choose from {', '.join(BACKENDS)}")
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, stream=sys.stderr)
    by_name = {n: bench(n, args) for n in sorted(names, key=lambda n: n == "ray")}
    print(report([by_name[n] for n in names], args), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
