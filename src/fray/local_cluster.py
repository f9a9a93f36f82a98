"""A controller and worker processes on loopback: for demos, tests and benchmarks.

    with LocalFrayCluster(workers=2) as cluster:
        ctx = create_job_ctx("fray", controller_address=cluster.address)

Each piece is a real process started with the `fray` command line (`python -m fray ...`, through
`fray.common.processes.start_python`); the controller binds `port` (0: any free port) and
reports the port it got. Its state is in memory unless `state` names a file (`fray controller
--state`); `restart_controller()` kills it and starts it again on the same port and state, with
the workers left running.
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
    """One controller process and `workers` worker processes on 127.0.0.1.

    With `tls_cert` and `tls_key` (PEM files; the certificate must name 127.0.0.1) every process
    serves HTTPS and `address` is ``https://``; `tls_ca` is the CA bundle they all trust.
    """

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
        tls_cert: str | None = None,
        tls_key: str | None = None,
        tls_ca: str | None = None,
        state: str | None = None,
        port: int = 0,
    ) -> None:
        self.num_workers = workers
        self.state = state  # the controller's state file (None: in memory)
        self.port = port
        self.concurrency = concurrency
        self.heartbeat_timeout = heartbeat_timeout
        self.worker_args = worker_args
        self.controller_args = controller_args
        self.env = {**os.environ, **(env or {})}
        # TLS: every process serves HTTPS with this certificate (it must name 127.0.0.1), and
        # trusts `tls_ca` (its processes get it as $FRAY_TLS_CA; so do the cluster's own calls).
        self.tls_args: tuple[str, ...] = (
            *(("--tls-cert", tls_cert) if tls_cert else ()),
            *(("--tls-key", tls_key) if tls_key else ()),
        )
        if tls_ca:
            self.env["FRAY_TLS_CA"] = os.path.abspath(tls_ca)
        self.start_timeout = start_timeout
        self.address = ""
        self.controller: subprocess.Popen[Any] | None = None
        self.workers: list[subprocess.Popen[Any]] = []

    def start(self) -> LocalFrayCluster:
        try:
            self.start_controller(self.port)
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
            "--state",
            self.state or ":memory:",
            *self.tls_args,
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

    def restart_controller(self, *, kill: bool = True, timeout: float = 30.0) -> str:
        """Stop the controller (SIGKILL, or the graceful SIGTERM with `kill=False`) and start it
        again on the same port, with the same state file; the workers keep running."""
        assert self.controller is not None, "the controller is not running"
        port = int(self.address.rsplit(":", 1)[1])
        if kill:
            self.controller.kill()
            self.controller.wait(timeout)
        stop_process(self.controller, timeout)  # reaps it (and closes its stdout)
        return self.start_controller(port)

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
            *self.tls_args,
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
        tls_ca = self.env.get("FRAY_TLS_CA", "")  # the one its processes got ("": none)
        client = ControllerClient(self.address, token=token, tls_ca=tls_ca, retry_timeout=5)
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
