"""Warnings for a client whose tasks wait at a controller that cannot run them: without them, a
job sent to a cluster whose workers are missing (`fray demo --workers 0`, a worker that failed to
start), or whose tasks ask for what no worker offers (`gpus=4` on one-GPU workers), just sits
there.

`NoWorkerWarning` runs a thread (started with the collector) that looks every `CHECK_SECONDS`:
when this client has had tasks waiting at the controller for that long, it reads the cluster
summary and

- when the controller has no worker registered, logs one WARNING; once workers are back, it may
  warn again later;
- for each reason the summary lists in `unplaceable` ("no worker offers gpus=4": the pending
  tasks, actors and job replicas that no registered worker could ever run), logs one WARNING the
  first time it sees it; a reason that goes away (a worker that offers it registered) may be
  warned of again when it comes back.

The reasons are the cluster's: they may concern another client's work as well as ours.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from fray.wire.controller_client import ControllerClient
from fray.wire.pb import controller_pb2 as pb

logger = logging.getLogger(__name__)

CHECK_SECONDS = 5.0


class NoWorkerWarning:
    """Warns (once per stretch without workers) that this client's queued tasks have no
    worker to run them, and once per unplaceable reason. `waiting()` counts the client's tasks
    queued at the controller; `closed()` ends the thread."""

    def __init__(
        self,
        controller: ControllerClient,
        waiting: Callable[[], int],
        closed: Callable[[], bool],
        check_seconds: float | None = None,
    ) -> None:
        self._controller = controller
        self._waiting = waiting
        self._closed = closed
        self._check_seconds = CHECK_SECONDS if check_seconds is None else check_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="fray-no-workers", daemon=True)
        self.warned = False  # in the current stretch without workers
        self.warned_reasons: set[str] = set()  # unplaceable reasons warned of, still listed
        self.summaries = 0  # summaries read (tests wait on it instead of sleeping)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        waited = 0  # consecutive checks that found tasks waiting
        while not self._stop.wait(self._check_seconds) and not self._closed():
            count = self._waiting()
            waited = waited + 1 if count else 0
            if waited == 0:
                continue
            try:
                summary = self._controller.call(
                    self._controller.rpc.get_cluster_summary,
                    pb.GetClusterSummaryRequest(),
                    retry_timeout=0,
                    quiet=True,
                )
            except Exception:  # e.g. unreachable: the other threads report outages
                continue
            self._check(summary, count, waited * self._check_seconds)
            self.summaries += 1

    def _check(self, summary: pb.GetClusterSummaryResponse, count: int, seconds: float) -> None:
        """Warn about what `summary` shows, for `count` of our tasks waiting `seconds`."""
        if summary.workers:
            self.warned = False
        elif not self.warned:
            self.warned = True
            logger.warning(
                "%d task(s) have waited %gs and no fray worker is registered at %s; "
                "start one with `fray worker --controller %s`",
                count,
                seconds,
                self._controller.address,
                self._controller.address,
            )
        unplaceable = summary.unplaceable
        self.warned_reasons &= set(unplaceable)  # gone ones may be warned of again
        for reason in sorted(set(unplaceable) - self.warned_reasons):
            self.warned_reasons.add(reason)
            logger.warning(
                "%d task(s), actor(s) or job replica(s) wait at %s: %s; they stay pending "
                "until a worker that offers it registers (`fray worker --resources ...`)",
                unplaceable[reason],
                self._controller.address,
                reason,
            )
