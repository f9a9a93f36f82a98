"""A controller and worker processes on loopback: for demos, tests and benchmarks.

    with LocalFrayCluster(workers=2) as cluster:
        ctx = create_job_ctx("fray", controller_address=cluster.address)

Each piece is a real process started with the `fray` command line (`python -m fray ...`, through
`fray.common.processes.start_python`); the controller binds port 0 and reports the port it got.
Stopping sends SIGTERM (the graceful path) and waits; anything still alive after the timeout is
killed (`fray.common.processes.stop_process`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from typing import IO, Any

from fray.common.processes import read_line, start_python, stop_process
from fray.wire.controller_client import ControllerClient
from fray.wire.pb import controller_pb2 as pb

__all__ = ["READY_PREFIX", "LocalFrayCluster"]

READY_PREFIX = "fray controller listening on "  # `fray controller`'s first line, then its URL


class LocalFrayCluster:
    """One controller process and `workers` worker processes on 127.0.0.1."""

    def __init__(
        self,
        workers: int = 2,
        *,
        concurrency: int = 1,
        heartbeat_timeout: float = 10.0,
        worker_args: tuple[str, ...] = (),
        controller_args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        self.num_workers = workers
        self.concurrency = concurrency
        self.heartbeat_timeout = heartbeat_timeout
        self.worker_args = worker_args
        self.controller_args = controller_args
        self.env = {**os.environ, **(env or {})}
        self.start_timeout = start_timeout
        self.address = ""
        self.controller: subprocess.Popen[Any] | None = None
        self.workers: list[subprocess.Popen[Any]] = []

    def start(self) -> LocalFrayCluster:
        try:
            self.start_controller()
            for _ in range(self.num_workers):
                self.add_worker()
            self.wait_for_workers(self.num_workers)
        except BaseException:
            self.stop()
            raise
        return self

    def start_controller(self, port: int = 0) -> str:
        """Start (or restart, on the same port when given) the controller process."""
        self.controller = start_python(
            "-m",
            "fray",
            "controller",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--heartbeat-timeout",
            str(self.heartbeat_timeout),
            *self.controller_args,
            stdout=subprocess.PIPE,
            text=True,
            env=self.env,
        )
        assert self.controller.stdout is not None
        line = read_line(self.controller.stdout, self.start_timeout)
        if not line.startswith(READY_PREFIX):
            raise RuntimeError(f"controller did not start (said {line!r})")
        self.address = line[len(READY_PREFIX) :].strip()
        # Keep draining its stdout, so that a chatty controller never blocks on a full pipe.
        threading.Thread(
            target=_forward, args=(self.controller.stdout,), name="fray-controller-out", daemon=True
        ).start()
        return self.address

    def add_worker(self, *extra_args: str) -> subprocess.Popen[Any]:
        """Start one more worker process (registering takes it a moment)."""
        process = start_python(
            "-m",
            "fray",
            "worker",
            "--controller",
            self.address,
            "--concurrency",
            str(self.concurrency),
            *self.worker_args,
            *extra_args,
            text=True,
            env=self.env,
        )
        self.workers.append(process)
        return process

    def wait_for_workers(self, count: int, timeout: float | None = None) -> None:
        """Block until `count` workers are registered."""
        token = self.env.get("FRAY_TOKEN") or None  # the one its processes got
        client = ControllerClient(self.address, token=token, retry_timeout=5)
        deadline = time.monotonic() + (timeout or self.start_timeout)
        try:
            while True:
                summary = client.call(client.rpc.get_cluster_summary, pb.GetClusterSummaryRequest())
                if summary.workers >= count:
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{summary.workers} of {count} workers registered")
                dead = [p.args for p in self.workers if p.poll() is not None]
                if len(self.workers) - len(dead) < count:
                    raise RuntimeError(f"worker processes exited early: {dead}")
                time.sleep(0.05)
        finally:
            client.close()

    def stop(self, timeout: float = 30.0) -> dict[str, int | None]:
        """SIGTERM every process, wait for them; returns their exit codes."""
        codes: dict[str, int | None] = {}
        for i, process in enumerate(self.workers):
            codes[f"worker-{i}"] = stop_process(process, timeout)
        self.workers = []
        if self.controller is not None:
            codes["controller"] = stop_process(self.controller, timeout)
            self.controller = None
        return codes

    def __enter__(self) -> LocalFrayCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _forward(stream: IO[str]) -> None:
    try:
        for line in stream:
            sys.stdout.write(line)
    except (OSError, ValueError):  # closed when the cluster stops
        pass
