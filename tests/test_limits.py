"""What servers accept, and what they let go: request limits (`fray.wire.edge`), the per-client
cap on queued tasks, and memory held after work is done (the worker's object cache after
`ctx.free`, an executor after its task).

Real controllers (in this process, or `fray controller` processes) and real workers on loopback;
requests are sent raw (httpx) where the wire answer matters and through `FrayContext` where what
a user sees matters.
"""

from __future__ import annotations

import gzip as gzip_module
import json
import os
import pickle
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cloudpickle
import httpx
import pytest
from fray_fixtures import free_port, get_task, list_workers, wait_for
from google.protobuf.message import Message

from fray.client.context import FrayContext
from fray.common.processes import start_python
from fray.controller.records import TaskOutcome, TaskRecord, TaskSpec, TaskState
from fray.controller.server import ControllerServer
from fray.controller.state import ControllerState
from fray.controller.tasks import TaskTable
from fray.errors import ControllerError
from fray.local_cluster import LocalFrayCluster
from fray.wire import edge
from fray.wire.limits import MAX_REQUEST_ELEMENTS, MAX_TIMEOUT_SECONDS
from fray.wire.pb import controller_pb2 as pb
from fray.wire.pb import worker_pb2 as wpb
from fray.wire.pb.controller_connect import FrayControllerClientSync
from fray.worker import executor

# Functions defined here travel by value: the workers cannot import this test module.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

SERVICE = "/fray.v1.FrayController/"
MIB = 1 << 20


def size_of(data: bytes) -> int:
    return len(data)


@pytest.fixture
def small_controller() -> Iterator[ControllerServer]:
    """A controller that takes requests of 1 MiB at most and 3 unfinished tasks per client."""
    server = ControllerServer(
        "127.0.0.1", 0, heartbeat_timeout=60, max_request_bytes=MIB, max_queued_tasks_per_client=3
    ).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def http(small_controller: ControllerServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=small_controller.address + SERVICE, timeout=30) as client:
        yield client


def post(http: httpx.Client, method: str, body: bytes | Message, **headers: str) -> httpx.Response:
    if isinstance(body, Message):
        body, headers = body.SerializeToString(), {"content-type": "application/proto", **headers}
    headers.setdefault("content-type", "application/json")
    return http.post(method, content=body, headers=headers)


def refusal(response: httpx.Response, status: int, code: str) -> str:
    """Asserts a Connect error answer on a connection the server keeps; returns its message."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.json()["code"] == code, response.text
    assert response.headers.get("connection", "").lower() != "close"
    return str(response.json()["message"])


# ---------------------------------------------------------------------- request limits


def test_a_request_over_the_size_limit_is_refused_naming_the_limit(http: httpx.Client) -> None:
    big = pb.PutObjectRequest(data=b"x" * (MIB + 1))
    message = refusal(post(http, "PutObject", big), 429, "resource_exhausted")
    assert f"limit of {MIB} bytes" in message
    assert "fray controller --max-request-bytes" in message
    # Without a Content-Length (chunked), counted while it is read.
    chunks = (b"\x0a\x00" * (MIB // 8) for _ in range(5))
    chunked = post(http, "SubmitTasks", chunks, **{"content-type": "application/proto"})  # type: ignore[arg-type]
    assert "--max-request-bytes" in refusal(chunked, 429, "resource_exhausted")
    # Just under the limit is fine, and so is the connection.
    small = pb.PutObjectRequest(data=b"x" * (MIB - 100))
    assert post(http, "PutObject", small).status_code == 200


def test_a_request_of_too_many_tiny_fields_is_refused() -> None:
    """A message of empty entries takes ~60 times its size once parsed: counted first."""
    with (
        ControllerServer("127.0.0.1", 0) as server,
        httpx.Client(base_url=server.address + SERVICE, timeout=60) as http,
    ):
        dense = b"\x0a\x00" * (MAX_REQUEST_ELEMENTS + 1)  # SubmitTasks with a million empty tasks
        response = post(http, "SubmitTasks", dense, **{"content-type": "application/proto"})
        assert "split it" in refusal(response, 429, "resource_exhausted")
        dense_json = b'{"taskIds": [' + b'"",' * MAX_REQUEST_ELEMENTS + b'""]}'
        assert "split it" in refusal(post(http, "WaitTasks", dense_json), 429, "resource_exhausted")
        # Large but sparse requests pass the count: one big object, a batch with big arguments.
        assert post(http, "PutObject", pb.PutObjectRequest(data=b"x" * 3 * MIB)).status_code == 200
        tasks = [pb.TaskSpec(function=b"f" * 100, args=b"a" * 2000, owner="o") for _ in range(2000)]
        response = post(http, "SubmitTasks", pb.SubmitTasksRequest(tasks=tasks))
        assert response.status_code == 200, response.text


def test_count_fields_counts_every_field_at_every_depth() -> None:
    request = pb.SubmitTasksRequest(
        tasks=[pb.TaskSpec(task_id="a", function=b"f", object_ids=["o1", "o2"]), pb.TaskSpec()]
    )
    data = request.SerializeToString()
    # tasks x2; in the first: task_id, function, object_ids x2
    assert edge.count_fields(pb.SubmitTasksRequest.DESCRIPTOR, data, 100) == 6
    assert edge.count_fields(pb.SubmitTasksRequest.DESCRIPTOR, data, 3) == 4  # stops past it
    labels = pb.RegisterWorkerRequest(resources=pb.Resources(labels={"a": "1", "b": "2"}))
    # resources, 2 map entries, each a key and a value
    assert edge.count_fields(labels.DESCRIPTOR, labels.SerializeToString(), 100) == 7
    for garbage in (b"\x0a", b"\x0a\x05ab", b"\xff" * 20, b"\x0f"):  # truncated, bad varint, group
        assert edge.count_fields(pb.SubmitTasksRequest.DESCRIPTOR, garbage, 100) <= 2


def test_gzip_bodies_are_read_within_the_limit(
    small_controller: ControllerServer, http: httpx.Client
) -> None:
    """connectrpc clients gzip requests by default: accepted, and the limits hold for what
    they expand to."""
    gzip = {"content-encoding": "gzip"}
    put = gzip_module.compress(pb.PutObjectRequest(data=b"x" * 1000).SerializeToString())
    answer = post(http, "PutObject", put, **{"content-type": "application/proto", **gzip})
    assert (
        answer.status_code == 200
        and pb.PutObjectResponse.FromString(answer.content).size_bytes == 1000
    )
    # A small body that expands past the limit (a "zip bomb") is refused while it is read.
    bomb = gzip_module.compress(pb.PutObjectRequest(data=bytes(4 * MIB)).SerializeToString())
    assert len(bomb) < MIB // 100
    response = post(http, "PutObject", bomb, **{"content-type": "application/proto", **gzip})
    assert "once decompressed" in refusal(response, 429, "resource_exhausted")
    assert "malformed gzip" in refusal(
        post(http, "GetTask", b"{}", **gzip), 400, "invalid_argument"
    )
    with FrayControllerClientSync(small_controller.address) as client:  # gzips by default
        assert client.get_cluster_summary(pb.GetClusterSummaryRequest()).controller_id


def test_other_requests_the_edge_refuses(http: httpx.Client) -> None:
    brotli = post(http, "GetClusterSummary", b"{}", **{"content-encoding": "br"})
    assert "unsupported compression" in refusal(brotli, 415, "unimplemented")
    query = {"encoding": "json", "message": "{}", "compression": "br"}
    compressed_get = http.get("GetClusterSummary", params=query)
    assert "unsupported compression" in refusal(compressed_get, 415, "unimplemented")
    latin1 = [(b"content-type", b"application/json"), (b"x-note", b"caf\xe9")]
    not_utf8 = http.post("GetClusterSummary", content=b"{}", headers=latin1)
    assert "UTF-8" in refusal(not_utf8, 400, "invalid_argument")
    assert post(http, "GetClusterSummary", b"{}").status_code == 200  # still serving


def test_a_gzip_get_from_a_stock_connect_client_is_answered(
    small_controller: ControllerServer,
) -> None:
    """connectrpc clients gzip GET messages by default (``compression=gzip`` in the URL)."""
    client = FrayControllerClientSync(small_controller.address)
    try:
        answer = client.get_cluster_summary(pb.GetClusterSummaryRequest(), use_get=True)
        assert answer.controller_id
    finally:
        client.close()


def test_without_the_token_nothing_is_read_or_decompressed() -> None:
    """A request without the token is refused from its headers: a huge declared body or a gzip
    body is not read first (the answer comes before the body is sent)."""
    server = ControllerServer("127.0.0.1", 0, token="s3cret").start()
    try:
        with httpx.Client(base_url=server.address + SERVICE, timeout=10) as http:

            def endless() -> Iterator[bytes]:  # would take minutes to send, if it were read
                for _ in range(100_000):
                    yield b"x" * 65536

            started = time.monotonic()
            huge = http.post(
                "SubmitTasks",
                content=endless(),
                headers={"content-type": "application/json", "content-encoding": "gzip"},
            )
            assert huge.status_code == 401 and huge.json()["code"] == "unauthenticated"
            assert time.monotonic() - started < 30  # sending the whole body would take minutes
            good = http.post(
                "GetClusterSummary",
                content=b"{}",
                headers={"content-type": "application/json", "authorization": "Bearer s3cret"},
            )
            assert good.status_code == 200
    finally:
        server.stop()


def test_a_timeout_past_the_limit_is_refused(http: httpx.Client) -> None:
    task = {"function": "gAVLAS4=", "timeoutSeconds": MAX_TIMEOUT_SECONDS * 2}
    message = refusal(
        post(http, "SubmitTasks", json.dumps({"tasks": [task]}).encode()), 400, "invalid_argument"
    )
    assert "timeout_seconds must be from 0 to" in message


# ---------------------------------------------------------------------- queued tasks per client


def submit(http: httpx.Client, owner: str, *task_ids: str) -> httpx.Response:
    tasks = [{"taskId": t, "function": "gAVLAS4=", "owner": owner} for t in task_ids]
    return post(http, "SubmitTasks", json.dumps({"tasks": tasks}).encode())


def test_a_client_past_its_queued_tasks_cap_is_refused(http: httpx.Client) -> None:
    assert submit(http, "o1", "a1", "a2").status_code == 200
    message = refusal(submit(http, "o1", "a3", "a4"), 429, "resource_exhausted")
    assert "client o1 has 2 unfinished tasks" in message
    assert "at most 3 per client (fray controller --max-queued-tasks-per-client)" in message
    assert submit(http, "o2", "b1", "b2", "b3").status_code == 200  # another client's room
    assert submit(http, "o1", "a3").status_code == 200
    # A repeated submission (its answer was lost) is no new task: already_exists, not the cap.
    refusal(submit(http, "o1", "a3"), 409, "already_exists")
    # Finished tasks (here cancelled) make room again.
    assert post(http, "CancelTasks", b'{"taskIds": ["a1"]}').status_code == 200
    assert submit(http, "o1", "a5").status_code == 200
    refusal(submit(http, "o1", "a6"), 429, "resource_exhausted")


def test_unfinished_tasks_are_counted_per_client_through_their_whole_life() -> None:
    state = ControllerState(heartbeat_timeout=60)
    state.submit([TaskSpec(function=b"f", args=b"", owner="o1") for _ in range(3)])
    state.submit([TaskSpec(function=b"f", args=b"", owner="o2")])
    assert (state.unfinished_count("o1"), state.unfinished_count("o2")) == (3, 1)
    state.register_worker(worker_id="w", slots=2)
    leased, _ = state.lease("w")
    assert [t.spec.owner for t in leased] == ["o1", "o1"]  # oldest first
    assert state.unfinished_count("o1") == 3  # running is unfinished too
    done = leased[0]
    state.report("w", [TaskOutcome(done.task_id, done.attempts, value=b"v")])
    assert state.unfinished_count("o1") == 2
    state.unregister_worker("w")  # the other goes back to the queue: still unfinished
    state.cancel([t.task_id for t in state.list_tasks(TaskState.PENDING)])
    assert (state.unfinished_count("o1"), state.unfinished_count("o2")) == (0, 0)
    # Restored at a restart: the unfinished ones count again.
    table = TaskTable(10)
    for task_state in (TaskState.PENDING, TaskState.RUNNING, TaskState.COMPLETED):
        spec = TaskSpec(function=b"f", args=b"", task_id=task_state.value, owner="o3")
        table.restore(TaskRecord(spec=spec, submitted_at=0.0, state=task_state))
    assert table.unfinished_by_owner["o3"] == 2


def test_the_client_fails_refused_tasks_and_puts_clearly(
    small_controller: ControllerServer,
) -> None:
    ctx = FrayContext(small_controller.address, direct=False, retry_timeout=10)
    try:
        futures = [ctx.run(size_of, b"x") for _ in range(5)]  # no worker: they stay queued
        errors = []
        for future in futures:  # none hangs: each is queued or fails
            try:
                future.result(timeout=2)
            except ControllerError as exc:
                errors.append(exc)
            except TimeoutError:
                pass  # queued (no worker to run it)
        assert errors, "no task was refused"
        assert all(e.code == "resource_exhausted" for e in errors)
        assert "--max-queued-tasks-per-client" in str(errors[0])
        # A large object never travels in a request: only where it is does (its bytes stay in
        # this process's file), so the request limit does not apply to it.
        ref = ctx.put(b"x" * (2 * MIB))
        assert ctx.get(ref) == b"x" * (2 * MIB)
    finally:
        ctx.close()


def test_a_direct_call_over_the_workers_limit_runs_queued_instead() -> None:
    """The worker refuses a RunTask over its --max-request-bytes (resource_exhausted, like a
    busy worker): the client queues the task at the controller, which takes it."""
    args = ("--max-request-bytes", "1MiB")
    with LocalFrayCluster(workers=1, concurrency=1, worker_args=args) as cluster:
        ctx = FrayContext(cluster.address, retry_timeout=10)
        try:
            assert ctx.get(ctx.run(size_of, b"x" * (2 * MIB)), timeout=60) == 2 * MIB
        finally:
            ctx.close()
        (worker,) = list_workers(cluster.address).values()
        task = pb.TaskSpec(task_id="t", function=b"f", args=b"a" * (2 * MIB))
        response = httpx.post(
            f"{worker.address}/fray.v1.FrayWorker/RunTask",
            content=wpb.RunTaskRequest(task=task).SerializeToString(),
            headers={"content-type": "application/proto"},
            timeout=30,
        )
        assert "fray worker --max-request-bytes" in refusal(response, 429, "resource_exhausted")


# ---------------------------------------------------------------------- memory let go


def test_a_lease_answer_names_the_freed_objects_at_once(http: httpx.Client) -> None:
    assert post(http, "RegisterWorker", b'{"workerId": "w", "slots": 1}').status_code == 200
    object_id = post(http, "PutObject", b'{"data": "eHl6"}').json()["objectId"]
    lease = {"workerId": "w", "waitMs": 0, "cachedObjectIds": [object_id, "gone"]}
    assert post(http, "LeaseTasks", json.dumps(lease).encode()).json()["freedObjectIds"] == ["gone"]
    # A waiting lease answers as soon as an object it lists is freed (or at once, if the
    # delete comes first).
    lease = {"workerId": "w", "waitMs": 15_000, "cachedObjectIds": [object_id]}
    answers: list[httpx.Response] = []

    def wait() -> None:
        with httpx.Client(base_url=http.base_url, timeout=30) as other:
            answers.append(post(other, "LeaseTasks", json.dumps(lease).encode()))

    started = time.monotonic()
    waiting = threading.Thread(target=wait)
    waiting.start()
    try:
        deleted = post(http, "DeleteObjects", json.dumps({"objectIds": [object_id]}).encode())
        assert deleted.json() == {"deleted": 1}
    finally:
        waiting.join(30)
    assert answers and answers[0].json()["freedObjectIds"] == [object_id]
    assert time.monotonic() - started < 10  # long before its 15 s wait ran out


def test_free_releases_the_workers_copy_of_an_object() -> None:
    # The worker is told it is on another host: it fetches a copy of the object (on this host
    # it would map the client's file and hold nothing of its own).
    env = {"FRAY_OBJECT_HOST": "another-host"}
    with LocalFrayCluster(workers=1, concurrency=1, env=env) as cluster:
        (worker,) = list_workers(cluster.address).values()

        def cached() -> tuple[int, int]:
            health = httpx.get(f"{worker.address}/healthz", timeout=10).json()
            return health["cached_objects"], health["cached_object_bytes"]

        ctx = FrayContext(cluster.address, retry_timeout=10)
        try:
            ref = ctx.put(b"x" * (8 * MIB))
            assert ctx.get(ctx.run(size_of, ref), timeout=60) == 8 * MIB
            objects, size = cached()
            assert objects == 1 and size >= 8 * MIB
            assert ctx.free([ref]) == 1
            wait_for(lambda: cached() == (0, 0), 15, "the worker to drop the freed object")
        finally:
            ctx.close()


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_an_executor_lets_go_of_a_tasks_arguments_once_it_answered() -> None:
    """The executor's memory after a task with a 100 MiB argument and a 100 MiB object is back
    near where it was before, while it waits for the next task."""
    ctx = executor.context()
    parent, child = ctx.Pipe()
    process = ctx.Process(target=executor.main, args=(child, os.getpid()), daemon=True)
    process.start()
    child.close()
    try:
        function = cloudpickle.dumps(lambda data, obj: len(data) + len(obj))
        parent.send_bytes(pickle.dumps((function, pickle.dumps(((b"", b""), {})), [])))
        assert pickle.loads(parent.recv_bytes())[:2] == ("ok", pickle.dumps(0, protocol=5))
        before = _rss_bytes(process.pid)
        big = 100 * MIB
        args = pickle.dumps(((b"a" * big, payload_ref("obj")), {}), protocol=5)
        parent.send_bytes(pickle.dumps((function, args, ["obj"]), protocol=5))
        parent.send_bytes(pickle.dumps(b"o" * big, protocol=5))
        status, value, _output = pickle.loads(parent.recv_bytes())
        assert (status, pickle.loads(value)) == ("ok", 2 * big)
        wait_for(
            lambda: _rss_bytes(process.pid) < before + 50 * MIB,
            10,
            f"the executor to let go of the arguments ({_rss_bytes(process.pid) >> 20} MiB, "
            f"{before >> 20} MiB before)",
        )
    finally:
        parent.close()
        process.join(10)
        if process.is_alive():
            process.kill()
            process.join(5)


def payload_ref(object_id: str) -> object:
    from fray.wire.payload import ObjectRef

    return ObjectRef(object_id)


# ---------------------------------------------------------------------- the command line


def test_a_worker_off_loopback_without_a_token_exits_2_with_a_message() -> None:
    env = {k: v for k, v in os.environ.items() if k != "FRAY_TOKEN"}
    process = start_python(
        *("-m", "fray", "worker", "--controller", f"http://127.0.0.1:{free_port()}"),
        *("--host", "0.0.0.0"),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, err = process.communicate(timeout=60)
    assert process.returncode == 2, (out, err)
    assert "fray worker: refusing to listen on 0.0.0.0 without a token" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("command", ["controller", "worker"])
@pytest.mark.parametrize("size", ["0", "3GiB", "lots"])
def test_max_request_bytes_must_be_a_size_the_wire_can_carry(command: str, size: str) -> None:
    process = start_python(
        *("-m", "fray", command, "--max-request-bytes", size),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, err = process.communicate(timeout=60)
    assert process.returncode == 2 and "--max-request-bytes" in err, (out, err)


def big_result(size: int) -> bytes:
    return b"r" * size


@pytest.fixture(scope="module")
def one_mib_cluster() -> Iterator[LocalFrayCluster]:
    """A controller that takes requests of 1 MiB at most, and one worker."""
    with LocalFrayCluster(
        workers=1, concurrency=2, controller_args=("--max-request-bytes", "1MiB")
    ) as cluster:
        yield cluster


def test_tasks_that_each_fit_are_not_refused_together(one_mib_cluster: LocalFrayCluster) -> None:
    """Six queued tasks of 400 KB of arguments each: one batch would pass the limit, each task
    alone does not, so the client sends fewer at a time and all of them run."""
    with FrayContext(one_mib_cluster.address, direct=False) as ctx:
        futures = [ctx.run(size_of, bytes(400_000)) for _ in range(6)]
        assert ctx.get(futures, timeout=60) == [400_000] * 6


def test_a_result_larger_than_the_controller_accepts_comes_back_as_an_object(
    one_mib_cluster: LocalFrayCluster,
) -> None:
    """A 2 MiB result against a 1 MiB request limit: the worker keeps it as an object and
    reports only where it is, so the task succeeds on its first attempt."""
    with FrayContext(one_mib_cluster.address, direct=False) as ctx:
        future = ctx.run(big_result, 2 * MIB)
        assert future.result(timeout=60) == b"r" * (2 * MIB)
        task = get_task(one_mib_cluster.address, future.task_id)
        assert task.attempts == 1
        assert ctx.get(ctx.run(big_result, 10), timeout=60) == b"r" * 10
