"""Chaos: a fray cluster under a steady workload while processes are killed at random.

    .venv/bin/python scripts/chaos.py --duration 120 --workers 3

Starts a controller and `--workers` workers as real processes (LocalFrayCluster), submits tasks
of random durations (some reading `put` objects) and calls a detached actor, while a killer
picks, every few seconds, one of:

- `worker-kill`: SIGKILL a worker (a new one is started in its place);
- `executor-kill`: SIGKILL one of a worker's executor processes (the worker starts another);
- `worker-stop`: SIGSTOP a worker past the heartbeat timeout, then SIGCONT (a frozen worker);
- `controller-restart`: SIGKILL the controller and start it again on the same port with the
  same `--state` file.

Then it waits for every future (at most `--settle` seconds) and prints a table: tasks submitted,
exact (the expected value), lost (`TaskLostError`), hung (no answer in time), wrong (another
value or error), re-runs (tasks tried more than once), actor calls (an actor call is at most
once: one that was running when its host died fails with `ActorDiedError`), and kills by kind.
`--json` prints the same as one JSON line. Exit status 1 if a future hung or was wrong (or was
lost, with `--no-loss`). Not a test: a short form runs in tests/test_chaos.py.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from fray.client.context import FrayContext
from fray.errors import ActorDiedError, ActorError, TaskLostError
from fray.local_cluster import LocalFrayCluster
from fray.wire.controller_client import ControllerClient
from fray.wire.pb import controller_pb2 as pb

KINDS = ("worker-kill", "executor-kill", "worker-stop", "controller-restart")
BLOB_BYTES = 256 * 1024

log = logging.getLogger("chaos")


def work(i: int, seconds: float, blob: bytes | None = None) -> tuple[int, int, int]:
    """A task: sleeps `seconds`, answers something only task `i` would."""
    time.sleep(seconds)
    return i, len(blob) if blob is not None else -1, i * i


def expected(i: int, with_blob: bool) -> tuple[int, int, int]:
    return i, BLOB_BYTES if with_blob else -1, i * i


class Echo:
    """The actor: stateless answers, so a restarted actor answers the same."""

    def echo(self, i: int) -> int:
        return i


def _descendants(pid: int) -> dict[int, int]:
    """{descendant pid: its depth below `pid`}, from /proc."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    found: dict[int, int] = {}
    frontier, depth = [pid], 0
    while frontier:
        depth += 1
        frontier = [child for child, parent in parents.items() if parent in frontier]
        found.update({child: depth for child in frontier})
    return found


class Killer:
    """Kills something every `interval` seconds (randomised) until stopped."""

    def __init__(
        self, cluster: LocalFrayCluster, kinds: list[str], interval: float, rng: random.Random
    ) -> None:
        self.cluster, self.kinds, self.interval, self.rng = cluster, kinds, interval, rng
        self.kills: Counter[str] = Counter()
        self.port = int(cluster.address.rsplit(":", 1)[1])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="chaos-killer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self.rng.uniform(0.5, 1.5) * self.interval):
            kind = self.rng.choice(self.kinds)
            try:
                if getattr(self, "_" + kind.replace("-", "_"))():
                    self.kills[kind] += 1
                    log.info("chaos: %s", kind)
            except Exception:
                log.exception("chaos: %s failed", kind)

    def _live_workers(self) -> list[Any]:
        return [w for w in self.cluster.workers if w.poll() is None]

    def _worker_kill(self) -> bool:
        workers = self._live_workers()
        if not workers:
            return False
        victim = self.rng.choice(workers)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        self.cluster.workers.remove(victim)
        self.cluster.add_worker()
        return True

    def _executor_kill(self) -> bool:
        workers = self._live_workers()
        if not workers:
            return False
        # Executors are forkserver children: two levels below their worker.
        executors = [p for p, d in _descendants(self.rng.choice(workers).pid).items() if d == 2]
        if not executors:
            return False
        try:
            os.kill(self.rng.choice(executors), signal.SIGKILL)
        except ProcessLookupError:
            return False
        return True

    def _worker_stop(self) -> bool:
        workers = self._live_workers()
        if not workers:
            return False
        victim = self.rng.choice(workers)
        victim.send_signal(signal.SIGSTOP)
        self._stop.wait(self.cluster.heartbeat_timeout + 1.0)  # long enough to be declared lost
        victim.send_signal(signal.SIGCONT)
        return True

    def _controller_restart(self) -> bool:
        controller = self.cluster.controller
        assert controller is not None
        controller.send_signal(signal.SIGKILL)
        controller.wait()
        self.cluster.start_controller(port=self.port)
        return True


def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    controller_args: tuple[str, ...] = ()
    state_dir = None
    if "controller-restart" in kinds:
        state_dir = tempfile.TemporaryDirectory(prefix="fray-chaos-")
        controller_args = ("--state", str(Path(state_dir.name) / "controller.sqlite3"))
    cluster = LocalFrayCluster(
        workers=args.workers,
        concurrency=args.concurrency,
        heartbeat_timeout=args.heartbeat_timeout,
        controller_args=controller_args,
        env={"FRAY_LOG_LEVEL": args.process_log_level},
    ).start()
    tasks: list[tuple[int, bool, Future[Any]]] = []
    calls: list[tuple[int, Future[Any]]] = []
    killer = Killer(cluster, kinds, args.interval, rng)
    ctx = FrayContext(cluster.address, retry_timeout=120)
    try:
        blob = ctx.put(b"x" * BLOB_BYTES)
        actor = ctx.create_actor(
            Echo, name="chaos-echo", lifetime="detached", max_restarts=1_000_000
        )
        killer.start()
        deadline = time.monotonic() + args.duration
        i = 0
        while time.monotonic() < deadline:
            for _ in range(args.batch):
                with_blob = rng.random() < 0.2
                seconds = rng.uniform(0, args.max_task_seconds)
                extra = (blob,) if with_blob else ()
                tasks.append((i, with_blob, ctx.run(work, i, seconds, *extra)))
                if rng.random() < 0.2:
                    calls.append((i, actor.echo.remote(i)))
                i += 1
            time.sleep(args.pause)
        killer.stop()
        return _tally(ctx, cluster, tasks, calls, killer.kills, args.settle)
    finally:
        killer.stop()
        ctx.close()
        cluster.stop()
        if state_dir is not None:
            state_dir.cleanup()


def _tally(
    ctx: FrayContext,
    cluster: LocalFrayCluster,
    tasks: list[tuple[int, bool, Future[Any]]],
    calls: list[tuple[int, Future[Any]]],
    kills: Counter[str],
    settle: float,
) -> dict[str, Any]:
    deadline = time.monotonic() + settle
    outcome: Counter[str] = Counter()
    wrong: list[str] = []
    for i, with_blob, future in tasks:
        try:
            value = future.result(timeout=max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            outcome["hung"] += 1
            continue
        except TaskLostError:
            outcome["lost"] += 1
            continue
        except Exception as exc:  # noqa: BLE001 - any other error is a wrong answer
            outcome["wrong"] += 1
            wrong.append(f"task {i}: {type(exc).__name__}: {exc}")
            continue
        if tuple(value) == expected(i, with_blob):
            outcome["exact"] += 1
        else:
            outcome["wrong"] += 1
            wrong.append(f"task {i}: {value!r}")
    actor: Counter[str] = Counter()
    for i, call in calls:
        try:
            value = call.result(timeout=max(0.0, deadline - time.monotonic()))
            actor["exact" if value == i else "wrong"] += 1
        except TimeoutError:
            actor["hung"] += 1
        except ActorDiedError:
            actor["died"] += 1  # at most once: it was running when its host died
        except ActorError as exc:
            actor["wrong"] += 1
            wrong.append(f"actor call {i}: {type(exc).__name__}: {exc}")
    reruns = _reruns(cluster.address, [f for _, _, f in tasks])
    return {
        "submitted": len(tasks),
        "exact": outcome["exact"],
        "lost": outcome["lost"],
        "hung": outcome["hung"],
        "wrong": outcome["wrong"],
        "reruns": reruns,
        "actor_calls": len(calls),
        "actor_exact": actor["exact"],
        "actor_died": actor["died"],
        "actor_hung": actor["hung"],
        "actor_wrong": actor["wrong"],
        "kills": dict(kills),
        "examples": wrong[:5],
    }


def _reruns(address: str, futures: list[Any]) -> int:
    """Tasks the controller ran more than once (as far as it still remembers them)."""
    client = ControllerClient(address, retry_timeout=10)
    try:
        count = 0
        for future in futures:
            try:
                task = client.call(client.rpc.get_task, pb.GetTaskRequest(task_id=future.task_id))
            except Exception:  # noqa: BLE001 - forgotten or never reached the controller
                continue
            count += task.task.attempts > 1
        return count
    finally:
        client.close()


def print_table(result: dict[str, Any]) -> None:
    rows = [
        ("tasks submitted", result["submitted"]),
        ("exact", result["exact"]),
        ("lost (TaskLostError)", result["lost"]),
        ("hung", result["hung"]),
        ("wrong", result["wrong"]),
        ("re-runs (attempts > 1)", result["reruns"]),
        ("actor calls", result["actor_calls"]),
        ("actor calls exact", result["actor_exact"]),
        ("actor calls died (at most once)", result["actor_died"]),
        ("actor calls hung / wrong", f"{result['actor_hung']} / {result['actor_wrong']}"),
    ]
    rows += [(f"kills: {kind}", n) for kind, n in sorted(result["kills"].items())]
    print("| what | count |\n|---|---:|")
    for name, value in rows:
        print(f"| {name} | {value:,} |" if isinstance(value, int) else f"| {name} | {value} |")
    for example in result["examples"]:
        print(f"- {example}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load and kills")
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=2, help="slots per worker")
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"of {', '.join(KINDS)}")
    parser.add_argument("--interval", type=float, default=3.0, help="mean seconds between kills")
    parser.add_argument("--heartbeat-timeout", type=float, default=3.0)
    parser.add_argument("--batch", type=int, default=10, help="tasks submitted per round")
    parser.add_argument("--pause", type=float, default=0.1, help="seconds between rounds")
    parser.add_argument("--max-task-seconds", type=float, default=0.3)
    parser.add_argument("--settle", type=float, default=180.0, help="longest wait at the end")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--no-loss", action="store_true", help="exit 1 if any task was lost")
    parser.add_argument("--json", action="store_true", help="print one JSON line, not a table")
    parser.add_argument(
        "--process-log-level", default="WARNING", help="log level of the controller and workers"
    )
    args = parser.parse_args(argv)
    unknown = {k.strip() for k in args.kinds.split(",")} - set(KINDS) - {""}
    if unknown:
        parser.error(f"unknown kinds {sorted(unknown)}; choose from {', '.join(KINDS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    logging.getLogger("fray").setLevel(logging.ERROR)
    result = run(args)
    if args.json:
        print(json.dumps(result), flush=True)
    else:
        print_table(result)
    bad = result["hung"] + result["wrong"] + result["actor_hung"] + result["actor_wrong"]
    return 1 if bad or (args.no_loss and result["lost"]) else 0


if __name__ == "__main__":
    sys.exit(main())
