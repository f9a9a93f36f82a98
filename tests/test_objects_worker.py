"""Large objects on the worker side: executors read files, large results become files.

First, pieces in process: the executor's loading of `ObjectFile` objects and `StoredValue`
arguments, its writing of large results into the directory it was given, and `ObjectCache`
(with a fake controller client and a real `ObjectPlane`). Then end to end: a real controller
and worker processes, the test acting as a client with its own `ObjectPlane` (so that these
tests do not depend on the client's side): a 5 MB object put by the test reaches a task as a
mapped file, a large result comes back as a file the worker owns, freed objects are deleted,
the worker's files are gone after a clean stop, the cross-host path (`FRAY_OBJECT_HOST`), a
large actor result, and a killed worker's results dropped by the controller.
"""

from __future__ import annotations

import glob
import os
import pickle
import signal
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import httpx
import numpy as np
import pytest
from connectrpc.code import Code
from connectrpc.errors import ConnectError
from fray_fixtures import list_workers, stop_process, wait_for

from fray.client.context import FrayContext
from fray.local_cluster import LocalFrayCluster
from fray.wire import payload
from fray.wire.controller_client import ControllerClient
from fray.wire.objects import ObjectPlane, StoredValue, encode, layout, load_file, sweep
from fray.wire.objects.plane import objects_token
from fray.wire.pb import controller_pb2 as pb
from fray.worker import executor
from fray.worker.executor import ObjectFile
from fray.worker.objects import MAX_HINTS, ObjectCache

cloudpickle.register_pickle_by_value(sys.modules[__name__])

MB = 1_000_000
BIG = 5 * MB


# ---------------------------------------------------------------------- task functions


def size_of(data: Any) -> int:
    return len(data) if not isinstance(data, np.ndarray) else int(data.nbytes)


def checksum(arr: np.ndarray) -> tuple[int, float, str]:
    """The array's size, its sum, and what holds its memory (the end of its base chain)."""
    base: Any = arr
    while True:
        below = base.base if isinstance(base, np.ndarray) else getattr(base, "obj", None)
        if below is None:
            return int(arr.nbytes), float(arr.sum()), type(base).__name__
        base = below


def make_bytes(n: int) -> bytes:
    return b"r" * n


def make_array(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.float64)


class Holder:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def length(self) -> int:
        return len(self.data)

    def blob(self, n: int) -> bytes:
        return b"a" * n


# ---------------------------------------------------------------------- the executor, in process


def _write(tmp_path: Path, value: Any, name: str = "obj") -> str:
    path = str(tmp_path / name)
    layout.write_file(path, encode(value, "test"))
    return path


def _run(fn: Any, args: bytes, objects: dict[str, Any]) -> tuple[str, bytes]:
    status, data, _ = executor.run_one(
        executor._FunctionCache(), cloudpickle.dumps(fn), args, objects
    )
    return status, data


def test_the_executor_loads_objects_from_their_files(tmp_path: Path) -> None:
    path = _write(tmp_path, b"x" * BIG)
    args = pickle.dumps(((payload.ObjectRef("o"),), {}))
    status, data = _run(size_of, args, {"o": ObjectFile(path)})
    assert (status, pickle.loads(data)) == ("ok", BIG)


def test_a_numpy_object_arrives_writable_from_its_file(tmp_path: Path) -> None:
    def poke(arr: np.ndarray) -> float:
        arr[0] = 42.0  # writable: a private copy-on-write map
        return float(arr[0])

    path = _write(tmp_path, np.zeros(1_000_000))
    args = pickle.dumps(((payload.ObjectRef("o"),), {}))
    assert pickle.loads(_run(poke, args, {"o": ObjectFile(path)})[1]) == 42.0
    assert float(load_file(path)[0]) == 0.0  # the file is untouched


def test_stored_arguments_are_the_object_they_name(tmp_path: Path) -> None:
    path = _write(tmp_path, ((b"y" * BIG,), {}))
    args = pickle.dumps(StoredValue("args", b""))
    status, data = _run(size_of, args, {"args": ObjectFile(path)})
    assert (status, pickle.loads(data)) == ("ok", BIG)


def test_an_object_file_gone_is_a_lost_object(tmp_path: Path) -> None:
    args = pickle.dumps(((payload.ObjectRef("o"),), {}))
    status, data = _run(size_of, args, {"o": ObjectFile(str(tmp_path / "gone"))})
    error = pb.TaskError.FromString(data)
    assert status == "error" and error.kind == pb.ERROR_KIND_DESERIALIZATION
    assert error.type.endswith("ObjectLostError") and "gone" in error.message


def test_stored_arguments_missing_their_object_fail_to_deserialize() -> None:
    status, data = _run(size_of, pickle.dumps(StoredValue("nowhere", b"")), {})
    assert status == "error"
    assert pb.TaskError.FromString(data).kind == pb.ERROR_KIND_DESERIALIZATION


def test_a_large_result_is_written_to_the_result_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(executor, "_result_dir", str(tmp_path))
    status, data = _run(make_bytes, pickle.dumps(((BIG,), {})), {})
    assert status == "stored"
    object_id = data.decode()
    assert load_file(str(tmp_path / object_id)) == b"r" * BIG
    status, data = _run(make_array, pickle.dumps(((BIG // 8,), {})), {})
    assert status == "stored"
    np.testing.assert_array_equal(load_file(str(tmp_path / data.decode())), make_array(BIG // 8))


def test_small_results_stay_inline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(executor, "_result_dir", str(tmp_path))
    assert _run(make_bytes, pickle.dumps(((10,), {})), {}) == ("ok", pickle.dumps(b"r" * 10, 5))
    status, data = _run(make_array, pickle.dumps(((10,), {})), {})  # out of band, but small
    assert status == "ok"
    np.testing.assert_array_equal(pickle.loads(data), make_array(10))
    assert list(tmp_path.iterdir()) == []


def test_without_a_result_dir_large_results_go_inline() -> None:
    assert executor._result_dir is None
    status, data = _run(make_bytes, pickle.dumps(((BIG,), {})), {})
    assert (status, pickle.loads(data)) == ("ok", b"r" * BIG)


# ---------------------------------------------------------------------- ObjectCache, in process


class _FakeRpc:
    def __init__(self) -> None:
        self.objects: dict[str, pb.GetObjectResponse] = {}
        self.puts: list[pb.PutObjectRequest] = []
        self.gets = 0

    def get_object(self, request: pb.GetObjectRequest) -> pb.GetObjectResponse:
        self.gets += 1
        return self.objects[request.object_id]

    def put_object(self, request: pb.PutObjectRequest) -> pb.PutObjectResponse:
        self.puts.append(request)
        return pb.PutObjectResponse(object_id=request.object_id)


class _FakeClient:
    def __init__(self) -> None:
        self.rpc = _FakeRpc()

    def call(self, method: Any, request: Any, **_: Any) -> Any:
        return method(request)


@pytest.fixture
def planes() -> Iterator[tuple[ObjectPlane, ObjectPlane]]:
    """An owner's plane (a client's, say) and the worker's."""
    owner, worker = ObjectPlane("owner"), ObjectPlane("worker")
    try:
        yield owner, worker
    finally:
        owner.close()
        worker.close()


def _cache_and_big_object(
    planes: tuple[ObjectPlane, ObjectPlane], fill: bytes
) -> tuple[_FakeClient, ObjectCache, pb.ObjectLocation]:
    """The worker's cache (its fake controller knows no object yet) and the location of an
    object "big" (BIG bytes of `fill`) in the owner's plane."""
    owner, worker = planes
    client = _FakeClient()
    cache = ObjectCache(client, plane=worker)  # type: ignore[arg-type]
    return client, cache, owner.put("big", encode(fill * BIG, "big"))


def test_the_cache_gives_files_for_located_objects_and_bytes_for_small_ones(
    planes: tuple[ObjectPlane, ObjectPlane],
) -> None:
    client, cache, location = _cache_and_big_object(planes, b"z")
    client.rpc.objects["big"] = pb.GetObjectResponse(location=location)
    client.rpc.objects["small"] = pb.GetObjectResponse(data=pickle.dumps(7))
    found = cache.get("big")
    assert isinstance(found, ObjectFile) and found.path == location.path  # same host: mapped
    assert cache.get("small") == pickle.dumps(7)
    assert sorted(cache.ids()) == ["big", "small"]
    cache.drop(["big", "small"])
    assert cache.ids() == [] and os.path.exists(location.path)  # not the worker's to delete


def test_the_cache_stores_results_and_deletes_them_when_freed(
    planes: tuple[ObjectPlane, ObjectPlane],
) -> None:
    _, worker = planes
    client = _FakeClient()
    cache = ObjectCache(client, plane=worker)  # type: ignore[arg-type]
    directory = cache.result_dir()
    assert directory is not None and os.path.isdir(directory)
    object_id = uuid.uuid4().hex
    path = os.path.join(directory, object_id)
    layout.write_file(path, encode(b"q" * BIG, "result"))
    value = pickle.loads(cache.store_result(object_id))
    assert isinstance(value, StoredValue) and value.object_id == object_id
    (put,) = client.rpc.puts
    assert put.object_id == object_id and put.location.owner == "worker" and not put.data
    assert put.location.url.endswith(f"/objects/{object_id}")
    assert value.location_pb() == put.location
    assert cache.ids() == [object_id]
    assert load_file(put.location.path) == b"q" * BIG
    cache.drop([object_id])
    assert cache.ids() == [] and not os.path.exists(put.location.path)


def test_an_object_whose_client_said_where_it_is_is_opened_without_the_controller(
    planes: tuple[ObjectPlane, ObjectPlane],
) -> None:
    client, cache, location = _cache_and_big_object(planes, b"h")  # (asking it: KeyError)
    cache.hint({"big": location})
    found = cache.get("big")
    assert isinstance(found, ObjectFile) and found.path == location.path
    assert client.rpc.gets == 0
    assert cache.ids() == ["big"]  # listed, so freeing it reaches this cache as usual


@pytest.mark.parametrize("wrong", ["another host", "no such file"])
def test_a_hint_that_is_not_a_file_here_goes_to_the_controller(
    planes: tuple[ObjectPlane, ObjectPlane], wrong: str
) -> None:
    client, cache, location = _cache_and_big_object(planes, b"f")
    client.rpc.objects["big"] = pb.GetObjectResponse(location=location)
    hint = pb.ObjectLocation()
    hint.CopyFrom(location)
    hint.path = location.path + ".freed"
    if wrong == "another host":  # (a fetch from its url would fail: not tried)
        hint.host, hint.url = "another-host", "http://127.0.0.1:9/objects/big"
    cache.hint({"big": hint})
    found = cache.get("big")
    assert isinstance(found, ObjectFile) and found.path == location.path
    assert client.rpc.gets == 1
    for i in range(MAX_HINTS + 10):  # hints of tasks that never came are not kept forever
        cache.hint({f"never-{i}": location})
    assert len(cache._hints) == MAX_HINTS


def _count(address: str, server: str, method: str) -> float:
    """An RPC's count in `address`'s /metrics."""
    wanted = f'fray_rpc_duration_seconds_count{{method="{method}",server="{server}"}} '
    lines = httpx.get(f"{address}/metrics", timeout=10).text.splitlines()
    return next((float(line.split()[-1]) for line in lines if line.startswith(wanted)), 0.0)


def test_a_direct_task_opens_its_clients_objects_without_asking_the_controller(
    one_worker: LocalFrayCluster,
) -> None:
    (worker,) = list_workers(one_worker.address).values()
    client = _Client(one_worker.address, direct=True)
    try:
        ran_direct = _count(worker.address, "worker", "RunTask")
        asked = _count(one_worker.address, "controller", "GetObject")
        for _ in range(3):
            ref = client.ctx.put(np.ones(BIG // 8))  # a file of this client's
            assert client.ctx.get(client.ctx.run(checksum, ref), timeout=60) == (
                BIG,
                BIG / 8,
                "mmap",
            )
            client.ctx.free([ref])
        assert _count(worker.address, "worker", "RunTask") == ran_direct + 3
        assert _count(one_worker.address, "controller", "GetObject") == asked
    finally:
        client.close()


def test_a_failed_put_deletes_the_stored_result(planes: tuple[ObjectPlane, ObjectPlane]) -> None:
    _, worker = planes
    client = _FakeClient()

    def refuse(request: pb.PutObjectRequest) -> pb.PutObjectResponse:
        raise ConnectError(Code.UNAVAILABLE, "down")

    client.rpc.put_object = refuse  # type: ignore[method-assign]
    cache = ObjectCache(client, plane=worker)  # type: ignore[arg-type]
    directory = cache.result_dir()
    assert directory is not None
    layout.write_file(os.path.join(directory, "r1"), encode(b"q" * BIG, "result"))
    with pytest.raises(ConnectError):
        cache.store_result("r1")
    assert cache.ids() == [] and not os.path.exists(os.path.join(directory, "r1"))


# ---------------------------------------------------------------------- end to end


class _Client:
    """The test as a client: its own plane, the controller's RPCs (raw, to see what the
    worker sends), and a FrayContext (the client side's own handling)."""

    def __init__(self, address: str, *, direct: bool = False, token: str | None = None) -> None:
        self.plane = ObjectPlane(f"test-{uuid.uuid4().hex[:6]}", token=token)
        self.rpc = ControllerClient(address, token=token, retry_timeout=10)
        self.ctx = FrayContext(address, token=token, retry_timeout=10, direct=direct)

    def put(self, value: Any) -> payload.ObjectRef:
        object_id = uuid.uuid4().hex
        location = self.plane.put(object_id, encode(value, "test object"))
        request = pb.PutObjectRequest(object_id=object_id, location=location)
        self.rpc.call(self.rpc.rpc.put_object, request)
        return payload.ObjectRef(object_id, location.size_bytes)

    def located(self, object_id: str) -> pb.ObjectLocation:
        request = pb.GetObjectRequest(object_id=object_id)
        response = self.rpc.call(self.rpc.rpc.get_object, request)
        assert response.HasField("location") and not response.data
        return response.location

    def free(self, object_id: str) -> None:
        request = pb.DeleteObjectsRequest(object_ids=[object_id])
        self.rpc.call(self.rpc.rpc.delete_objects, request)

    def raw(self, fn: Any, *args: Any) -> Any:
        """Run `fn(*args)` through the controller's queue; its result as the worker sent it
        (unpickled, not resolved)."""
        spec = pb.TaskSpec(
            function=cloudpickle.dumps(fn),
            args=payload.dumps_arguments(args, {}, "test"),
            object_ids=payload.object_ids_of(args, {}),
            name="raw",
            owner=f"raw-{uuid.uuid4().hex[:6]}",
        )
        rpc = self.rpc
        (task_id,) = rpc.call(rpc.rpc.submit_tasks, pb.SubmitTasksRequest(tasks=[spec])).task_ids
        request = pb.GetTaskRequest(task_id=task_id, include_result=True)
        done: list[pb.Task] = []

        def finished() -> bool:
            task = rpc.call(rpc.rpc.get_task, request).task
            done[:] = [task]
            return task.state not in (
                pb.TASK_STATE_PENDING,
                pb.TASK_STATE_ASSIGNED,
                pb.TASK_STATE_RUNNING,
            )

        wait_for(finished, 60, f"task {task_id}")
        assert done[0].state == pb.TASK_STATE_COMPLETED, done[0]
        return pickle.loads(done[0].result)

    def load(self, stored: StoredValue) -> Any:
        return self.plane.load(stored.object_id, stored.location_pb())

    def close(self) -> None:
        self.ctx.close()
        self.rpc.close()
        self.plane.close()


def _worker_pid(cluster: LocalFrayCluster) -> int:
    (process,) = cluster.workers
    return process.pid


def _worker_dirs(pid: int) -> list[str]:
    """The worker's store directories (shared memory and spill)."""
    return [
        *glob.glob(f"/dev/shm/fray-objects-{pid}-*"),
        *glob.glob(os.path.join(tempfile.gettempdir(), f"fray-objects-{pid}-*")),
    ]


def _files_in(directories: list[str]) -> list[str]:
    return [
        f for d in directories for f in glob.glob(f"{d}/**/*", recursive=True) if os.path.isfile(f)
    ]


@pytest.fixture(scope="module")
def one_worker() -> Iterator[LocalFrayCluster]:
    with LocalFrayCluster(workers=1, concurrency=2, heartbeat_timeout=2.0) as cluster:
        yield cluster


@pytest.fixture(params=["queued", "direct"])
def client(one_worker: LocalFrayCluster, request: pytest.FixtureRequest) -> Iterator[_Client]:
    c = _Client(one_worker.address, direct=request.param == "direct")
    try:
        yield c
    finally:
        c.close()


def test_a_large_object_reaches_a_task_as_a_mapped_file(client: _Client) -> None:
    ref = client.put(np.ones(BIG // 8))
    assert client.ctx.get(client.ctx.run(checksum, ref), timeout=60) == (BIG, BIG / 8, "mmap")
    ref = client.put(b"b" * BIG)
    assert client.ctx.get(client.ctx.run(size_of, ref), timeout=60) == BIG
    assert client.raw(size_of, ref) == BIG
    ref = client.ctx.put(np.ones(BIG // 8))  # the client side's put
    assert client.ctx.get(client.ctx.run(checksum, ref), timeout=60) == (BIG, BIG / 8, "mmap")


def test_large_arguments_reach_a_task(client: _Client) -> None:
    assert client.ctx.get(client.ctx.run(size_of, b"e" * BIG), timeout=60) == BIG
    assert client.ctx.get(client.ctx.run(checksum, np.ones(BIG // 8)), timeout=60)[:2] == (
        BIG,
        BIG / 8,
    )


def test_large_results_come_back_through_the_client(client: _Client) -> None:
    assert client.ctx.get(client.ctx.run(make_bytes, BIG), timeout=60) == b"r" * BIG
    value = client.ctx.get(client.ctx.run(make_array, BIG // 8), timeout=60)
    np.testing.assert_array_equal(value, make_array(BIG // 8))


def test_a_large_result_is_a_file_the_worker_owns_until_freed(
    client: _Client, one_worker: LocalFrayCluster
) -> None:
    (worker_id,) = list_workers(one_worker.address)
    result = client.raw(make_bytes, BIG)
    assert isinstance(result, StoredValue)
    location = client.located(result.object_id)
    assert location == result.location_pb()
    assert location.owner == worker_id and location.size_bytes > BIG
    assert location.path.startswith(f"/dev/shm/fray-objects-{_worker_pid(one_worker)}-")
    assert client.load(result) == b"r" * BIG
    client.free(result.object_id)
    wait_for(lambda: not os.path.exists(location.path), 15, "the worker to delete the freed result")


def test_an_actor_gets_a_large_object_and_returns_a_large_result(client: _Client) -> None:
    ref = client.put(b"c" * BIG)
    actor = client.ctx.create_actor(Holder, ref)
    assert client.ctx.get(actor.length.remote(), timeout=60) == BIG
    assert client.ctx.get(actor.blob.remote(BIG), timeout=60) == b"a" * BIG
    assert client.ctx.get(actor.blob.remote(3), timeout=60) == b"aaa"


def test_a_clean_stop_leaves_no_files_in_shared_memory() -> None:
    with LocalFrayCluster(workers=1, heartbeat_timeout=2.0) as cluster:
        pid = _worker_pid(cluster)
        c = _Client(cluster.address)
        try:
            assert isinstance(c.raw(make_bytes, BIG), StoredValue)
            assert _files_in(_worker_dirs(pid))
        finally:
            c.close()
    assert _worker_dirs(pid) == []


def test_objects_cross_hosts_through_the_object_servers() -> None:
    """The worker's host key differs from the test's: objects go over HTTP both ways, with
    the cluster's token."""
    env = {"FRAY_OBJECT_HOST": "elsewhere", "FRAY_TOKEN": "s3cret"}
    with LocalFrayCluster(workers=1, heartbeat_timeout=2.0, env=env) as cluster:
        pid = _worker_pid(cluster)
        c = _Client(cluster.address, token="s3cret")
        try:
            ref = c.put(b"d" * BIG)
            assert c.raw(size_of, ref) == BIG
            # the worker fetched a copy into its own store
            assert any(f.endswith(ref.object_id) for f in _files_in(_worker_dirs(pid)))
            result = c.raw(make_bytes, BIG)
            assert isinstance(result, StoredValue)
            location = result.location_pb()
            assert location.host == "elsewhere" and location.url.startswith("http://127.0.0.1:")
            assert httpx.get(location.url, timeout=5).status_code == 401  # no token
            # Object streams are plain HTTP: they take a token derived from the cluster's,
            # never the cluster's own (which would let a listener run code on the cluster).
            cluster_token = {"Authorization": "Bearer s3cret"}
            assert httpx.get(location.url, headers=cluster_token, timeout=5).status_code == 401
            derived = {"Authorization": f"Bearer {objects_token('s3cret')}"}
            assert httpx.get(location.url, headers=derived, timeout=5).status_code == 200
            path = c.plane.open(result.object_id, location)
            assert path != location.path  # a copy in the test's own store
            assert c.load(result) == b"r" * BIG
            c.free(ref.object_id)
            wait_for(
                lambda: not any(f.endswith(ref.object_id) for f in _files_in(_worker_dirs(pid))),
                15,
                "the worker to delete its copy of the freed object",
            )
        finally:
            c.close()


def test_a_killed_workers_results_are_dropped_by_the_controller() -> None:
    with LocalFrayCluster(workers=1, heartbeat_timeout=2.0) as cluster:
        c = _Client(cluster.address)
        try:
            result = c.raw(make_bytes, BIG)
            assert isinstance(result, StoredValue)
            c.located(result.object_id)
            (process,) = cluster.workers
            os.kill(process.pid, signal.SIGKILL)
            process.wait(10)

            def dropped() -> bool:
                try:
                    c.located(result.object_id)
                except ConnectError as exc:
                    return exc.code == Code.NOT_FOUND
                return False

            wait_for(dropped, 30, "the controller to drop the dead worker's result")
        finally:
            c.close()
            for process in cluster.workers:
                stop_process(process)
            cluster.workers = []
            sweep()  # the killed worker's files
