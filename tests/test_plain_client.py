"""fray.wire.plain_client: the Connect unary client over plain HTTP/1.1 that fray uses for
``http://`` controllers and workers. The rest of the suite runs every RPC through it; these
tests cover its own edges against small socket servers (answers uvicorn never gives) and a real
controller (the generated clients' method names, errors as connectrpc raises them)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from connectrpc.code import Code
from connectrpc.errors import ConnectError

from fray.client.connections import never_connected
from fray.controller.server import ControllerServer
from fray.wire import plain_client
from fray.wire.pb import controller_pb2 as pb
from fray.wire.pb import worker_pb2 as wpb
from fray.wire.pb.controller_connect import FrayControllerClientSync
from fray.wire.pb.worker_connect import FrayWorkerClientSync
from fray.wire.plain_client import PlainService, PlainUnaryClient, snake_case

pytestmark = pytest.mark.timeout(60)

PATH = "/fray.v1.FrayController/GetTask"


class RawServer:
    """A loopback socket server answering each request with `answer(request_bytes)` (raw
    bytes; None: close without answering); `close_after` closes the connection after each
    answer."""

    def __init__(self, answer: Callable[[bytes], bytes | None], close_after: bool = False):
        self.answer = answer
        self.close_after = close_after
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.requests: list[bytes] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while True:
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                head, _, rest = data.partition(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                while len(rest) < length:
                    rest += conn.recv(65536)
                self.requests.append(head + b"\r\n\r\n" + rest[:length])
                data = rest[length:]
                reply = self.answer(head)
                if reply is None:
                    return
                conn.sendall(reply)
                if self.close_after:
                    return

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def servers() -> Iterator[list[RawServer]]:
    made: list[RawServer] = []
    yield made
    for server in made:
        server.close()


def serve(made: list[RawServer], answer: Callable[[bytes], bytes | None], **kw: bool) -> RawServer:
    server = RawServer(answer, **kw)
    made.append(server)
    return server


def ok(message: bytes, extra: bytes = b"") -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/proto\r\n"
        + extra
        + b"content-length: %d\r\n\r\n" % len(message)
        + message
    )


def task_message() -> bytes:
    return pb.GetTaskResponse(task=pb.Task(task_id="t1")).SerializeToString()


def test_answer_parsed_and_connection_reused(servers: list[RawServer]) -> None:
    server = serve(servers, lambda _: ok(task_message()))
    client = PlainUnaryClient(server.address, read_max_bytes=1 << 20)
    for _ in range(3):
        answer = client.call(
            PATH,
            pb.GetTaskRequest(task_id="t1"),
            pb.GetTaskResponse,
            headers={"authorization": "Bearer x"},
            timeout_ms=5000,
        )
        assert answer.task.task_id == "t1"
    assert server.connections == 1  # kept alive
    head = server.requests[0].split(b"\r\n\r\n")[0].lower()
    assert head.startswith(b"post /fray.v1.fraycontroller/gettask http/1.1")
    for line in (b"content-type: application/proto", b"connect-protocol-version: 1"):
        assert line in head
    assert b"connect-timeout-ms: 5000" in head and b"authorization: bearer x" in head
    assert pb.GetTaskRequest.FromString(server.requests[0].split(b"\r\n\r\n", 1)[1]).task_id == "t1"
    client.close()


def test_server_closing_between_calls_is_noticed(servers: list[RawServer]) -> None:
    """A pooled connection the server closed (its idle timeout) is not reused."""
    server = serve(servers, lambda _: ok(task_message()), close_after=True)
    client = PlainUnaryClient(server.address, read_max_bytes=1 << 20)
    for _ in range(3):
        client.call(PATH, pb.GetTaskRequest(), pb.GetTaskResponse, timeout_ms=5000)
        time.sleep(0.05)  # the close reaches us
    assert server.connections == 3


def test_connection_close_and_chunked_answers(servers: list[RawServer]) -> None:
    data = task_message()
    chunked = (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/proto\r\ntransfer-encoding: chunked\r\n"
        b"connection: close\r\n\r\n"
        + b"%x\r\n" % 3
        + data[:3]
        + b"\r\n"
        + b"%x\r\n" % (len(data) - 3)
        + data[3:]
        + b"\r\n0\r\n\r\n"
    )
    server = serve(servers, lambda _: chunked)
    client = PlainUnaryClient(server.address, read_max_bytes=1 << 20)
    for _ in range(2):
        answer = client.call(PATH, pb.GetTaskRequest(), pb.GetTaskResponse, timeout_ms=5000)
        assert answer.task.task_id == "t1"
    assert server.connections == 2  # "connection: close" was obeyed


def test_error_answers_become_connect_errors(servers: list[RawServer]) -> None:
    body = b'{"code": "not_found", "message": "no task t9"}'
    json_error = (
        b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n" % len(body) + body
    )
    bare = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n"
    wrong_type = b"HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: 2\r\n\r\nhi"
    cases = [
        (json_error, Code.NOT_FOUND, "no task t9"),
        (bare, Code.UNAVAILABLE, "HTTP 503"),
        (wrong_type, Code.INTERNAL, "text/html"),
        (ok(b"\xff\xff\xff"), Code.INTERNAL, "malformed answer"),
    ]
    for reply, code, text in cases:
        server = serve(servers, lambda _, r=reply: r)  # type: ignore[misc]
        client = PlainUnaryClient(server.address, read_max_bytes=1 << 20)
        with pytest.raises(ConnectError) as caught:
            client.call(PATH, pb.GetTaskRequest(), pb.GetTaskResponse, timeout_ms=5000)
        assert caught.value.code == code and text in caught.value.message


def test_malformed_framing_is_unavailable_not_a_crash(servers: list[RawServer]) -> None:
    bad_length = b"HTTP/1.1 200 OK\r\ncontent-type: application/proto\r\ncontent-length: x\r\n\r\n"
    bad_chunk = (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/proto\r\n"
        b"transfer-encoding: chunked\r\n\r\nzz\r\n"
    )
    for reply in (bad_length, bad_chunk):
        server = serve(servers, lambda _, r=reply: r)  # type: ignore[misc]
        client = PlainUnaryClient(server.address, read_max_bytes=1 << 20)
        with pytest.raises(ConnectError) as caught:
            client.call(PATH, pb.GetTaskRequest(), pb.GetTaskResponse, timeout_ms=5000)
        assert caught.value.code == Code.UNAVAILABLE and "malformed length" in caught.value.message


def test_long_idle_connections_are_not_reused(
    servers: list[RawServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(plain_client, "_IDLE_SECONDS", 0.0)
    server = serve(servers, lambda _: ok(task_message()))
    client = PlainUnaryClient(server.address, read_max_bytes=1 << 20)
    for _ in range(3):
        client.call(PATH, pb.GetTaskRequest(), pb.GetTaskResponse, timeout_ms=5000)
    assert server.connections == 3


def test_oversized_answer_refused(servers: list[RawServer]) -> None:
    server = serve(servers, lambda _: ok(b"\x00" * 2000))
    client = PlainUnaryClient(server.address, read_max_bytes=1000)
    with pytest.raises(ConnectError) as caught:
        client.call(PATH, pb.GetTaskRequest(), pb.GetTaskResponse, timeout_ms=5000)
    assert caught.value.code == Code.RESOURCE_EXHAUSTED


def test_transport_failures(servers: list[RawServer]) -> None:
    # Nobody listening: unavailable, saying "Connection refused" (nothing reached the server).
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    client = PlainUnaryClient(f"http://127.0.0.1:{free}", read_max_bytes=1 << 20)
    with pytest.raises(ConnectError) as caught:
        client.call(PATH, pb.GetTaskRequest(), pb.GetTaskResponse, timeout_ms=2000)
    assert caught.value.code == Code.UNAVAILABLE and "Connection refused" in caught.value.message
    assert never_connected(caught.value)

    # Hung up without answering (what a TLS port does to plain HTTP).
    server = serve(servers, lambda _: None)
    client = PlainUnaryClient(server.address, read_max_bytes=1 << 20)
    with pytest.raises(ConnectError) as caught:
        client.call(PATH, pb.GetTaskRequest(), pb.GetTaskResponse, timeout_ms=2000)
    assert caught.value.code == Code.UNAVAILABLE
    assert "connection closed before message completed" in caught.value.message

    # No answer in time: deadline_exceeded, within the deadline (not a hang).
    gate = threading.Event()
    server = serve(servers, lambda _: (gate.wait(10), ok(b""))[1])
    client = PlainUnaryClient(server.address, read_max_bytes=1 << 20)
    started = time.monotonic()
    with pytest.raises(ConnectError) as caught:
        client.call(PATH, pb.GetTaskRequest(), pb.GetTaskResponse, timeout_ms=300)
    assert caught.value.code == Code.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 3
    gate.set()

    client = PlainUnaryClient("http://no-such-host.invalid:80", read_max_bytes=1 << 20)
    with pytest.raises(ConnectError) as caught:
        client.call(PATH, pb.GetTaskRequest(), pb.GetTaskResponse, timeout_ms=5000)
    assert caught.value.code == Code.UNAVAILABLE
    assert "cannot resolve host no-such-host.invalid" in caught.value.message
    assert never_connected(caught.value)


def test_malformed_addresses_fail_each_call_as_never_sent() -> None:
    """A worker may register any address: calling it fails like a refused connection."""
    with pytest.raises(ValueError):
        PlainUnaryClient("https://127.0.0.1:1", read_max_bytes=1)  # TLS is connectrpc's
    for address in ("127.0.0.1:1", "http://127.0.0.1", "http://[::1", "\u00a3\udfff", ""):
        client = PlainUnaryClient(address, read_max_bytes=1)
        with pytest.raises(ConnectError) as caught:
            client.call(PATH, pb.GetTaskRequest(), pb.GetTaskResponse, timeout_ms=1000)
        assert caught.value.code == Code.UNAVAILABLE
        assert never_connected(caught.value)


def test_services_have_the_generated_clients_methods() -> None:
    for descriptor, generated in (
        (pb.DESCRIPTOR.services_by_name["FrayController"], FrayControllerClientSync),
        (wpb.DESCRIPTOR.services_by_name["FrayWorker"], FrayWorkerClientSync),
    ):
        plain = PlainService("http://127.0.0.1:1", descriptor, read_max_bytes=1)
        names = {snake_case(m.name) for m in descriptor.methods}
        assert names == {n for n in vars(generated) if not n.startswith("_")}
        assert all(callable(getattr(plain, n)) for n in names)


def test_against_a_real_controller(controller: ControllerServer) -> None:
    """Every error path connectrpc would give: an unknown task is not_found, a malformed
    request invalid_argument; and the default timeout applies."""
    service = PlainService(
        controller.address,
        pb.DESCRIPTOR.services_by_name["FrayController"],
        read_max_bytes=1 << 20,
        default_timeout_ms=5000,
    )
    summary = service.get_cluster_summary(pb.GetClusterSummaryRequest())  # type: ignore[attr-defined]
    assert isinstance(summary, pb.GetClusterSummaryResponse)
    with pytest.raises(ConnectError) as caught:
        service.get_task(pb.GetTaskRequest(task_id="nope"))  # type: ignore[attr-defined]
    assert caught.value.code == Code.NOT_FOUND
    service.close()
