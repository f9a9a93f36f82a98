"""Bad input, as a new user would send it, to every RPC of both services: no answer of the
server's own making.

A real controller (in this process, so that its log can be read) and a real worker process, on
loopback (port 0). Property-based (hypothesis, derandomized, no example database) over every
method of `fray.v1.FrayController` and `fray.v1.FrayWorker`, taken from the generated
descriptors: JSON built from the request's own fields with values of the right and of the wrong
kinds (lone surrogates, huge numbers, wrong nesting), random JSON, random bytes, and binary
protobuf (valid, truncated, random), as POST (both content types) and, for the read-only
methods, as GET. Every answer must be a success or a Connect error with a 4xx status, on a
connection the server keeps open; the server must then answer a good request; and nothing
may reach the logs as an error or a traceback.

Long polls could make a fuzzed request wait: `wait_ms` fields only ever get small valid values
(or invalid ones), so that the run stays short.
"""

from __future__ import annotations

import base64
import json
import logging
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from fray_fixtures import list_workers, stop_process, wait_for
from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fray.common.processes import start_python
from fray.controller.server import ControllerServer
from fray.wire.pb import controller_pb2 as pb
from fray.wire.pb import worker_pb2 as wpb

WORKER_ID = "fuzz-target-worker-7c1e0b"
SERVICES = {
    "controller": pb.DESCRIPTOR.services_by_name["FrayController"],
    "worker": wpb.DESCRIPTOR.services_by_name["FrayWorker"],
}
CONNECT_CODES = {
    "canceled", "unknown", "invalid_argument", "deadline_exceeded", "not_found", "already_exists",
    "permission_denied", "resource_exhausted", "failed_precondition", "aborted", "out_of_range",
    "unimplemented", "internal", "unavailable", "data_loss", "unauthenticated",
}  # fmt: skip
EXAMPLES = 500  # per test: 4 tests, 2,000 fuzzed requests in all


# ---------------------------------------------------------------------- servers


class LogRecords(logging.Handler):
    """Keeps the records of WARNING and above (the controller runs in this process)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@dataclass
class Target:
    url: str  # where the service is served
    http: httpx.Client  # one keep-alive connection: a dropped one would show


@dataclass
class Cluster:
    controller: Target
    worker: Target
    controller_log: LogRecords
    worker_log: Path


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    records = LogRecords()
    watched = [logging.getLogger(), logging.getLogger("uvicorn")]  # uvicorn's do not propagate
    for logger in watched:
        logger.addHandler(records)
    server = ControllerServer("127.0.0.1", 0, heartbeat_timeout=60).start()
    log_dir = tempfile.TemporaryDirectory()
    worker_log = Path(log_dir.name, "worker.log")
    process: subprocess.Popen[Any] | None = None
    clients: list[httpx.Client] = []
    try:
        with worker_log.open("w") as log:
            process = start_python(
                *("-m", "fray", "worker", "--controller", server.address, "--port", "0"),
                *("--concurrency", "1", "--worker-id", WORKER_ID),
                stderr=log,
            )
        wait_for(
            lambda: WORKER_ID in list_workers(server.address) or process.poll() is not None,
            30,
            "the worker to register",
        )
        assert process.poll() is None, worker_log.read_text()
        worker_url = list_workers(server.address)[WORKER_ID].address
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        clients = [httpx.Client(timeout=30, limits=limits) for _ in range(2)]
        yield Cluster(
            Target(server.address, clients[0]), Target(worker_url, clients[1]), records, worker_log
        )
    finally:
        for client in clients:
            client.close()
        if process is not None:
            stop_process(process)
        server.stop()
        for logger in watched:
            logger.removeHandler(records)
        log_dir.cleanup()


# ---------------------------------------------------------------------- strategies

# Text with lone surrogates too (hypothesis leaves them out of st.text()): JSON can carry them
# as escapes, and Python's json module reads them back as they are. High surrogates only, so
# that two in a row never make a valid pair.
CHARS = st.characters() | st.integers(0xD800, 0xDBFF).map(chr)
TEXT = st.lists(CHARS, max_size=12).map("".join)
LONE_SURROGATE = st.tuples(st.text(max_size=4), st.integers(0xD800, 0xDFFF), st.text(max_size=4))
LONE_SURROGATE_TEXT = LONE_SURROGATE.map(lambda t: t[0] + chr(t[1]) + t[2])
NUMBERS = st.integers(-(2**70), 2**70) | st.floats(allow_nan=True, allow_infinity=True)
ANY_JSON = st.recursive(
    st.none() | st.booleans() | NUMBERS | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=12,
)
# Valid values: a few ids that repeat (so that later requests find what earlier ones made).
IDS = st.sampled_from(["", "t1", "t2", "a", "owner-1"]) | st.text(max_size=8)
# Long polls must not make a fuzzed request wait: small valid waits, or invalid ones.
WAITS = st.integers(0, 20) | st.sampled_from([-1, 2**32, 2.5, "x", "15", None, [], {}])
TIMESTAMPS = st.sampled_from(["1970-01-01T00:00:00Z", "2026-11-25T22:02:58.084325888Z", "x"])
_INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}


def _is_wait(field: FieldDescriptor) -> bool:
    return "wait" in field.name


def single_value(field: FieldDescriptor, depth: int, strict: bool) -> st.SearchStrategy[Any]:
    """A value of the field's kind (one element of a repeated field): `strict`, one its type
    accepts (in range, valid text and base64); else also ones it does not."""
    kind = field.type
    if _is_wait(field):
        return WAITS
    if kind == FieldDescriptor.TYPE_MESSAGE:
        if field.message_type.full_name == "google.protobuf.Timestamp":
            return TIMESTAMPS
        return message_json(field.message_type, depth + 1, strict)
    if kind == FieldDescriptor.TYPE_STRING:
        return IDS if strict else IDS | TEXT
    if kind == FieldDescriptor.TYPE_BYTES:
        valid = st.binary(max_size=24).map(lambda b: base64.b64encode(b).decode())
        return valid if strict else valid | TEXT
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind == FieldDescriptor.TYPE_ENUM:
        names = st.sampled_from([v.name for v in field.enum_type.values])
        return names if strict else names | st.integers(-3, 12)
    if kind in _INT_RANGES:
        low, high = _INT_RANGES[kind]
        valid = st.integers(max(low, 0), 10) | st.integers(max(low, 0), 10) | st.integers(low, high)
        return valid if strict else valid | st.integers(-(2**70), 2**70) | st.just("12")
    finite = st.floats(0, 100) | st.floats(allow_nan=False, allow_infinity=False)  # double, float
    return finite if strict else NUMBERS | st.sampled_from(["NaN", "Infinity", "x", "1e400"])


def field_value(field: FieldDescriptor, depth: int, strict: bool) -> st.SearchStrategy[Any]:
    """What a fuzzed request puts in a field: its kind (a list for repeated fields, an object
    for maps) or, unless `strict`, sometimes anything at all."""
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        value_field = field.message_type.fields_by_name["value"]
        typed: st.SearchStrategy[Any] = st.dictionaries(
            IDS, single_value(value_field, depth, strict), max_size=3
        )
    elif field.is_repeated:
        typed = st.lists(single_value(field, depth, strict), max_size=3)
    else:
        typed = single_value(field, depth, strict)
    if strict or _is_wait(field):
        return typed
    return typed | typed | ANY_JSON


def message_json(
    descriptor: Descriptor, depth: int = 0, strict: bool = False
) -> st.SearchStrategy[Any]:
    """A JSON object shaped like the message: some or (`strict`, half the time) all of its
    fields, by their JSON names, and, unless `strict`, sometimes an unknown one; deeper
    messages are left empty."""
    if depth > 2:
        return st.just({})
    fields = {field.json_name: field_value(field, depth, strict) for field in descriptor.fields}
    shaped = st.fixed_dictionaries({}, optional=fields)
    if strict:
        return shaped | st.fixed_dictionaries(fields)
    unknown = st.dictionaries(TEXT, ANY_JSON, min_size=1, max_size=1)
    return shaped | st.tuples(shaped, unknown).map(lambda pair: {**pair[1], **pair[0]})


# Values of the wrong kind, for one field of an otherwise valid request.
WRONG = (
    LONE_SURROGATE_TEXT
    | TEXT
    | ANY_JSON
    | st.sampled_from(["", 2**64, -1, 1e308, "NaN", [], {}, None, True, [None], [[]]])
)


def one_wrong(descriptor: Descriptor) -> st.SearchStrategy[Any]:
    """A valid request (`message_json(strict=True)`) with one field of the wrong kind."""
    names = [field.json_name for field in descriptor.fields]
    if not names:
        return st.just({})
    return st.tuples(message_json(descriptor, strict=True), st.sampled_from(names), WRONG).map(
        lambda t: {**t[0], t[1]: t[2]}
    )


def _dumps(value: Any) -> bytes:
    return json.dumps(value).encode()  # lone surrogates become \\udXXX escapes


def json_body(method: MethodDescriptor) -> st.SearchStrategy[bytes]:
    return (
        message_json(method.input_type, strict=True).map(_dumps)
        | one_wrong(method.input_type).map(_dumps)
        | one_wrong(method.input_type).map(_dumps)
        | one_wrong(method.input_type).map(_dumps)
        | message_json(method.input_type).map(_dumps)
        | ANY_JSON.map(_dumps)
        | st.binary(max_size=64)
        | TEXT.map(lambda t: t.encode("utf-8", "surrogatepass"))
    )


def _binary(method: MethodDescriptor, value: Any) -> bytes | None:
    """The request `value` (JSON) as binary protobuf, when it is a valid request."""
    message = message_factory.GetMessageClass(method.input_type)()
    try:
        json_format.Parse(json.dumps(value), message)
        return message.SerializeToString()
    except Exception:
        return None


def binary_body(method: MethodDescriptor) -> st.SearchStrategy[bytes]:
    valid = message_json(method.input_type, strict=True).map(lambda v: _binary(method, v) or b"")
    return (
        valid
        | valid
        | st.tuples(valid, st.integers(0, 40)).map(lambda p: p[0][: p[1]])  # truncated
        | st.tuples(valid, st.binary(min_size=1, max_size=8)).map(lambda p: p[0] + p[1])
        | st.binary(max_size=128)
    )


@dataclass
class Request:
    method: MethodDescriptor
    http_method: str  # POST, or GET (read-only methods, JSON in the URL)
    content_type: str
    body: bytes

    def __repr__(self) -> str:  # what hypothesis prints for a failing example
        return f"{self.http_method} {self.method.name} ({self.content_type}) {self.body[:300]!r}"


@st.composite
def requests(draw: st.DrawFn, service: str, encoding: str) -> Request:
    method = draw(st.sampled_from(list(SERVICES[service].methods)))
    if encoding == "proto":
        return Request(method, "POST", "application/proto", draw(binary_body(method)))
    body = draw(json_body(method))
    read_only = method.GetOptions().idempotency_level == method.GetOptions().NO_SIDE_EFFECTS
    if read_only and draw(st.booleans()):
        return Request(method, "GET", "application/json", body)
    return Request(method, "POST", "application/json", body)


# ---------------------------------------------------------------------- checks


def send(target: Target, request: Request) -> httpx.Response:
    path = f"{target.url}/{request.method.containing_service.full_name}/{request.method.name}"
    if request.http_method == "GET":
        message = quote(request.body.decode("utf-8", "surrogateescape"), errors="surrogateescape")
        return target.http.get(f"{path}?encoding=json&message={message}")
    headers = {"content-type": request.content_type}
    return target.http.post(path, content=request.body, headers=headers)


def check_answer(response: httpx.Response, request: Request) -> None:
    """A success or a Connect error with a 4xx status, and the connection kept."""
    status, text = response.status_code, response.text[:500]
    assert status < 500, f"{request!r} -> {status} {text}"
    assert response.headers.get("connection", "").lower() != "close", f"{request!r} dropped"
    if status == 200:
        output = message_factory.GetMessageClass(request.method.output_type)()
        if response.headers["content-type"].startswith("application/json"):
            json_format.Parse(response.content, output)
        else:
            output.ParseFromString(response.content)
        return
    assert response.headers["content-type"].startswith("application/json"), (request, text)
    error = response.json()
    assert error["code"] in CONNECT_CODES, (request, text)
    assert isinstance(error["message"], str), (request, text)


def check_still_serving(cluster: Cluster, service: str) -> None:
    if service == "controller":
        target = cluster.controller
        response = target.http.post(
            f"{target.url}/fray.v1.FrayController/GetClusterSummary",
            content=b"{}",
            headers={"content-type": "application/json"},
        )
    else:
        response = cluster.worker.http.get(f"{cluster.worker.url}/healthz")
    assert response.status_code == 200, response.text


def check_logs(cluster: Cluster) -> None:
    """No errors, no tracebacks: not in the controller's log, not in the worker's."""
    bad = [
        f"{r.name} {r.levelname}: {r.getMessage()}"
        for r in cluster.controller_log.records
        if r.levelno >= logging.ERROR or r.exc_info
    ]
    assert not bad, "\n".join(bad)
    worker_log = cluster.worker_log.read_text()
    for needle in ("Traceback", " ERROR ", "Exception in ASGI application"):
        assert needle not in worker_log, worker_log[-3000:]


FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# ---------------------------------------------------------------------- the fuzz tests


@pytest.mark.parametrize("service", ["controller", "worker"])
@pytest.mark.parametrize("encoding", ["json", "proto"])
def test_bad_input_gets_a_4xx_connect_error_and_the_server_keeps_serving(
    cluster: Cluster, service: str, encoding: str
) -> None:
    target = getattr(cluster, service)

    @FUZZ
    @given(request=requests(service, encoding))
    def fuzz(request: Request) -> None:
        check_answer(send(target, request), request)
        check_still_serving(cluster, service)

    fuzz()
    check_logs(cluster)


def test_the_cluster_still_runs_tasks_after_the_fuzzing(cluster: Cluster) -> None:
    from fray.client.context import FrayContext

    for direct in (True, False):
        ctx = FrayContext(cluster.controller.url, retry_timeout=10, direct=direct)
        try:
            assert ctx.get(ctx.run(divmod, 7, 2), timeout=60) == (3, 1)
        finally:
            ctx.close()
    check_logs(cluster)


# ---------------------------------------------------------------------- the cases

# Each takes a JSON string where a list of messages or ids belongs.
SURROGATE_CASES = [
    ("controller", "FrayController/SubmitTasks", "tasks"),
    ("controller", "FrayController/WaitTasks", "taskIds"),
    ("controller", "FrayController/CancelTasks", "taskIds"),
    ("controller", "FrayController/DeleteObjects", "objectIds"),
    ("controller", "FrayController/LeaseTasks", "heldTaskIds"),
    ("controller", "FrayController/ReportResults", "results"),
    ("controller", "FrayController/ReportActors", "updates"),
    ("worker", "FrayWorker/CallActor", "calls"),
]


@pytest.mark.parametrize(("service", "path", "field"), SURROGATE_CASES)
def test_a_lone_surrogate_is_invalid_argument_not_500(
    cluster: Cluster, service: str, path: str, field: str
) -> None:
    target: Target = getattr(cluster, service)
    body = b'{"' + field.encode() + b'": "\\ud800"}'  # as curl -d sends it
    response = target.http.post(
        f"{target.url}/fray.v1.{path}", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "invalid_argument"
    assert "\\ud800" in response.json()["message"]  # escaped, so that it can be sent
    assert response.headers.get("connection", "").lower() != "close"
    check_still_serving(cluster, service)
    check_logs(cluster)


@pytest.mark.parametrize("service", ["controller", "worker"])
@pytest.mark.parametrize(
    "content_type", ["application/grpc", "application/grpc+proto", "application/grpc-web+json"]
)
def test_grpc_is_refused_with_415_and_no_traceback(
    cluster: Cluster, service: str, content_type: str
) -> None:
    target: Target = getattr(cluster, service)
    path = "FrayController/SubmitTasks" if service == "controller" else "FrayWorker/RunTask"
    for _ in range(3):  # a flood of them writes nothing to the log
        response = target.http.post(
            f"{target.url}/fray.v1.{path}",
            content=b"\x00\x00\x00\x00\x00",
            headers={"content-type": content_type},
        )
        assert response.status_code == 415, response.text
        assert response.json()["code"] == "unimplemented"
        assert "Connect protocol" in response.json()["message"]
    check_still_serving(cluster, service)
    check_logs(cluster)
    assert not [r for r in cluster.controller_log.records if "grpc" in r.getMessage().lower()]


@pytest.mark.parametrize("service", ["controller", "worker"])
def test_a_websocket_upgrade_is_turned_down_without_a_traceback(
    cluster: Cluster, service: str
) -> None:
    target: Target = getattr(cluster, service)
    upgrade = {
        "connection": "Upgrade",
        "upgrade": "websocket",
        "sec-websocket-version": "13",
        "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
    }
    with httpx.Client(timeout=30) as http:  # the server closes this connection
        response = http.get(f"{target.url}/fray.v1.FrayController/GetTask", headers=upgrade)
    # uvicorn runs with ws="none": the upgrade is a plain GET (here without its message), or, with
    # a WebSocket library, the edge refuses it (403); either way a 4xx, never a traceback.
    assert response.status_code in (403, 404, 415)  # 404: the worker serves no GetTask
    check_still_serving(cluster, service)
    check_logs(cluster)
