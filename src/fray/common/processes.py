"""Child processes: starting Python children, reading their first words, stopping them.

Every child fray starts (a local cluster's controller and workers, fray.v2 job processes
and pool workers) starts through :func:`start_python` and stops through
:func:`stop_process`: SIGTERM (the graceful path), time to finish, and SIGKILL for what is
still alive. A child that must not outlive its parent starts a watchdog of its own
(:func:`fray.common.watchdog.exit_when_gone`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Collection, Mapping, Sequence
from typing import IO, Any

__all__ = ["read_line", "start_python", "stop_process"]

logger = logging.getLogger(__name__)


def start_python(
    *args: str,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    stdout: int | IO[Any] | None = None,
    stderr: int | IO[Any] | None = None,
    text: bool = False,
    new_session: bool = False,
    pass_fds: Collection[int] = (),
) -> subprocess.Popen[Any]:
    """Start ``python ARGS`` with this process's interpreter; its stdin is ``/dev/null``.

    ``env`` is the child's whole environment (default: this one's); ``stdout``/``stderr`` as
    for ``Popen`` (default: ours). ``new_session`` puts the child in a session (and process
    group) of its own, so ``stop_process(..., group=True)`` reaches all it starts.
    """
    return subprocess.Popen(
        [sys.executable, *args],
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        env=None if env is None else dict(env),
        cwd=cwd,
        text=text,
        start_new_session=new_session,
        pass_fds=tuple(pass_fds),
    )


def read_line(stream: IO[str], timeout: float) -> str:
    """The next line of a child's output, or ``""`` at its end or after ``timeout`` seconds
    (the line is read in a helper thread, so a silent child cannot block the caller)."""
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return line[0] if line else ""


def stop_process(
    process: subprocess.Popen[Any],
    grace: float | Sequence[float] = 30.0,
    *,
    group: bool = False,
) -> int | None:
    """Stop ``process`` and reap it; returns its exit code.

    Sends SIGTERM and waits ``grace`` seconds; a sequence of graces sends one SIGTERM per
    entry (fray's workers take a second SIGTERM as "stop now"). Whatever is still running
    then gets SIGKILL. With ``group``, signals go to the child's process group (a child
    started with ``new_session``), and after it ends, SIGKILL reaches what it left behind. A
    child that has already exited is only reaped. Closes the child's stdout pipe, if any.
    """
    graces = [grace] if isinstance(grace, int | float) else list(grace)
    if process.poll() is None:
        for seconds in graces:
            _signal(process, signal.SIGTERM, group)
            try:
                process.wait(seconds)
                break
            except subprocess.TimeoutExpired:
                continue
        else:
            logger.warning(
                "process %s ignored SIGTERM for %gs; killing it", process.args, sum(graces)
            )
            _signal(process, signal.SIGKILL, group)
            process.wait()
        if group:
            _signal(process, signal.SIGKILL, group)  # what it started and left behind
    if process.stdout is not None:
        process.stdout.close()
    return process.returncode


def _signal(process: subprocess.Popen[Any], sig: int, group: bool) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if group:
            os.killpg(process.pid, sig)
        else:
            process.send_signal(sig)
