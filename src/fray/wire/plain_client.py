"""A small Connect unary client over plain HTTP/1.1: fray's clients of ``http://`` servers.

connectrpc's sync client runs on pyqwest, whose Rust runtime hands every request to its own
threads: measured here, a trivial unary call costs ~180 µs of CPU and ~220 µs p50 through it,
against ~45 µs and ~110 µs over a plain socket (uvicorn answering both). A direct task or an
actor call is one such call, and the queued path makes several per batch, so fray calls
``http://`` controllers and workers with `PlainService` (the generated sync client's methods,
for every unary RPC of a service); ``https://`` ones keep connectrpc's client (its TLS and its
handshake diagnostics).

The wire format is the Connect protocol's unary binary form, the one `serving.PlainUnary`
answers: ``POST /<service>/<Method>`` with ``content-type: application/proto``, the
deadline in ``connect-timeout-ms``; a 200 answer is the response message, any other status a
JSON ``{"code", "message"}`` body. Errors are `ConnectError`s, as connectrpc's client raises
them: a refused connection is `unavailable` and says "Connection refused", a deadline
`deadline_exceeded`, a connection broken off `unavailable`.

Connections are kept alive and reused, one request at a time each; a pooled connection the
server closed meanwhile is noticed before it is reused, one idle for `_IDLE_SECONDS` is not
reused, and a forked child does not use its parent's.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar
from urllib.parse import urlsplit

from connectrpc.code import Code
from connectrpc.errors import ConnectError
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.message_factory import GetMessageClass

__all__ = ["NOT_SENT", "PlainService", "PlainUnaryClient", "snake_case"]

_M = TypeVar("_M", bound=Message)

# In the message of an error after which the server surely got nothing (besides a refused
# connection, which says "Connection refused" as pyqwest does).
NOT_SENT = "nothing was sent"
_MAX_IDLE = 32  # idle connections kept per client
# A connection idle this long is not reused (uvicorn closes them after 75 s: a request must
# not race that close).
_IDLE_SECONDS = 50.0
_HEADER_LIMIT = 64 * 1024
_RECV = 65536

# The code of an error answer without a Connect error body (the Connect protocol's mapping).
_STATUS_CODES = {
    400: Code.INTERNAL,
    401: Code.UNAUTHENTICATED,
    403: Code.PERMISSION_DENIED,
    404: Code.UNIMPLEMENTED,
    429: Code.UNAVAILABLE,
    502: Code.UNAVAILABLE,
    503: Code.UNAVAILABLE,
    504: Code.UNAVAILABLE,
}


class _Closed(Exception):
    """The server closed the connection (or broke it off) before a whole answer came."""


class PlainUnaryClient:
    """Unary Connect calls to one ``http://host:port`` server; thread-safe.

    `call(path, request, response_class, headers=, timeout_ms=)` sends `request` to `path`
    (``/fray.v1.FrayWorker/RunTask``) and returns the parsed answer, or raises `ConnectError`.
    Answers larger than `read_max_bytes` are refused (`resource_exhausted`).
    """

    def __init__(self, address: str, *, read_max_bytes: int) -> None:
        if address.startswith("https://"):
            raise ValueError(f"PlainUnaryClient speaks plain HTTP, not TLS ({address})")
        self.address = address
        try:  # a malformed address (e.g. a worker's, as it registered) fails each call
            parts = urlsplit(address)
            self._endpoint: tuple[str, int] | None = (parts.hostname or "", parts.port or 0)
            self._host_header = parts.netloc.encode()
        except ValueError:
            parts, self._endpoint, self._host_header = None, None, b""
        if parts is None or parts.scheme != "http" or not all(self._endpoint or ()):
            self._endpoint = None
        self._read_max_bytes = read_max_bytes
        self._idle: list[tuple[socket.socket, float]] = []  # (connection, idle since)
        self._lock = threading.Lock()
        self._closed = False
        self._pid = os.getpid()

    # ------------------------------------------------------------------ calls

    def call(
        self,
        path: str,
        request: Message,
        response_class: type[_M],
        *,
        headers: Mapping[str, str] | None = None,
        timeout_ms: int | None = None,
    ) -> _M:
        body = request.SerializeToString()
        head = [b"POST ", path.encode(), b" HTTP/1.1\r\nhost: ", self._host_header]
        head.append(b"\r\ncontent-type: application/proto\r\nconnect-protocol-version: 1\r\n")
        if timeout_ms:
            head.append(b"connect-timeout-ms: %d\r\n" % timeout_ms)
        for name, value in (headers or {}).items():
            head += (name.encode(), b": ", value.encode(), b"\r\n")
        head.append(b"content-length: %d\r\n\r\n" % len(body))
        head.append(body)
        deadline = None if not timeout_ms else time.monotonic() + timeout_ms / 1000
        status, content_type, data = self._exchange(b"".join(head), deadline)
        if status == 200 and content_type == "application/proto":
            try:
                return response_class.FromString(data)
            except DecodeError as exc:
                raise ConnectError(Code.INTERNAL, f"malformed answer from {path}: {exc}") from None
        raise _error(status, content_type, data)

    def close(self) -> None:
        """Close the idle connections (calls in flight close theirs when they end)."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for sock, _ in idle:
            sock.close()

    # ------------------------------------------------------------------ connections

    def _exchange(self, message: bytes, deadline: float | None) -> tuple[int, str, bytes]:
        sock = self._take()
        reused = sock is not None
        if sock is None:
            sock = self._connect(deadline)
        try:
            _set_deadline(sock, deadline)
            sock.sendall(message)
            status, content_type, data, keep = self._read_answer(sock, deadline)
        except TimeoutError:
            sock.close()
            raise ConnectError(Code.DEADLINE_EXCEEDED, "request timed out") from None
        except (_Closed, OSError) as exc:
            sock.close()
            again = " (a kept-alive connection)" if reused else ""
            raise ConnectError(
                Code.UNAVAILABLE, f"connection to {self.address} broken off{again}: {exc}"
            ) from None
        except BaseException:
            sock.close()
            raise
        if keep:
            self._give_back(sock)
        else:
            sock.close()
        return status, content_type, data

    def _connect(self, deadline: float | None) -> socket.socket:
        if self._endpoint is None:
            raise ConnectError(
                Code.UNAVAILABLE,
                f"cannot connect to {self.address!r}: not an http://host:port address ({NOT_SENT})",
            )
        timeout = None if deadline is None else max(0.001, deadline - time.monotonic())
        try:
            sock = socket.create_connection(self._endpoint, timeout=timeout)
        except TimeoutError:
            raise ConnectError(
                Code.DEADLINE_EXCEEDED, f"connecting to {self.address} timed out"
            ) from None
        except socket.gaierror as exc:
            host = self._endpoint[0]
            raise ConnectError(
                Code.UNAVAILABLE, f"cannot resolve host {host}: {exc.strerror or exc} ({NOT_SENT})"
            ) from None
        except OSError as exc:  # refused, unreachable, ...: the request did not leave
            reason = exc.strerror or str(exc)
            raise ConnectError(
                Code.UNAVAILABLE, f"cannot connect to {self.address}: {reason} ({NOT_SENT})"
            ) from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def _take(self) -> socket.socket | None:
        """A pooled connection the server has not closed, or None."""
        while True:
            with self._lock:
                if self._pid != os.getpid():  # a forked child: the connections are the parent's
                    self._idle, self._pid = [], os.getpid()
                if not self._idle:
                    return None
                sock, since = self._idle.pop()
            if time.monotonic() - since > _IDLE_SECONDS:
                sock.close()
                continue
            try:
                sock.setblocking(False)
                peeked = sock.recv(1, socket.MSG_PEEK)
            except BlockingIOError:  # nothing to read: still open
                return sock
            except OSError:
                peeked = b""
            sock.close()  # closed by the server (b""), or stray bytes: not usable
            del peeked

    def _give_back(self, sock: socket.socket) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < _MAX_IDLE and self._pid == os.getpid():
                self._idle.append((sock, time.monotonic()))
                return
        sock.close()

    # ------------------------------------------------------------------ answers

    def _read_answer(
        self, sock: socket.socket, deadline: float | None
    ) -> tuple[int, str, bytes, bool]:
        """Status, content type, body, and whether the connection may be reused."""
        buffer = bytearray()
        while (end := buffer.find(b"\r\n\r\n")) < 0:
            if len(buffer) > _HEADER_LIMIT:
                raise _Closed("answer headers too long")
            _set_deadline(sock, deadline)
            chunk = sock.recv(_RECV)
            if not chunk:
                # (the words `tls.plaintext_hint` looks for: a TLS port hangs up like this)
                raise _Closed("connection closed before message completed")
            buffer += chunk
        lines = bytes(buffer[:end]).split(b"\r\n")
        try:
            status = int(lines[0].split(b" ", 2)[1])
        except (IndexError, ValueError):
            raise _Closed(f"not an HTTP answer: {lines[0][:80]!r}") from None
        length, chunked, keep, content_type = None, False, True, ""
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name, value = name.strip().lower(), value.strip()
            if name == b"content-length":
                length = _number(value, 10)
            elif name == b"transfer-encoding":
                chunked = value.lower() == b"chunked"
            elif name == b"connection":
                keep = b"close" not in value.lower()
            elif name == b"content-type":
                content_type = value.decode("latin-1").split(";")[0].strip()
        rest = buffer[end + 4 :]
        if chunked:
            body = self._read_chunked(sock, rest, deadline)
        elif length is not None:
            if length > self._read_max_bytes:
                raise ConnectError(
                    Code.RESOURCE_EXHAUSTED,
                    f"answer of {length} bytes exceeds the limit of {self._read_max_bytes}",
                )
            body = self._read_exactly(sock, rest, length, deadline)
        else:  # the body runs to the end of the connection
            body, keep = self._read_to_end(sock, rest, deadline), False
        return status, content_type, body, keep

    def _read_exactly(
        self, sock: socket.socket, start: bytearray, length: int, deadline: float | None
    ) -> bytes:
        if len(start) >= length:
            return bytes(start[:length])
        body = bytearray(length)
        view = memoryview(body)
        view[: len(start)] = start
        got = len(start)
        while got < length:
            _set_deadline(sock, deadline)
            n = sock.recv_into(view[got:])
            if n == 0:
                raise _Closed(f"closed after {got} of {length} body bytes")
            got += n
        return bytes(body)

    def _read_chunked(self, sock: socket.socket, data: bytearray, deadline: float | None) -> bytes:
        body = bytearray()
        while True:
            while (end := data.find(b"\r\n")) < 0:
                data += self._recv(sock, deadline)
            size = _number(bytes(data[:end]).split(b";")[0], 16)
            del data[: end + 2]
            if size == 0:
                while not data.startswith(b"\r\n") and (end := data.find(b"\r\n\r\n")) < 0:
                    data += self._recv(sock, deadline)  # trailers, then the blank line
                return bytes(body)
            if len(body) + size > self._read_max_bytes:
                raise ConnectError(
                    Code.RESOURCE_EXHAUSTED,
                    f"answer exceeds the limit of {self._read_max_bytes} bytes",
                )
            while len(data) < size + 2:
                data += self._recv(sock, deadline)
            body += data[:size]
            del data[: size + 2]

    def _read_to_end(self, sock: socket.socket, data: bytearray, deadline: float | None) -> bytes:
        while True:
            _set_deadline(sock, deadline)
            chunk = sock.recv(_RECV)
            if not chunk:
                return bytes(data)
            data += chunk
            if len(data) > self._read_max_bytes:
                raise ConnectError(
                    Code.RESOURCE_EXHAUSTED,
                    f"answer exceeds the limit of {self._read_max_bytes} bytes",
                )

    @staticmethod
    def _recv(sock: socket.socket, deadline: float | None) -> bytes:
        _set_deadline(sock, deadline)
        chunk = sock.recv(_RECV)
        if not chunk:
            raise _Closed("closed in the middle of an answer")
        return chunk


class PlainService:
    """A service's unary RPCs as methods named like the generated sync client's
    (``list_workers(request, *, headers=None, timeout_ms=None)``), over one
    `PlainUnaryClient`; `timeout_ms` defaults to `default_timeout_ms` (None: no deadline)."""

    def __init__(
        self,
        address: str,
        service: ServiceDescriptor,
        *,
        read_max_bytes: int,
        default_timeout_ms: int | None = None,
    ) -> None:
        self.client = PlainUnaryClient(address, read_max_bytes=read_max_bytes)
        for method in service.methods:
            setattr(
                self, snake_case(method.name), self._method(service, method, default_timeout_ms)
            )

    def _method(
        self, service: ServiceDescriptor, method: MethodDescriptor, default_timeout_ms: int | None
    ) -> Callable[..., Any]:
        path = f"/{service.full_name}/{method.name}"
        response_class = GetMessageClass(method.output_type)
        call = self.client.call

        def unary(
            request: Message,
            *,
            headers: Mapping[str, str] | None = None,
            timeout_ms: int | None = None,
        ) -> Message:
            timeout = default_timeout_ms if timeout_ms is None else timeout_ms
            return call(path, request, response_class, headers=headers, timeout_ms=timeout)

        unary.__name__ = snake_case(method.name)
        return unary

    def close(self) -> None:
        self.client.close()


def snake_case(name: str) -> str:
    """``ListWorkers`` -> ``list_workers``: a method's name in generated Python code."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _number(text: bytes, base: int) -> int:
    """A length in an answer's framing; a malformed one breaks the answer off."""
    try:
        value = int(text, base)
    except ValueError:
        value = -1
    if value < 0:
        raise _Closed(f"malformed length {text[:40]!r} in the answer")
    return value


def _set_deadline(sock: socket.socket, deadline: float | None) -> None:
    if deadline is None:
        sock.settimeout(None)
        return
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    sock.settimeout(left)


def _error(status: int, content_type: str, data: bytes) -> ConnectError:
    """The ConnectError an error answer stands for."""
    if content_type == "application/json":
        try:
            body = json.loads(data)
            code = Code(body["code"])
            return ConnectError(code, str(body.get("message", "")))
        except (ValueError, KeyError, TypeError):
            pass
    code = _STATUS_CODES.get(status, Code.UNKNOWN)
    if status == 200:  # a 200 that is not a protobuf answer
        return ConnectError(Code.INTERNAL, f"unexpected answer of type {content_type!r}")
    return ConnectError(code, f"HTTP {status}")
