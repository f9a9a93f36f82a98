"""Job replicas on a worker (`fray.worker.jobs`), the job process helpers
(`fray.common.job_process`: the bootstrap, `run_command`) and `Entrypoint.from_binary`.

The replica runner is driven without a controller: the tests take its updates (what it would
send in `ReportJobs`) and acknowledge them themselves. Real processes throughout.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
from fray_fixtures import file_text, process_gone, wait_for

from fray.client.context import FrayContext
from fray.common import job_process, processes
from fray.errors import ControllerUnavailableError
from fray.local_cluster import LocalFrayCluster
from fray.v2 import Entrypoint, JobStatus, ResourceSpec
from fray.v2.backends.local import LocalProcessCluster
from fray.wire.controller_client import ControllerClient
from fray.wire.pb import controller_pb2 as pb
from fray.worker.jobs import CHUNK_BYTES, JobReplicas
from fray.worker.resources import offered_resources

cloudpickle.register_pickle_by_value(sys.modules[__name__])

CONTROLLER = "http://127.0.0.1:1"
HEARTBEAT_TIMEOUT = 2.0
FINAL = (pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_KILLED)


@pytest.fixture
def replicas(tmp_path: Path) -> Any:
    runner = JobReplicas(None, "w-test", CONTROLLER, token="sekrit", tmp_root=str(tmp_path))
    try:
        yield runner
    finally:
        runner.close()
        _SEEN.pop(id(runner), None)


def python_launch(fn: Callable[..., Any], *args: Any, job_id: str = "j", **fields: Any) -> Any:
    return pb.JobLaunch(
        job_id=job_id,
        index=fields.pop("index", 0),
        replicas=fields.pop("replicas", 1),
        entrypoint=cloudpickle.dumps((fn, args, {})),
        **fields,
    )


def command_launch(*argv: str, job_id: str = "j", **fields: Any) -> Any:
    return pb.JobLaunch(job_id=job_id, index=0, replicas=1, command=list(argv), **fields)


_SEEN: dict[int, dict[str, list[pb.JobReplicaUpdate]]] = {}


def pump(runner: JobReplicas, key: str = "j/0", timeout: float = 20.0) -> list[pb.JobReplicaUpdate]:
    """Take and acknowledge the runner's updates until replica `key`'s final one; its updates
    (those of other replicas are kept for their turn)."""
    seen = _SEEN.setdefault(id(runner), {})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = seen.get(key, [])
        if got and got[-1].state in FINAL:
            return seen.pop(key)
        batch = runner.updates()
        runner.delivered(batch)
        for _, update in batch:
            seen.setdefault(f"{update.job_id}/{update.index}", []).append(update)
        if not batch:
            time.sleep(0.05)
    raise AssertionError(f"no final update for {key} in {timeout}s; got {seen.get(key)}")


def output_of(updates: list[pb.JobReplicaUpdate]) -> bytes:
    """The output the updates carry, checking that the offsets follow each other."""
    out = b""
    for update in updates:
        assert update.output_offset == len(out), (update.output_offset, len(out))
        out += update.output
    return out


# ---------------------------------------------------------------------- replicas


def greet(lines: int) -> None:
    for i in range(lines):
        print(f"line {i}", flush=True)
        time.sleep(0.01)


def test_python_replica_output_in_order_then_succeeded(replicas: JobReplicas) -> None:
    replicas.launch(python_launch(greet, 30))
    assert replicas.listed() == ["j/0"]
    updates = pump(replicas)
    first, last = updates[0], updates[-1]
    assert first.state == pb.JOB_STATE_RUNNING and first.pid > 0
    assert last.state == pb.JOB_STATE_SUCCEEDED and last.exit_code == 0 and not last.error
    assert output_of(updates) == b"".join(f"line {i}\n".encode() for i in range(30))
    assert replicas.listed() == []
    assert not os.listdir(replicas._root())  # its files are gone


def show_env() -> None:
    names = [
        "FRAY_JOB_ID",
        "FRAY_NUM_TASKS",
        "FRAY_TASK_INDEX",
        "FRAY_CONTROLLER_ADDRESS",
        "FRAY_CLUSTER_SPEC",
        "FRAY_TOKEN",
        "PYTHONUNBUFFERED",
        "MINE",
    ]
    for name in names:
        print(f"{name}={os.environ.get(name)}")
    print(f"cwd={os.getcwd()}")


def test_replica_environment_and_working_dir(replicas: JobReplicas, tmp_path: Path) -> None:
    replicas.launch(
        python_launch(
            show_env,
            job_id="envy",
            index=2,
            replicas=3,
            env={"MINE": "x"},
            working_dir=str(tmp_path),
        )
    )
    text = output_of(pump(replicas, "envy/2")).decode()
    assert "FRAY_JOB_ID=envy\n" in text
    assert "FRAY_NUM_TASKS=3\n" in text and "FRAY_TASK_INDEX=2\n" in text
    assert f"FRAY_CONTROLLER_ADDRESS={CONTROLLER}\n" in text
    assert f"FRAY_CLUSTER_SPEC=fray?address={CONTROLLER}\n" in text
    assert "FRAY_TOKEN=sekrit\n" in text and "PYTHONUNBUFFERED=1\n" in text
    assert "MINE=x\n" in text and f"cwd={tmp_path}\n" in text
    # The job's own cluster spec wins.
    spec = "fray?address=http://elsewhere:1&namespace=ns"
    replicas.launch(python_launch(show_env, job_id="own", env={"FRAY_CLUSTER_SPEC": spec}))
    assert f"FRAY_CLUSTER_SPEC={spec}\n" in output_of(pump(replicas, "own/0")).decode()


def fail() -> None:
    print("about to fail")
    raise ValueError("the job went wrong")


def test_python_replica_exception_fails_with_its_traceback(replicas: JobReplicas) -> None:
    replicas.launch(python_launch(fail))
    updates = pump(replicas)
    last = updates[-1]
    assert last.state == pb.JOB_STATE_FAILED and last.exit_code == 1
    assert "Traceback" in last.error and "ValueError: the job went wrong" in last.error
    assert output_of(updates).startswith(b"about to fail\n")


def test_command_replica_exit_codes(replicas: JobReplicas) -> None:
    replicas.launch(command_launch("sh", "-c", "echo out; echo err >&2; exit 3"))
    updates = pump(replicas)
    assert output_of(updates) == b"out\nerr\n"
    last = updates[-1]
    assert last.state == pb.JOB_STATE_FAILED and last.exit_code == 3
    assert last.error == "the job's process exited with code 3"

    replicas.launch(command_launch("sh", "-c", "kill -9 $$", job_id="sig"))
    last = pump(replicas, "sig/0")[-1]
    assert last.state == pb.JOB_STATE_FAILED and last.exit_code == -9
    assert last.error == "the job's process was killed by signal 9"

    replicas.launch(command_launch("true", job_id="ok"))
    assert pump(replicas, "ok/0")[-1].state == pb.JOB_STATE_SUCCEEDED


def test_replicas_that_cannot_start(replicas: JobReplicas, tmp_path: Path) -> None:
    replicas.launch(command_launch("no-such-program-xyz"))
    (only,) = pump(replicas)
    assert only.state == pb.JOB_STATE_FAILED and only.pid == 0
    assert only.error.startswith("could not start: no program 'no-such-program-xyz' on PATH")

    missing = str(tmp_path / "missing")
    replicas.launch(python_launch(greet, 1, job_id="cwd", working_dir=missing))
    (only,) = pump(replicas, "cwd/0")
    assert only.state == pb.JOB_STATE_FAILED and only.error.startswith("could not start: ")
    assert "missing" in only.error

    replicas.launch(pb.JobLaunch(job_id="empty", index=0, replicas=1))
    assert "neither an entrypoint nor a command" in pump(replicas, "empty/0")[-1].error


def test_large_output_goes_in_chunks_with_offsets(replicas: JobReplicas) -> None:
    size = 3 * CHUNK_BYTES + 12345
    replicas.launch(command_launch("sh", "-c", f"head -c {size} /dev/zero | tr '\\0' x"))
    updates = pump(replicas)
    assert all(len(u.output) <= CHUNK_BYTES for u in updates)
    assert output_of(updates) == b"x" * size
    assert updates[-1].state == pb.JOB_STATE_SUCCEEDED


def test_repeated_launch_is_ignored(replicas: JobReplicas, tmp_path: Path) -> None:
    marker = tmp_path / "runs"
    launch = command_launch("sh", "-c", f"echo run >> {marker}; sleep 0.3")
    replicas.launch(launch)
    replicas.launch(launch)
    pump(replicas)
    replicas.launch(launch)  # already finished here: not run again either
    time.sleep(0.5)
    assert marker.read_text() == "run\n" and replicas.listed() == []


def test_stop_kills_the_process_group_and_grandchildren(
    replicas: JobReplicas, tmp_path: Path
) -> None:
    pidfile = tmp_path / "grandchild"
    replicas.launch(command_launch("sh", "-c", f"sleep 100 & echo $! > {pidfile}; wait"))
    wait_for(lambda: file_text(pidfile).strip(), 10, "the grandchild's pid")
    grandchild = int(file_text(pidfile))
    t0 = time.monotonic()
    replicas.stop(["j/0", "unknown/0"])
    last = pump(replicas)[-1]
    assert last.state == pb.JOB_STATE_KILLED and not last.error
    assert time.monotonic() - t0 < 2.5  # SIGTERM was enough
    wait_for(lambda: process_gone(grandchild), 5, "the grandchild to die")


def stubborn(pidfile: str) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child = subprocess.Popen(["sh", "-c", "trap '' TERM; sleep 100"])
    Path(pidfile).write_text(str(child.pid))
    time.sleep(100)


def test_stop_kills_what_ignores_sigterm_after_the_grace(
    replicas: JobReplicas, tmp_path: Path
) -> None:
    pidfile = tmp_path / "child"
    replicas.launch(python_launch(stubborn, str(pidfile)))
    wait_for(lambda: file_text(pidfile).strip(), 10, "the child's pid")
    t0 = time.monotonic()
    replicas.stop(["j/0"])
    last = pump(replicas)[-1]
    assert last.state == pb.JOB_STATE_KILLED
    assert 2.5 < time.monotonic() - t0 < 10
    wait_for(lambda: process_gone(int(file_text(pidfile))), 5, "the child to die")


def test_shutdown_stops_replicas_and_refuses_new_ones(replicas: JobReplicas) -> None:
    replicas.launch(command_launch("sleep", "100"))
    replicas.stop_all(refuse="worker w-test is shutting down")
    replicas.launch(command_launch("true", job_id="late"))
    assert pump(replicas)[-1].state == pb.JOB_STATE_KILLED
    late = pump(replicas, "late/0")[-1]
    assert late.error == "could not start: worker w-test is shutting down"


class FlakyController:
    """Stands in for the ControllerClient: unreachable for the first `down` calls, then takes
    the reports and answers with `stops`."""

    def __init__(self, down: int, stops: list[str]) -> None:
        self.down, self.stops = down, stops
        self.requests: list[pb.ReportJobsRequest] = []
        self.rpc = self

    def report_jobs(self) -> None:  # what `call` is given
        raise NotImplementedError

    def call(self, method: Any, request: pb.ReportJobsRequest, **kwargs: Any) -> Any:
        self.requests.append(request)
        if self.down > 0:
            self.down -= 1
            raise ControllerUnavailableError("controller unreachable (test)")
        return pb.ReportJobsResponse(stop_job_replicas=self.stops)


def test_reports_wait_for_the_controller_and_its_stop_orders_are_followed(
    tmp_path: Path,
) -> None:
    controller = FlakyController(down=1, stops=["j/0"])
    runner = JobReplicas(controller, "w-test", CONTROLLER, tmp_root=str(tmp_path))  # type: ignore[arg-type]
    runner._closed.wait = lambda timeout=None: False  # type: ignore[method-assign]  # no pause
    try:
        runner.launch(command_launch("sh", "-c", "echo hi; sleep 100"))
        wait_for(lambda: runner.updates()[0][1].output == b"hi\n", 10, "the output")
        assert runner.report_once() is False  # unreachable: kept
        assert runner.listed() == ["j/0"]
        runner.report_once()  # delivered: the answer says stop it
        first, again = controller.requests[0].updates[0], controller.requests[1].updates[0]
        assert first == again and first.state == pb.JOB_STATE_RUNNING and first.output == b"hi\n"
        wait_for(lambda: runner.report_once() is not None and not runner.listed(), 10, "its end")
        last = controller.requests[-1].updates[0]
        assert last.state == pb.JOB_STATE_KILLED and last.output_offset == 3
    finally:
        runner.close()


LAUNCHER = """
import sys, time
from fray.common.job_process import JobProcess, command_payload
argv = ["sh", "-c", "sleep 100 & echo $! > " + sys.argv[2] + "; wait"]
job = JobProcess(command_payload(argv), sys.argv[1], {"PATH": "/usr/bin:/bin"})
print(job.pid, flush=True)
time.sleep(100)
"""


def test_a_sigkilled_launchers_job_ends_with_its_session(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild"
    launcher = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, str(tmp_path / "job"), str(pidfile)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert launcher.stdout is not None
        job_pid = int(launcher.stdout.readline())
        wait_for(lambda: file_text(pidfile).strip(), 10, "the grandchild's pid")
        grandchild = int(file_text(pidfile))
        launcher.kill()
        launcher.wait()
        wait_for(lambda: process_gone(job_pid), 10, "the job process to exit")
        wait_for(lambda: process_gone(grandchild), 10, "the command's child to die")
        assert not (tmp_path / "job").exists()  # its files went with it
    finally:
        launcher.kill()
        launcher.wait()


# ---------------------------------------------------------------------- run_command


def run_wrapper(argv: list[str], **kwargs: Any) -> subprocess.Popen[str]:
    code = f"from fray.common.job_process import run_command; run_command({argv!r})"
    return subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def test_run_command_exits_as_its_child() -> None:
    proc = run_wrapper(["sh", "-c", "echo hello; exit 7"])
    out, _ = proc.communicate(timeout=30)
    assert (proc.returncode, out) == (7, "hello\n")
    proc = run_wrapper(["sh", "-c", "kill -TERM $$"])
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGTERM  # re-raised: its parent sees the same signal


def test_run_command_names_a_missing_program() -> None:
    proc = run_wrapper(["no-such-program-xyz", "arg"])
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert "FileNotFoundError: no program 'no-such-program-xyz' on PATH" in err
    with pytest.raises(TypeError, match="not str"):
        job_process.run_command("ls -l")  # type: ignore[arg-type]


TRAPPER = "trap 'echo TERM >> {log}; exit 5' TERM; echo ready; while :; do sleep 0.05; done"


@pytest.mark.parametrize("to_group", [False, True])
def test_run_command_passes_sigterm_on_once(tmp_path: Path, to_group: bool) -> None:
    log = tmp_path / "log"
    proc = run_wrapper(["sh", "-c", TRAPPER.format(log=log)], start_new_session=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        time.sleep(0.2)  # the wrapper has installed its handlers
        if to_group:
            os.killpg(proc.pid, signal.SIGTERM)
        else:
            proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        assert proc.returncode == 5
        assert log.read_text() == "TERM\n"
    finally:
        proc.kill()
        proc.wait()


# ---------------------------------------------------------------------- Entrypoint


def test_from_binary_carries_its_argv() -> None:
    entry = Entrypoint.from_binary("echo", ["a", "b"])
    assert entry.command == ("echo", "a", "b")
    assert entry.callable is job_process.run_command and entry.args == (["echo", "a", "b"],)
    assert Entrypoint.from_callable(print, ("x",)).command is None


@pytest.mark.parametrize(
    "make",
    [
        lambda: Entrypoint.from_callable(print, "/tmp/x"),
        lambda: Entrypoint.from_callable(print, b"/tmp/x"),
        lambda: Entrypoint.from_binary("ls", "/tmp/x"),
        lambda: Entrypoint(print, "/tmp/x"),  # type: ignore[arg-type]
    ],
)
def test_a_string_as_args_is_a_type_error(make: Callable[[], Entrypoint]) -> None:
    with pytest.raises(TypeError, match=r"a sequence of arguments, got the (str|bytes)"):
        make()


def test_binary_job_on_the_local_backend(tmp_path: Path) -> None:
    with LocalProcessCluster() as cluster:
        job = cluster.submit(
            Entrypoint.from_binary("sh", ["-c", "echo from a binary; exit 0"]),
            "bin",
            ResourceSpec(),
        )
        assert job.wait(60) == JobStatus.SUCCEEDED
        assert job.logs() == "from a binary\n"
        failing = cluster.submit(
            Entrypoint.from_binary("sh", ["-c", "exit 4"]), "bad", ResourceSpec()
        )
        assert failing.wait(60, raise_on_failure=False) == JobStatus.FAILED
        assert failing.error() == "the job's process exited with code 4"


# ---------------------------------------------------------------------- resources


def test_worker_offers_the_machines_cpus_memory_and_disk_by_default() -> None:
    offer = offered_resources(None)
    assert offer.capacities["cpus"] == float(os.cpu_count() or 1) == offer.cpus
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert offer.capacities["memory"] == float(memory) and offer.memory_bytes == memory
    disk = float(shutil.disk_usage(tempfile.gettempdir()).total)
    assert offer.capacities["disk"] == disk
    given = offered_resources(
        pb.Resources(capacities={"gpus": 2.0, "cpus": 3.0, "disk": 5.0}, labels={"zone": "a"})
    )
    assert dict(given.capacities) == {
        "gpus": 2.0,
        "cpus": 3.0,
        "memory": float(memory),
        "disk": 5.0,
    }
    assert given.cpus == 3.0 and dict(given.labels) == {"zone": "a"}
    old = offered_resources(pb.Resources(cpus=2, memory_bytes=1 << 30))
    assert dict(old.capacities) == {"cpus": 2.0, "memory": float(1 << 30), "disk": disk}


NO_FRAY = """
import sys
class NoFray:
    def find_spec(self, name, path=None, target=None):
        if name == "fray" or name.startswith("fray."):
            raise ImportError("no fray here")
sys.meta_path.insert(0, NoFray())
import cloudpickle
fn, args, kwargs = cloudpickle.loads(bytes.fromhex(sys.argv[1]))
fn(*args, **kwargs)
"""


def test_a_binary_entrypoint_runs_without_fray() -> None:
    # The Ray backend's jobs may run where fray is not installed: run_command goes by value.
    payload = job_process.dump_call(*_call_of(Entrypoint.from_binary("sh", ["-c", "exit 6"])))
    proc = subprocess.run([sys.executable, "-c", NO_FRAY, payload.hex()], timeout=30)
    assert proc.returncode == 6
    assert job_process.run_command.__module__ not in cloudpickle.list_registry_pickle_by_value()


def _call_of(entry: Entrypoint) -> tuple[Any, ...]:
    return entry.callable, entry.args, entry.kwargs


# ---------------------------------------------------------------------- with a controller


@pytest.fixture(scope="module")
def fray_cluster() -> Any:
    with LocalFrayCluster(workers=2, concurrency=1, heartbeat_timeout=HEARTBEAT_TIMEOUT) as c:
        yield c


@pytest.fixture
def client(fray_cluster: LocalFrayCluster) -> Any:
    c = ControllerClient(fray_cluster.address, retry_timeout=10)
    try:
        yield c
    finally:
        c.close()


def submit(client: ControllerClient, name: str, **spec: Any) -> pb.Job:
    request = pb.SubmitJobRequest(job=pb.JobSpec(name=name, owner="test", **spec))
    return client.call(client.rpc.submit_job, request).job


def get_job(client: ControllerClient, job_id: str, wait_ms: int = 0) -> pb.Job:
    request = pb.GetJobRequest(job_id=job_id, wait_ms=wait_ms)
    return client.call(client.rpc.get_job, request, wait_ms=wait_ms).job


def finished_job(client: ControllerClient, job_id: str, timeout: float = 30) -> pb.Job:
    final = (pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_KILLED)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = get_job(client, job_id, wait_ms=1000)
        if job.state in final:
            return job
    raise AssertionError(f"job {job_id} still {pb.JobState.Name(job.state)} after {timeout}s")


def read_logs(client: ControllerClient, job_id: str, replica: int = 0, until: bytes = b"") -> bytes:
    """A replica's output through GetJobLogs: all of it, or until `until` appears."""
    data, offset = b"", 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        request = pb.GetJobLogsRequest(job_id=job_id, replica=replica, offset=offset, wait_ms=1000)
        answer = client.call(client.rpc.get_job_logs, request, wait_ms=1000)
        data += answer.data
        offset = answer.next_offset
        if (until and until in data) or answer.finished:
            return data
    raise AssertionError(f"logs of {job_id}/{replica} so far: {data!r}")


def chatty(marker: str) -> None:
    index = os.environ["FRAY_TASK_INDEX"]
    print(f"replica {index} of {os.environ['FRAY_NUM_TASKS']} says hello", flush=True)
    print(f"spec={os.environ['FRAY_CLUSTER_SPEC']}", flush=True)
    while not os.path.exists(marker):  # runs until the test has read its first lines
        time.sleep(0.05)
    print(f"replica {index} done", flush=True)


def test_job_runs_on_workers_and_streams_its_logs(
    fray_cluster: LocalFrayCluster, client: ControllerClient, tmp_path: Path
) -> None:
    marker = tmp_path / "go"
    job = submit(
        client, "chatty", replicas=2, entrypoint=cloudpickle.dumps((chatty, (str(marker),), {}))
    )
    for index in range(2):  # output while it runs
        text = read_logs(client, job.job_id, index, until=b"spec=").decode()
        assert f"replica {index} of 2 says hello\n" in text
        assert f"spec=fray?address={fray_cluster.address}" in text
    assert get_job(client, job.job_id).state == pb.JOB_STATE_RUNNING
    marker.touch()
    done = finished_job(client, job.job_id)
    assert done.state == pb.JOB_STATE_SUCCEEDED, done.error
    assert [r.state for r in done.replica_states] == [pb.JOB_STATE_SUCCEEDED] * 2
    assert all(r.pid > 0 and r.exit_code == 0 for r in done.replica_states)
    assert read_logs(client, job.job_id, 1).endswith(b"replica 1 done\n")


def test_stopped_job_kills_its_processes(
    fray_cluster: LocalFrayCluster, client: ControllerClient, tmp_path: Path
) -> None:
    pidfile = tmp_path / "grandchild"
    job = submit(
        client, "sleepy", command=["sh", "-c", f"sleep 100 & echo $! > {pidfile}; echo up; wait"]
    )
    read_logs(client, job.job_id, until=b"up\n")
    grandchild = int(file_text(pidfile))
    pid = get_job(client, job.job_id).replica_states[0].pid
    assert pid > 0
    client.call(client.rpc.stop_job, pb.StopJobRequest(job_id=job.job_id))
    assert finished_job(client, job.job_id).state == pb.JOB_STATE_KILLED
    wait_for(lambda: process_gone(pid) and process_gone(grandchild), 10, "the job's processes")
    wait_for(
        lambda: get_job(client, job.job_id).replica_states[0].state == pb.JOB_STATE_KILLED,
        10,
        "the worker's report",
    )


def test_failing_jobs_say_why(client: ControllerClient) -> None:
    job = submit(client, "raises", entrypoint=cloudpickle.dumps((fail, (), {})))
    done = finished_job(client, job.job_id)
    assert done.state == pb.JOB_STATE_FAILED
    assert "ValueError: the job went wrong" in done.error
    assert read_logs(client, job.job_id).startswith(b"about to fail\n")

    job = submit(client, "exits", command=["sh", "-c", "exit 3"])
    done = finished_job(client, job.job_id)
    (replica,) = done.replica_states
    assert done.state == pb.JOB_STATE_FAILED and done.error.endswith(replica.error)
    assert (replica.error, replica.exit_code) == ("the job's process exited with code 3", 3)

    job = submit(client, "missing", command=["no-such-program-xyz"])
    done = finished_job(client, job.job_id)
    assert done.state == pb.JOB_STATE_FAILED
    assert "could not start: no program 'no-such-program-xyz'" in done.error
    assert done.replica_states[0].error.startswith("could not start: no program")


def cluster_spec() -> str | None:
    return os.environ.get("FRAY_CLUSTER_SPEC")


def slow_cluster_spec() -> str | None:
    time.sleep(0.3)
    return cluster_spec()


def test_tasks_see_the_cluster_spec_and_workers_offer_the_machine(
    fray_cluster: LocalFrayCluster,
) -> None:
    ctx = FrayContext(fray_cluster.address, retry_timeout=10)
    try:
        assert ctx.get(ctx.run(cluster_spec)) == f"fray?address={fray_cluster.address}"
    finally:
        ctx.close()
    c = ControllerClient(fray_cluster.address, retry_timeout=10)
    try:
        workers = c.call(c.rpc.list_workers, pb.ListWorkersRequest()).workers
    finally:
        c.close()
    assert len(workers) >= 2
    for worker in workers:
        assert worker.resources.capacities["cpus"] == float(os.cpu_count() or 1)
        assert worker.resources.capacities["memory"] > 0
        assert worker.resources.memory_bytes == int(worker.resources.capacities["memory"])


def test_a_stopping_worker_stops_its_replicas_and_reports_them(
    fray_cluster: LocalFrayCluster, client: ControllerClient
) -> None:
    worker = fray_cluster.add_worker("--resources", "zone=leaving")
    try:
        job = submit(
            client,
            "stranded",
            command=["sh", "-c", "echo up; sleep 100"],
            requirements=pb.Requirements(labels={"zone": "leaving"}),
        )
        read_logs(client, job.job_id, until=b"up\n")
        pid = get_job(client, job.job_id).replica_states[0].pid
        processes.stop_process(worker, grace=(10.0,))
        assert worker.returncode == 0
        wait_for(lambda: process_gone(pid), 5, "the replica's process")
        done = finished_job(client, job.job_id)
        assert done.replica_states[0].state == pb.JOB_STATE_KILLED  # reported before it left
    finally:
        processes.stop_process(worker, grace=(1.0,))


def test_a_workers_tasks_reach_its_own_controller_whatever_spec_the_shell_had() -> None:
    """A worker started where FRAY_CLUSTER_SPEC names another cluster (a shell's "local")
    gives its tasks its own controller; a spec naming its controller (a namespace) is kept."""
    with LocalFrayCluster(workers=1, env={**os.environ, "FRAY_CLUSTER_SPEC": "local"}) as cluster:
        ctx = FrayContext(cluster.address, retry_timeout=10)
        try:
            assert ctx.get(ctx.run(cluster_spec)) == f"fray?address={cluster.address}"
        finally:
            ctx.close()
        own = f"fray?address={cluster.address}&namespace=team"
        cluster.env["FRAY_CLUSTER_SPEC"] = own
        cluster.add_worker("--worker-id", "namespaced", "--concurrency", "4")
        cluster.wait_for_workers(2)
        ctx = FrayContext(cluster.address, retry_timeout=10)
        try:
            # 10 at once on 1 + 4 slots: the namespaced worker runs some of them.
            seen = set(ctx.get([ctx.run(slow_cluster_spec) for _ in range(10)]))
        finally:
            ctx.close()
        assert own in seen
