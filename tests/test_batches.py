"""Short leased tasks go to their executor in batches (`fray.worker.slots`): a real slot thread
fed by a real `TaskQueue`, with its executor process; and end to end on a worker."""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import cloudpickle
import pytest

from fray.client.context import FrayContext
from fray.local_cluster import LocalFrayCluster
from fray.wire.controller_client import ControllerClient
from fray.wire.pb import controller_pb2 as pb
from fray.worker import slots
from fray.worker.slots import Slot, SlotDuties
from fray.worker.task_queue import TaskQueue

pytestmark = pytest.mark.timeout(120)

WAIT = 30.0


def gated(gate: str | None, value: int) -> int:
    """Returns `value`, once the file `gate` exists (at once without a gate)."""
    while gate is not None and not os.path.exists(gate):
        time.sleep(0.005)
    return value


GATED = cloudpickle.dumps(gated)


class SlotHarness:
    """A slot whose thread takes tasks from a TaskQueue and hands results to `results`."""

    def __init__(self) -> None:
        self.mutex = threading.RLock()
        self.stopping = threading.Event()
        self.queue = TaskQueue(self.mutex, 1, self.stopping)
        self.results: dict[str, pb.TaskResult] = {}
        self.ended = threading.Condition()
        self.started: list[str] = []
        duties = SlotDuties(
            worker_id="w-batch",
            next_task=self.queue.next_task,
            finished=self._finished,
            fetch_object=lambda object_id: b"",
            stopping_hard=threading.Event(),
            give_up=lambda: None,
            more_tasks=self._more,
        )
        self.slot = Slot(duties, 0)
        self.slot.start_process()
        self.slot.thread.start()

    def _more(self, accept, limit, claim):  # type: ignore[no-untyped-def]
        def claim_and_note(task: pb.LeasedTask) -> None:
            claim(task)
            self.started.append(task.task_id)

        return self.queue.take_more(accept, limit, claim_and_note)

    def _finished(self, result: pb.TaskResult, seconds: float) -> None:
        self.queue.done(seconds)
        with self.ended:
            self.results[result.task_id] = result
            self.ended.notify_all()

    def push(self, *tasks: tuple[str, str | None, int]) -> None:
        self.queue.push(
            pb.LeasedTask(
                task_id=task_id,
                attempt=1,
                function=GATED,
                args=cloudpickle.dumps(((gate, value), {})),
            )
            for task_id, gate, value in tasks
        )

    def wait(self, *task_ids: str) -> None:
        with self.ended:
            done = self.ended.wait_for(lambda: all(t in self.results for t in task_ids), WAIT)
        assert done, f"not all of {task_ids} ended: {sorted(self.results)}"

    def value(self, task_id: str) -> int:
        result = self.results[task_id]
        assert result.HasField("value"), result
        return int(cloudpickle.loads(result.value))

    def stop(self) -> None:
        self.stopping.set()
        self.queue.wake_all()
        self.slot.thread.join(WAIT)
        self.slot.stop_process()


@pytest.fixture
def harness(monkeypatch: pytest.MonkeyPatch) -> Iterator[SlotHarness]:
    # Whatever the machine's speed, a task of `gated` that ran counts as short.
    monkeypatch.setattr(slots, "SHORT_SECONDS", 60.0)
    made = SlotHarness()
    try:
        yield made
    finally:
        made.stop()


def until(predicate, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + WAIT
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.005)


def test_known_short_tasks_go_in_batches_in_order(harness: SlotHarness) -> None:
    harness.push(("first", None, 0))  # alone: now its function is known to be short
    harness.wait("first")
    ids = [f"t{i}" for i in range(100)]
    harness.push(*((task_id, None, i) for i, task_id in enumerate(ids)))
    harness.wait(*ids)
    assert [harness.value(t) for t in ids] == list(range(100))
    assert harness.slot.batched >= 100 - 10  # most went as mates
    assert not harness.slot.batch


def test_a_task_not_known_short_runs_alone(harness: SlotHarness, tmp_path: Path) -> None:
    gate = str(tmp_path / "gate")
    harness.push(("slow", gate, 1), ("next", None, 2))
    until(lambda: harness.slot.current is not None, "the first task to start")
    Path(gate).touch()
    harness.wait("slow", "next")
    assert harness.slot.batched == 0  # nothing was known of the function yet


def test_cancelling_a_mate_that_has_not_started(harness: SlotHarness, tmp_path: Path) -> None:
    harness.push(("first", None, 0))
    harness.wait("first")
    gate = str(tmp_path / "gate")
    harness.push(("head", gate, 1), ("m1", None, 2), ("m2", None, 3), ("m3", None, 4))
    until(lambda: len(harness.slot.batch) == 4, "the batch to be claimed")
    assert harness.slot.kill("m2", pb.ERROR_KIND_CANCELLED)  # not started yet
    Path(gate).touch()
    harness.wait("head", "m1", "m2", "m3")
    assert [harness.value(t) for t in ("head", "m1", "m3")] == [1, 2, 4]
    cancelled = harness.results["m2"]
    assert cancelled.error.kind == pb.ERROR_KIND_CANCELLED
    harness.push(("after", None, 5))  # the same executor serves on
    harness.wait("after")
    assert harness.value("after") == 5


def test_killing_the_running_task_hands_the_mates_back(
    harness: SlotHarness, tmp_path: Path
) -> None:
    harness.push(("first", None, 0))
    harness.wait("first")
    pid = harness.slot.process.pid
    gate = str(tmp_path / "never")
    harness.push(("head", gate, 1), ("m1", None, 2), ("m2", None, 3))
    until(lambda: len(harness.slot.batch) == 3, "the batch to be claimed")
    assert harness.slot.kill("head", pb.ERROR_KIND_CANCELLED)  # running, and it hangs
    harness.wait("head", "m1", "m2")
    assert harness.results["head"].error.kind == pb.ERROR_KIND_CANCELLED
    assert harness.results["m1"].handed_back and harness.results["m2"].handed_back
    harness.push(("after", None, 5))  # in a new executor
    harness.wait("after")
    assert harness.value("after") == 5 and harness.slot.process.pid != pid


def test_an_executor_dying_in_a_batch(harness: SlotHarness, tmp_path: Path) -> None:
    harness.push(("first", None, 0))
    harness.wait("first")
    gate = str(tmp_path / "never")
    harness.push(("head", gate, 1), ("m1", None, 2))
    until(lambda: len(harness.slot.batch) == 2, "the batch to be claimed")
    os.kill(harness.slot.process.pid, 9)
    harness.wait("head", "m1")
    assert harness.results["head"].error.kind == pb.ERROR_KIND_WORKER_LOST  # retried elsewhere
    assert harness.results["m1"].handed_back  # it never started


def test_a_hung_mate_is_killed_when_stopped(harness: SlotHarness, tmp_path: Path) -> None:
    """The running task of a batch may be a mate: stopping it kills the executor (after
    STOP_WAIT), the mates that finished keep their results, the later ones go back."""
    harness.push(("first", None, 0))
    harness.wait("first")
    gate = str(tmp_path / "never")
    harness.push(("head", None, 1), ("hung", gate, 2), ("m2", None, 3))
    harness.wait("head")
    assert harness.slot.kill("hung", pb.ERROR_KIND_CANCELLED)
    harness.wait("hung", "m2")
    assert harness.value("head") == 1
    assert harness.results["hung"].error.kind == pb.ERROR_KIND_CANCELLED
    assert harness.results["m2"].handed_back


def test_a_hard_stop_keeps_finished_results(harness: SlotHarness, tmp_path: Path) -> None:
    harness.push(("first", None, 0))
    harness.wait("first")
    gate = str(tmp_path / "never")
    harness.push(("head", None, 1), ("hung", gate, 2), ("m2", None, 3))
    harness.wait("head")
    harness.slot.kill_all(pb.ERROR_KIND_UNSPECIFIED, lambda task: True)  # a shutdown
    harness.wait("hung", "m2")
    assert harness.value("head") == 1
    assert harness.results["hung"].handed_back and harness.results["m2"].handed_back


def test_a_batch_takes_only_its_share_when_slots_are_idle() -> None:
    mutex, stopping = threading.RLock(), threading.Event()
    queue = TaskQueue(mutex, 4, stopping)
    queue.push(pb.LeasedTask(task_id=f"t{i}", attempt=1) for i in range(41))
    head = queue.next_task(lambda task: None)  # one slot runs; three are idle
    assert head is not None and head.task_id == "t0"
    mates = queue.take_more(lambda task: True, 31, lambda task: None)
    assert [t.task_id for t in mates] == [f"t{i}" for i in range(1, 11)]  # 40 // 4
    assert queue.counts() == (11, 30)


def test_a_worker_batches_a_backlog_of_tiny_tasks() -> None:
    with LocalFrayCluster(workers=1, concurrency=1) as cluster:
        ctx = FrayContext(cluster.address)
        try:
            futures = [ctx.run(pow, i, 2) for i in range(3000)]
            assert ctx.get(futures, timeout=120) == [i * i for i in range(3000)]
        finally:
            ctx.close()
        client = ControllerClient(cluster.address)
        try:
            (worker,) = client.call(client.rpc.list_workers, pb.ListWorkersRequest()).workers
        finally:
            client.close()
        with urllib.request.urlopen(f"{worker.address}/healthz", timeout=WAIT) as answer:
            health = json.loads(answer.read())
        assert health["batched_tasks"] > 0
