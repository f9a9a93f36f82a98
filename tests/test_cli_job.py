"""`fray job submit|list|status|logs|stop` end to end: a real controller and worker
(LocalFrayCluster) and `python -m fray job ...` processes against it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fray_fixtures import file_text, process_gone, wait_for

from fray.cli_job import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_KILLED
from fray.common.processes import start_python
from fray.local_cluster import LocalFrayCluster
from fray.wire.controller_client import ControllerClient
from fray.wire.pb import controller_pb2 as pb

PY = sys.executable


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if k not in ("FRAY_TOKEN", "FRAY_CONTROLLER_ADDRESS")
    }
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalFrayCluster]:
    with LocalFrayCluster(workers=1, concurrency=2) as local:
        yield local


def fray(
    cluster: LocalFrayCluster, *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """`python -m fray ARGS --controller ADDRESS`, to completion (the address from the
    environment variable for `job list`, to show both ways work)."""
    env = clean_env()
    if args[:2] == ("job", "list"):
        env["FRAY_CONTROLLER_ADDRESS"] = cluster.address
    else:
        args = (*args[:2], "--controller", cluster.address, *args[2:])
    return subprocess.run(
        [PY, "-m", "fray", *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def start_fray(cluster: LocalFrayCluster, *args: str) -> subprocess.Popen[Any]:
    return start_python(
        "-m",
        "fray",
        *args[:2],
        "--controller",
        cluster.address,
        *args[2:],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
    )


def get_job(cluster: LocalFrayCluster, job_id: str) -> pb.Job:
    client = ControllerClient(cluster.address, retry_timeout=5)
    try:
        return client.call(client.rpc.get_job, pb.GetJobRequest(job_id=job_id)).job
    finally:
        client.close()


def submitted(done: subprocess.CompletedProcess[str]) -> str:
    """The job id a `fray job submit` printed first."""
    assert done.stdout, done.stderr
    return done.stdout.splitlines()[0]


# ---------------------------------------------------------------------- submit --wait


def test_submit_wait_prints_the_output_and_exits_0(
    cluster: LocalFrayCluster, tmp_path: Path
) -> None:
    code = "import os; print('hi'); print(os.environ['GREETING'], os.getcwd())"
    done = fray(
        cluster, "job", "submit", "--name", "hello", "--env", "GREETING=hello there",
        "--working-dir", str(tmp_path), "--wait", "--", PY, "-c", code,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    job_id, *output = done.stdout.splitlines()
    assert job_id.startswith("hello-")
    assert output == ["hi", f"hello there {tmp_path}"]
    job = get_job(cluster, job_id)
    assert job.state == pb.JOB_STATE_SUCCEEDED and list(job.command) == [PY, "-c", code]


def test_submit_without_wait_prints_only_the_id(cluster: LocalFrayCluster) -> None:
    done = fray(cluster, "job", "submit", "--", PY, "-c", "print('quiet')")
    assert done.returncode == 0, done.stderr
    job_id = submitted(done)
    assert done.stdout == job_id + "\n"
    assert job_id.startswith(Path(PY).name + "-")  # named after the command
    wait_for(lambda: get_job(cluster, job_id).state == pb.JOB_STATE_SUCCEEDED, 60, "the job")
    logs = fray(cluster, "job", "logs", job_id)
    assert logs.returncode == 0, logs.stderr
    assert logs.stdout == "quiet\n"
    # the same --job-id again (a retry): the job submitted first, not a second one
    again = fray(cluster, "job", "submit", "--job-id", job_id, "--", PY, "-c", "print('other')")
    assert again.returncode == 0, again.stderr
    assert again.stdout == job_id + "\n"
    assert list(get_job(cluster, job_id).command) == [PY, "-c", "print('quiet')"]


def test_a_failing_command_exits_1_with_its_error(cluster: LocalFrayCluster) -> None:
    code = "import sys; print('going down', file=sys.stderr); sys.exit(3)"
    done = fray(cluster, "job", "submit", "--wait", "--", PY, "-c", code)
    assert done.returncode == EXIT_FAILED, done.stderr
    job_id = submitted(done)
    assert "going down" in done.stdout  # stderr is part of the job's output
    assert f"fray job: {job_id} failed" in done.stderr
    assert "code 3" in done.stderr
    status = fray(cluster, "job", "status", job_id)
    assert status.returncode == 0, status.stderr
    assert f"job {job_id} (" in status.stdout and "FAILED" in status.stdout
    assert "code 3" in status.stdout


def test_several_replicas_have_their_lines_prefixed(cluster: LocalFrayCluster) -> None:
    code = (
        "import os; i = os.environ['FRAY_TASK_INDEX']; n = os.environ['FRAY_NUM_TASKS']; "
        "print(f'replica {i} of {n}'); print('bye', end='')"
    )
    done = fray(cluster, "job", "submit", "--replicas", "2", "--wait", "--", PY, "-c", code)
    assert done.returncode == 0, done.stderr
    job_id, *output = done.stdout.splitlines()
    assert sorted(output) == sorted(
        [f"[{job_id}/0] replica 0 of 2", f"[{job_id}/0] bye"]
        + [f"[{job_id}/1] replica 1 of 2", f"[{job_id}/1] bye"]
    )
    one = fray(cluster, "job", "logs", job_id, "--replica", "1")
    assert one.returncode == 0, one.stderr
    assert one.stdout == "replica 1 of 2\nbye"
    both = fray(cluster, "job", "logs", job_id)
    assert both.stdout.splitlines() == [
        f"[{job_id}/0] replica 0 of 2", f"[{job_id}/0] bye",
        f"[{job_id}/1] replica 1 of 2", f"[{job_id}/1] bye",
    ]  # fmt: skip
    bad = fray(cluster, "job", "logs", job_id, "--replica", "2")
    assert bad.returncode == 1 and "--replica must be 0-1" in bad.stderr


# ---------------------------------------------------------------------- a running job


def test_list_status_logs_and_stop_of_a_sleeping_job(
    cluster: LocalFrayCluster, tmp_path: Path
) -> None:
    pid_file = tmp_path / "pid"
    code = (
        "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); "
        "print('sleeping', flush=True); time.sleep(600)"
    )
    done = fray(cluster, "job", "submit", "--name", "sleepy", "--", PY, "-c", code, str(pid_file))
    assert done.returncode == 0, done.stderr
    job_id = submitted(done)
    wait_for(lambda: file_text(pid_file), 60, "the job to start")
    pid = int(file_text(pid_file))

    listed = fray(cluster, "job", "list")
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert header.split() == ["JOB", "NAME", "STATE", "REPLICAS", "AGE", "WHERE/WHY"]
    (row,) = [r for r in rows if r.startswith(job_id)]
    assert row.split()[1:4] == ["sleepy", "RUNNING", "1"] and " on " in row
    as_json = json.loads(fray(cluster, "job", "list", "--json", "--state", "running").stdout)
    assert job_id in [j["jobId"] for j in as_json]
    assert {j["state"] for j in as_json} == {"JOB_STATE_RUNNING"}

    status = fray(cluster, "job", "status", job_id)
    assert status.returncode == 0, status.stderr
    assert status.stdout.splitlines()[0] == f"job {job_id} (sleepy): RUNNING"
    assert "replica 0: RUNNING on " in status.stdout
    detail = json.loads(fray(cluster, "job", "status", job_id, "--json").stdout)
    assert detail["jobId"] == job_id and detail["state"] == "JOB_STATE_RUNNING"

    wait_for(lambda: fray(cluster, "job", "logs", job_id).stdout == "sleeping\n", 30, "its output")
    summary = fray(cluster, "status")
    assert summary.returncode == 0, summary.stderr
    assert any(line.strip().startswith(job_id) for line in summary.stdout.splitlines())

    stopped = fray(cluster, "job", "stop", job_id)
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout == f"{job_id}: KILLED\n"
    wait_for(lambda: process_gone(pid), 30, "the job's process to be killed")
    assert get_job(cluster, job_id).state == pb.JOB_STATE_KILLED
    again = fray(cluster, "job", "stop", job_id)
    assert again.returncode == 0 and "KILLED" in again.stdout


def test_logs_follow_prints_until_the_job_ends(cluster: LocalFrayCluster, tmp_path: Path) -> None:
    go = tmp_path / "go"
    code = (
        "import os, sys, time\n"
        "print('first', flush=True)\n"
        "while not os.path.exists(sys.argv[1]): time.sleep(0.05)\n"
        "print('second', flush=True)\n"
    )
    job_id = submitted(fray(cluster, "job", "submit", "--", PY, "-c", code, str(go)))
    follower = start_fray(cluster, "job", "logs", job_id, "--follow")
    try:
        assert follower.stdout is not None
        assert follower.stdout.readline() == "first\n"
        go.write_text("")
        out, err = follower.communicate(timeout=60)
    finally:
        follower.kill()
    assert follower.returncode == 0, err
    assert out == "second\n"


def test_ctrl_c_stops_following_not_the_job(cluster: LocalFrayCluster) -> None:
    code = "import time; print('up', flush=True); time.sleep(600)"
    waiting = start_fray(cluster, "job", "submit", "--wait", "--", PY, "-c", code)
    try:
        assert waiting.stdout is not None
        job_id = waiting.stdout.readline().strip()
        assert waiting.stdout.readline() == "up\n"
        waiting.send_signal(signal.SIGINT)
        # at once, not when its long poll (10 s) returns
        out, err = waiting.communicate(timeout=8)
    finally:
        waiting.kill()
    assert waiting.returncode == EXIT_INTERRUPTED, err
    assert "the job keeps running" in err and f"fray job stop {job_id}" in err
    assert "Traceback" not in err
    assert get_job(cluster, job_id).state == pb.JOB_STATE_RUNNING

    following = start_fray(cluster, "job", "logs", job_id, "--follow")
    try:
        assert following.stdout is not None
        assert following.stdout.readline() == "up\n"
        following.send_signal(signal.SIGINT)
        out, err = following.communicate(timeout=8)
    finally:
        following.kill()
    assert following.returncode == EXIT_INTERRUPTED, err
    assert "the job keeps running" in err and "Traceback" not in err
    assert get_job(cluster, job_id).state == pb.JOB_STATE_RUNNING
    assert fray(cluster, "job", "stop", job_id).returncode == 0


# ---------------------------------------------------------------------- pending, unknown


def test_a_job_nothing_can_run_says_why_and_a_stop_ends_its_wait_with_2(
    cluster: LocalFrayCluster,
) -> None:
    waiting = start_fray(
        cluster, "job", "submit", "--resources", "gpus=1", "--wait", "--", PY, "-c", "pass"
    )
    try:
        assert waiting.stdout is not None and waiting.stderr is not None
        job_id = waiting.stdout.readline().strip()
        assert "is waiting: no worker offers gpus=1" in waiting.stderr.readline()

        status = fray(cluster, "job", "status", job_id)
        assert status.returncode == 0, status.stderr
        assert status.stdout.splitlines()[0].endswith(": PENDING")
        assert "waiting: no worker offers gpus=1" in status.stdout.splitlines()
        assert "replicas: 1, each needs: gpus=1" in status.stdout.splitlines()
        listed = fray(cluster, "job", "list", "--state", "pending")
        (row,) = [r for r in listed.stdout.splitlines() if r.startswith(job_id)]
        assert row.endswith("no worker offers gpus=1")
        summary = fray(cluster, "status").stdout.splitlines()
        assert "waiting: 1 (tasks, actors, job replicas): no worker offers gpus=1" in summary
        assert any(line.startswith("jobs: pending 1,") for line in summary)

        assert fray(cluster, "job", "stop", job_id).returncode == 0
        out, err = waiting.communicate(timeout=30)
    finally:
        waiting.kill()
    assert waiting.returncode == EXIT_KILLED, err
    assert f"fray job: {job_id} was stopped" in err
    assert "missing" not in err and "Traceback" not in err
    assert out == ""


@pytest.mark.parametrize("action", ["status", "logs", "stop"])
def test_an_unknown_job_is_a_one_line_error(cluster: LocalFrayCluster, action: str) -> None:
    done = fray(cluster, "job", action, "no-such-job")
    assert done.returncode == 1
    assert done.stderr == f"fray job {action}: no job 'no-such-job' at {cluster.address}\n"
    assert done.stdout == ""


# ------------------------------------------------------------------ following (no processes)


class FakeLogs:
    """A stand-in ControllerClient answering GetJobLogs from a script, per replica."""

    def __init__(self, answers: dict[int, list[pb.GetJobLogsResponse]]) -> None:
        self.answers = answers
        self.requests: list[pb.GetJobLogsRequest] = []
        self.rpc = self

    def get_job_logs(self, request: pb.GetJobLogsRequest) -> pb.GetJobLogsResponse:
        self.requests.append(request)
        return self.answers[request.replica].pop(0)

    def call(self, method: Any, request: Any, **_: Any) -> Any:
        return method(request)


def logs(data: bytes, next_offset: int, *, finished: bool = False, dropped: int = 0) -> Any:
    return pb.GetJobLogsResponse(
        data=data, next_offset=next_offset, finished=finished, dropped_bytes=dropped
    )


def test_several_replicas_print_whole_prefixed_lines(capsys: pytest.CaptureFixture[str]) -> None:
    import io
    import threading

    from fray.cli_job import _Printer, _read_logs

    fake = FakeLogs(
        {
            0: [logs(b"he", 2), logs(b"llo\nwor", 9), logs(b"ld", 11, finished=True)],
            1: [logs(b"late\n", 105, dropped=100), logs(b"", 105, finished=True)],
        }
    )
    out = io.BytesIO()
    printer = _Printer(out, "j", prefixed=True)
    _read_logs(fake, "j", [0, 1], printer, follow=True, stop=threading.Event())  # type: ignore[arg-type]
    assert out.getvalue().decode().splitlines() == ["[j/1] late", "[j/0] hello", "[j/0] world"]
    assert [(r.replica, r.offset) for r in fake.requests] == [
        (0, 0),
        (1, 0),
        (0, 2),
        (1, 105),
        (0, 9),
    ]
    assert {r.wait_ms for r in fake.requests} == {500}  # taking turns: short polls
    assert "[j/1] 100 earlier bytes of output were dropped" in capsys.readouterr().err


def test_one_replica_prints_its_bytes_as_they_come_and_without_follow_stops_when_dry() -> None:
    import io
    import threading

    from fray.cli_job import _Printer, _read_logs

    fake = FakeLogs({0: [logs(b"no newline", 10), logs(b"", 10), logs(b"more", 14)]})
    out = io.BytesIO()
    printer = _Printer(out, "j", prefixed=False)
    _read_logs(fake, "j", [0], printer, follow=False, stop=threading.Event())  # type: ignore[arg-type]
    assert out.getvalue() == b"no newline"
    assert [r.wait_ms for r in fake.requests] == [0, 0]
