"""fray.wire.objects: the object file, the store, the object server, fetching and the plane."""

from __future__ import annotations

import mmap
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from fray import errors
from fray.wire import objects
from fray.wire.objects import (
    LocalStore,
    ObjectPlane,
    ObjectServer,
    StoredValue,
    encode,
    fetch_to_file,
    host_key,
    inline_bytes,
    load_file,
    owner_alive,
    process_start,
    sweep,
    write_file,
)
from fray.wire.objects import plane as plane_module
from fray.wire.objects.plane import objects_token
from fray.wire.pb import controller_pb2 as pb

np = pytest.importorskip("numpy")

MB = 1024 * 1024


@pytest.fixture
def roots(tmp_path: Path) -> tuple[str, str]:
    shm, spill = tmp_path / "shm", tmp_path / "spill"
    shm.mkdir()
    spill.mkdir()
    return str(shm), str(spill)


@pytest.fixture
def store(roots: tuple[str, str]) -> Any:
    made = LocalStore("owner-1", shm_root=roots[0], spill_root=roots[1], budget_bytes=64 * MB)
    yield made
    made.close()


def _round_trip(tmp_path: Path, value: Any) -> Any:
    path = str(tmp_path / f"obj-{time.monotonic_ns()}")
    encoded = encode(value, "a value")
    assert write_file(path, encoded) == encoded.size == os.path.getsize(path)
    return load_file(path)


def _mapped(array: Any) -> bool:
    base = array
    while isinstance(base, np.ndarray):
        base = base.base
    if isinstance(base, memoryview):
        base = base.obj
    return isinstance(base, mmap.mmap)


# ---------------------------------------------------------------------------- layout


def test_round_trip_bytes_bytearray_and_small_values(tmp_path: Path) -> None:
    big = os.urandom(3 * MB)
    encoded = encode(big, "big")
    assert len(encoded.buffers) == 1 and encoded.buffers[0].obj is big  # not copied
    assert encoded.data_bytes < encoded.size < encoded.data_bytes + 1024
    for value in (big, bytearray(big), b"small", 42, "text", None, bytearray(b"ab")):
        loaded = _round_trip(tmp_path, value)
        assert loaded == value and type(loaded) is type(value)
        assert pickle.loads(inline_bytes(encode(value, "v"))) == value


def test_round_trip_numpy_is_mapped_and_writable(tmp_path: Path) -> None:
    array = np.arange(2_000_000, dtype=np.float64).reshape(1000, 2000)
    path = str(tmp_path / "array")
    write_file(path, encode(array, "array"))
    loaded = load_file(path)
    assert loaded.dtype == array.dtype and (loaded == array).all()
    assert _mapped(loaded) and loaded.flags.writeable
    loaded[0, 0] = -1.0  # copy on write: the file keeps its bytes
    assert load_file(path)[0, 0] == 0.0
    fortran = np.asfortranarray(array)
    again = _round_trip(tmp_path, fortran)
    assert again.flags.f_contiguous and (again == array).all()
    strided = array[:, ::2]  # not contiguous: pickled in band
    assert (_round_trip(tmp_path, strided) == strided).all()
    assert (pickle.loads(inline_bytes(encode(array, "a"))) == array).all()


def test_round_trip_nested(tmp_path: Path) -> None:
    value = {
        "blobs": [os.urandom(100_000), os.urandom(10), bytearray(200_000)],
        "arrays": (np.ones(10), np.zeros((3, 3), dtype=np.int32)),
        "plain": {"x": 1, "y": [1.5, "z"]},
    }
    encoded = encode(value, "nested")
    assert len(encoded.buffers) == 4  # two large blobs, two arrays
    for loaded in (_round_trip(tmp_path, value), pickle.loads(inline_bytes(encoded))):
        assert loaded["blobs"] == value["blobs"] and loaded["plain"] == value["plain"]
        assert type(loaded["blobs"][2]) is bytearray
        assert all((a == b).all() for a, b in zip(loaded["arrays"], value["arrays"], strict=True))


def test_diverted_bytes_keep_aliasing_and_chunked_io(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fray.wire.objects import layout

    monkeypatch.setattr(layout, "_PREAD_MAX", 4096)  # exercise the > 2 GiB loops
    monkeypatch.setattr(layout, "_WRITE_CHUNK", 4096)
    blob, mutable = os.urandom(100_000), bytearray(os.urandom(100_000))
    encoded = encode([blob, blob, mutable, mutable], "aliased")
    assert len(encoded.buffers) == 2
    loaded = _round_trip(tmp_path, [blob, blob, mutable, mutable])
    assert loaded == [blob, blob, mutable, mutable]
    assert loaded[2] is loaded[3] and type(loaded[2]) is bytearray


def test_round_trip_functions_and_stored_value(tmp_path: Path) -> None:
    factor = 3
    loaded = _round_trip(tmp_path, lambda x: x * factor)
    assert loaded(2) == 6
    location = pb.ObjectLocation(size_bytes=10, owner="w", host="h", path="/p", pid=1)
    marker = StoredValue("id-1", location.SerializeToString())
    assert pickle.loads(pickle.dumps(marker)) == marker
    assert marker.location_pb() == location


def test_encode_unpicklable_names_what() -> None:
    with pytest.raises(errors.SerializationError, match="the thing"):
        encode(threading.Lock(), "the thing")


def test_load_file_corrupt_short_and_missing(tmp_path: Path) -> None:
    path = tmp_path / "obj"
    write_file(str(path), encode(os.urandom(100_000), "v"))
    with pytest.raises(FileExistsError):
        write_file(str(path), encode(1, "v"))
    data = path.read_bytes()
    (tmp_path / "short").write_bytes(data[:-10])
    (tmp_path / "tiny").write_bytes(data[:5])
    (tmp_path / "magic").write_bytes(b"X" + data[1:])
    for name in ("short", "tiny", "magic"):
        with pytest.raises(ValueError, match="corrupt object file"):
            load_file(str(tmp_path / name))
    with pytest.raises(FileNotFoundError):
        load_file(str(tmp_path / "missing"))


# ---------------------------------------------------------------------------- store


def test_store_write_location_delete_close(store: LocalStore) -> None:
    location = store.write("obj-1", encode(os.urandom(MB), "v"))
    assert location.owner == "owner-1" and location.host == host_key()
    assert location.pid == os.getpid() and location.pid_start == process_start(os.getpid())
    assert location.url == "" and location.size_bytes == os.path.getsize(location.path)
    assert store.path("obj-1") == location.path and store.ids() == ["obj-1"]
    assert store.size_bytes == location.size_bytes and store.spilled_bytes == 0
    assert os.stat(os.path.dirname(location.path)).st_mode & 0o777 == 0o700
    with pytest.raises(FileExistsError):
        store.write("obj-1", encode(1, "v"))
    for bad in ("", "a/b", "..", ".spare-1", "x" * 129, "a b"):
        with pytest.raises(ValueError, match="invalid object id"):
            store.write(bad, encode(1, "v"))
    assert store.delete(["obj-1", "unknown"]) == 1
    assert store.path("obj-1") is None and not os.path.exists(location.path)
    assert store.size_bytes == 0
    store.write("obj-2", encode(1, "v"))
    store.close()
    store.close()
    assert not os.path.exists(store.shm_dir) and not os.path.exists(store.spill_dir)


def test_store_spills_past_budget(roots: tuple[str, str]) -> None:
    store = LocalStore("o", shm_root=roots[0], spill_root=roots[1], budget_bytes=3 * MB)
    try:
        first = store.write("a", encode(os.urandom(2 * MB), "v"))
        second = store.write("b", encode(os.urandom(2 * MB), "v"))
        assert first.path.startswith(roots[0]) and second.path.startswith(roots[1])
        assert store.spilled_bytes == second.size_bytes
        assert store.size_bytes == first.size_bytes + second.size_bytes
        reserved = store.reserve("c", 5 * MB)
        assert reserved.startswith(roots[1]) and os.path.getsize(reserved) == 5 * MB
        assert sorted(store.ids()) == ["a", "b", "c"]
        store.delete(["a"])
        assert store.write("d", encode(os.urandom(MB), "v")).path.startswith(roots[0])
    finally:
        store.close()


def test_two_stores_of_one_process_are_separate(roots: tuple[str, str]) -> None:
    one = LocalStore("one", shm_root=roots[0], spill_root=roots[1])
    two = LocalStore("two", shm_root=roots[0], spill_root=roots[1])
    try:
        one.write("x", encode(1, "v"))
        path = two.write("x", encode(2, "v")).path
        one.close()
        assert load_file(path) == 2
    finally:
        two.close()
    assert os.listdir(roots[0]) == [] and os.listdir(roots[1]) == []


def test_register_a_childs_file(store: LocalStore, tmp_path: Path) -> None:
    directory = store.directory_for_child()
    write_file(os.path.join(directory, "res-1"), encode(os.urandom(MB), "v"))
    location = store.register("res-1", os.path.join(directory, "res-1"))
    assert location.size_bytes > MB and store.ids() == ["res-1"]
    outside = tmp_path / "elsewhere"
    outside.write_bytes(b"x")
    with pytest.raises(ValueError, match="not in the object store"):
        store.register("res-2", str(outside))


def test_host_key_and_process_start(monkeypatch: pytest.MonkeyPatch) -> None:
    assert host_key().startswith(socket.gethostname() + "/")
    monkeypatch.setenv("FRAY_OBJECT_HOST", "elsewhere")
    assert host_key() == "elsewhere"
    assert isinstance(process_start(os.getpid()), int)
    assert process_start(2**22 + 12345) is None


_CHILD = """
import sys, time
from fray.wire.objects import LocalStore, encode
store = LocalStore("child", shm_root=sys.argv[1], spill_root=sys.argv[2], budget_bytes=1)
store.write("x", encode(b"y" * 100_000, "v"))
store.directory_for_child()
print(store.shm_dir, store.spill_dir, flush=True)
time.sleep(60)
"""


def test_sweep_removes_dead_processes_and_keeps_live_ones(
    roots: tuple[str, str], store: LocalStore
) -> None:
    store.write("mine", encode(1, "v"))
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, *roots], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        child_dirs = child.stdout.readline().split()
        assert len(child_dirs) == 2 and all(os.path.isdir(d) for d in child_dirs)
        assert sweep(*roots) == 0  # alive
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert sweep(*roots) == 2
    assert not any(os.path.exists(os.path.dirname(d)) for d in child_dirs)
    assert store.path("mine") is not None and os.path.exists(store.path("mine") or "")
    # a reused pid (another start time) and stray names
    fake = os.path.join(roots[0], f"fray-objects-{os.getpid()}-1")
    os.makedirs(os.path.join(fake, "s0"))
    os.makedirs(os.path.join(roots[0], "fray-objects-junk"))
    assert sweep(*roots) == 1 and not os.path.exists(fake)
    assert sweep(roots[0] + "/missing", roots[1] + "/missing") == 0
    os.makedirs(fake)
    LocalStore("new", shm_root=roots[0], spill_root=roots[1]).close()  # a new store sweeps
    assert not os.path.exists(fake)


def test_real_dev_shm_store_cleans_up() -> None:
    store = LocalStore("real")
    try:
        location = store.write("real-1", encode(os.urandom(MB), "v"))
        assert location.path.startswith("/dev/shm/") and store.spilled_bytes == 0
        assert len(load_file(location.path)) == MB
    finally:
        store.close()
    assert not os.path.exists(store.shm_dir) and not os.path.exists(store.spill_dir)


# ---------------------------------------------------------------------------- server + fetch


def _get(url: str, headers: dict[str, str] | None = None, method: str = "GET") -> tuple[int, bytes]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture
def server(store: LocalStore) -> Any:
    made = ObjectServer(store, "127.0.0.1", "sekrit")
    made.start()
    yield made
    made.stop()


def test_server_answers(store: LocalStore, server: ObjectServer) -> None:
    location = store.write("obj-1", encode(os.urandom(MB), "v"))
    auth = {"Authorization": "Bearer sekrit"}
    assert server.url("obj-1") == f"{server.base_url}/objects/obj-1"
    status, body = _get(server.url("obj-1"), auth)
    assert status == 200 and body == Path(location.path).read_bytes()
    assert _get(server.url("nope"), auth)[0] == 404
    assert _get(server.url("obj-1"))[0] == 401
    assert _get(server.url("obj-1"), {"Authorization": "Bearer wrong"})[0] == 401
    assert _get(f"{server.base_url}/ping", auth) == (200, b"ok")
    assert _get(f"{server.base_url}/ping")[0] == 401
    assert _get(f"{server.base_url}/other", auth)[0] == 404
    assert _get(server.url("obj-1"), auth, method="POST")[0] == 405
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"garbage\r\n\r\n")
        sock.recv(1024)
    assert _get(f"{server.base_url}/ping", auth) == (200, b"ok")  # still serving


def test_server_ipv6_and_advertised_host(store: LocalStore) -> None:
    advertised = ObjectServer(store, "127.0.0.1", None, advertise_host="node-7")
    advertised.start()
    try:
        assert advertised.base_url == f"http://node-7:{advertised.port}"
    finally:
        advertised.stop()
    if not socket.has_ipv6:
        return
    try:
        v6 = ObjectServer(store, "::1", None)
        v6.start()
    except OSError:
        pytest.skip("no IPv6 loopback")
    try:
        assert v6.base_url.startswith("http://[::1]:")
        assert _get(f"{v6.base_url}/ping") == (200, b"ok")
    finally:
        v6.stop()


def test_fetch_into_preallocated_file(
    store: LocalStore, server: ObjectServer, roots: tuple[str, str]
) -> None:
    array = np.frombuffer(os.urandom(50 * MB), dtype=np.uint8)
    location = store.write("big", encode(array, "v"))
    other = LocalStore("reader", shm_root=roots[0], spill_root=roots[1])
    try:
        path = other.reserve("big", location.size_bytes)
        fetch_to_file(server.url("big"), path, location.size_bytes, "sekrit")
        loaded = load_file(path)
        assert (loaded == array).all() and _mapped(loaded)
        spare = other.reserve("spare", location.size_bytes)
        with pytest.raises(PermissionError):
            fetch_to_file(server.url("big"), spare, location.size_bytes, "wrong")
        with pytest.raises(ValueError, match="expected"):
            fetch_to_file(server.url("big"), spare, location.size_bytes + 1, "sekrit")
        with pytest.raises(errors.ObjectLostError) as lost:
            fetch_to_file(server.url("gone"), spare, 10, "sekrit")
        assert lost.value.object_id == "gone"
        url = server.url("big")
        server.stop()
        with pytest.raises(errors.ObjectLostError, match="gone or unreachable"):
            fetch_to_file(url, spare, location.size_bytes, "sekrit")
    finally:
        other.close()


def _dead_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/objects/big"


def test_fetch_cut_short_is_a_connection_error_not_a_loss(tmp_path: Path) -> None:
    """A transfer cut short may be a passing fault: ConnectionError (the task is retried),
    not ObjectLostError (final)."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(4096)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 100)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    path = tmp_path / "part"
    path.write_bytes(b"\0" * 1000)
    with pytest.raises(ConnectionError, match="closed after 100 of 1000") as caught:
        fetch_to_file(f"http://127.0.0.1:{port}/objects/x", str(path), 1000, None)
    assert not isinstance(caught.value, errors.ObjectLostError)
    thread.join()
    listener.close()


def test_owner_alive(store: LocalStore, server: ObjectServer) -> None:
    here = store.write("a", encode(1, "v"))
    assert owner_alive(here, None)
    dead = pb.ObjectLocation(host=host_key(), pid=here.pid, pid_start=here.pid_start + 1)
    assert not owner_alive(dead, None)
    remote = pb.ObjectLocation(host="elsewhere", url=server.url("a"))
    assert owner_alive(remote, None)  # 401: someone is there
    assert owner_alive(remote, "sekrit")
    assert not owner_alive(pb.ObjectLocation(host="elsewhere", url=_dead_url()), None)
    assert not owner_alive(pb.ObjectLocation(host="elsewhere"), None)


# ---------------------------------------------------------------------------- plane


def _plane(roots: tuple[str, str], owner: str, token: str | None = "t") -> ObjectPlane:
    store = LocalStore(owner, shm_root=roots[0], spill_root=roots[1])
    return ObjectPlane(owner, token=token, store=store)


def test_plane_same_host_maps_the_owners_file(roots: tuple[str, str]) -> None:
    owner, reader = _plane(roots, "owner"), _plane(roots, "reader")
    try:
        value = {"a": np.arange(100_000), "b": os.urandom(300_000)}
        location = owner.put("obj-1", encode(value, "v"))
        assert location.url == owner.server.url("obj-1")
        assert reader.open("obj-1", location) == location.path
        assert owner.open("obj-1", location) == location.path
        loaded = reader.load("obj-1", location)
        assert loaded["b"] == value["b"] and _mapped(loaded["a"])
        assert reader.ids() == []  # nothing copied
        owner.delete(["obj-1"])
        with pytest.raises(errors.ObjectLostError):
            reader.open("obj-1", location)
    finally:
        owner.close()
        reader.close()


def test_plane_cross_host_fetches_once(
    roots: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    owner, reader = _plane(roots, "owner"), _plane(roots, "reader")
    calls = []
    real_fetch = plane_module.fetch_to_file

    def counting_fetch(*args: Any, **kwargs: Any) -> None:
        calls.append(args[0])
        time.sleep(0.2)
        real_fetch(*args, **kwargs)

    monkeypatch.setattr(plane_module, "fetch_to_file", counting_fetch)
    try:
        array = np.arange(1_000_000)
        location = owner.put("obj-1", encode(array, "v"))
        location.host = "another-host"
        results: list[Any] = []
        threads = [
            threading.Thread(target=lambda: results.append(reader.load("obj-1", location)))
            for _ in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(calls) == 1 and len(results) == 4
        assert all((r == array).all() for r in results)
        copy = reader.open("obj-1", location)
        assert copy != location.path and copy.startswith(roots[0])
        assert reader.ids() == ["obj-1"] and len(calls) == 1
        reader.delete(["obj-1"])
        owner.delete(["obj-1"])
        with pytest.raises(errors.ObjectLostError):
            reader.load("obj-1", location)
        assert reader.ids() == [] and reader.store.size_bytes == 0
    finally:
        owner.close()
        reader.close()


def test_plane_forced_host_env_in_a_subprocess(roots: tuple[str, str]) -> None:
    owner = _plane(roots, "owner", token=None)
    try:
        location = owner.put("obj-9", encode(os.urandom(2 * MB), "v"))
        script = (
            "import sys, hashlib\n"
            "from fray.wire.objects import LocalStore, ObjectPlane, host_key\n"
            "from fray.wire.pb import controller_pb2 as pb\n"
            "loc = pb.ObjectLocation.FromString(bytes.fromhex(sys.argv[3]))\n"
            "store = LocalStore('r', shm_root=sys.argv[1], spill_root=sys.argv[2])\n"
            "plane = ObjectPlane('r', store=store)\n"
            "path = plane.open('obj-9', loc)\n"
            "print(path != loc.path, hashlib.sha256(plane.load('obj-9', loc)).hexdigest())\n"
            "plane.close()\n"
        )
        env = {**os.environ, "FRAY_OBJECT_HOST": "not-this-one"}
        out = subprocess.run(
            [sys.executable, "-c", script, *roots, location.SerializeToString().hex()],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout.split()
        import hashlib

        assert out == ["True", hashlib.sha256(load_file(location.path)).hexdigest()]
    finally:
        owner.close()
    assert os.listdir(roots[0]) == []


def test_plane_adopt_and_close(roots: tuple[str, str]) -> None:
    plane = _plane(roots, "worker")
    directory = plane.store.directory_for_child()
    path = os.path.join(directory, "result-1")
    write_file(path, encode(np.ones(200_000), "result"))
    location = plane.adopt("result-1", path)
    assert location.url.endswith("/objects/result-1") and location.path == path
    assert _get(location.url, {"Authorization": "Bearer t"})[0] == 401  # the cluster's token
    status, body = _get(location.url, {"Authorization": f"Bearer {objects_token('t')}"})
    assert status == 200 and len(body) == location.size_bytes
    assert plane.ids() == ["result-1"]
    url = location.url
    plane.close()
    plane.close()
    assert not os.path.exists(directory)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", int(url.split(":")[2].split("/")[0])), timeout=2)


def test_package_exports() -> None:
    for name in objects.__all__:
        assert hasattr(objects, name)
    assert objects.INLINE_MAX_BYTES == 256 * 1024 or "FRAY_OBJECT_INLINE_BYTES" in os.environ


def test_the_object_server_needs_a_token_off_loopback(tmp_path: Path) -> None:
    from fray.wire.objects.server import ObjectServer
    from fray.wire.objects.store import LocalStore

    store = LocalStore("o", shm_root=str(tmp_path / "shm"), spill_root=str(tmp_path / "spill"))
    try:
        with pytest.raises(PermissionError, match="needs a token"):
            ObjectServer(store, "0.0.0.0", None).start()
        server = ObjectServer(store, "0.0.0.0", "secret")
        server.start()
        server.stop()
    finally:
        store.close()
