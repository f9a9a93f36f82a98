"""The controller at scale: simulated workers over real RPC against a real controller process.

Usage:
    .venv/bin/python scripts/bench_scale.py [--workers 1,10,100,1000] [--tasks 50000]
        [--procs 4] [--slots 1] [--prefetch 256] [--singles 20] [--controller-src DIR]
    .venv/bin/python scripts/bench_scale.py --memory [1000000]

For each worker count W: a fresh controller subprocess (`fray controller`, state in memory),
then W simulated workers spread over --procs processes, each process running its share as
async connectrpc/pyqwest clients on one event loop. A simulated worker registers (--slots
slots, --prefetch prefetch), long-polls LeaseTasks asking for its whole prefetch, and reports
every task it gets at once as done (a no-op value), without executing anything: what is
measured is the controller. Then, from this process:

- idle: the controller's CPU while the W workers sit in their long polls (keep-alives);
- one-task submit: --singles times, submit one task and wait for it (WatchFinished); the
  controller CPU of one such round trip, the idle rate subtracted;
- throughput: one client submits --tasks tasks (batches of 1,000, as the client's submitter
  does) while a second thread collects them (WatchFinished); tasks/s from the first submit to
  the last result, and controller CPU seconds per task.

Controller CPU is read from /proc/PID/stat (user + system). Prints a Markdown table.
`--controller-src DIR` runs the controller from another checkout's `src` (e.g. a worktree of
an older commit) for before/after figures; workers and client stay this checkout's.
The machine's other load shows up in the figures: compare runs made side by side.

`--memory N`: the resident memory of a controller state holding N queued small tasks (the
service's path: each batch parsed from wire bytes, converted, submitted), in this process.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from typing import Any

from fray.common.processes import read_line
from fray.local_cluster import READY_PREFIX
from fray.wire import payload
from fray.wire.controller_client import ControllerClient
from fray.wire.pb import controller_pb2 as pb

CLK_TCK = os.sysconf("SC_CLK_TCK")
NONE_VALUE = pickle.dumps(None)


def noop(i: int) -> None:
    """The task: pickled by value (this is __main__), like a user's function; never run."""
    return None


FUNCTION = payload.dumps_function(noop)  # the simulated workers execute nothing
BATCH = 1000
OWNER = "bench-scale"


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


# ---------------------------------------------------------------------- simulated workers


async def _sim_worker(client: Any, slots: int, prefetch: int, stop: asyncio.Event) -> None:
    answer = await client.register_worker(pb.RegisterWorkerRequest(slots=slots, prefetch=prefetch))
    worker_id, wait_ms = answer.worker_id, answer.heartbeat_interval_ms
    while not stop.is_set():
        try:
            lease = await client.lease_tasks(
                pb.LeaseTasksRequest(worker_id=worker_id, wait_ms=wait_ms, prefetch=prefetch),
                timeout_ms=wait_ms + 10_000,
            )
        except Exception:
            if stop.is_set():
                return
            await asyncio.sleep(0.1)
            continue
        if lease.tasks:
            results = [
                pb.TaskResult(
                    task_id=t.task_id, attempt=t.attempt, value=NONE_VALUE, run_seconds=1e-5
                )
                for t in lease.tasks
            ]
            await client.report_results(
                pb.ReportResultsRequest(worker_id=worker_id, results=results)
            )


async def _sim_main(address: str, count: int, slots: int, prefetch: int) -> None:
    import pyqwest

    from fray.wire.pb.controller_connect import FrayControllerClient

    http = pyqwest.Client()
    client = FrayControllerClient(
        address,
        send_compression=None,
        accept_compression=(),
        timeout_ms=120_000,
        http_client=http,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    workers = [
        asyncio.create_task(_sim_worker(client, slots, prefetch, stop)) for _ in range(count)
    ]
    while not stop.is_set():
        await asyncio.sleep(0.2)
        failed = [w for w in workers if w.done() and w.exception() is not None]
        if failed:
            raise RuntimeError(f"a simulated worker failed: {failed[0].exception()!r}")
    for w in workers:
        w.cancel()
    await asyncio.gather(*workers, return_exceptions=True)


def sim_process(argv: list[str]) -> None:
    address, count, slots, prefetch = argv[0], int(argv[1]), int(argv[2]), int(argv[3])
    try:
        asyncio.run(_sim_main(address, count, slots, prefetch))
    finally:
        sys.stdout.flush()
        os._exit(0)  # the async pyqwest client may abort at interpreter exit


# ---------------------------------------------------------------------- the measured side


def start_controller(src: str | None) -> tuple[subprocess.Popen[str], str]:
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    env["FRAY_LOG_LEVEL"] = "WARNING"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fray", "controller", "--host", "127.0.0.1", "--port", "0"]
        + ["--state", ":memory:", "--max-queued-tasks-per-client", "10000000"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    line = read_line(proc.stdout, 30)
    if not line.startswith(READY_PREFIX):
        proc.kill()
        raise RuntimeError(f"controller did not start (said {line!r})")
    return proc, line[len(READY_PREFIX) :].strip()


def wait_workers(client: ControllerClient, count: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        summary = client.call(client.rpc.get_cluster_summary, pb.GetClusterSummaryRequest())
        if summary.workers >= count:
            return
        time.sleep(0.2)
    raise RuntimeError(f"only {summary.workers} of {count} workers registered")


def specs(n: int, start: int) -> list[pb.TaskSpec]:
    return [
        pb.TaskSpec(
            function=FUNCTION,
            args=payload.dumps_arguments((start + i,), {}, "noop"),
            owner=OWNER,
            name="noop",
        )
        for i in range(n)
    ]


class Watcher:
    """Collects finished tasks (WatchFinished) in a thread of its own; `done` counts them."""

    def __init__(self, client: ControllerClient) -> None:
        self.client = client
        self.cursor = 0
        self.controller_id = ""
        self.done = 0
        self.changed = threading.Condition()

    def wait_for(self, total: int, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while self.done < total:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {self.done} of {total} tasks finished")
            request = pb.WatchFinishedRequest(
                owner=OWNER,
                cursor=self.cursor,
                wait_ms=2000,
                limit=10_000,
                controller_id=self.controller_id,
            )
            answer = self.client.call(self.client.rpc.watch_finished, request, wait_ms=2000)
            self.controller_id = answer.controller_id
            self.done += len(answer.finished)
            self.cursor = answer.next_cursor


def measure(workers: int, args: argparse.Namespace) -> dict[str, float]:
    controller, address = start_controller(args.controller_src)
    sims: list[subprocess.Popen[bytes]] = []
    try:
        client = ControllerClient(address)
        procs = max(1, min(args.procs, workers))
        for p in range(procs):
            share = workers // procs + (1 if p < workers % procs else 0)
            sims.append(
                subprocess.Popen(
                    [sys.executable, __file__, "--sim", address, str(share)]
                    + [str(args.slots), str(args.prefetch)]
                )
            )
        wait_workers(client, workers)
        time.sleep(2.0)  # every poll parked
        pid = controller.pid
        # Idle: keep-alives only.
        t0, c0 = time.monotonic(), cpu_seconds(pid)
        time.sleep(args.idle_seconds)
        idle_rate = (cpu_seconds(pid) - c0) / (time.monotonic() - t0)
        # One-task submits, one at a time.
        watcher = Watcher(client)
        t0, c0 = time.monotonic(), cpu_seconds(pid)
        for i in range(args.singles):
            client.call(client.rpc.submit_tasks, pb.SubmitTasksRequest(tasks=specs(1, i)))
            watcher.wait_for(i + 1)
        elapsed = time.monotonic() - t0
        single = (cpu_seconds(pid) - c0 - idle_rate * elapsed) / args.singles
        # Throughput (the requests are built first: what is measured is not the pickling).
        batches = [
            pb.SubmitTasksRequest(tasks=specs(min(BATCH, args.tasks - sent), sent))
            for sent in range(0, args.tasks, BATCH)
        ]
        base = watcher.done
        t0, c0 = time.monotonic(), cpu_seconds(pid)
        collector = threading.Thread(target=watcher.wait_for, args=(base + args.tasks,))
        collector.start()
        for batch in batches:
            client.call(client.rpc.submit_tasks, batch)
        collector.join()
        elapsed = time.monotonic() - t0
        cpu = cpu_seconds(pid) - c0
        return {
            "workers": workers,
            "tasks_per_s": args.tasks / elapsed,
            "cpu_per_task_us": cpu / args.tasks * 1e6,
            "single_ms": single * 1000,
            "idle_cpu": idle_rate,
        }
    finally:
        for s in sims:
            s.send_signal(signal.SIGTERM)
        for s in sims:
            try:
                s.wait(10)
            except subprocess.TimeoutExpired:
                s.kill()
        controller.terminate()
        try:
            controller.wait(10)
        except subprocess.TimeoutExpired:
            controller.kill()


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def memory(tasks: int) -> None:
    """RSS of a controller state holding `tasks` queued small tasks, submitted as the service
    does (each batch parsed from its wire bytes, converted, submitted), in this process."""
    from fray.controller import convert
    from fray.controller.state import ControllerState

    start = rss_mib()
    state = ControllerState()
    state.register_worker(worker_id="w", slots=1)
    for sent in range(0, tasks, BATCH):
        wire = pb.SubmitTasksRequest(tasks=specs(min(BATCH, tasks - sent), sent))
        request = pb.SubmitTasksRequest.FromString(wire.SerializeToString())
        state.submit([convert.task_spec_from_pb(t) for t in request.tasks])
    end = rss_mib()
    print(
        f"{tasks:,} queued tasks: RSS {end:.0f} MiB ({start:.0f} MiB before the state), "
        f"{(end - start) * 2**20 / tasks:.0f} B per task"
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--sim":
        sim_process(argv[1:])
        return 0
    if argv and argv[0] == "--memory":
        memory(int(argv[1]) if len(argv) > 1 else 1_000_000)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", default="1,10,100,1000")
    parser.add_argument("--tasks", type=int, default=50_000)
    parser.add_argument("--procs", type=int, default=4, help="processes of simulated workers")
    parser.add_argument("--slots", type=int, default=1)
    parser.add_argument("--prefetch", type=int, default=256)
    parser.add_argument("--singles", type=int, default=20)
    parser.add_argument("--idle-seconds", type=float, default=3.0)
    parser.add_argument("--controller-src", default=None)
    args = parser.parse_args(argv)
    rows = [measure(int(w), args) for w in args.workers.split(",")]
    print()
    print(
        f"{args.tasks} no-op tasks, {args.slots} slot(s) + prefetch {args.prefetch} per "
        f"simulated worker, {args.procs} worker processes"
    )
    print()
    print(
        "| workers | tasks/s | controller CPU µs/task | one-task submit, controller CPU ms "
        "| idle controller CPU (cores) |"
    )
    print("|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['workers']:,} | {r['tasks_per_s']:,.0f} | {r['cpu_per_task_us']:.0f} "
            f"| {r['single_ms']:.2f} | {r['idle_cpu']:.3f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
