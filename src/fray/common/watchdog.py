"""Ending a child process whose parent (or another process it serves) has died.

A child blocked in user code cannot notice that the process it works for is gone; this
watchdog thread does, and ends the child. Standard library only and self-contained: job
processes that cannot import fray (on a Ray node) run this module's source as it is (see
:func:`fray.v2.job.bootstrap_args`).
"""

import contextlib
import os
import threading
import time
from collections.abc import Callable

__all__ = ["exit_when_gone"]


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
