"""RPC fault injection (FRAY_TESTING_RPC_FAILURE): every RPC that workers and clients send to
the controller is safe to repeat. A request lost before its handler ran, or an answer lost after
it ran (a report delivered twice, a lease answer lost, a submit or CreateActor answer lost),
changes no result: every future ends with its exact value.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import cloudpickle
import pytest
from fray_tasks import add, wait_for_file

from fray.client.context import FrayContext
from fray.local_cluster import LocalFrayCluster
from fray.wire import faults

cloudpickle.register_pickle_by_value(sys.modules[__name__])

# Methods only the controller serves, so the workers' own services are left alone.
TASK_FAULTS = (
    "SubmitTasks=0.3:after,ReportResults=0.3,LeaseTasks=0.2,WatchFinished=0.2,WaitTasks=0.3,"
    "PutObject=0.3:after,GetObject=0.3,Heartbeat=0.3,RegisterWorker=0.3,CancelTasks=0.4:after,"
    "DeleteObjects=0.4:after,ListWorkers=0.3"
)
ACTOR_FAULTS = "CreateActor=0.4:after,KillActor=0.4:after,ReportActors=0.4,GetActor=0.3"


class Counter:
    def __init__(self, start: int) -> None:
        self.total = start

    def add(self, n: int) -> int:
        self.total += n
        return self.total


def test_the_spec_is_parsed_or_refused_by_name() -> None:
    parsed = faults.parse("SubmitTasks=0.5:after, *=0.1 ,LeaseTasks=1:before")
    assert parsed == {
        "SubmitTasks": faults.Fault(0.5, "after"),
        "*": faults.Fault(0.1, "either"),
        "LeaseTasks": faults.Fault(1.0, "before"),
    }
    for bad in ("SubmitTasks", "SubmitTasks=2", "SubmitTasks=x", "SubmitTasks=0.1:during", "=0.1"):
        with pytest.raises(ValueError, match="FRAY_TESTING_RPC_FAILURE"):
            faults.parse(bad)


@pytest.fixture(scope="module")
def faulty() -> Iterator[LocalFrayCluster]:
    env = {faults.ENV: f"{TASK_FAULTS},{ACTOR_FAULTS}", "FRAY_LOG_LEVEL": "ERROR"}
    with LocalFrayCluster(workers=2, concurrency=2, heartbeat_timeout=3.0, env=env) as cluster:
        yield cluster


@pytest.mark.parametrize("direct", [False, True], ids=["queued", "direct"])
def test_tasks_objects_and_waits_survive_lost_requests_and_answers(
    faulty: LocalFrayCluster, direct: bool
) -> None:
    with FrayContext(faulty.address, direct=direct, retry_timeout=30) as ctx:
        ref = ctx.put(100)
        futures = [ctx.run(add, i, ref if i % 5 == 0 else 0) for i in range(300)]
        ready, pending = ctx.wait(futures, num_returns=len(futures), timeout=60)
        assert len(ready) == len(futures) and not pending
        assert ctx.get(futures, timeout=60) == [i + (100 if i % 5 == 0 else 0) for i in range(300)]
        assert ctx.free([ref]) in (0, 1)  # 0 when the first try's answer was the one lost


def test_cancel_survives_a_lost_answer(faulty: LocalFrayCluster, tmp_path: Path) -> None:
    with FrayContext(faulty.address, direct=False, retry_timeout=30) as ctx:
        futures = [ctx.run(wait_for_file, str(tmp_path / "never"), i) for i in range(4)]
        assert all(future.cancel() for future in futures)
        assert ctx.get(ctx.run(add, 1, 2), timeout=60) == 3  # the workers are free again


def test_actors_survive_lost_create_kill_and_report_answers(faulty: LocalFrayCluster) -> None:
    with FrayContext(faulty.address, retry_timeout=30) as ctx:
        for k in range(5):
            actor = ctx.create_actor(Counter, 10, name=f"faulty-{k}")
            calls = [actor.add.remote(1) for _ in range(3)]
            assert ctx.get(calls, timeout=60) == [11, 12, 13]
            ctx.kill_actor(actor)
