"""The controller at scale: targeted wake-ups of lease polls, incremental WaitTasks, lease
sizing and the memory of queued tasks (in process: the service over a state, no server)."""

from __future__ import annotations

import asyncio
import functools
import random
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import pytest

from fray.controller.long_poll import LeasePoll, LeasePolls
from fray.controller.placement import fits_now
from fray.controller.records import TaskOutcome, TaskSpec, TaskState, WorkerRecord
from fray.controller.service import ControllerService
from fray.controller.state import ControllerState
from fray.controller.task_lifecycle import MIN_LEASE, grant_size
from fray.controller.tasks import TaskTable
from fray.wire.pb import controller_pb2 as pb

CTX: Any = SimpleNamespace(timeout_ms=None)


def spec_pb(task_id: str = "", **requirements: float) -> pb.TaskSpec:
    spec = pb.TaskSpec(function=b"f" * 40, args=b"a", task_id=task_id, owner="me")
    if requirements:
        spec.requirements.CopyFrom(pb.Requirements(resources=requirements))
    return spec


class Cluster:
    """A service over a state, with parked lease polls of many workers (each an asyncio task)."""

    def __init__(self) -> None:
        self.state = ControllerState(heartbeat_timeout=600.0)
        self.service = ControllerService(self.state)
        self.polls: dict[str, asyncio.Task[pb.LeaseTasksResponse]] = {}
        self.poll_objects: dict[str, LeasePoll] = {}
        real_new = self.service._lease_polls.new

        def new(worker_id: str, prefetch: int | None, cached: list[str]) -> LeasePoll:
            poll = self.poll_objects[worker_id] = real_new(worker_id, prefetch, cached)
            return poll

        self.service._lease_polls.new = new  # type: ignore[method-assign]

    @property
    def lease_polls(self) -> LeasePolls:
        return self.service._lease_polls

    async def register(
        self, worker_id: str, slots: int = 1, prefetch: int = 0, **capacities: float
    ) -> None:
        await self.service.register_worker(
            pb.RegisterWorkerRequest(
                worker_id=worker_id,
                slots=slots,
                prefetch=prefetch,
                resources=pb.Resources(capacities=capacities or {"cpus": 1.0}),
            ),
            CTX,
        )

    def lease(self, worker_id: str, wait_ms: int = 60_000) -> None:
        request = pb.LeaseTasksRequest(worker_id=worker_id, wait_ms=wait_ms)
        self.polls[worker_id] = asyncio.create_task(self.service.lease_tasks(request, CTX))

    async def settle(self) -> None:
        """Let every woken poll run (a few loop turns)."""
        for _ in range(20):
            await asyncio.sleep(0)

    def answered(self) -> dict[str, pb.LeaseTasksResponse]:
        done = {w: t for w, t in self.polls.items() if t.done()}
        for worker_id in done:
            del self.polls[worker_id]
        return {w: t.result() for w, t in done.items()}

    async def close(self) -> None:
        self.service.begin_shutdown()
        await asyncio.gather(*self.polls.values(), return_exceptions=True)


def run(body: Callable[[Cluster], Awaitable[None]]) -> None:
    async def main() -> None:
        cluster = Cluster()
        try:
            await body(cluster)
        finally:
            await cluster.close()

    asyncio.run(main())


async def parked(cluster: Cluster, workers: list[str], **kwargs: Any) -> None:
    for worker_id in workers:
        await cluster.register(worker_id, **kwargs)
        cluster.lease(worker_id)
    await cluster.settle()
    assert cluster.lease_polls.parked == len(workers)
    assert cluster.answered() == {}


def test_a_one_task_submit_wakes_exactly_one_of_50_parked_polls() -> None:
    async def body(c: Cluster) -> None:
        await parked(c, [f"w{i}" for i in range(50)])
        woken = c.lease_polls.woken
        await c.service.submit_tasks(pb.SubmitTasksRequest(tasks=[spec_pb("t1")]), CTX)
        await c.settle()
        assert c.lease_polls.woken - woken == 1
        answers = c.answered()
        assert [[t.task_id for t in a.tasks] for a in answers.values()] == [["t1"]]
        assert c.lease_polls.parked == 49
        # The oldest parked poll got it (w0 parked first).
        assert list(answers) == ["w0"]

    run(body)


def test_n_new_tasks_wake_as_many_polls_as_they_need() -> None:
    async def body(c: Cluster) -> None:
        await parked(c, [f"w{i}" for i in range(50)])  # one slot each, no prefetch
        woken = c.lease_polls.woken
        tasks = [spec_pb(f"t{i}") for i in range(5)]
        await c.service.submit_tasks(pb.SubmitTasksRequest(tasks=tasks), CTX)
        await c.settle()
        assert c.lease_polls.woken - woken == 5
        answers = c.answered()
        assert sorted(t.task_id for a in answers.values() for t in a.tasks) == [
            f"t{i}" for i in range(5)
        ]
        assert all(len(a.tasks) == 1 for a in answers.values())
        assert c.state.queue_depth == 0

    run(body)


def test_a_cancellation_wakes_only_the_worker_holding_the_task() -> None:
    async def body(c: Cluster) -> None:
        await parked(c, [f"w{i}" for i in range(20)])
        await c.service.submit_tasks(pb.SubmitTasksRequest(tasks=[spec_pb("t1")]), CTX)
        await c.settle()
        (holder,) = c.answered()
        c.lease(holder)  # its next poll parks: its one slot is taken
        await c.settle()
        assert c.lease_polls.parked == 20
        woken = c.lease_polls.woken
        await c.service.cancel_tasks(pb.CancelTasksRequest(task_ids=["t1"]), CTX)
        await c.settle()
        assert c.lease_polls.woken - woken == 1
        answers = c.answered()
        assert list(answers) == [holder]
        assert list(answers[holder].cancel_task_ids) == ["t1"]

    run(body)


def test_a_report_wakes_only_the_reporting_worker() -> None:
    async def body(c: Cluster) -> None:
        await parked(c, [f"w{i}" for i in range(20)])
        await c.service.submit_tasks(pb.SubmitTasksRequest(tasks=[spec_pb("t0")]), CTX)
        await c.settle()
        ((holder, answer),) = c.answered().items()
        c.lease(holder)  # its next poll parks full (its one slot is taken)
        await c.settle()
        woken = c.lease_polls.woken
        result = pb.TaskResult(task_id="t0", attempt=answer.tasks[0].attempt, value=b"v")
        await c.service.report_results(
            pb.ReportResultsRequest(worker_id=holder, results=[result]), CTX
        )
        await c.settle()
        assert c.lease_polls.woken - woken == 1  # the holder: it has room again
        assert c.state.get_task("t0").state is TaskState.COMPLETED
        # It found nothing queued and parked again; nobody answered.
        assert c.answered() == {}
        assert c.lease_polls.parked == 20

    run(body)


def test_a_task_with_a_need_wakes_only_a_worker_it_fits() -> None:
    async def body(c: Cluster) -> None:
        await parked(c, [f"cpu{i}" for i in range(10)])
        await c.register("gpu", gpus=1.0, cpus=1.0)
        c.lease("gpu")
        await c.settle()
        woken = c.lease_polls.woken
        await c.service.submit_tasks(pb.SubmitTasksRequest(tasks=[spec_pb("g", gpus=1)]), CTX)
        await c.settle()
        assert c.lease_polls.woken - woken == 1
        answers = c.answered()
        assert list(answers) == ["gpu"]
        assert [t.task_id for t in answers["gpu"].tasks] == ["g"]

    run(body)


def test_a_woken_poll_that_ends_before_looking_hands_its_tasks_on() -> None:
    async def body(c: Cluster) -> None:
        await parked(c, [f"w{i}" for i in range(5)])
        await c.service.submit_tasks(pb.SubmitTasksRequest(tasks=[spec_pb("t1")]), CTX)
        # w0 was woken; its call ends (the client went away) before it looked.
        assert c.poll_objects["w0"].cover is not None
        c.polls.pop("w0").cancel()
        await c.settle()
        answers = c.answered()
        assert list(answers) == ["w1"]
        assert [t.task_id for t in answers["w1"].tasks] == ["t1"]

    run(body)


def test_a_woken_poll_that_takes_fewer_than_expected_hands_the_rest_on() -> None:
    async def body(c: Cluster) -> None:
        await parked(c, [f"w{i}" for i in range(5)], slots=4)
        # w0 is woken for both tasks (4 free slots), but before it looks, its slots fill up
        # (held by tasks leased meanwhile): it takes none, and hands them on.
        await c.service.submit_tasks(
            pb.SubmitTasksRequest(tasks=[spec_pb("t1"), spec_pb("t2")]), CTX
        )
        assert c.poll_objects["w0"].cover is not None
        assert c.poll_objects["w1"].cover is None
        w0 = c.state.workers["w0"]
        for i in range(4):
            w0.task_ids[f"elsewhere{i}"] = None
        await c.settle()
        answers = c.answered()
        assert "w0" not in answers
        assert sorted(t.task_id for a in answers.values() for t in a.tasks) == ["t1", "t2"]
        w0.task_ids.clear()

    run(body)


def test_a_job_poll_is_not_woken_by_task_reports() -> None:
    async def body(c: Cluster) -> None:
        await c.register("w")
        job = await c.service.submit_job(
            pb.SubmitJobRequest(job=pb.JobSpec(name="j", command=["true"], replicas=1)), CTX
        )
        waiting = asyncio.create_task(
            c.service.get_job(pb.GetJobRequest(job_id=job.job.job_id, wait_ms=60_000), CTX)
        )
        await c.settle()
        signal = c.service._job_changes
        fires = 0
        real_fire = signal.fire

        def fire() -> None:
            nonlocal fires
            fires += 1
            real_fire()

        signal.fire = fire  # type: ignore[method-assign]
        await c.service.submit_tasks(pb.SubmitTasksRequest(tasks=[spec_pb("t1")]), CTX)
        lease = await c.service.lease_tasks(pb.LeaseTasksRequest(worker_id="w"), CTX)
        result = pb.TaskResult(task_id="t1", attempt=lease.tasks[0].attempt, value=b"v")
        await c.service.report_results(
            pb.ReportResultsRequest(worker_id="w", results=[result]), CTX
        )
        await c.settle()
        assert fires == 0
        assert not waiting.done()
        await c.service.stop_job(pb.StopJobRequest(job_id=job.job.job_id), CTX)
        await c.settle()
        assert fires >= 1
        assert waiting.done()

    run(body)


def test_wait_tasks_over_many_ids_answers_once_enough_finished() -> None:
    async def body(c: Cluster) -> None:
        await c.register("w", slots=500)
        ids = [f"t{i}" for i in range(300)]
        await c.service.submit_tasks(pb.SubmitTasksRequest(tasks=[spec_pb(i) for i in ids]), CTX)
        leased = await c.service.lease_tasks(pb.LeaseTasksRequest(worker_id="w"), CTX)
        attempts = {t.task_id: t.attempt for t in leased.tasks}
        waiting = asyncio.create_task(
            c.service.wait_tasks(
                pb.WaitTasksRequest(task_ids=ids, min_finished=250, wait_ms=60_000), CTX
            )
        )
        await c.settle()
        order = ids[:]
        random.Random(3).shuffle(order)
        for start in range(0, 300, 10):
            chunk = order[start : start + 10]
            results = [pb.TaskResult(task_id=i, attempt=attempts[i], value=b"v") for i in chunk]
            await c.service.report_results(
                pb.ReportResultsRequest(worker_id="w", results=results), CTX
            )
            await c.settle()
            assert waiting.done() == (start + 10 >= 250), start
            if waiting.done():
                break
        answer = waiting.result()
        finished = [t.task_id for t in answer.finished]
        assert finished == [i for i in ids if i in set(order[:250])]  # in the ids' order
        assert answer.pending_count == 50

    run(body)


@pytest.mark.parametrize("max_finished", [1_000, 100])
def test_finished_among_is_incremental_and_exact(max_finished: int) -> None:
    """`FinishedAmong` agrees with a full scan after every look, also when more tasks finished
    between two looks than the table keeps (it then looks at every waiting id again)."""
    state = ControllerState(max_finished_tasks=max_finished)
    state.register_worker(worker_id="w", slots=10_000)
    ids = state.submit([TaskSpec(function=b"f", args=b"", owner="me") for _ in range(400)])
    rng = random.Random(1)
    order = ids[:]
    rng.shuffle(order)
    # Kept to the end: with 100 kept, the 50 that finish last; else every other one.
    watched = order[-50:] if max_finished < 400 else ids[::2]
    among = state.watch_finished_among(watched)
    leased, _ = state.lease("w")
    attempts = {t.task_id: t.attempts for t in leased}
    found: set[str] = set()
    looks = 0
    for start in range(0, 400, 17):
        chunk = order[start : start + 17]
        state.report("w", [TaskOutcome(i, attempts[i], value=b"") for i in chunk])
        found |= set(chunk) & set(watched)
        if rng.random() < 0.5 or start > 340:  # sometimes several reports between two looks
            looks += 1
            assert among.update() == len(found)
            assert among.count == sum(state.get_task(t).state.finished for t in watched)
    assert looks > 5
    among.update()
    finished, pending = among.answer()
    assert [t.task_id for t in finished] == [i for i in watched if i in found]
    assert pending == len(watched) - len(found) == 0


def test_a_function_pickle_is_kept_once_and_freed_with_its_last_task() -> None:
    state = ControllerState()
    state.register_worker(worker_id="w", slots=10_000)
    function = bytes(500)
    specs = [TaskSpec(function=bytes(bytearray(function)), args=b"", owner="me") for _ in range(50)]
    assert len({id(s.function) for s in specs}) == 50  # one copy each, as parsed
    ids = state.submit(specs)
    ids += state.submit([TaskSpec(function=b"other", args=b"", owner="me")])
    assert len({id(state.get_task(i).spec.function) for i in ids[:50]}) == 1
    table: TaskTable = state._tasks
    assert table.distinct_functions == 2
    state.cancel(ids[:10])
    leased, _ = state.lease("w")
    state.report("w", [TaskOutcome(t.task_id, t.attempts, value=b"") for t in leased[:-1]])
    assert table.distinct_functions == 1  # the last task, "other" or not, still holds its own
    state.report("w", [TaskOutcome(leased[-1].task_id, leased[-1].attempts, value=b"")])
    assert table.distinct_functions == 0


def test_lease_size_is_free_slots_then_the_fair_share() -> None:
    def worker(slots: int, held: int = 0) -> WorkerRecord:
        w = WorkerRecord("w", "", slots, 256, 0.0, 0.0)
        w.task_ids = {f"h{i}": None for i in range(held)}
        return w

    # 100 (maybe long) tasks over 50 workers, to a worker whose recent pace asked for 256:
    # its share (2), not 50 of them queued behind one worker while the others idle.
    assert grant_size(worker(1), 256, 100, 50) == 2
    assert grant_size(worker(1), 256, 10_000, 100) == 100
    # Tasks known to be short: a lease worth an RPC, at most half of the queue.
    assert grant_size(worker(1), 256, 1_000, 1_000, short=True) == MIN_LEASE
    assert grant_size(worker(1), 256, 10, 1_000, short=True) == 5
    # Never more than the worker's room.
    assert grant_size(worker(1, held=250), 256, 100_000, 10) == 7
    assert grant_size(worker(8), 256, 10, 1_000) == 8  # its free slots, always
    # No prefetch (long tasks): its free slots only.
    assert grant_size(worker(2), 0, 1_000, 1_000) == 2
    # One worker: the whole queue, up to its room.
    assert grant_size(worker(1), 256, 100, 1) == 100


def test_no_task_waits_while_a_parked_worker_could_take_it() -> None:
    """Random submits (with and without needs), reports and cancellations over 30 workers of
    different sizes: once the polls woken have run, no parked poll with room has a queued
    task that fits its worker (a missed wake-up), and polls are not woken much more often
    than there are tasks to take."""

    async def body(c: Cluster) -> None:
        rng = random.Random(7)
        for i in range(30):
            gpus = {"gpus": 1.0} if i % 5 == 0 else {}
            await c.register(
                f"w{i}", slots=rng.choice([1, 2, 4]), prefetch=rng.choice([0, 3]), cpus=2.0, **gpus
            )
            c.lease(f"w{i}")
        await c.settle()
        held: dict[str, dict[str, int]] = {f"w{i}": {} for i in range(30)}
        serial = 0
        for _ in range(300):
            op = rng.random()
            if op < 0.4:
                n = rng.choice([1, 1, 2, 5, 40])
                need = rng.choice([{}, {}, {"gpus": 1}, {"cpus": 2}])
                tasks = [spec_pb(f"t{serial + k}", **need) for k in range(n)]
                serial += n
                await c.service.submit_tasks(pb.SubmitTasksRequest(tasks=tasks), CTX)
            elif op < 0.85:
                worker_id = rng.choice(list(held))
                mine = list(held[worker_id].items())[: rng.randint(1, 4)]
                if mine:
                    results = [pb.TaskResult(task_id=t, attempt=a, value=b"v") for t, a in mine]
                    await c.service.report_results(
                        pb.ReportResultsRequest(worker_id=worker_id, results=results), CTX
                    )
                    for t, _ in mine:
                        del held[worker_id][t]
            else:
                ids = [f"t{rng.randrange(max(1, serial))}" for _ in range(3)]
                await c.service.cancel_tasks(
                    pb.CancelTasksRequest(task_ids=[i for i in ids if i in c.state.tasks]), CTX
                )
            for _ in range(5):  # answered polls: their workers take the tasks and poll again
                await c.settle()
                answers = c.answered()
                if not answers:
                    break
                for worker_id, answer in answers.items():
                    for t in answer.tasks:
                        held[worker_id][t.task_id] = t.attempt
                    for t in answer.cancel_task_ids:
                        held[worker_id].pop(t, None)
                    c.lease(worker_id)
            for poll in c.lease_polls._with_room:
                fitting = c.state._tasks.queued_fitting(
                    functools.partial(fits_now, c.state.workers[poll.worker_id])
                )
                assert fitting == 0, (poll.worker_id, fitting)
        counts = c.state.counts
        assert counts[TaskState.COMPLETED] > 100 and counts[TaskState.PENDING] > 0
        assert c.lease_polls.woken < 3 * (counts[TaskState.COMPLETED] + 30)

    run(body)


def test_only_tasks_known_to_be_short_come_in_leases_larger_than_the_fair_share() -> None:
    """A function whose tasks recently ran under SHORT_TASK_SECONDS: leases of MIN_LEASE; a
    function never seen (maybe long tasks, after a burst of short ones): the fair share."""
    now = [1000.0]
    state = ControllerState(clock=lambda: now[0])
    for i in range(100):
        state.register_worker(worker_id=f"w{i}", slots=1, prefetch=256)
    state.submit([TaskSpec(function=b"tiny", args=b"", task_id="first")])
    (first,), _ = state.lease("w0")
    now[0] += 0.001
    state.report("w0", [TaskOutcome(first.task_id, 1, value=b"", run_seconds=0.001)])
    state.submit([TaskSpec(function=b"tiny", args=b"", task_id=f"t{i}") for i in range(1000)])
    leased, _ = state.lease("w1")
    assert len(leased) == MIN_LEASE  # its share would be 10
    state.submit([TaskSpec(function=b"long", args=b"", task_id=f"l{i}") for i in range(200)])
    state.cancel([f"t{i}" for i in range(1000)])  # only the unknown function's tasks are left
    leased, _ = state.lease("w2")
    assert len(leased) == 2  # the fair share of 200 over 100 workers
