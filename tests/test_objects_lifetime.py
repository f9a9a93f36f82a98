"""Large objects' lifetime on both paths (same host: the file is mapped; another host: the
bytes are fetched from the owner), end to end: a full store spills to disk, and an owner
worker that dies takes its objects with it."""

from __future__ import annotations

import glob
import os
import pickle
import signal
import sys
import tempfile

import cloudpickle
import pytest
from connectrpc.code import Code
from connectrpc.errors import ConnectError
from fray_fixtures import wait_for

from fray.client.context import FrayContext
from fray.local_cluster import LocalFrayCluster
from fray.wire.controller_client import ControllerClient
from fray.wire.pb import controller_pb2 as pb

MB = 1 << 20

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests


def size_of(data: bytes) -> int:
    return len(data)


def make_bytes(n: int) -> bytes:
    return b"r" * n


def spilled_files(pid: int) -> list[str]:
    """This process's object files in the spill directory (not in /dev/shm)."""
    pattern = os.path.join(tempfile.gettempdir(), f"fray-objects-{pid}-*", "**", "*")
    return [f for f in glob.glob(pattern, recursive=True) if os.path.isfile(f)]


@pytest.mark.parametrize("where", ["same host", "another host"])
def test_a_full_store_spills_to_disk_and_readers_still_get_the_object(
    where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {"FRAY_OBJECT_HOST": "another-host"} if where == "another host" else {}
    monkeypatch.setenv("FRAY_OBJECT_STORE_BYTES", str(8 * MB))  # this client's store
    with LocalFrayCluster(workers=1, env=env) as cluster:
        with FrayContext(cluster.address, retry_timeout=10) as ctx:
            first = ctx.put(b"a" * (6 * MB))  # fits in shared memory
            assert spilled_files(os.getpid()) == []
            second = ctx.put(b"b" * (6 * MB))  # past the budget: on disk
            assert len(spilled_files(os.getpid())) == 1
            assert ctx.get([ctx.run(size_of, first), ctx.run(size_of, second)], timeout=60) == [
                6 * MB,
                6 * MB,
            ]
            assert ctx.get(second) == b"b" * (6 * MB)
            ctx.free([second])
            assert spilled_files(os.getpid()) == []
        assert spilled_files(os.getpid()) == []  # closed: nothing left


def test_a_workers_large_results_past_its_budget_spill_to_disk() -> None:
    """The executor writes large results into the worker's shared memory; the worker moves
    those past its store's budget to disk before telling the controller where they are."""
    env = {"FRAY_OBJECT_STORE_BYTES": str(8 * MB)}  # the worker's store
    with LocalFrayCluster(workers=1, concurrency=2, env=env) as cluster:
        worker_pid = cluster.workers[0].pid
        with FrayContext(cluster.address, retry_timeout=10, direct=False) as ctx:
            futures = [ctx.run(make_bytes, 6 * MB), ctx.run(make_bytes, 6 * MB)]
            ready, _ = ctx.wait(futures, num_returns=2, timeout=60)
            assert len(ready) == 2  # done, not read: both results are still the worker's
            assert len(spilled_files(worker_pid)) == 1
            assert ctx.get(futures, timeout=60) == [b"r" * (6 * MB)] * 2
            wait_for(lambda: not spilled_files(worker_pid), 15, "the read results to be freed")


def test_a_dead_workers_results_on_another_host_are_dropped_after_failed_pings() -> None:
    """The controller and the worker are told they are on different hosts: the controller
    pings the worker's object server; after the worker is SIGKILLed the pings fail and its
    result objects are forgotten (on this host the pid check would do it at once)."""
    cluster = LocalFrayCluster(workers=0, env={"FRAY_OBJECT_HOST": "controller-host"})
    with cluster:
        cluster.env["FRAY_OBJECT_HOST"] = "worker-host"
        worker = cluster.add_worker()
        cluster.wait_for_workers(1)
        rpc = ControllerClient(cluster.address, retry_timeout=10)
        try:
            request = pb.SubmitTasksRequest(
                tasks=[
                    pb.TaskSpec(
                        task_id="big",
                        function=_pickled(make_bytes),
                        args=_pickled(((2 * MB,), {})),
                    )
                ]
            )
            rpc.call(rpc.rpc.submit_tasks, request)

            found: list[str] = []

            def finished() -> bool:
                request = pb.GetTaskRequest(task_id="big", include_result=True)
                task = rpc.call(rpc.rpc.get_task, request).task
                if task.state == pb.TASK_STATE_COMPLETED:
                    found.append(pickle.loads(task.result).object_id)  # a StoredValue
                return bool(found)

            wait_for(finished, 60, "the task to finish")
            object_id = found[0]
            located = rpc.call(rpc.rpc.get_object, pb.GetObjectRequest(object_id=object_id))
            assert located.location.host == "worker-host"
            worker.send_signal(signal.SIGKILL)
            worker.wait(10)

            def dropped() -> bool:
                try:
                    rpc.call(rpc.rpc.get_object, pb.GetObjectRequest(object_id=object_id))
                except ConnectError as exc:
                    return exc.code == Code.NOT_FOUND
                return False

            wait_for(dropped, 30, "the controller to drop the dead worker's result")
        finally:
            rpc.close()


def _pickled(value: object) -> bytes:
    from fray.wire import payload

    return payload.cloudpickle_dumps(value)
