"""Ending a child process whose parent (or another process it serves) has died.

A child blocked in user code cannot notice that the process it works for is gone; this
watchdog thread does, and ends the child. Standard library only and self-contained: job
processes that cannot import fray (on a Ray node) run this module's source as it is (see
:func:`fray.common.job_process.bootstrap_args`). :func:`kill_session` ends what a job left.
"""

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable

__all__ = ["exit_when_gone", "kill_session"]


def exit_when_gone(
    pid: int,
    *,
    interval: float = 0.5,
    before_exit: Callable[[], object] | None = None,
    exit_code: int = 1,
) -> threading.Thread:
    """Start a daemon thread that ends this process once process ``pid`` is gone.

    When ``pid`` is this process's parent, "gone" is noticed by this process being handed to
    another parent (that works even while the dead parent is an unreaped zombie); otherwise
    (e.g. a worker watched by its executors, whose parent is a fork server) by ``pid`` no
    longer existing. Checks every ``interval`` seconds, then runs ``before_exit`` (its errors
    ignored) and calls ``os._exit(exit_code)``: no cleanup handlers, no waiting for threads.
    """
    watching_parent = os.getppid() == pid

    def gone() -> bool:
        if watching_parent:
            return os.getppid() != pid
        try:
            os.kill(pid, 0)
        except (ProcessLookupError, PermissionError):  # PermissionError: the pid was reused
            return True
        return False

    def watch() -> None:
        while not gone():
            time.sleep(interval)
        if before_exit is not None:
            with contextlib.suppress(BaseException):
                before_exit()
        os._exit(exit_code)

    thread = threading.Thread(target=watch, name=f"fray-watch-{pid}", daemon=True)
    thread.start()
    return thread


def kill_session(sid: int, sig: int = signal.SIGKILL) -> int:
    """Send ``sig`` to every process of session ``sid`` (Linux: read from ``/proc``); returns
    how many were signalled. A session outlives its leader while members remain, and its id
    is not reused meanwhile, so this reaches what a job left behind, whatever process groups
    it made. Never signals this process, and signals this process's own children last (this
    process may end as soon as they do: its main thread waits for them)."""
    me = os.getpid()
    try:
        entries = os.listdir("/proc")
    except OSError:
        return 0
    targets = []
    for entry in entries:
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 3 and fields[3] == str(sid) and fields[0] != "Z":
            targets.append((fields[1] == str(me), int(entry)))
    count = 0
    for _, pid in sorted(targets):  # children of this process last
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
            count += 1
    return count
