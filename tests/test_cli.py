"""The `fray` command line: `python -m fray controller|worker|status`, and its argument parsers."""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from fray_fixtures import list_workers, stop_process, wait_for

from fray.cli import build_parser
from fray.cli_args import ResourceArgs, parse_resources, requirements, worker_resources
from fray.common.net import free_port
from fray.common.processes import read_line, start_python
from fray.local_cluster import READY_PREFIX

READY = re.compile(rf"^{re.escape(READY_PREFIX)}(http://[0-9.]+):(\d+)$")
GIB = 1024**3


# ---------------------------------------------------------------------- helpers


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without fray settings that would change what a command does."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("FRAY_TOKEN", "FRAY_CONTROLLER_ADDRESS")
    }
    env.update(extra)
    return env


def fray(*args: str, timeout: float = 30, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `python -m fray ARGS` to completion."""
    return subprocess.run(
        [sys.executable, "-m", "fray", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=clean_env(**env),
    )


def first_line(process: subprocess.Popen[Any], timeout: float = 30) -> str:
    """The next line of a child's stdout ('' at EOF or after `timeout`)."""
    assert process.stdout is not None
    return read_line(process.stdout, timeout)


def worker_ids(address: str, token: str | None = None) -> set[str]:
    return set(list_workers(address, token))


class Processes:
    """Starts `python -m fray ...` processes and stops every one of them at the end."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[Any]] = []

    def start(self, *args: str, stdout: int | None = None, **env: str) -> subprocess.Popen[Any]:
        process = start_python("-m", "fray", *args, stdout=stdout, text=True, env=clean_env(**env))
        self.started.append(process)
        return process

    def controller(self, *args: str, **env: str) -> tuple[subprocess.Popen[Any], str]:
        """A controller on a free port; returns it and the loopback address to reach it at."""
        process = self.start("controller", "--port", "0", *args, stdout=subprocess.PIPE, **env)
        line = first_line(process).rstrip("\n")
        match = READY.match(line)
        assert match, f"unexpected first line {line!r}"
        return process, f"http://127.0.0.1:{match.group(2)}"

    def stop_all(self) -> None:
        for process in reversed(self.started):
            stop_process(process)


@pytest.fixture
def procs() -> Iterator[Processes]:
    processes = Processes()
    try:
        yield processes
    finally:
        processes.stop_all()


# ---------------------------------------------------------------------- fray controller


def test_controller_refuses_a_public_address_without_a_token() -> None:
    done = fray("controller", "--host", "0.0.0.0", "--port", "0")
    assert done.returncode == 2
    assert "token" in done.stderr
    assert "0.0.0.0" in done.stderr
    assert "listening" not in done.stdout


def test_controller_announces_its_address_serves_status_and_exits_0_on_sigterm(
    procs: Processes,
) -> None:
    process = procs.start("controller", "--port", "0", stdout=subprocess.PIPE)
    line = first_line(process).rstrip("\n")
    match = READY.match(line)
    assert match, f"first stdout line was {line!r}"
    address = f"{match.group(1)}:{match.group(2)}"
    assert match.group(1) == "http://127.0.0.1"

    done = fray("status", "--json", "--controller", address)
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    assert set(status) == {"summary", "workers", "actors"}
    assert status["workers"] == [] and status["actors"] == []
    assert status["summary"]["controllerId"]

    process.send_signal(signal.SIGTERM)
    assert process.wait(10) == 0


def test_controller_with_a_token_on_a_public_address(procs: Processes) -> None:
    _, address = procs.controller("--host", "0.0.0.0", "--token", "t0k")
    common = ("worker", "--controller", address, "--concurrency", "1")
    by_arg = procs.start(*common, "--worker-id", "tok-arg", "--token", "t0k")
    by_env = procs.start(*common, "--worker-id", "tok-env", FRAY_TOKEN="t0k")
    wrong = procs.start(*common, "--worker-id", "tok-bad", "--token", "wrong")

    wait_for(
        lambda: (
            {"tok-arg", "tok-env"} <= worker_ids(address, "t0k")
            or by_arg.poll() is not None
            or by_env.poll() is not None
        ),
        30,
        "the workers with the token to register",
    )
    assert by_arg.poll() is None and by_env.poll() is None
    assert wrong.wait(30) != 0
    assert "tok-bad" not in worker_ids(address, "t0k")

    done = fray("status", "--controller", address)
    assert done.returncode == 1
    assert "bearer token" in done.stderr
    assert done.stdout == ""

    with_arg = fray("status", "--json", "--controller", address, "--token", "t0k")
    with_env = fray("status", "--json", "--controller", address, FRAY_TOKEN="t0k")
    for done in (with_arg, with_env):
        assert done.returncode == 0, done.stderr
        status = json.loads(done.stdout)
        assert {w["workerId"] for w in status["workers"]} == {"tok-arg", "tok-env"}
        assert status["summary"]["workers"] == 2


def test_status_of_an_unreachable_controller_exits_1() -> None:
    address = f"http://127.0.0.1:{free_port()}"
    done = fray("status", "--controller", address, "--connect-timeout", "0.5")
    assert done.returncode == 1
    assert f"no fray controller at {address} (connection refused)" in done.stderr
    assert "start one with `fray controller`" in done.stderr
    assert done.stdout == ""


# ---------------------------------------------------------------------- --help


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--help",), ("controller", "worker", "status", "demo")),
        (("worker", "--help"), ("--controller", "--resources", "--shutdown-grace", "--token")),
        (("job", "--help"), ("submit", "list", "status", "logs", "stop")),
        (("job", "submit", "--help"), ("--wait", "--replicas", "--resources", "exit status")),
    ],
)
def test_help_exits_0(args: tuple[str, ...], expected: tuple[str, ...]) -> None:
    done = fray(*args)
    assert done.returncode == 0, done.stderr
    for word in expected:
        assert word in done.stdout


# ---------------------------------------------------------------------- argument parsers


# Sizes are read by fray.common.sizes.parse_bytes (tests/test_common.py); here, that --resources
# uses it: the same text means the same number of bytes as in fray.v2's ResourceSpec.


@pytest.mark.parametrize(
    ("memory", "expected"),
    [("8GiB", 8 * GIB), ("8gb", 8 * GIB), ("8gi", 8 * GIB), ("1.5g", int(1.5 * GIB))]
    + [("1p", 1024**5), ("1e3k", 1000 * 1024), ("100", 100)],
)
def test_resources_memory_is_read_like_resource_spec_memory(memory: str, expected: int) -> None:
    from fray.v2 import ResourceSpec

    assert parse_resources(f"memory={memory}").amounts == {"memory": expected}
    assert parse_resources(f"disk={memory}").amounts == {"disk": expected}
    assert ResourceSpec(memory=memory).memory_bytes == expected


@pytest.mark.parametrize("memory", ["", "GiB", "lots", "1XiB", "1.2.3G", "nan", "inf", "1e400"])
def test_resources_memory_rejects_bad_sizes_naming_them(memory: str) -> None:
    if not memory:  # "memory=" has no value at all
        with pytest.raises(argparse.ArgumentTypeError, match="key=value"):
            parse_resources("memory=")
        return
    with pytest.raises(argparse.ArgumentTypeError, match=f"memory: .*{re.escape(repr(memory))}"):
        parse_resources(f"memory={memory}")


@pytest.mark.parametrize(
    ("text", "amounts", "labels"),
    [
        ("", {}, {}),
        ("cpus=2", {"cpus": 2.0}, {}),
        (
            "cpus=8,memory=32GiB,gpus=2,gpu_type=H100,tpu=v5litepod-4,zone=us-east1",
            {"cpus": 8.0, "memory": 32.0 * GIB, "gpus": 2.0},
            {"gpu_type": "H100", "tpu": "v5litepod-4", "zone": "us-east1"},
        ),
        (" cpus = 0.5 , gpu=a100 ,", {"cpus": 0.5}, {"gpu": "a100"}),
        ("zone=a,zone=b", {}, {"zone": "b"}),
        ("zone=a|b", {}, {"zone": "a|b"}),
        ("x=a,x=3", {"x": 3.0}, {}),  # the last value wins, whatever its kind
        ("widgets=1e3,foo=.5,bar=+2", {"widgets": 1000.0, "foo": 0.5, "bar": 2.0}, {}),
        ("cpus=0", {"cpus": 0.0}, {}),
        ("flavor=inf,mode=nan", {}, {"flavor": "inf", "mode": "nan"}),  # words, not numbers
        ("disk=1T", {"disk": float(1024**4)}, {}),
    ],
)
def test_parse_resources(text: str, amounts: dict[str, float], labels: dict[str, str]) -> None:
    assert parse_resources(text) == ResourceArgs(amounts, labels)


@pytest.mark.parametrize(
    "text",
    ["cpus", "=4", "cpus=abc", "cpus=", "memory=lots", "memory=1XiB", "zone=a,memory"]
    + ["gpus=one", "tpus=v4", "zone=", "cpus=inf", "x=1e400"],
)
def test_parse_resources_rejects_bad_input(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_resources(text)


@pytest.mark.parametrize("text", ["cpus=-1", "memory=-1GiB", "gpus=-0.5", "widgets=-2"])
def test_parse_resources_rejects_negative_amounts(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="-"):
        parse_resources(text)


def test_worker_resources_on_the_wire() -> None:
    full = worker_resources(parse_resources("cpus=8,memory=32GiB,gpus=2,gpu_type=H100"))
    assert dict(full.capacities) == {"cpus": 8.0, "memory": 32.0 * GIB, "gpus": 2.0}
    assert dict(full.labels) == {"gpu_type": "H100"}
    assert full.cpus == 8.0 and full.memory_bytes == 32 * GIB
    # cpus and memory not given: left out, for the worker to fill in the machine's
    partial = worker_resources(parse_resources("gpus=1,zone=a"))
    assert dict(partial.capacities) == {"gpus": 1.0} and dict(partial.labels) == {"zone": "a"}
    assert partial.cpus == 0.0 and partial.memory_bytes == 0


def test_job_requirements_on_the_wire() -> None:
    need = requirements(parse_resources("cpus=2,memory=512m,gpus=1,gpu_type=H100|A100"))
    assert dict(need.resources) == {"cpus": 2.0, "memory": 512.0 * 1024**2, "gpus": 1.0}
    assert dict(need.labels) == {"gpu_type": "H100|A100"}


@pytest.mark.parametrize(
    ("resources", "message"),
    [("cpus=abc", "cpus must be a number"), ("memory=inf", "inf"), ("gpus=-1", "gpus")],
)
@pytest.mark.parametrize("command", [("worker",), ("job", "submit")])
def test_bad_resources_are_a_usage_error(
    resources: str, message: str, command: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        cmd = ["--", "true"] if command[0] == "job" else []
        build_parser().parse_args([*command, "--resources", resources, *cmd])
    assert info.value.code == 2
    error_line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--resources" in error_line
    assert message in error_line


def test_worker_arguments_reach_the_parser() -> None:
    args = build_parser().parse_args(
        [
            "worker",
            "--controller",
            "http://h:1",
            "--resources",
            "cpus=2,memory=1GiB,zone=test",
            "--concurrency",
            "2",
            "--shutdown-grace",
            "0.5",
            "--worker-id",
            "w1",
        ]
    )
    assert args.controller == "http://h:1"
    assert args.resources == ResourceArgs({"cpus": 2.0, "memory": float(GIB)}, {"zone": "test"})
    assert args.concurrency == 2
    assert args.shutdown_grace == 0.5
    assert args.worker_id == "w1"


def test_job_submit_arguments_reach_the_parser() -> None:
    args = build_parser().parse_args(
        ["job", "submit", "--name", "train", "--replicas", "3", "--env", "A=1", "--env", "B=x=y"]
        + ["--resources", "gpus=1,zone=a", "--wait", "--", "python", "-c", "print(1)", "--wait"]
    )
    assert args.cmd == ["python", "-c", "print(1)", "--wait"]  # CMD's options stay CMD's
    assert (args.name, args.replicas, args.wait) == ("train", 3, True)
    assert args.env == [("A", "1"), ("B", "x=y")]
    assert args.resources == ResourceArgs({"gpus": 1.0}, {"zone": "a"})
    plain = build_parser().parse_args(["job", "submit", "sleep", "10"])
    assert plain.cmd == ["sleep", "10"] and plain.replicas == 1 and plain.env is None
    logs = build_parser().parse_args(["job", "logs", "j-1", "--replica", "2", "-f"])
    assert (logs.job_id, logs.replica, logs.follow) == ("j-1", 2, True)


def test_demo_runs_the_main_job_end_to_end() -> None:
    """What `scripts/demo.sh` runs: a controller, 2 workers, a job, a clean shutdown."""
    result = subprocess.run(
        [sys.executable, "-m", "fray", "--log-level", "WARNING", "demo", "--tasks", "20"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "pi ~= 3.1" in result.stdout
    assert "wait(): 2 ready, 0 pending -> [1, 2]" in result.stdout
    assert "raised ValueError at the caller" in result.stdout
    assert "running totals [1, 3, 6, 10, 15, 21, 28, 36, 45, 55]" in result.stdout
    assert "'controller': 0" in result.stdout and "'worker-1': 0" in result.stdout


# ---------------------------------------------------------------------- usage errors, help


def test_fray_alone_prints_help_and_version_prints_the_version() -> None:
    alone = fray()
    assert alone.returncode == 0, alone.stderr
    assert alone.stdout.startswith("usage: fray") and "status" in alone.stdout
    version = fray("--version")
    assert version.returncode == 0 and re.fullmatch(r"fray \d+\.\d+\S*\n", version.stdout)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("controller", "--port", "70000"), ("--port", "0-65535")),
        (("worker", "--port", "-1"), ("--port", "0-65535")),
        (("worker", "--concurrency", "0"), ("--concurrency", ">= 1")),
        (("--log-level", "verbose", "status"), ("--log-level", "verbose")),
        (("status", "--log-level", "verbose"), ("--log-level", "verbose")),
        (("tasks", "--state", "sleeping"), ("--state", "SLEEPING", "ASSIGNED")),
        (("controller", "--heartbeat-timeout", "0"), ("--heartbeat-timeout", "> 0")),
        (("job", "submit", "--replicas", "0", "--", "true"), ("--replicas", ">= 1")),
        (("job", "submit", "--replicas", "1001", "--", "true"), ("--replicas", "<= 1000")),
        (("job", "submit", "--env", "NOVALUE", "--", "true"), ("--env", "KEY=VALUE")),
        (("job", "submit", "--name", "a/b", "--", "true"), ("--name", "'/'")),
        (("job", "submit", "--name", "x"), ("CMD",)),
        (("job", "list", "--state", "asleep"), ("--state", "ASLEEP", "KILLED")),
        (("job", "logs", "j", "--replica", "-1"), ("--replica", ">= 0")),
        (("job",), ("ACTION",)),
        (("job", "status"), ("JOB_ID",)),
    ],
)
def test_bad_values_are_usage_errors(args: tuple[str, ...], words: tuple[str, ...]) -> None:
    done = fray(*args)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "usage: fray" in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    for word in words:
        assert word in last


def test_log_level_works_after_the_subcommand() -> None:
    args = build_parser().parse_args(["status", "--log-level", "debug"])
    assert args.log_level == "DEBUG"
    assert build_parser().parse_args(["--log-level", "error", "status"]).log_level == "ERROR"


def test_help_shows_defaults_and_environment_variables() -> None:
    controller = fray("controller", "--help").stdout
    assert "(default: 7625)" in controller and "$FRAY_TOKEN" in controller
    assert "$FRAY_TLS_CERT" in controller and "$FRAY_LOG_LEVEL" in controller
    worker = " ".join(fray("worker", "--help").stdout.split())  # unwrapped
    assert "$FRAY_CONTROLLER_ADDRESS, else http://127.0.0.1:7625" in worker
    assert "(default: 30.0)" in worker  # --shutdown-grace


@pytest.mark.parametrize("command", ["controller", "worker"])
def test_a_port_in_use_is_named(command: str) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        extra = ("--state", ":memory:") if command == "controller" else ("--controller", "x:1")
        done = fray(command, "--port", str(port), *extra)
    assert done.returncode == 2
    assert f"fray {command}: port {port} on 127.0.0.1 is in use" in done.stderr
    assert "Traceback" not in done.stderr


# ---------------------------------------------------------------------- connecting


def test_status_rejects_a_malformed_address_at_once() -> None:
    done = fray("status", "--controller", "http://host:99999")
    assert done.returncode == 2 and "port must be 0-65535" in done.stderr
    done = fray("status", "--controller", "ftp://host:1")
    assert done.returncode == 2 and "scheme must be http or https" in done.stderr


def test_status_of_a_host_that_does_not_resolve_says_so() -> None:
    done = fray("status", "--controller", "http://no-such-host.invalid:7625")
    assert done.returncode == 1
    assert "no fray controller at http://no-such-host.invalid:7625" in done.stderr
    assert "Query {" not in done.stderr  # no DNS dump


def test_status_of_a_worker_or_another_server_says_it_is_not_a_controller(
    procs: Processes,
) -> None:
    _, address = procs.controller()
    worker = procs.start("worker", "--controller", address, "--worker-id", "w-probe")
    wait_for(lambda: "w-probe" in worker_ids(address), 30, "the worker to register")
    assert worker.poll() is None
    worker_address = list_workers(address)["w-probe"].address
    done = fray("status", "--controller", worker_address)
    assert done.returncode == 1
    assert f"{worker_address} is a fray worker (w-probe" in done.stderr
    assert "not a fray controller" in done.stderr

    port = free_port()
    procs.started.append(start_python("-m", "http.server", str(port), "--bind", "127.0.0.1"))
    wait_for(lambda: can_connect(port), 30, "the HTTP server to listen")
    done = fray("status", "--controller", f"127.0.0.1:{port}")
    assert done.returncode == 1
    assert f"http://127.0.0.1:{port} is another HTTP server, not a fray controller" in done.stderr


def can_connect(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0
