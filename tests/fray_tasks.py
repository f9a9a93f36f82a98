"""Task functions shared by the test modules (``from fray_tasks import sleep_then, ...``).

Tasks travel to worker processes that cannot import ``tests/``, so this module is pickled by
value (for Ray too, by the tests that use Ray: ``ray.cloudpickle.register_pickle_by_value``).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import cloudpickle

cloudpickle.register_pickle_by_value(sys.modules[__name__])

GATE_SECONDS = 60.0  # the longest a task waits for its gate file


def _mark(marker: str) -> None:
    """Tell the test that the task started (and in which process) by writing `marker`."""
    if marker:
        Path(marker).write_text(str(os.getpid()))


def add(a: int, b: int) -> int:
    return a + b


def square(x: int) -> int:
    return x * x


def sleep_then(seconds: float, value: object, marker: str = "") -> object:
    """Sleeps `seconds`, then returns `value`."""
    _mark(marker)
    time.sleep(seconds)
    return value


def wait_for_file(path: str, value: object, marker: str = "") -> object:
    """Runs until the test creates `path` (at most a minute), then returns `value`."""
    _mark(marker)
    deadline = time.monotonic() + GATE_SECONDS
    while not Path(path).exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return value
