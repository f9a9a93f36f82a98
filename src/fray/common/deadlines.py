"""Deadlines for calls with a timeout: one monotonic deadline, the time left recomputed."""

from __future__ import annotations

import time

__all__ = ["deadline_after", "time_left"]


def deadline_after(timeout: float | None) -> float | None:
    """The monotonic time at which ``timeout`` expires (``None``: never)."""
    return None if timeout is None else time.monotonic() + timeout


def time_left(deadline: float | None) -> float | None:
    """Seconds left until ``deadline``, never negative (``None``: no deadline)."""
    return None if deadline is None else max(0.0, deadline - time.monotonic())
