"""Tests of fray.common: sizes, remote errors, deadlines, ports, child processes and the
watchdog. (tests/test_layout.py checks the import graph of the packages that share them.)

Fast: the only processes started are small Python children.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from fray_fixtures import process_gone, wait_for

from fray.common.deadlines import deadline_after, time_left
from fray.common.net import free_port
from fray.common.processes import read_line, start_python, stop_process
from fray.common.remote_errors import (
    pack_exception,
    rebuild_exception,
    unpack_exception,
    with_remote_traceback,
)
from fray.common.sizes import MAX_BYTES, bytes_from_env, parse_bytes
from fray.errors import RemoteTraceback

KIB, MIB, GIB = 1024, 1024**2, 1024**3

# --- sizes ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (0, 0),
        (12345, 12345),
        ("0", 0),
        ("100", 100),
        ("100b", 100),
        ("1k", KIB),
        ("2KiB", 2 * KIB),
        ("512m", 512 * MIB),
        ("512M", 512 * MIB),
        ("512mb", 512 * MIB),
        ("512MiB", 512 * MIB),
        ("8g", 8 * GIB),
        ("8gb", 8 * GIB),
        ("8gi", 8 * GIB),
        ("8Gi", 8 * GIB),
        ("8GiB", 8 * GIB),
        ("8GIB", 8 * GIB),
        ("2t", 2 * 1024**4),
        ("2TiB", 2 * 1024**4),
        ("1p", 1024**5),
        ("1PiB", 1024**5),
        (" 1.5g ", int(1.5 * GIB)),
        ("1.5 GiB", int(1.5 * GIB)),
        (".5k", 512),
        ("1e3k", 1000 * KIB),
        ("2E3", 2000),
        ("1.5e-3k", 1),  # 1.536 bytes: rounded down
        ("0.9", 0),
        (str(MAX_BYTES), MAX_BYTES),
    ],
)
def test_parse_bytes(text: int | str, expected: int) -> None:
    assert parse_bytes(text) == expected


@pytest.mark.parametrize(
    "bad", ["", "g", "8x", "8 gigs", "1.2.3g", "8ib", "eight", "1XiB", "nan", "inf", "1e", "8kk"]
)
def test_parse_bytes_rejects_garbage_naming_it(bad: str) -> None:
    with pytest.raises(ValueError, match=rf"cannot parse {bad!r} as a size.*'512m'"):
        parse_bytes(bad)


@pytest.mark.parametrize("bad", ["-1", "-1g", "-0.5k", -5])
def test_parse_bytes_rejects_negative_sizes(bad: int | str) -> None:
    with pytest.raises(ValueError, match=rf"cannot be negative, got {bad!r}"):
        parse_bytes(bad)


@pytest.mark.parametrize("bad", ["1e400", "1e400GiB", "8192p", str(MAX_BYTES + 1), 2**63])
def test_parse_bytes_rejects_sizes_past_int64(bad: int | str) -> None:
    with pytest.raises(ValueError, match=rf"{bad!r} is too large"):
        parse_bytes(bad)


@pytest.mark.parametrize("bad", [True, 1.5, None, b"8g"])
def test_parse_bytes_rejects_other_types(bad: object) -> None:
    with pytest.raises(ValueError, match="must be an int or a string"):
        parse_bytes(bad)  # type: ignore[arg-type]


def test_bytes_from_env(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.delenv("FRAY_TEST_BYTES", raising=False)
    assert bytes_from_env("FRAY_TEST_BYTES", 7) == 7
    assert bytes_from_env("FRAY_TEST_BYTES", None) is None
    monkeypatch.setenv("FRAY_TEST_BYTES", " ")
    assert bytes_from_env("FRAY_TEST_BYTES", 7) == 7
    monkeypatch.setenv("FRAY_TEST_BYTES", "2k")
    assert bytes_from_env("FRAY_TEST_BYTES", 7) == 2048
    monkeypatch.setenv("FRAY_TEST_BYTES", "eight")
    assert bytes_from_env("FRAY_TEST_BYTES", 7) == 7
    assert "ignoring FRAY_TEST_BYTES: cannot parse 'eight'" in caplog.text


# --- remote errors --------------------------------------------------------------------------


class Unpicklable(Exception):
    def __reduce__(self) -> str | tuple[object, ...]:
        raise TypeError("no pickling")


class NeedsTwoArgs(Exception):
    def __init__(self, a: int, b: int) -> None:  # unpickling calls it with one
        super().__init__(f"{a}+{b}")


def raised(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:
        return caught


def test_an_exception_comes_back_with_its_type_and_traceback() -> None:
    packed = pack_exception(raised(KeyError("gone")))
    assert packed.type_name == "builtins.KeyError" and packed.message == "'gone'"
    assert "in raised" in packed.traceback and packed.summary == "KeyError: 'gone'"
    exc = rebuild_exception(packed)
    assert type(exc) is KeyError and exc.args == ("gone",)
    assert isinstance(exc.__cause__, RemoteTraceback)
    assert exc.__cause__.traceback_text == packed.traceback
    assert exc.__suppress_context__
    assert str(exc.__cause__).startswith('\n\n"""\nTraceback') and str(exc.__cause__).endswith(
        '"""'
    )


def test_an_exception_that_cannot_be_rebuilt_has_a_stand_in() -> None:
    unpicklable = pack_exception(raised(Unpicklable("x")))
    assert unpicklable.pickled == b""
    assert unpack_exception(unpicklable.pickled, unpicklable.traceback) is None
    exc = rebuild_exception(unpicklable)
    assert type(exc) is RuntimeError
    assert str(exc) == f"{__name__}.Unpicklable: x"
    assert "Unpicklable" in exc.__cause__.traceback_text  # type: ignore[union-attr]

    broken = pack_exception(raised(NeedsTwoArgs(1, 2)))
    assert broken.pickled and unpack_exception(broken.pickled, broken.traceback) is None
    assert str(rebuild_exception(broken)) == f"{__name__}.NeedsTwoArgs: 1+2"


def test_an_exception_that_cannot_be_printed_is_still_packed() -> None:
    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    packed = pack_exception(Unprintable())
    assert "unprintable" in packed.message


def test_with_remote_traceback_returns_the_exception() -> None:
    exc = ValueError("v")
    assert with_remote_traceback(exc, "remote text") is exc
    assert isinstance(exc.__cause__, RemoteTraceback)
    assert exc.__cause__.traceback_text == "remote text"


# --- deadlines, ports -----------------------------------------------------------------------


def test_deadlines() -> None:
    assert deadline_after(None) is None and time_left(None) is None
    deadline = deadline_after(10)
    assert deadline is not None
    left = time_left(deadline)
    assert left is not None and 9 < left <= 10
    assert time_left(deadline_after(0)) == 0.0
    assert time_left(deadline_after(-5)) == 0.0


def test_free_port_can_be_bound() -> None:
    import socket

    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


# --- processes and the watchdog -------------------------------------------------------------


def test_stop_process_escalates_to_sigkill_and_reaps() -> None:
    stubborn = start_python(
        "-c",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', "
        "flush=True); time.sleep(60)",
        stdout=subprocess.PIPE,
        text=True,
    )
    assert stubborn.stdout is not None
    assert read_line(stubborn.stdout, 30) == "up\n"
    started = time.monotonic()
    assert stop_process(stubborn, grace=(0.2, 0.2)) == -9
    assert time.monotonic() - started < 10
    assert stubborn.stdout.closed


def test_stop_process_with_group_kills_what_the_child_left() -> None:
    child = start_python(
        "-c",
        "import subprocess, sys; p = subprocess.Popen(['sleep', '60']); print(p.pid, flush=True);"
        "import time; time.sleep(60)",
        stdout=subprocess.PIPE,
        text=True,
        new_session=True,
    )
    assert child.stdout is not None
    grandchild = int(read_line(child.stdout, 30))
    assert stop_process(child, grace=5, group=True) == -15
    wait_for(lambda: process_gone(grandchild), 10, "the child's own child to end")


def test_read_line_times_out() -> None:
    silent = start_python("-c", "import time; time.sleep(60)", stdout=subprocess.PIPE, text=True)
    try:
        assert silent.stdout is not None
        assert read_line(silent.stdout, 0.2) == ""
    finally:
        stop_process(silent, grace=5)


# A parent that starts a child watching it, prints the child's pid, and waits to be killed. The
# child watches ``watched``: its parent (``getppid``) or, through a middle process, its
# grandparent (by pid).
WATCHED_CHILD = textwrap.dedent(
    """
    import os, sys, time
    from fray.common.watchdog import exit_when_gone
    exit_when_gone(int(sys.argv[1]), interval=0.05, before_exit=lambda: print("bye", flush=True))
    print(os.getpid(), flush=True)
    time.sleep(60)
    """
)
LAUNCHER = textwrap.dedent(
    """
    import os, subprocess, sys, time
    watched = os.getpid()
    if sys.argv[2] == "grandchild":  # a middle process between us and the watching child
        args = [sys.executable, "-c", "import subprocess, sys; subprocess.run(sys.argv[1:])"]
    else:
        args = []
    subprocess.Popen(args + [sys.executable, "-c", sys.argv[1], str(watched)])
    time.sleep(60)
    """
)


@pytest.mark.parametrize("relation", ["child", "grandchild"])
def test_exit_when_gone(relation: str, tmp_path: Path) -> None:
    launcher = start_python(
        "-c", LAUNCHER, WATCHED_CHILD, relation, stdout=subprocess.PIPE, text=True
    )
    try:
        assert launcher.stdout is not None
        watching = int(read_line(launcher.stdout, 30))
        assert not process_gone(watching)
        time.sleep(0.2)
        assert not process_gone(watching)  # alive while the launcher is
        launcher.kill()
        launcher.wait()
        wait_for(lambda: process_gone(watching), 10, f"the {relation} to end with the launcher")
        assert read_line(launcher.stdout, 5) == "bye\n"  # before_exit ran
    finally:
        stop_process(launcher, grace=1)


def test_the_watchdog_source_runs_without_fray() -> None:
    """Job processes run fray.common.watchdog's source where fray may be missing."""
    from fray.common import watchdog

    source = Path(watchdog.__file__).read_text()
    tree = ast.parse(source)
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in (node.names if isinstance(node, ast.Import) else [ast.alias(node.module)])
    }
    assert "fray" not in imported and imported <= set(sys.stdlib_module_names)


def test_batch_length_bounds_count_and_size_and_never_leaves_an_item_behind() -> None:
    from fray.common.batching import batch_length

    assert batch_length([], 5, 10) == 0
    assert batch_length([100], 5, 10) == 1  # too large for any batch: it goes alone
    assert batch_length([3, 3, 3, 3], 5, 10) == 3  # a fourth would make 12 bytes
    assert batch_length([1] * 9, 5, 10) == 5
