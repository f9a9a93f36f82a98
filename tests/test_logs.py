"""Task output: captured per task in executors, printed by clients (`log_to_driver`), kept by the
controller (`GetTaskLogs`, `fray logs`), bounded; and remote tracebacks that name user files."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import traceback
import urllib.request
from collections.abc import Callable
from typing import Any

import cloudpickle
import pytest

from fray.client.context import FrayContext
from fray.client.output import BURST_BYTES, DriverLog, render
from fray.controller.task_logs import TaskLogs
from fray.job import create_job_ctx
from fray.local_cluster import LocalFrayCluster
from fray.wire import payload
from fray.wire.pb import controller_pb2 as pb
from fray.worker import capture, executor

# ---------------------------------------------------------------------- tasks (run remotely)

# Workers cannot import this module: its functions travel by value, as `__main__`'s do.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def chatty(x: int) -> int:
    print(f"out {x}")
    print(f"err {x}", file=sys.stderr)
    logging.getLogger("chatty").info("info %d", x)
    return x + 1


def silent(x: int) -> int:
    return x


def flood(n: int) -> int:
    for i in range(n):
        print(f"line {i:07d} " + "x" * 100)
    return n


def fails_after_print() -> None:
    print("about to fail")
    raise ValueError("nope")


class Talker:
    def say(self, text: str) -> str:
        print(f"actor says {text}")
        return text


# User code "defined in __main__": compiled from a named file, so cloudpickle pickles it by value.
USER_FILE = "/home/someone/my_job.py"
USER_SOURCE = """
def user_fn():
    x = 1
    raise KeyError("from user code")
"""


def main_function() -> Callable[[], None]:
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(USER_SOURCE, USER_FILE, "exec"), namespace)
    fn: Callable[[], None] = namespace["user_fn"]
    return fn


# ---------------------------------------------------------------------- in-process units


def test_buffer_keeps_the_last_bytes_and_counts_the_rest() -> None:
    buffer = capture.TaskBuffer()
    line = "é" + "y" * 99 + "\n"  # 101 bytes, a 2-byte character first
    for _ in range(10_000):
        buffer.write(line)
        assert buffer._size <= 2 * capture.OUTPUT_LIMIT + len(line.encode())  # bounded
    output = buffer.output()
    assert output is not None
    data, dropped = output
    assert len(data) <= capture.OUTPUT_LIMIT
    assert len(data) + dropped == 10_000 * len(line.encode())
    data.decode("utf-8")  # never cut inside a character
    assert data.endswith(line.encode())


def test_run_one_captures_prints_stderr_and_logging() -> None:
    capture.install_logging()
    functions = executor._FunctionCache()
    args = cloudpickle.dumps(((41,), {}))
    status, value, output = executor.run_one(functions, cloudpickle.dumps(chatty), args, {})
    assert status == "ok" and pickle_loads(value) == 42
    assert output is not None
    assert output[0].decode().splitlines() == ["out 41", "err 41", "INFO chatty: info 41"]
    status, _, output = executor.run_one(functions, cloudpickle.dumps(silent), args, {})
    assert status == "ok" and output is None  # nothing printed: nothing to carry


def pickle_loads(data: bytes) -> Any:
    return cloudpickle.loads(data)


def test_controller_log_store_evicts_oldest_first() -> None:
    logs = TaskLogs(max_bytes=100)
    for i in range(5):
        logs.add(f"t{i}", pb.TaskOutput(text="a" * 30))
    assert logs.get("t0") is None and logs.get("t1") is None
    assert logs.get("t4") is not None and logs.size <= 100
    logs.add("t4", pb.TaskOutput(text="b"))  # a later attempt replaces the earlier one
    assert logs.get("t4") == pb.TaskOutput(text="b")


def test_driver_log_prefixes_lines_and_is_rate_limited() -> None:
    out = io.StringIO()
    log = DriverLog(out)
    output = pb.TaskOutput(text="one\ntwo\n", pid=7, worker_id="w1", dropped_bytes=5)
    log.task("job.f", "abc-1", output)
    assert out.getvalue().splitlines() == [
        "(job.f pid=7 worker=w1 task=abc-1) [fray: 5 earlier bytes of output dropped]",
        "(job.f pid=7 worker=w1 task=abc-1) one",
        "(job.f pid=7 worker=w1 task=abc-1) two",
    ]
    big = pb.TaskOutput(text="z" * (BURST_BYTES // 2), pid=7, worker_id="w1")
    for _ in range(4):  # twice the burst at once: the rest is skipped, and said so
        log.task("job.f", "abc-2", big)
    log._allowance = BURST_BYTES  # (as if time passed)
    log.task("job.f", "abc-3", output)
    text = out.getvalue()
    assert 1 <= text.count("task=abc-2)") <= 2  # at most the burst went out
    assert "bytes of task output not printed" in text
    assert render("job.f", "abc-3", output) in text


def test_pickled_main_functions_keep_their_file_and_lines() -> None:
    fn = cloudpickle.loads(payload.dumps_function(main_function()))
    assert fn.__code__.co_filename == USER_FILE
    with pytest.raises(KeyError) as caught:
        fn()
    frames = traceback.extract_tb(caught.value.__traceback__)
    assert (frames[-1].filename, frames[-1].lineno) == (USER_FILE, 4)


# ---------------------------------------------------------------------- on a real cluster


def test_task_output_reaches_the_client_prefixed(
    fray_ctx: FrayContext, capsys: pytest.CaptureFixture[str]
) -> None:
    futures = [fray_ctx.run(chatty, i) for i in range(3)]
    assert fray_ctx.get(futures) == [1, 2, 3]
    err = capsys.readouterr().err
    for future, i in zip(futures, range(3), strict=True):
        lines = [line for line in err.splitlines() if f"task={future.task_id})" in line]
        assert [line.split(") ", 1)[1] for line in lines] == [
            f"out {i}",
            f"err {i}",
            f"INFO chatty: info {i}",
        ]
        assert lines[0].startswith(f"({__name__}.chatty pid=")
        assert " worker=worker-" in lines[0]


def test_fray_logs_reads_a_task_output_through_the_controller(
    fray_ctx: FrayContext, cluster: LocalFrayCluster
) -> None:
    future = fray_ctx.run(chatty, 7)
    assert future.result() == 8
    # --follow: waits for the controller to hear of the task (a direct one is reported later).
    cli = [sys.executable, "-m", "fray", "logs", "--controller", cluster.address]
    done = subprocess.run([*cli, "--follow", future.task_id], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["out 7", "err 7", "INFO chatty: info 7"]
    # curl-able: plain JSON over HTTP.
    request = urllib.request.Request(
        f"{cluster.address}/fray.v1.FrayController/GetTaskLogs",
        data=json.dumps({"taskId": future.task_id}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        answer = json.load(response)
    assert answer["finished"] is True
    assert answer["output"]["text"] == "out 7\nerr 7\nINFO chatty: info 7\n"
    missing = subprocess.run([*cli, "no-such-task"], capture_output=True, text=True)
    assert missing.returncode == 1 and "NOT_FOUND" in missing.stderr


def test_follow_waits_for_a_running_task(fray_ctx: FrayContext, cluster: LocalFrayCluster) -> None:
    future = fray_ctx.run(flood, 3)  # started; `--follow` returns once it has finished
    cli = [sys.executable, "-m", "fray", "logs", "--controller", cluster.address, "-f"]
    done = subprocess.run([*cli, future.task_id], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert future.result() == 3
    assert done.stdout.splitlines()[0].startswith("line 0000000 xx")


def test_endless_output_is_truncated(
    fray_ctx: FrayContext, capsys: pytest.CaptureFixture[str]
) -> None:
    future = fray_ctx.run(flood, 20_000)  # ~2.2 MB printed
    assert future.result() == 20_000
    lines = [line for line in capsys.readouterr().err.splitlines() if future.task_id in line]
    assert "earlier bytes of output dropped" in lines[0]
    assert lines[-1].endswith("line 0019999 " + "x" * 100)
    kept = sum(len(line.split(") ", 1)[1]) + 1 for line in lines[1:])
    assert kept <= capture.OUTPUT_LIMIT


def test_failed_task_output_and_traceback(
    fray_ctx: FrayContext, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ValueError, match="nope"):
        fray_ctx.get(fray_ctx.run(fails_after_print))
    assert "about to fail" in capsys.readouterr().err
    with pytest.raises(KeyError) as caught:
        fray_ctx.get(fray_ctx.run(main_function()))
    remote = str(caught.value.__cause__)
    assert f'File "{USER_FILE}", line 4, in user_fn' in remote
    assert "<dynamic-code>" not in remote
    assert "executor.py" not in remote  # the traceback starts at the user's function


def test_actor_output_is_printed_with_the_actor(
    fray_ctx: FrayContext, capsys: pytest.CaptureFixture[str]
) -> None:
    actor = fray_ctx.create_actor(Talker)
    try:
        assert fray_ctx.get(actor.say.remote("hi")) == "hi"
    finally:
        fray_ctx.kill_actor(actor)
    lines = [line for line in capsys.readouterr().err.splitlines() if "actor says hi" in line]
    assert len(lines) == 1
    assert lines[0].startswith("(Talker pid=") and f"task={actor.actor_id})" in lines[0]


def test_log_to_driver_off_prints_nothing(
    cluster: LocalFrayCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    ctx = create_job_ctx("fray", controller_address=cluster.address, log_to_driver=False)
    try:
        assert ctx.get(ctx.run(chatty, 1)) == 2
    finally:
        ctx.close()  # type: ignore[attr-defined]
    assert "out 1" not in capsys.readouterr().err
