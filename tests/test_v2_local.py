"""Tests of what is particular to fray.v2's local backend.

Real processes throughout: job processes, pool worker processes, and subprocesses running
the README program.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import cloudpickle
import pytest
from fray_fixtures import file_text, process_gone, wait_for

from fray.errors import RemoteTraceback
from fray.v2 import ActorServer, Entrypoint, EnvironmentSpec, JobStatus, ResourceSpec
from fray.v2.backends.local import LocalProcessCluster

cloudpickle.register_pickle_by_value(sys.modules[__name__])

README_PROGRAM = """\
from fray.v2 import current_cluster, ResourceSpec
cluster = current_cluster()
with cluster.worker_pool(num_workers=2, resources=ResourceSpec()) as pool:
    print("Results:", [f.result() for f in [pool.submit(lambda x: x * x, i) for i in range(5)]])
"""


@pytest.fixture
def local() -> LocalProcessCluster:
    with LocalProcessCluster() as cluster:
        yield cluster


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "FRAY_CLUSTER_SPEC"}


def run_program(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``python ARGS`` in ``cwd`` to completion, without a cluster spec from our env."""
    env = clean_env()
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=60, env=env, cwd=cwd
    )


def test_readme_program(tmp_path: Path) -> None:
    out = run_program(["-c", README_PROGRAM], tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "Results: [0, 1, 4, 9, 16]\n"


def test_readme_program_as_a_script_without_a_main_guard(tmp_path: Path) -> None:
    # Pool workers are not multiprocessing children: the script must not run again in them.
    script = tmp_path / "prog.py"
    script.write_text(README_PROGRAM)
    out = run_program([str(script)], tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "Results: [0, 1, 4, 9, 16]\n"


# --- jobs ----------------------------------------------------------------------------------


def spawn_sleeper(path: str) -> None:
    child = subprocess.Popen(["sleep", "60"])
    Path(path).write_text(str(child.pid))
    child.wait()


def test_terminate_kills_what_the_job_started(local: LocalProcessCluster, tmp_path: Path) -> None:
    pid_file = tmp_path / "child"
    job = local.submit(
        Entrypoint.from_callable(spawn_sleeper, args=(str(pid_file),)), "j", ResourceSpec()
    )
    wait_for(lambda: file_text(pid_file), 30, "the job to start its child")
    child = int(pid_file.read_text())
    job.terminate()
    assert job.status() == JobStatus.KILLED
    wait_for(lambda: process_gone(child), 10, "the job's child process to end")


def test_shutdown_stops_running_jobs(tmp_path: Path) -> None:
    cluster = LocalProcessCluster()
    job = cluster.submit(Entrypoint.from_callable(time.sleep, args=(60,)), "sleepy", ResourceSpec())
    assert job.status() == JobStatus.RUNNING
    cluster.shutdown()
    assert job.status() == JobStatus.KILLED


def test_job_workspace_is_cwd_and_importable(local: LocalProcessCluster, tmp_path: Path) -> None:
    (tmp_path / "helper_mod_v2.py").write_text("VALUE = 'from the workspace'\n")
    out = tmp_path / "out"

    def use_workspace() -> None:
        import helper_mod_v2  # type: ignore[import-not-found]

        Path("out").write_text(f"{os.getcwd()}|{helper_mod_v2.VALUE}")

    job = local.submit(
        Entrypoint.from_callable(use_workspace),
        "ws",
        ResourceSpec(),
        EnvironmentSpec(workspace=str(tmp_path)),
    )
    assert job.wait(timeout=30) == JobStatus.SUCCEEDED
    assert out.read_text() == f"{tmp_path}|from the workspace"


def test_unpicklable_entrypoint_fails_at_submit(local: LocalProcessCluster) -> None:
    lock = threading.Lock()
    with pytest.raises(TypeError):
        local.submit(Entrypoint.from_callable(print, args=(lock,)), "j", ResourceSpec())
    assert local.list_jobs() == []


# --- worker pools --------------------------------------------------------------------------


def meet(directory: str, name: str, count: int) -> tuple[int, bool]:
    """Arrive in `directory`, then wait (at most 30 s) until `count` calls have arrived: only
    calls running at the same time all meet. Returns the pid and whether all met."""
    Path(directory, name).write_text("")
    deadline = time.monotonic() + 30
    while len(list(Path(directory).iterdir())) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    return os.getpid(), len(list(Path(directory).iterdir())) >= count


def test_pool_workers_run_in_parallel_processes(local: LocalProcessCluster, tmp_path: Path) -> None:
    with local.worker_pool(2, ResourceSpec()) as pool:
        futures = [pool.submit(meet, str(tmp_path), f"call-{i}", 2) for i in range(2)]
        (pid1, met1), (pid2, met2) = futures[0].result(60), futures[1].result(60)
    assert len({pid1, pid2, os.getpid()}) == 3
    assert met1 and met2  # they ran at the same time


def die() -> None:
    os._exit(3)


def test_a_dying_worker_fails_its_future_and_is_replaced(local: LocalProcessCluster) -> None:
    with local.worker_pool(1, ResourceSpec()) as pool:
        with pytest.raises(RuntimeError, match="exit code 3"):
            pool.submit(die).result(timeout=30)
        assert pool.submit(pow, 2, 5).result(timeout=30) == 32


def test_a_pool_whose_workers_cannot_start_fails_its_futures(
    local: LocalProcessCluster, tmp_path: Path
) -> None:
    env = EnvironmentSpec(workspace=str(tmp_path / "missing"))
    with local.worker_pool(1, ResourceSpec(), env) as pool:
        future = pool.submit(pow, 2, 3)
        with pytest.raises(RuntimeError, match="cannot start a pool worker"):
            future.result(timeout=30)


def test_pool_results_and_arguments_are_copies(local: LocalProcessCluster) -> None:
    data = {"items": [1, 2]}

    def mutate(d: dict[str, list[int]]) -> dict[str, list[int]]:
        d["items"].append(3)
        return d

    with local.worker_pool(1, ResourceSpec()) as pool:
        assert pool.submit(mutate, data).result(timeout=30) == {"items": [1, 2, 3]}
        with pytest.raises(TypeError):
            pool.submit(print, threading.Lock())  # unpicklable: fails at submit
    assert data == {"items": [1, 2]}


def fail_with(exc: BaseException) -> None:
    raise exc


class Unpicklable(Exception):
    def __reduce__(self) -> str | tuple[object, ...]:
        raise TypeError("no pickling")


def fail_unpicklably(message: str) -> None:
    raise Unpicklable(message)


def test_pool_errors_keep_their_type_and_remote_traceback(local: LocalProcessCluster) -> None:
    with local.worker_pool(1, ResourceSpec()) as pool:
        with pytest.raises(KeyError) as info:
            pool.submit(fail_with, KeyError("k")).result(timeout=30)
        assert isinstance(info.value.__cause__, RemoteTraceback)
        assert "in fail_with" in str(info.value.__cause__)
        with pytest.raises(RuntimeError, match="Unpicklable: cannot travel") as stand_in:
            pool.submit(fail_unpicklably, "cannot travel").result(timeout=30)
        assert "in fail_unpicklably" in str(stand_in.value.__cause__)


def test_pool_workers_exit_when_the_pool_process_dies(tmp_path: Path) -> None:
    code = (
        "import time\n"
        "from fray.v2 import ResourceSpec, create_cluster\n"
        "def report():\n"
        "    import os, time\n"
        "    print(os.getpid(), flush=True)\n"
        "    time.sleep(60)\n"
        "pool = create_cluster('local').worker_pool(1, ResourceSpec())\n"
        "pool.submit(report)\n"
        "time.sleep(60)\n"
    )
    launcher = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=clean_env()
    )
    try:
        assert launcher.stdout is not None
        worker_pid = int(launcher.stdout.readline())
        assert not process_gone(worker_pid)
    finally:
        launcher.kill()
        launcher.wait()
    wait_for(lambda: process_gone(worker_pid), 10, "the pool worker to end with its pool")


def mark_then_sleep(marker: str, seconds: float) -> None:
    Path(marker).write_text("started")
    time.sleep(seconds)


def test_shutdown_cancel_futures(local: LocalProcessCluster, tmp_path: Path) -> None:
    pool = local.worker_pool(1, ResourceSpec())
    marker = tmp_path / "started"
    running = pool.submit(mark_then_sleep, str(marker), 0.5)
    queued = [pool.submit(time.sleep, 5) for _ in range(3)]
    deadline = time.monotonic() + 60
    while not marker.exists() and time.monotonic() < deadline:  # it runs: it is not cancelled
        time.sleep(0.01)
    pool.shutdown(wait=True, cancel_futures=True)
    assert running.result(timeout=0) is None
    assert all(f.cancelled() for f in queued)


# --- actors --------------------------------------------------------------------------------


class Box:
    def __init__(self) -> None:
        self.items: list[int] = []
        self.running = 0
        self.most_running = 0

    def keep(self, items: list[int]) -> list[int]:
        self.items = items
        items.append(99)  # the caller's list must not change
        return self.items

    def slow(self) -> int:
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        time.sleep(0.01)
        self.running -= 1
        return self.most_running


def test_local_actor_calls_round_trip_through_pickle(local: LocalProcessCluster) -> None:
    box = Box()
    with ActorServer(local) as server:
        server.register("box", box)
        server.serve_background()
        pool = local.resolver().lookup("box")
        mine = [1, 2]
        result = pool.call().keep(mine)
        assert mine == [1, 2] and result == [1, 2, 99]
        result.append(5)
        assert box.items == [1, 2, 99]  # the instance is ours, but results are copies
        with pytest.raises(TypeError):
            pool.call().keep(threading.Lock())


def test_local_actor_runs_one_call_at_a_time(local: LocalProcessCluster) -> None:
    box = Box()
    with ActorServer(local) as server:
        server.register("box", box)
        server.serve_background()
        pool = local.resolver().lookup("box")
        threads = [threading.Thread(target=lambda: pool.call().slow()) for _ in range(8)]
        for thread in threads:
            thread.start()
        results = [pool.broadcast().slow() for _ in range(8)]
        for thread in threads:
            thread.join()
        assert all(r.wait_all(timeout=30) == [1] for r in results)
    assert box.most_running == 1


def test_register_while_serving_and_after_shutdown(local: LocalProcessCluster) -> None:
    server = ActorServer(local)
    server.serve_background()
    server.register("late", Box())
    assert local.resolver().lookup("late").size == 1
    server.shutdown()
    assert local.resolver().lookup("late").size == 0
    with pytest.raises(RuntimeError):
        server.register("later", Box())


def test_serve_blocks_until_shutdown(local: LocalProcessCluster) -> None:
    server = ActorServer(local)
    server.register("blocking", Box())
    thread = threading.Thread(target=server.serve)
    thread.start()
    pool = local.resolver().lookup("blocking")
    pool.wait_for_size(1, timeout=10)
    assert thread.is_alive()
    server.shutdown()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert pool.size == 0


def test_a_job_whose_launcher_dies_cleans_up_and_exits(tmp_path: Path) -> None:
    # The launcher is a separate Python process that starts a local job and is then killed.
    marker = tmp_path / "job_pid"
    code = (
        "import sys, time\n"
        "from fray.v2 import Entrypoint, ResourceSpec, create_cluster\n"
        "def job(path):\n"
        "    import os, pathlib, time\n"
        "    pathlib.Path(path).write_text(str(os.getpid()))\n"
        "    time.sleep(60)\n"
        "cluster = create_cluster('local')\n"
        "cluster.submit(Entrypoint.from_callable(job, args=(sys.argv[1],)), 'orphan',"
        " ResourceSpec())\n"
        "print(cluster.workdir, flush=True)\n"
        "time.sleep(60)\n"
    )
    launcher = subprocess.Popen(
        [sys.executable, "-c", code, str(marker)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert launcher.stdout is not None
        workdir = Path(launcher.stdout.readline().strip())
        wait_for(lambda: file_text(marker), 30, "the job to start")
        job_pid = int(marker.read_text())
        assert any(workdir.rglob("output.log"))
    finally:
        launcher.kill()
        launcher.wait()
    wait_for(
        lambda: process_gone(job_pid) and not workdir.exists(),
        10,
        "the orphaned job to end and delete its files",
    )
