"""The programs in examples/ run end to end, as a user would run them: real processes.

- examples/rpc: run_controller.py (port 0: it prints the address it got), run_worker.py (given
  the address through $FRAY_CONTROLLER_ADDRESS) and submit_task.py (through --controller), three
  processes on loopback; then both servers stop cleanly on SIGTERM.
- examples/v2: the worker pool and the job on the local backend, on that fray controller, and
  the job on Ray (one subprocess, connected to the session's Ray, so no second Ray starts).

Every process is stopped at the end (SIGTERM, then SIGKILL after a timeout).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fray.common.processes import stop_process

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
RUN_TIMEOUT = 120.0  # seconds one example program may take (they take 1-5 s here)


def _env(**extra: str) -> dict[str, str]:
    """This environment without fray's variables (one would point an example elsewhere, and a
    worker made in this test process sets FRAY_WORKER_ID here, as it does for its tasks)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAY_")}
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    return {**env, **extra}


def _run(script: str, *args: str, env: dict[str, str] | None = None) -> str:
    """Run an example to its end; its stdout (it must exit 0)."""
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env or _env(),
        timeout=RUN_TIMEOUT,
    )
    assert result.returncode == 0, f"{script} exited {result.returncode}:\n{result.stderr}"
    return result.stdout


@dataclass
class Server:
    """A long-running example process, its stdout and stderr going to files."""

    process: subprocess.Popen[Any]
    out: Path
    err: Path

    def output(self) -> str:
        return self.out.read_text()

    def wait_for(self, text: str, timeout: float = 30.0) -> str:
        """Wait until its stdout contains `text`; returns the stdout."""
        deadline = time.monotonic() + timeout
        while text not in self.output():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.process.args[1]} did not print {text!r} (exit {self.process.poll()})"
                    f"\nstdout:\n{self.output()}\nstderr:\n{self.err.read_text()}"
                )
            time.sleep(0.05)
        return self.output()

    def stop(self) -> int | None:
        """SIGTERM, up to 20 s to end, then SIGKILL; its exit code."""
        return stop_process(self.process, 20.0)


def _start(tmp: Path, script: str, *args: str, env: dict[str, str]) -> Server:
    name = Path(script).stem
    out, err = tmp / f"{name}.out", tmp / f"{name}.err"
    with out.open("w") as out_file, err.open("w") as err_file:
        process = subprocess.Popen(
            [sys.executable, str(EXAMPLES / script), *args],
            stdin=subprocess.DEVNULL,
            stdout=out_file,
            stderr=err_file,
            env=env,
        )
    return Server(process, out, err)


@dataclass
class RpcCluster:
    address: str
    controller: Server
    worker: Server


@pytest.fixture(scope="module")
def rpc_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RpcCluster]:
    """run_controller.py and run_worker.py, as two processes; both must stop cleanly."""
    tmp = tmp_path_factory.mktemp("examples")
    servers: list[Server] = []
    try:
        controller = _start(tmp, "rpc/run_controller.py", "--port", "0", env=_env())
        servers.append(controller)
        first_line = controller.wait_for("\n").splitlines()[0]
        assert first_line.startswith("controller listening on http://127.0.0.1:"), first_line
        address = first_line.rsplit(" ", 1)[1]
        assert not address.endswith(":0")  # the port it got, not the one asked for
        worker = _start(
            tmp,
            "rpc/run_worker.py",
            "--worker-id",
            "example-worker",
            env=_env(FRAY_CONTROLLER_ADDRESS=address),
        )
        servers.append(worker)
        worker.wait_for("joining")
        yield RpcCluster(address, controller, worker)
        # Worker first (it unregisters), then the controller: both end on SIGTERM, exit 0.
        assert worker.stop() == 0, worker.err.read_text()
        assert "unregistered" in worker.err.read_text()
        assert controller.stop() == 0, controller.err.read_text()
        assert controller.output().rstrip().endswith("controller stopped")
    finally:
        for server in reversed(servers):
            server.stop()  # after a failure: still stop them (a no-op for ended ones)


def test_rpc_examples_controller_worker_submit(rpc_cluster: RpcCluster) -> None:
    start = time.monotonic()
    out = _run("rpc/submit_task.py", "--controller", rpc_cluster.address)
    lines = out.splitlines()
    assert lines[0].startswith("pi ~ 3.1") and lines[0].endswith("from 8 tasks"), out
    assert lines[1] == "task says: example-worker saw 1000 weights", out
    assert lines[2] == "wait: 2 of 4 done first; all 4 now", out
    assert lines[3] == "the failing task raised ValueError: this task fails on purpose", out
    assert lines[-1] == "done", out
    assert time.monotonic() - start < 60
    # The worker's log shows it registered with the controller the example printed.
    assert f"serving {rpc_cluster.address}" in rpc_cluster.worker.err.read_text()


def test_v2_worker_pool_local_and_fray(rpc_cluster: RpcCluster) -> None:
    local = _run("v2/worker_pool.py")  # no argument, no $FRAY_CLUSTER_SPEC: local
    on_fray = _run("v2/worker_pool.py", f"fray?address={rpc_cluster.address}")
    for out, kind in ((local, "LocalProcessCluster"), (on_fray, "FrayCluster")):
        assert out.splitlines() == [
            out.splitlines()[0],
            "Results: [0, 1, 4, 9, 16]",
            "map: [25, 36, 49, 64, 81]",
        ], out
        assert out.startswith(f"cluster: {kind}("), out


def _check_job_output(out: str, kind: str, where: str) -> None:
    """`where`: where the job says it ran; a regular expression."""
    lines = out.splitlines()
    assert lines[0].startswith(f"cluster: {kind}("), out
    job_id = lines[1].removeprefix("submitted ")
    assert job_id.startswith("train-"), out
    steps = [line for line in lines if line.startswith(f"[{job_id}]")]
    assert len(steps) == 3, out
    for i, step in enumerate(steps):
        assert re.fullmatch(rf"\[{job_id}\] step {i} of 3 on {where}", step), out
    assert "train: succeeded" in lines, out
    assert lines[-1] == "broken: failed as expected: RuntimeError: this job fails on purpose", out


def test_v2_job_local_and_fray(rpc_cluster: RpcCluster) -> None:
    _check_job_output(_run("v2/job.py", "local"), "LocalProcessCluster", "this machine")
    # On fray, through $FRAY_CLUSTER_SPEC; the job runs on the example's worker.
    env = _env(FRAY_CLUSTER_SPEC=f"fray?address={rpc_cluster.address}")
    _check_job_output(_run("v2/job.py", env=env), "FrayCluster", "example-worker")


def test_v2_job_on_ray(ray_session: Any) -> None:
    """The job example on Ray: one subprocess, a Ray driver connected to the session's Ray
    (starting a Ray of its own would cost another ~10 s)."""
    address = ray_session.get_runtime_context().gcs_address
    # The session's Ray workers started with this test process's environment, which holds a
    # FRAY_WORKER_ID when an earlier test built a fray Worker in-process (a worker sets it for
    # the tasks it runs): the job reports either.
    out = _run("v2/job.py", f"ray?address={address}")
    _check_job_output(out, "RayCluster", r"(this machine|worker-\w+)")
