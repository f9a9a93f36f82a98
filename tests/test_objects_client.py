"""The client's large objects: put/get/free, large arguments and results, cleanup at close.

Objects over the inline limit stay in the client's (or a worker's) files; the controller keeps
only where they are. The first tests need only a controller (the `controller` fixture runs one
in this process, so its registry can be looked at); the last ones run tasks on a cluster.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import pickle
import sys
from collections.abc import Iterator
from typing import Any

import cloudpickle
import numpy as np
import pytest
from fray_fixtures import wait_for

from fray.client.context import FrayContext
from fray.client.futures import FrayFuture, settle_value
from fray.client.objects import ClientObjects, local_address_for
from fray.controller.server import ControllerServer
from fray.errors import ControllerError, ObjectLostError, TaskDeserializationError
from fray.local_cluster import LocalFrayCluster
from fray.wire.controller_client import ControllerClient
from fray.wire.objects import ObjectPlane, StoredValue, encode, host_key
from fray.wire.pb import controller_pb2 as pb

cloudpickle.register_pickle_by_value(sys.modules[__name__])

MB = 1 << 20
BIG = 5 * MB


@pytest.fixture
def ctx(controller: ControllerServer) -> Iterator[FrayContext]:
    context = FrayContext(controller.address, retry_timeout=10, direct=False)
    try:
        yield context
    finally:
        context.close()


def located(controller: ControllerServer) -> dict[str, pb.ObjectLocation]:
    return dict(controller.state.objects.located)


def plane_of(ctx: FrayContext) -> ObjectPlane:
    return ctx._objects.plane


def mapped(array: np.ndarray[Any, Any]) -> bool:
    """Whether an array's memory is (a view of) a map of a file."""
    base: Any = array
    while base is not None:
        if isinstance(base, mmap.mmap):
            return True
        base = base.obj if isinstance(base, memoryview) else getattr(base, "base", None)
    return False


class _Control:
    """A FrayFuture's context that does nothing (the future is settled by hand)."""

    def cancel(self, future: FrayFuture) -> None:
        pass

    def help(self, future: FrayFuture) -> None:
        pass


# ---------------------------------------------------------------------- put, get, free


def test_a_small_put_stays_in_the_controller(ctx: FrayContext, controller: ControllerServer):
    ref = ctx.put(b"x" * 1000)
    assert ref.object_id in controller.state.objects.by_id
    assert ctx.get(ref) == b"x" * 1000
    assert ctx._objects._plane is None  # no plane, no files: nothing was large


def test_a_large_put_stays_here_and_get_maps_it(ctx: FrayContext, controller: ControllerServer):
    blob = os.urandom(BIG)
    array = np.arange(BIG // 8, dtype=np.int64)
    refs = [ctx.put(blob), ctx.put(array)]
    where = located(controller)
    for ref in refs:
        assert ref.object_id not in controller.state.objects.by_id  # no bytes there
        assert where[ref.object_id].size_bytes == ref.size_bytes >= BIG
        assert where[ref.object_id].host == host_key()
        assert os.path.exists(where[ref.object_id].path)
    client = ControllerClient(controller.address, retry_timeout=5)
    try:
        summary = client.call(client.rpc.get_cluster_summary, pb.GetClusterSummaryRequest())
        assert summary.object_bytes >= 2 * BIG
        answer = client.call(
            client.rpc.get_object, pb.GetObjectRequest(object_id=refs[0].object_id)
        )
        assert not answer.data and answer.location.size_bytes == refs[0].size_bytes
    finally:
        client.close()
    assert ctx.get(refs[0]) == blob
    got = ctx.get(refs[1])
    assert np.array_equal(got, array) and mapped(got) and got.flags.writeable
    got[0] = 99  # a private copy-on-write map: the file keeps the original
    assert ctx.get(refs[1])[0] == 0


def test_another_context_on_this_host_maps_the_owners_file(
    ctx: FrayContext, controller: ControllerServer
):
    array = np.ones(BIG // 8)
    ref = ctx.put(array)
    with FrayContext(controller.address, retry_timeout=10) as other:
        got = other.get(ref)
        assert np.array_equal(got, array) and mapped(got)
        assert plane_of(other).store.ids() == []  # no copy: it mapped the owner's file


def test_another_host_fetches_the_object(
    ctx: FrayContext, controller: ControllerServer, monkeypatch: pytest.MonkeyPatch
):
    blob = os.urandom(BIG)
    ref = ctx.put(blob)
    monkeypatch.setenv("FRAY_OBJECT_HOST", "somewhere-else")  # the reader is on another host
    with FrayContext(controller.address, retry_timeout=10) as other:
        value = other.get(ref)
        assert value == blob
        store = plane_of(other).store
        # Fetched into its own store, then that copy deleted (repeated gets of many refs
        # must not fill /dev/shm); what was loaded stays valid.
        assert store.ids() == []
        assert other.get(ref) == blob == value
        assert other.free([ref]) == 1


def test_free_deletes_the_file_and_the_entry(ctx: FrayContext, controller: ControllerServer):
    ref = ctx.put(os.urandom(BIG))
    path = located(controller)[ref.object_id].path
    assert ctx.free([ref]) == 1
    assert not os.path.exists(path) and ref.object_id not in located(controller)
    with pytest.raises(ControllerError):
        ctx.get(ref)


def test_close_removes_the_files_and_the_entries(controller: ControllerServer):
    ctx = FrayContext(controller.address, retry_timeout=10)
    ref = ctx.put(os.urandom(BIG))
    store = plane_of(ctx).store
    assert os.path.isdir(store.shm_dir)
    ctx.close()
    assert not os.path.exists(store.shm_dir)
    assert ref.object_id not in located(controller)


# ---------------------------------------------------------------------- arguments and results


def test_large_arguments_go_as_an_object_freed_when_the_future_ends(
    ctx: FrayContext, controller: ControllerServer
):
    future = ctx.run(len, b"x" * BIG)  # no worker: it waits in the queue
    ((location),) = located(controller).values()
    assert location.size_bytes >= BIG and os.path.exists(location.path)
    small = ctx.run(len, b"x" * 100)
    assert len(located(controller)) == 1  # small arguments travel inline
    future.cancel()
    small.cancel()
    wait_for(lambda: not located(controller), 10, "the arguments to be freed")
    assert plane_of(ctx).store.ids() == [] and not os.path.exists(location.path)


@pytest.fixture
def objects(controller: ControllerServer) -> Iterator[ClientObjects]:
    client = ControllerClient(controller.address, retry_timeout=5)
    found = ClientObjects(client, "client-test", None)
    try:
        yield found
    finally:
        found.close()
        client.close()


def stored_result(controller: ControllerServer, plane: ObjectPlane, value: Any) -> bytes:
    """What a worker sends for a large result: its file's place, also told to the controller."""
    object_id = os.urandom(8).hex()
    location = plane.put(object_id, encode(value, "a result"))
    client = ControllerClient(controller.address, retry_timeout=5)
    try:
        request = pb.PutObjectRequest(object_id=object_id, location=location)
        client.call(client.rpc.put_object, request)
    finally:
        client.close()
    return pickle.dumps(StoredValue(object_id, location.SerializeToString()))


def test_a_large_result_is_loaded_once_then_freed(
    objects: ClientObjects, controller: ControllerServer
):
    worker = ObjectPlane("worker-test")
    try:
        array = np.arange(BIG // 8)
        future = FrayFuture(_Control(), "t1")
        settle_value(future, stored_result(controller, worker, array), "t1", objects)
        assert len(located(controller)) == 1
        value = future.result()
        assert np.array_equal(value, array) and mapped(value)
        assert future.result() is value  # loaded once
        wait_for(lambda: not located(controller), 10, "the result to be freed")
    finally:
        worker.close()


def test_a_lost_result_raises_object_lost_error(
    objects: ClientObjects, controller: ControllerServer
):
    worker = ObjectPlane("worker-test")
    data = stored_result(controller, worker, os.urandom(BIG))
    worker.close()  # its worker went away
    future = FrayFuture(_Control(), "t2")
    settle_value(future, data, "t2", objects)
    with pytest.raises(ObjectLostError):
        future.result()


def test_an_unread_result_is_freed_with_its_future(
    objects: ClientObjects, controller: ControllerServer
):
    worker = ObjectPlane("worker-test")
    try:
        future = FrayFuture(_Control(), "t3")
        settle_value(future, stored_result(controller, worker, os.urandom(BIG)), "t3", objects)
        del future
        wait_for(lambda: not located(controller), 10, "the unread result to be freed")
    finally:
        worker.close()


def test_the_plane_serves_on_the_address_that_reaches_the_controller():
    assert local_address_for("http://127.0.0.1:7625") == "127.0.0.1"
    assert local_address_for("http://localhost:7625") in ("127.0.0.1", "::1")
    assert local_address_for("http://[::1]:7625") == "::1"


# ---------------------------------------------------------------------- on a cluster


def nbytes(*args: Any, **kwargs: Any) -> int:
    return sum(len(a) if isinstance(a, bytes) else a.nbytes for a in (*args, *kwargs.values()))


def make(n: int) -> np.ndarray[Any, Any]:
    return np.full(n // 8, 7, dtype=np.int64)


class Keeper:
    def __init__(self, value: Any = None) -> None:
        self.value: Any = value

    def keep(self, value: Any) -> int:
        self.value = value
        return nbytes(value)

    def give(self) -> Any:
        return self.value


def objects_at(address: str) -> int:
    client = ControllerClient(address, retry_timeout=5)
    try:
        return client.call(client.rpc.get_cluster_summary, pb.GetClusterSummaryRequest()).objects
    finally:
        client.close()


def test_large_arguments_and_results_on_workers(fray_ctx: FrayContext, cluster: LocalFrayCluster):
    before = objects_at(cluster.address)
    blob, array = os.urandom(BIG), np.arange(BIG // 8)
    assert fray_ctx.get(fray_ctx.run(nbytes, blob, x=array), timeout=60) == 2 * BIG
    result = fray_ctx.get(fray_ctx.run(make, BIG), timeout=60)
    assert result.nbytes == BIG and (result == 7).all() and mapped(result)
    ref = fray_ctx.put(blob)
    assert fray_ctx.get([fray_ctx.run(nbytes, ref) for _ in range(3)], timeout=60) == [BIG] * 3
    fray_ctx.free([ref])
    wait_for(lambda: objects_at(cluster.address) == before, 15, "every object to be freed")
    assert fray_ctx._objects.plane.store.ids() == []


def digest(value: Any) -> str:
    return hashlib.sha256(memoryview(value).cast("B")).hexdigest()


def test_objects_past_the_spare_size_go_through_spares_and_recycled_files(
    fray_ctx: FrayContext, cluster: LocalFrayCluster
):
    """Objects of 20 MiB (`fray.wire.objects.spare`): the put after the first goes into a file
    prepared ahead, and a freed object's file (its task done with it) is written again; tasks
    read the right bytes each time, copied into the executor's kept memory (bytes) or mapped
    (arrays). An actor keeping an array keeps its file from being reused."""
    size = 20 * 1024 * 1024
    store = fray_ctx._objects.plane.store
    taken, recycled = store.spare.taken, store.spare.recycled
    rng = np.random.default_rng(3)
    keeper = fray_ctx.create_actor(Keeper)
    kept = rng.random(size // 8)
    kept_ref = fray_ctx.put(kept)
    assert fray_ctx.get(keeper.keep.remote(kept_ref), timeout=60) == size
    fray_ctx.free([kept_ref])  # the actor still maps it
    for i in range(4):
        for value in (os.urandom(size), rng.random(size // 8)):
            ref = fray_ctx.put(value)
            assert fray_ctx.get(fray_ctx.run(digest, ref), timeout=60) == digest(value), i
            fray_ctx.free([ref])
    assert store.spare.taken >= taken + 6
    assert store.spare.recycled >= recycled + 4
    assert np.array_equal(fray_ctx.get(keeper.give.remote(), timeout=60), kept)
    fray_ctx.kill_actor(keeper)


def test_large_actor_arguments_and_results(fray_ctx: FrayContext, cluster: LocalFrayCluster):
    before = objects_at(cluster.address)
    keeper = fray_ctx.create_actor(Keeper)
    array = np.arange(BIG // 8)
    assert fray_ctx.get(keeper.keep.remote(array), timeout=60) == BIG
    got = fray_ctx.get(keeper.give.remote(), timeout=60)
    assert np.array_equal(got, array)
    fray_ctx.kill_actor(keeper)
    wait_for(lambda: objects_at(cluster.address) == before, 15, "every object to be freed")


def test_large_constructor_arguments_are_kept_for_the_actor_until_close(
    cluster: LocalFrayCluster,
):
    ctx = FrayContext(cluster.address, retry_timeout=10)
    before = objects_at(cluster.address)
    try:
        array = np.arange(BIG // 8)
        keeper = ctx.create_actor(Keeper, array)
        assert np.array_equal(ctx.get(keeper.give.remote(), timeout=60), array)
        assert objects_at(cluster.address) == before + 1  # kept: a restart needs them again
    finally:
        ctx.close()
    assert objects_at(cluster.address) == before


def test_a_large_argument_waited_for(fray_ctx: FrayContext):
    """Arguments pickled once the futures among them are done go the same way."""
    first = fray_ctx.run(make, BIG)
    assert fray_ctx.get(fray_ctx.run(nbytes, first, b"y" * BIG), timeout=60) == 2 * BIG


def test_a_task_given_a_freed_object_fails(fray_ctx: FrayContext):
    ref = fray_ctx.put(os.urandom(BIG))
    fray_ctx.free([ref])
    with pytest.raises((ControllerError, ObjectLostError, TaskDeserializationError)):
        fray_ctx.get(fray_ctx.run(nbytes, ref), timeout=60)


def fail(*args: Any) -> None:
    raise ValueError("no")


def test_large_arguments_of_a_retried_task_are_freed(
    fray_ctx: FrayContext, cluster: LocalFrayCluster
):
    before = objects_at(cluster.address)
    future = fray_ctx.options(max_retries=1).run(fail, b"z" * BIG)
    with pytest.raises(ValueError):
        future.result(timeout=60)
    wait_for(lambda: objects_at(cluster.address) == before, 15, "the arguments to be freed")
    assert fray_ctx._objects.plane.store.ids() == []


def test_workers_on_another_host_fetch_arguments_and_results_with_the_token():
    env = {"FRAY_OBJECT_HOST": "another-host", "FRAY_TOKEN": "s3cret"}
    with (
        LocalFrayCluster(workers=1, concurrency=1, env=env) as other,
        FrayContext(other.address, token="s3cret", retry_timeout=10) as ctx,
    ):
        blob = os.urandom(BIG)
        ref = ctx.put(blob)
        assert ctx.get(ctx.run(nbytes, blob, ref), timeout=60) == 2 * BIG
        result = ctx.get(ctx.run(make, BIG), timeout=60)
        assert result.nbytes == BIG and (result == 7).all()
        assert ctx._objects.plane.store.ids() == [ref.object_id]  # no copy of the result left
