"""The FrayController over the wire: a real `ControllerServer` on loopback, called the way curl
would (HTTP/JSON through httpx, Connect protocol) and with the generated sync client.

The `controller` fixture (tests/fray_fixtures.py) has a long heartbeat timeout (60 s), so that a
worker registered by hand is not expired while a slow machine stalls the test, and its LeaseTasks
long polls are capped at 20 s; tests about the heartbeat interval start their own server with
`serve(...)`.

Bounds on how long a call takes are generous: they tell "answered at once" from "waited for a
deadline" many seconds away, so that a loaded machine cannot break them. Lower bounds (proving
that a poll waited) are measured from points the test controls.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from connectrpc.code import Code
from connectrpc.errors import ConnectError

from fray.controller.long_poll import LeasePoll
from fray.controller.records import StateError
from fray.controller.server import ControllerServer
from fray.wire.pb import controller_pb2 as pb
from fray.wire.pb.controller_connect import FrayControllerClientSync

SERVICE_PATH = "/fray.v1.FrayController/"
Json = dict[str, Any]


# ---------------------------------------------------------------------- helpers


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text)


def http_client(server: ControllerServer, token: str | None = None) -> httpx.Client:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=server.address + SERVICE_PATH, timeout=20.0, headers=headers)


def http_client_for(http: httpx.Client) -> httpx.Client:
    """Another httpx client for the same server (one per thread)."""
    return httpx.Client(base_url=http.base_url, timeout=20.0)


@pytest.fixture
def http(controller: ControllerServer) -> Iterator[httpx.Client]:
    with http_client(controller) as client:
        yield client


@contextlib.contextmanager
def serve(**kwargs: Any) -> Iterator[ControllerServer]:
    """A ControllerServer of our own on a free loopback port, stopped at the end."""
    server = ControllerServer("127.0.0.1", 0, **kwargs).start()
    try:
        yield server
    finally:
        server.stop()


def call(client: httpx.Client, method: str, body: Json) -> Json:
    """POST a JSON request; asserts success and returns the decoded answer."""
    response = client.post(method, json=body)
    assert response.status_code == 200, (method, response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    return response.json()


def get(client: httpx.Client, method: str, body: Json) -> httpx.Response:
    """A Connect GET (read-only methods): the request message travels in the query string."""
    return client.get(method, params={"encoding": "json", "message": json.dumps(body)})


def connect_error(response: httpx.Response, status: int, code: str) -> str:
    """Asserts a Connect error answer; returns its message."""
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert body["code"] == code, body
    return body["message"]


def last_heartbeat(client: httpx.Client, worker_id: str) -> str:
    workers = call(client, "ListWorkers", {})["workers"]
    (worker,) = [w for w in workers if w["workerId"] == worker_id]
    return str(worker["lastHeartbeat"])


def wait_until_polling(client: httpx.Client, worker_id: str, before: str) -> None:
    """Until the worker's LeaseTasks call (which counts as a heartbeat) reached the controller,
    found no work and waits: its last heartbeat moved on from `before`."""
    deadline = time.monotonic() + 20
    while last_heartbeat(client, worker_id) == before:
        assert time.monotonic() < deadline, "the lease call never reached the controller"
        time.sleep(0.02)


class PollWaits:
    """Counts the times long polls on one of the service's signals went to sleep: a rendezvous
    with a client's poll (which, unlike a worker's, leaves no heartbeat) that reached the
    controller, found nothing to answer and waits."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, signal: Any) -> None:
        self._count = 0
        self._changed = threading.Condition()
        real_wait = signal.wait

        async def counting_wait(timeout: float) -> None:
            with self._changed:
                self._count += 1
                self._changed.notify_all()
            await real_wait(timeout)

        monkeypatch.setattr(signal, "wait", counting_wait)

    def until(self, count: int) -> None:
        """Until polls went to sleep `count` times in all."""
        with self._changed:
            reached = self._changed.wait_for(lambda: self._count >= count, timeout=20)
        assert reached, f"polls went to sleep {self._count} times, not {count}"


def client_port(response: httpx.Response) -> int:
    """The local port of the connection that carried `response` (same port: same connection)."""
    return response.extensions["network_stream"].get_extra_info("client_addr")[1]


def submit(client: httpx.Client, *tasks: Json) -> list[str]:
    specs = [{"function": b64(b"fn"), "args": b64(b"args"), **t} for t in tasks]
    return call(client, "SubmitTasks", {"tasks": specs})["taskIds"]


def register(client: httpx.Client, worker_id: str, slots: int = 1, **extra: Any) -> Json:
    return call(client, "RegisterWorker", {"workerId": worker_id, "slots": slots, **extra})


def report_value(client: httpx.Client, worker_id: str, leased: Json, value: bytes) -> int:
    result = {"taskId": leased["taskId"], "attempt": leased["attempt"], "value": b64(value)}
    answer = call(client, "ReportResults", {"workerId": worker_id, "results": [result]})
    return answer.get("accepted", 0)


def run_in_thread(fn: Any) -> tuple[threading.Thread, dict[str, Any]]:
    """Runs fn() in a thread; the dict gets "result" or "error", and "ended" (time.monotonic()
    when fn returned: compare it with times the test took, not with the thread's start, which
    a loaded machine may delay)."""
    out: dict[str, Any] = {}

    def target() -> None:
        try:
            out["result"] = fn()
        except BaseException as exc:  # reported to the test
            out["error"] = exc
        out["ended"] = time.monotonic()

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, out


# ---------------------------------------------------------------------- clients over JSON


def test_submit_tasks_json_returns_ids(controller: ControllerServer, http: httpx.Client) -> None:
    answer = call(
        http,
        "SubmitTasks",
        {
            "tasks": [
                {"function": b64(b"\x80\x05pickled"), "args": b64(b"\x00\x01"), "name": "f"},
                {"taskId": "mine", "function": b64(b"g"), "maxRetries": 2, "timeoutSeconds": 1.5},
            ]
        },
    )
    generated, mine = answer["taskIds"]
    assert mine == "mine"
    assert len(generated) == 32
    assert answer["controllerId"]
    # bytes fields arrived decoded from base64
    spec = controller.state.tasks[generated].spec
    assert spec.function == b"\x80\x05pickled" and spec.args == b"\x00\x01" and spec.name == "f"
    other = controller.state.tasks["mine"].spec
    assert other.max_retries == 2 and other.timeout_seconds == 1.5


def test_get_task_via_post_and_get(http: httpx.Client) -> None:
    (task_id,) = submit(http, {"name": "job"})
    by_post = call(http, "GetTask", {"taskId": task_id})
    response = get(http, "GetTask", {"taskId": task_id})
    assert response.status_code == 200, response.text
    by_get = response.json()
    assert by_post == by_get
    task = by_get["task"]
    assert task["taskId"] == task_id
    assert task["state"] == "TASK_STATE_PENDING"
    assert task["name"] == "job"
    assert "submittedAt" in task and "startedAt" not in task


def test_read_only_methods_via_get(http: httpx.Client) -> None:
    ids = submit(http, {}, {}, {})
    register(http, "w1", slots=2, resources={"cpus": 4, "labels": {"zone": "a"}})

    response = get(http, "GetClusterSummary", {})
    assert response.status_code == 200, response.text
    summary = response.json()
    assert summary["queueDepth"] == 3
    assert summary["tasksByState"]["PENDING"] == 3
    assert summary["workers"] == 1 and summary["totalSlots"] == 2

    response = get(http, "ListWorkers", {})
    assert response.status_code == 200, response.text
    (worker,) = response.json()["workers"]
    assert worker["workerId"] == "w1" and worker["slots"] == 2
    assert worker["resources"]["labels"] == {"zone": "a"}

    response = get(http, "ListTasks", {"state": "TASK_STATE_PENDING", "limit": 2})
    assert response.status_code == 200, response.text
    assert [t["taskId"] for t in response.json()["tasks"]] == ids[:2]

    response = get(http, "ListTasks", {"state": "TASK_STATE_RUNNING"})
    assert response.status_code == 200, response.text
    assert response.json().get("tasks", []) == []


def test_unknown_task_not_found(http: httpx.Client) -> None:
    message = connect_error(http.post("GetTask", json={"taskId": "no-such-task"}), 404, "not_found")
    assert "no-such-task" in message
    message = connect_error(get(http, "GetTask", {"taskId": "no-such-task"}), 404, "not_found")
    assert "no-such-task" in message
    response = http.post("CancelTasks", json={"taskIds": ["no-such-task"]})
    assert "no-such-task" in connect_error(response, 404, "not_found")


def test_malformed_json_is_invalid_argument_and_server_stays_up(http: httpx.Client) -> None:
    first = call(http, "GetClusterSummary", {})
    assert first["controllerId"]
    response = http.post(
        "GetTask", content=b'{"taskId": ', headers={"content-type": "application/json"}
    )
    connect_error(response, 400, "invalid_argument")
    port = client_port(response)
    response = http.post(
        "GetTask", content=b'{"taskId": 5}', headers={"content-type": "application/json"}
    )
    connect_error(response, 400, "invalid_argument")
    broken = http.get("GetTask", params={"encoding": "json", "message": "{oops"})
    connect_error(broken, 400, "invalid_argument")
    after = http.post("GetClusterSummary", json={})
    assert after.status_code == 200
    assert after.json()["controllerId"] == first["controllerId"]
    assert client_port(after) == port  # the same keep-alive connection


@pytest.mark.parametrize(
    ("method", "body", "status", "code", "words"),
    [
        ("SubmitTasks", {"tasks": [{"function": ""}]}, 400, "invalid_argument", "function"),
        ("SubmitTasks", {"tasks": []}, 400, "invalid_argument", "no tasks"),
        (
            "SubmitTasks",
            {"tasks": [{"function": b64(b"f"), "timeoutSeconds": -1}]},
            400,
            "invalid_argument",
            "timeout_seconds",
        ),
        (
            "SubmitTasks",
            {"tasks": [{"function": b64(b"f"), "objectIds": ["missing-obj"]}]},
            404,
            "not_found",
            "missing-obj",
        ),
        ("RegisterWorker", {"slots": 0}, 400, "invalid_argument", "slots"),
        ("RegisterWorker", {"slots": 1, "prefetch": -1}, 400, "invalid_argument", "prefetch"),
        ("WaitTasks", {"taskIds": []}, 400, "invalid_argument", "task_ids"),
        ("WatchFinished", {"cursor": 0}, 400, "invalid_argument", "owner"),
        ("ListTasks", {"limit": -1}, 400, "invalid_argument", "limit"),
        ("Heartbeat", {"workerId": "ghost"}, 404, "not_found", "ghost"),
        ("LeaseTasks", {"workerId": "ghost", "waitMs": 5000}, 404, "not_found", "ghost"),
        ("GetObject", {"objectId": "nope"}, 404, "not_found", "nope"),
    ],
)
def test_invalid_requests_name_the_problem(
    http: httpx.Client, method: str, body: Json, status: int, code: str, words: str
) -> None:
    message = connect_error(http.post(method, json=body), status, code)
    assert words in message


def test_submit_is_all_or_none_over_rpc(controller: ControllerServer, http: httpx.Client) -> None:
    (existing,) = submit(http, {"taskId": "dup"})
    response = http.post(
        "SubmitTasks",
        json={"tasks": [{"taskId": "fresh", "function": b64(b"f")}, {"function": ""}]},
    )
    connect_error(response, 400, "invalid_argument")
    response = http.post("SubmitTasks", json={"tasks": [{"taskId": "dup", "function": b64(b"f")}]})
    assert "dup" in connect_error(response, 409, "already_exists")
    assert set(controller.state.tasks) == {existing}


def test_report_without_outcome_is_invalid(http: httpx.Client) -> None:
    (task_id,) = submit(http, {})
    register(http, "w1")
    (leased,) = call(http, "LeaseTasks", {"workerId": "w1"})["tasks"]
    response = http.post(
        "ReportResults",
        json={"workerId": "w1", "results": [{"taskId": task_id, "attempt": leased["attempt"]}]},
    )
    assert "outcome" in connect_error(response, 400, "invalid_argument")


@pytest.mark.parametrize(
    ("method", "body"),
    [
        ("SubmitTasks", {"tasks": [{"function": b64(b"f")}]}),
        ("LeaseTasks", {"workerId": "w"}),
        ("WatchFinished", {"owner": "me"}),
    ],
)
def test_side_effect_methods_refuse_get(
    controller: ControllerServer, http: httpx.Client, method: str, body: Json
) -> None:
    response = get(http, method, body)
    assert response.status_code == 405, (response.status_code, response.text)
    assert "POST" in response.headers.get("allow", "")
    assert controller.state.tasks == {}  # nothing happened
    assert call(http, "GetClusterSummary", {})["controllerId"]


# ---------------------------------------------------------------------- the worker's side


def test_worker_flow_over_json(controller: ControllerServer, http: httpx.Client) -> None:
    (task_id,) = submit(
        http, {"function": b64(b"the-fn"), "args": b64(b"the-args"), "name": "job", "owner": "me"}
    )
    answer = register(http, "w1", slots=1, address="http://127.0.0.1:1")
    assert answer["workerId"] == "w1"
    assert answer["heartbeatTimeoutMs"] == 60_000
    assert answer["controllerId"]

    start = time.monotonic()
    leased = call(http, "LeaseTasks", {"workerId": "w1", "waitMs": 20_000})
    assert time.monotonic() - start < 10  # work was there: no waiting (for 20 s)
    (task,) = leased["tasks"]
    assert task["taskId"] == task_id and task["attempt"] == 1 and task["name"] == "job"
    assert unb64(task["function"]) == b"the-fn" and unb64(task["args"]) == b"the-args"

    running = call(http, "GetTask", {"taskId": task_id})["task"]
    assert running["state"] == "TASK_STATE_RUNNING" and running["workerId"] == "w1"
    summary = call(http, "GetClusterSummary", {})
    assert summary["busySlots"] == 1 and summary["tasksByState"]["RUNNING"] == 1

    assert report_value(http, "w1", task, b"the-result") == 1
    # the same report again is stale
    assert report_value(http, "w1", task, b"again") == 0

    waited = call(http, "WaitTasks", {"taskIds": [task_id], "includeResults": True})
    (done,) = waited["finished"]
    assert done["state"] == "TASK_STATE_COMPLETED"
    assert unb64(done["result"]) == b"the-result"
    assert waited.get("pendingCount", 0) == 0

    got = call(http, "GetTask", {"taskId": task_id, "includeResult": True})["task"]
    assert got["state"] == "TASK_STATE_COMPLETED" and unb64(got["result"]) == b"the-result"
    assert call(http, "GetTask", {"taskId": task_id})["task"]["result"] == ""  # not asked for
    (worker,) = call(http, "ListWorkers", {})["workers"]
    assert worker["tasksCompleted"] == "1"  # int64 is a string in proto JSON

    assert call(http, "UnregisterWorker", {"workerId": "w1"}).get("requeuedTaskIds", []) == []
    assert call(http, "ListWorkers", {}).get("workers", []) == []


def test_lease_prefetch_over_json(http: httpx.Client) -> None:
    ids = submit(http, *({} for _ in range(6)))
    register(http, "w1", slots=1, prefetch=3)
    # prefetch 0 (set, though it is the default value: the field is optional) -> slots only
    first = call(http, "LeaseTasks", {"workerId": "w1", "prefetch": 0})
    assert [t["taskId"] for t in first["tasks"]] == ids[:1]
    # unset -> the registered prefetch (3)
    second = call(http, "LeaseTasks", {"workerId": "w1"})
    assert [t["taskId"] for t in second["tasks"]] == ids[1:4]


def test_cancel_running_task_over_json(http: httpx.Client) -> None:
    (task_id,) = submit(http, {})
    register(http, "w1")
    (task,) = call(http, "LeaseTasks", {"workerId": "w1"})["tasks"]
    (after,) = call(http, "CancelTasks", {"taskIds": [task_id]})["tasks"]
    assert after["state"] == "TASK_STATE_RUNNING" and after["cancelRequested"] is True
    start = time.monotonic()
    leased = call(http, "LeaseTasks", {"workerId": "w1", "waitMs": 20_000})
    assert time.monotonic() - start < 10  # a cancellation to deliver: no waiting (for 20 s)
    assert leased.get("tasks", []) == [] and leased["cancelTaskIds"] == [task_id]
    # Sent again until the task's end is reported: a lost answer loses no cancellation.
    assert call(http, "Heartbeat", {"workerId": "w1"}).get("cancelTaskIds", []) == [task_id]
    error = {"kind": "ERROR_KIND_CANCELLED", "type": "TaskCancelledError", "message": "cancelled"}
    result = {"taskId": task_id, "attempt": task["attempt"], "error": error}
    assert call(http, "ReportResults", {"workerId": "w1", "results": [result]})["accepted"] == 1
    final = call(http, "GetTask", {"taskId": task_id})["task"]
    assert final["state"] == "TASK_STATE_CANCELLED"
    assert final["error"]["kind"] == "ERROR_KIND_CANCELLED"


def test_lease_poll_is_capped_at_the_heartbeat_interval() -> None:
    # heartbeat_timeout 6 s -> interval 2 s: the worker must be back before it expires.
    with serve(heartbeat_timeout=6.0) as server, http_client(server) as http:
        register(http, "w1")
        start = time.monotonic()
        answer = call(http, "LeaseTasks", {"workerId": "w1", "waitMs": 20_000})
        elapsed = time.monotonic() - start
        assert answer.get("tasks", []) == []
        # It waited the interval (the server waits 2 s from when it got the call); not the 20 s
        # asked, nor the 6 s heartbeat timeout.
        assert 1.9 < elapsed < 5.0, elapsed


def test_long_poll_answers_before_the_client_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a Connect-Timeout-Ms header the poll answers (empty, 200) shortly before the client
    would give up, rather than running into the client's deadline."""
    with serve(heartbeat_timeout=60.0) as server, http_client(server) as http:
        # The margin before the client's deadline is a fraction of a second: too little to
        # check with a wall clock on a loaded machine. Read the poll's own deadline instead:
        # the time left that it waits for (`remaining`) when it first finds nothing to do.
        waits: list[float] = []
        real_wait = LeasePoll.wait

        async def recording_wait(self: LeasePoll, timeout: float) -> None:
            waits.append(timeout)
            await real_wait(self, timeout)

        monkeypatch.setattr(LeasePoll, "wait", recording_wait)
        register(http, "w1")
        start = time.monotonic()
        response = http.post(
            "LeaseTasks",
            json={"workerId": "w1", "waitMs": 20_000},
            headers={"connect-timeout-ms": "2000"},
        )
        elapsed = time.monotonic() - start
        assert response.status_code == 200, response.text
        assert response.json().get("tasks", []) == []
        assert waits, "the poll never waited"
        assert waits[0] < 2.0 - 0.1, f"the poll waited {waits[0]:.3f}s of a 2 s client timeout"
        # It did wait until close to the client's deadline (a lower bound: a loaded machine only
        # makes it longer), and the header, not waitMs (20 s), ended it.
        assert 1.5 < elapsed < 10.0, elapsed


def test_lease_without_work_waits_then_returns_empty() -> None:
    with serve(heartbeat_timeout=60.0) as server, http_client(server) as http:
        register(http, "w1")
        start = time.monotonic()
        answer = call(http, "LeaseTasks", {"workerId": "w1", "waitMs": 1500})
        elapsed = time.monotonic() - start
        assert answer.get("tasks", []) == [] and answer.get("cancelTaskIds", []) == []
        # It waited its 1.5 s (from when the server got it), and no more: not the 20 s cap.
        assert 1.4 < elapsed < 10.0, elapsed


def test_waiting_lease_wakes_up_on_submit() -> None:
    with serve(heartbeat_timeout=60.0) as server, http_client(server) as http:
        register(http, "w1")
        before = last_heartbeat(http, "w1")

        def lease() -> Json:
            with http_client(server) as other:
                return call(other, "LeaseTasks", {"workerId": "w1", "waitMs": 20_000})

        thread, out = run_in_thread(lease)
        wait_until_polling(http, "w1", before)
        assert thread.is_alive()  # still waiting: there is no work
        submitted = time.monotonic()
        (task_id,) = submit(http, {})
        thread.join(20)
        assert "error" not in out, out
        assert [t["taskId"] for t in out["result"]["tasks"]] == [task_id]
        woke = out["ended"] - submitted
        assert woke < 10, woke  # woken by the submit: well before its 20 s deadline


def test_wait_tasks_min_finished_waits_server_side(
    controller: ControllerServer, http: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = submit(http, {}, {}, {})
    register(http, "w1", slots=3)
    leased = {t["taskId"]: t for t in call(http, "LeaseTasks", {"workerId": "w1"})["tasks"]}
    assert set(leased) == set(ids)

    # Nothing finished: waitMs 0 answers at once.
    now = call(http, "WaitTasks", {"taskIds": ids, "minFinished": 1})
    assert now.get("finished", []) == [] and now["pendingCount"] == 3

    def wait() -> Json:
        with http_client_for(http) as other:
            body = {"taskIds": ids, "minFinished": 2, "waitMs": 30_000, "includeResults": True}
            return call(other, "WaitTasks", body)

    waits = PollWaits(monkeypatch, controller.service._finished)
    thread, out = run_in_thread(wait)
    waits.until(1)  # it reached the controller and waits
    assert report_value(http, "w1", leased[ids[1]], b"one") == 1
    waits.until(2)  # woken by the report, it found one of two and waits again
    assert thread.is_alive()
    second = time.monotonic()
    assert report_value(http, "w1", leased[ids[0]], b"zero") == 1
    thread.join(30)
    assert "error" not in out, out
    finished = out["result"]["finished"]
    assert {t["taskId"] for t in finished} == {ids[0], ids[1]}
    assert {unb64(t["result"]) for t in finished} == {b"zero", b"one"}
    assert out["result"]["pendingCount"] == 1
    assert out["ended"] > second  # it waited for the second one
    assert out["ended"] - second < 10  # and woke up for it, well before its 30 s deadline


def test_watch_finished_in_order_with_cursor(http: httpx.Client) -> None:
    ids = submit(http, *({"owner": "me"} for _ in range(3)))
    submit(http, {"owner": "someone-else"})
    register(http, "w1", slots=4)
    leased = {t["taskId"]: t for t in call(http, "LeaseTasks", {"workerId": "w1"})["tasks"]}
    order = [ids[2], ids[0], ids[1]]
    for task_id in order:
        report_value(http, "w1", leased[task_id], task_id.encode())

    answer = call(http, "WatchFinished", {"owner": "me", "cursor": 0, "limit": 2})
    assert [t["taskId"] for t in answer["finished"]] == order[:2]
    assert int(answer["nextCursor"]) == 2
    assert answer["controllerId"]
    answer = call(http, "WatchFinished", {"owner": "me", "cursor": 2, "waitMs": 5000})
    assert [t["taskId"] for t in answer["finished"]] == order[2:]
    assert unb64(answer["finished"][0]["result"]) == order[2].encode()
    assert int(answer["nextCursor"]) == 3
    full = answer["finished"][0]
    assert full["workerId"] == "w1" and "finishedAt" in full and full["attempts"] == 1

    # Brief: only what settles a future.
    (other,) = [t for t in leased.values() if t["taskId"] not in ids]
    report_value(http, "w1", other, b"theirs")
    answer = call(http, "WatchFinished", {"owner": "someone-else", "cursor": 0, "brief": True})
    (brief,) = answer["finished"]
    assert "finishedAt" not in brief and not brief.get("workerId") and not brief.get("attempts")
    assert brief["state"] == "TASK_STATE_COMPLETED" and unb64(brief["result"]) == b"theirs"

    # At the end: a long poll that returns empty at its deadline.
    start = time.monotonic()
    answer = call(http, "WatchFinished", {"owner": "me", "cursor": 3, "waitMs": 400})
    assert answer.get("finished", []) == [] and int(answer["nextCursor"]) == 3
    assert 0.3 < time.monotonic() - start < 10.0  # its 400 ms, not the 30 s cap


def test_watch_finished_wakes_up_when_a_task_finishes(
    controller: ControllerServer, http: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    (task_id,) = submit(http, {"owner": "me"})
    register(http, "w1")
    (leased,) = call(http, "LeaseTasks", {"workerId": "w1"})["tasks"]

    def watch() -> Json:
        with http_client_for(http) as other:
            return call(other, "WatchFinished", {"owner": "me", "cursor": 0, "waitMs": 30_000})

    waits = PollWaits(monkeypatch, controller.service._finished)
    thread, out = run_in_thread(watch)
    waits.until(1)  # it reached the controller and waits
    assert thread.is_alive()
    reported = time.monotonic()
    report_value(http, "w1", leased, b"v")
    thread.join(30)
    assert "error" not in out, out
    assert [t["taskId"] for t in out["result"]["finished"]] == [task_id]
    assert out["ended"] - reported < 10  # woken by the report, well before its 30 s deadline


def test_watch_finished_unknown_cursor_answers_promptly(http: httpx.Client) -> None:
    """A cursor past the end of the owner's log (the client's controller restarted) is answered
    not_found; the client relies on that to notice the restart, so the answer must not wait for
    the long poll's deadline (the client library polls with 10 s)."""
    start = time.monotonic()
    response = http.post("WatchFinished", json={"owner": "me", "cursor": 5, "waitMs": 30_000})
    elapsed = time.monotonic() - start
    assert "cursor 5" in connect_error(response, 404, "not_found")
    assert elapsed < 10, f"not_found took {elapsed:.2f}s: the poll waited for its 30 s deadline"


# ---------------------------------------------------------------------- robustness


def test_internal_error_is_safe_and_connection_survives(
    controller: ControllerServer,
    http: httpx.Client,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    before = http.post("GetClusterSummary", json={})
    assert before.status_code == 200
    port = client_port(before)

    def broken() -> int:
        raise RuntimeError("secret detail")

    monkeypatch.setattr(controller.state, "busy_slots", broken)
    with caplog.at_level(logging.ERROR, logger="fray.wire.serving"):
        response = http.post("GetClusterSummary", json={})
        by_get = get(http, "GetClusterSummary", {})
    for answer in (response, by_get):
        assert "secret detail" not in answer.text
        assert "Traceback" not in answer.text and "RuntimeError" not in answer.text
        message = connect_error(answer, 500, "internal")
        assert "GetClusterSummary" in message and "ref " in message
    # The log has the details, under the reference the client was given.
    ref = response.json()["message"].split("ref ")[1].split(")")[0]
    assert any(ref in r.getMessage() and r.exc_info for r in caplog.records)

    # The connection is still usable: other calls work on it, and so does this one once fixed.
    assert call(http, "ListWorkers", {}) == {"workers": []}
    monkeypatch.undo()
    after = http.post("GetClusterSummary", json={})
    assert after.status_code == 200
    assert client_port(after) == port


def test_unmapped_state_error_is_still_a_connect_error(
    controller: ControllerServer, http: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`StateError` is the public base of request errors; one whose class is not in the
    interceptor's code table (the base itself, or a subclass added later) must still become a
    Connect error, not escape the interceptor (raw 500 and a dropped keep-alive connection)."""
    before = http.post("GetClusterSummary", json={})
    port = client_port(before)

    def odd(task_id: str) -> None:
        raise StateError(f"odd problem with {task_id}")

    monkeypatch.setattr(controller.state, "get_task", odd)
    response = http.post("GetTask", json={"taskId": "t1"})
    assert response.status_code in (400, 404, 409, 500), response.text
    assert response.json()["code"] != "unknown", response.text
    after = http.post("GetClusterSummary", json={})  # the same connection still works
    assert after.status_code == 200
    assert client_port(after) == port


def test_internal_error_with_sync_client(
    controller: ControllerServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken() -> int:
        raise RuntimeError("secret detail")

    monkeypatch.setattr(controller.state, "busy_slots", broken)
    with FrayControllerClientSync(controller.address) as client:
        with pytest.raises(ConnectError) as info:
            client.get_cluster_summary(pb.GetClusterSummaryRequest())
        assert info.value.code == Code.INTERNAL
        assert "secret detail" not in info.value.message
        monkeypatch.undo()
        assert client.get_cluster_summary(pb.GetClusterSummaryRequest()).controller_id


# ---------------------------------------------------------------------- the generated client


def test_sync_client_round_trip(controller: ControllerServer) -> None:
    with FrayControllerClientSync(controller.address) as client:
        submitted = client.submit_tasks(
            pb.SubmitTasksRequest(
                tasks=[pb.TaskSpec(function=b"fn", args=b"a", name="t", owner="me")]
            )
        )
        (task_id,) = submitted.task_ids
        task = client.get_task(pb.GetTaskRequest(task_id=task_id)).task
        assert task.state == pb.TASK_STATE_PENDING and task.name == "t"

        registered = client.register_worker(pb.RegisterWorkerRequest(worker_id="w1", slots=1))
        assert registered.controller_id == submitted.controller_id
        leased = client.lease_tasks(pb.LeaseTasksRequest(worker_id="w1", wait_ms=2000))
        (lt,) = leased.tasks
        assert (lt.task_id, lt.attempt, lt.function, lt.args) == (task_id, 1, b"fn", b"a")
        error = pb.TaskError(kind=pb.ERROR_KIND_USER, type="builtins.ValueError", message="bad")
        accepted = client.report_results(
            pb.ReportResultsRequest(
                worker_id="w1",
                results=[pb.TaskResult(task_id=task_id, attempt=1, error=error)],
            )
        )
        assert accepted.accepted == 1
        waited = client.wait_tasks(pb.WaitTasksRequest(task_ids=[task_id], wait_ms=2000))
        (done,) = waited.finished
        assert done.state == pb.TASK_STATE_FAILED
        assert done.error.kind == pb.ERROR_KIND_USER and done.error.message == "bad"
        watched = client.watch_finished(pb.WatchFinishedRequest(owner="me"))
        assert [t.task_id for t in watched.finished] == [task_id] and watched.next_cursor == 1

        with pytest.raises(ConnectError) as info:
            client.get_task(pb.GetTaskRequest(task_id="missing-task"))
        assert info.value.code == Code.NOT_FOUND and "missing-task" in info.value.message
        with pytest.raises(ConnectError) as info:
            client.submit_tasks(pb.SubmitTasksRequest(tasks=[pb.TaskSpec()]))
        assert info.value.code == Code.INVALID_ARGUMENT
        assert "function is empty" in info.value.message


def test_sync_client_objects(controller: ControllerServer) -> None:
    data = bytes(range(256)) * 1000
    with FrayControllerClientSync(controller.address) as client:
        put = client.put_object(pb.PutObjectRequest(data=data))
        assert put.size_bytes == len(data)
        assert client.get_object(pb.GetObjectRequest(object_id=put.object_id)).data == data
        summary = client.get_cluster_summary(pb.GetClusterSummaryRequest())
        assert summary.objects == 1 and summary.object_bytes == len(data)
        submitted = client.submit_tasks(
            pb.SubmitTasksRequest(tasks=[pb.TaskSpec(function=b"f", object_ids=[put.object_id])])
        )
        assert len(submitted.task_ids) == 1
        deleted = client.delete_objects(pb.DeleteObjectsRequest(object_ids=[put.object_id, "x"]))
        assert deleted.deleted == 1
        with pytest.raises(ConnectError) as info:
            client.get_object(pb.GetObjectRequest(object_id=put.object_id))
        assert info.value.code == Code.NOT_FOUND


# ---------------------------------------------------------------------- auth and binding


def test_token_auth() -> None:
    with serve(token="s3cret") as server:
        with http_client(server) as anonymous:
            response = anonymous.post("GetClusterSummary", json={})
            connect_error(response, 401, "unauthenticated")
            assert "s3cret" not in response.text
            connect_error(get(anonymous, "GetClusterSummary", {}), 401, "unauthenticated")
            connect_error(anonymous.post("SubmitTasks", json={"tasks": []}), 401, "unauthenticated")
        with http_client(server, token="wrong") as wrong:
            connect_error(wrong.post("GetClusterSummary", json={}), 401, "unauthenticated")
        with httpx.Client(
            base_url=server.address + SERVICE_PATH, headers={"authorization": "s3cret"}
        ) as no_scheme:
            connect_error(no_scheme.post("GetClusterSummary", json={}), 401, "unauthenticated")
        with http_client(server, token="s3cret") as right:
            assert call(right, "GetClusterSummary", {})["controllerId"]
            assert get(right, "ListWorkers", {}).status_code == 200
            assert submit(right, {"taskId": "t"}) == ["t"]
        with FrayControllerClientSync(server.address) as client:
            with pytest.raises(ConnectError) as info:
                client.get_task(pb.GetTaskRequest(task_id="t"))
            assert info.value.code == Code.UNAUTHENTICATED
            task = client.get_task(
                pb.GetTaskRequest(task_id="t"), headers={"authorization": "Bearer s3cret"}
            ).task
            assert task.state == pb.TASK_STATE_PENDING


def test_non_loopback_bind_requires_token() -> None:
    with pytest.raises(ValueError, match="token"):
        ControllerServer("0.0.0.0", 0)
    with pytest.raises(ValueError, match="token"):
        ControllerServer("0.0.0.0", 0, token="")
    server = ControllerServer("0.0.0.0", 0, token="t")  # allowed with a token (not started)
    server.stop()


# ---------------------------------------------------------------------- shutdown


def test_stop_ends_a_waiting_long_poll(
    controller: ControllerServer, http: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    (task_id,) = submit(http, {})

    def wait() -> httpx.Response:
        with http_client_for(http) as other:
            return other.post("WaitTasks", json={"taskIds": [task_id], "waitMs": 30_000})

    waits = PollWaits(monkeypatch, controller.service._finished)
    thread, out = run_in_thread(wait)
    waits.until(1)  # it reached the controller and waits
    assert thread.is_alive()
    start = time.monotonic()
    controller.stop()  # waits at most 10 s for the server: a poll left open would take them
    assert time.monotonic() - start < 8
    thread.join(20)
    assert not thread.is_alive()
    assert out["ended"] - start < 8, out["ended"] - start  # not its 30 s deadline
    if "error" in out:  # the connection was closed: acceptable, but it must not hang
        assert isinstance(out["error"], httpx.TransportError), out["error"]
    else:
        connect_error(out["result"], 503, "unavailable")
    controller.stop()  # a second stop (the fixture's teardown does it too) is harmless
    with http_client_for(http) as late, pytest.raises(httpx.TransportError):
        late.post("GetClusterSummary", json={})


def test_stop_ends_a_waiting_lease() -> None:
    server = ControllerServer("127.0.0.1", 0, heartbeat_timeout=60.0).start()
    try:
        with http_client(server) as http:
            register(http, "w1")
            before = last_heartbeat(http, "w1")

            def lease() -> httpx.Response:
                with http_client(server) as other:
                    return other.post("LeaseTasks", json={"workerId": "w1", "waitMs": 20_000})

            thread, out = run_in_thread(lease)
            wait_until_polling(http, "w1", before)
            assert thread.is_alive()
            start = time.monotonic()
            server.stop()  # waits at most 10 s for the server: a poll left open would take them
            thread.join(20)
            assert not thread.is_alive()
            assert out["ended"] - start < 8, out["ended"] - start  # not its 20 s deadline
            if "error" in out:
                assert isinstance(out["error"], httpx.TransportError), out["error"]
            else:
                connect_error(out["result"], 503, "unavailable")
    finally:
        server.stop()
        server.stop()


def test_watch_finished_from_another_controller_answers_at_once(
    controller: ControllerServer,
) -> None:
    """A cursor from before a restart (another controller_id) gets an immediate, empty answer
    naming the current controller and cursor 0, instead of being read against the new log."""
    client = FrayControllerClientSync(controller.address)
    try:
        started = time.monotonic()
        response = client.watch_finished(
            pb.WatchFinishedRequest(owner="o", cursor=5, wait_ms=30_000, controller_id="previous")
        )
        assert time.monotonic() - started < 10  # not its 30 s deadline
        assert response.controller_id == controller.service.controller_id
        assert response.next_cursor == 0 and not response.finished
    finally:
        client.close()


def test_json_answers_print_every_field_and_unknown_fields_are_refused(
    http: httpx.Client,
) -> None:
    summary = call(http, "GetClusterSummary", {})
    assert summary["queueDepth"] == 0 and summary["workers"] == 0  # zeros are printed
    assert list(summary) == sorted(summary)
    response = http.post("GetTask", json={"taskid": "t1"})  # a typo of taskId
    message = connect_error(response, 400, "invalid_argument")
    assert "taskid" in message and "taskId" in message


def test_a_lease_reports_hosted_actors_and_repairs_lost_messages(http: httpx.Client) -> None:
    register(http, "w1")
    spec = {"className": "Thing", "cls": "Y2xz", "args": "YXJncw=="}  # opaque bytes to it
    actor_id = call(http, "CreateActor", {"actor": spec})["actor"]["actorId"]
    first = call(http, "LeaseTasks", {"workerId": "w1"})
    assert [a["actorId"] for a in first["startActors"]] == [actor_id]
    # That answer was lost: the next lease lists no actor, so the order comes again.
    again = call(http, "LeaseTasks", {"workerId": "w1", "reportsActors": True})
    assert [a["actorId"] for a in again["startActors"]] == [actor_id]
    # Built, but its ReportActors was lost: the lease's READY stands for it.
    hosted = [
        {"actorId": actor_id, "incarnation": 1, "state": "ACTOR_STATE_READY"},
        {"actorId": "stranger", "incarnation": 1, "state": "ACTOR_STATE_READY"},
    ]
    body = {"workerId": "w1", "reportsActors": True, "hostedActors": hosted}
    answer = call(http, "LeaseTasks", body)
    assert answer.get("startActors", []) == [] and answer["stopActorIds"] == ["stranger"]
    assert call(http, "GetActor", {"actorId": actor_id})["actor"]["state"] == "ACTOR_STATE_READY"
    # A curl user without reportsActors changes nothing; a wrong state is invalid_argument.
    assert not any(call(http, "LeaseTasks", {"workerId": "w1"}).values())
    hosted[0]["state"] = "ACTOR_STATE_DEAD"
    message = connect_error(http.post("LeaseTasks", json=body), 400, "invalid_argument")
    assert actor_id in message and "CREATING or READY" in message


def test_abandoned_binary_lease_poll_takes_no_tasks(
    controller: ControllerServer, http: httpx.Client
) -> None:
    """A worker's parked LeaseTasks (binary, the plain path) whose connection closes (the worker
    died) is cancelled, as connectrpc cancels a JSON one: the next task is not leased to it."""
    register(http, "gone", slots=1)
    before = last_heartbeat(http, "gone")
    body = pb.LeaseTasksRequest(worker_id="gone", wait_ms=20_000).SerializeToString()
    port = int(controller.address.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(
            b"POST /fray.v1.FrayController/LeaseTasks HTTP/1.1\r\nhost: x\r\n"
            b"content-type: application/proto\r\nconnect-timeout-ms: 30000\r\n"
            b"content-length: %d\r\n\r\n" % len(body) + body
        )
        wait_until_polling(http, "gone", before)
        polls = controller.service._lease_polls
        deadline = time.monotonic() + 20
        while polls.parked != 1:  # parked (it found no work)
            assert time.monotonic() < deadline
            time.sleep(0.01)
    deadline = time.monotonic() + 10  # (its own wait is 20 s)
    while polls.parked:  # the hang-up cancels it
        assert time.monotonic() < deadline, "the abandoned poll is still parked"
        time.sleep(0.01)
    (task_id,) = submit(http, {})
    task = call(http, "GetTask", {"taskId": task_id})["task"]
    assert task["state"] == "TASK_STATE_PENDING"
    register(http, "alive", slots=1)  # a live worker's poll gets it
    leased = call(http, "LeaseTasks", {"workerId": "alive", "waitMs": 5000})["tasks"]
    assert [t["taskId"] for t in leased] == [task_id]
