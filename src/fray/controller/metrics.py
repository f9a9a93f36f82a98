"""The controller's metrics (``GET /metrics``) and the counts the dashboard draws.

`ControllerMetrics` owns a `CollectorRegistry` of its own. What it counts as things happen
(cheap: a few dict operations per task, updated once per RPC batch by `service`; counters and
histograms are `fray.wire.metrics.Counts`/`Durations`, plain numbers exposed when scraped):

- ``fray_tasks_submitted_total``; ``fray_tasks_finished_total{state}`` (COMPLETED, FAILED,
  CANCELLED) and ``fray_task_duration_seconds{state}`` (started to finished, for tasks that
  started);
- ``fray_task_queue_wait_seconds``: the lease latency, from submission to the lease;
- ``fray_rpc_duration_seconds{server="controller", method}`` (`fray.wire.metrics.RpcTimer`).

What it reads from the state when scraped (nothing on the hot path): ``fray_queue_depth``,
``fray_tasks{state}``, ``fray_workers_alive``, ``fray_slots{kind="total"|"busy"}``,
``fray_objects``, ``fray_object_bytes``, ``fray_actors{state}``.

It also keeps, for the dashboard, the finished tasks of each of the last `THROUGHPUT_SECONDS`
seconds and the last `RECENT_FAILURES` failed tasks.

Finishes are seen by comparing the tasks an RPC may finish before and after it (`unfinished`,
then `settle`): the state machine needs no hook. Tasks finished before a restart are not
counted again.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from fray.controller.records import TaskRecord, TaskState
from fray.controller.state import ControllerState
from fray.wire.metrics import Counts, Durations, RpcTimer

THROUGHPUT_SECONDS = 600
RECENT_FAILURES = 20
_FINISHED_STATES = [s for s in TaskState if s.finished]
TASK_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800, 3600)


class ControllerMetrics:
    """The controller's registry, counters and throughput ring (see the module docstring)."""

    def __init__(self, state: ControllerState) -> None:
        self.state = state
        self.registry = CollectorRegistry(auto_describe=True)
        self.rpc = RpcTimer(self.registry, "controller", "/fray.v1.FrayController/")
        self._submitted = Counts("fray_tasks_submitted", "Tasks queued at the controller.")
        states = [s.value for s in _FINISHED_STATES]
        self._finished = Counts(
            "fray_tasks_finished", "Tasks that finished, by final state.", "state", states
        )
        self._durations = Durations(
            "fray_task_duration_seconds",
            "Run time of finished tasks as the controller saw it (start to the result's arrival), "
            "by final state.",
            TASK_BUCKETS,
            "state",
            states,
        )
        self._queue_wait = Durations(
            "fray_task_queue_wait_seconds",
            "Lease latency: from submission to the (last) lease of a task.",
            TASK_BUCKETS,
        )
        for collector in (self._submitted, self._finished, self._durations, self._queue_wait):
            self.registry.register(collector)
        self.registry.register(_StateCollector(state))
        # Finished tasks per second, by state: a ring of THROUGHPUT_SECONDS slots.
        self._ring: dict[TaskState, list[int]] = {
            s: [0] * THROUGHPUT_SECONDS for s in _FINISHED_STATES
        }
        self._second = int(state.clock())
        failed = [t for t in reversed(list(state.tasks.values())) if t.state is TaskState.FAILED]
        self.failures: deque[TaskRecord] = deque(
            reversed(failed[:RECENT_FAILURES]), maxlen=RECENT_FAILURES
        )

    # ---------------------------------------------------------------- what the service tells

    def submitted(self, count: int) -> None:
        self._submitted.inc(amount=count)

    def leased(self, tasks: Iterable[TaskRecord]) -> None:
        now, observe = self.state.clock(), self._queue_wait.observe
        for task in tasks:
            observe(max(0.0, now - task.submitted_at))

    def unfinished(self, task_ids: Iterable[str]) -> list[TaskRecord]:
        """The tasks among `task_ids` not finished yet: give them to `settle` after the change."""
        get = self.state.tasks.get
        return [t for i in task_ids if (t := get(i)) is not None and not t.state.finished]

    def unfinished_on_workers(self, worker_ids: Iterable[str] | None = None) -> list[TaskRecord]:
        """The tasks leased to the workers (all workers when None), for `settle`."""
        workers = self.state.workers
        chosen = workers.values() if worker_ids is None else (workers.get(w) for w in worker_ids)
        return self.unfinished(i for w in chosen if w is not None for i in list(w.task_ids))

    def settle(self, tasks: Iterable[TaskRecord]) -> None:
        """Count those of `tasks` (from `unfinished`) that have finished since."""
        done = [t for t in tasks if t.state.finished]
        if done:
            self._count(done)

    def finished_ids(self, task_ids: Iterable[str]) -> set[str]:
        """The tasks among `task_ids` that are known and finished (for `settle_new`)."""
        get = self.state.tasks.get
        return {i for i in task_ids if (t := get(i)) is not None and t.state.finished}

    def settle_new(self, task_ids: Iterable[str], known: set[str]) -> None:
        """Count the tasks among `task_ids` that are finished now and were not in `known`
        (direct tasks arrive finished)."""
        get = self.state.tasks.get
        done = [
            t for i in task_ids if i not in known and (t := get(i)) is not None and t.state.finished
        ]
        if done:
            self._count(done)

    def _count(self, tasks: list[TaskRecord]) -> None:
        ring = self._advance()
        slot = self._second % THROUGHPUT_SECONDS
        for task in tasks:
            state = task.state
            self._finished.inc(state.value)
            ring[state][slot] += 1
            if task.started_at is not None and task.finished_at is not None:
                seconds = max(0.0, task.finished_at - task.started_at)
                self._durations.observe(seconds, state.value)
            if state is TaskState.FAILED:
                self.failures.append(task)

    def _advance(self) -> dict[TaskState, list[int]]:
        """Move the ring to the current second, zeroing the seconds skipped."""
        now = int(self.state.clock())
        if now != self._second:
            for second in range(max(self._second + 1, now - THROUGHPUT_SECONDS + 1), now + 1):
                for counts in self._ring.values():
                    counts[second % THROUGHPUT_SECONDS] = 0
            self._second = now
        return self._ring

    # ---------------------------------------------------------------- what the dashboard reads

    def throughput(self, seconds: int, bin_seconds: int) -> dict[str, list[int]]:
        """Finished tasks by state in bins of `bin_seconds` over the last `seconds` (oldest
        first; the current, partial second is the last one counted)."""
        ring = self._advance()
        seconds = min(seconds, THROUGHPUT_SECONDS)
        first = self._second - seconds + 1
        out: dict[str, list[int]] = {}
        for state, counts in ring.items():
            values = [counts[s % THROUGHPUT_SECONDS] for s in range(first, self._second + 1)]
            out[state.value] = [
                sum(values[i : i + bin_seconds]) for i in range(0, len(values), bin_seconds)
            ]
        return out


class _StateCollector(Collector):
    """Gauges read from the state at scrape time."""

    def __init__(self, state: ControllerState) -> None:
        self._state = state

    def collect(self) -> Iterator[Any]:
        s = self._state
        yield GaugeMetricFamily("fray_queue_depth", "Tasks queued (PENDING).", s.queue_depth)
        tasks = GaugeMetricFamily("fray_tasks", "Tasks known, by state.", labels=["state"])
        for state, count in s.counts.items():
            tasks.add_metric([state.value], count)
        yield tasks
        workers = s.workers.values()
        yield GaugeMetricFamily("fray_workers_alive", "Registered workers.", len(s.workers))
        slots = GaugeMetricFamily("fray_slots", "Task slots of the workers.", labels=["kind"])
        slots.add_metric(["total"], sum(w.slots for w in workers))
        slots.add_metric(["busy"], s.busy_slots())
        yield slots
        yield GaugeMetricFamily("fray_objects", "Objects stored (ctx.put).", len(s.objects))
        yield GaugeMetricFamily(
            "fray_object_bytes",
            "Bytes of the objects stored (large ones in their owners' files).",
            s.objects.size_bytes,
        )
        actors = GaugeMetricFamily("fray_actors", "Actors, by state.", labels=["state"])
        by_state: dict[str, int] = {}
        for actor in s.actors.values():
            by_state[actor.state.value] = by_state.get(actor.state.value, 0) + 1
        for state_name, count in sorted(by_state.items()):
            actors.add_metric([state_name], count)
        yield actors
