"""fray's edge: what every HTTP request to a controller or a worker passes before connectrpc (or
the worker's plain fast path) reads it.

Bad input must get a Connect error with a 4xx status: never a 500, a dropped connection or a
traceback in the log. connectrpc answers most of it well (with fray's JSON codec and error
mapping, `fray.wire.serving`); `Edge` answers the rest first:

- gRPC and gRPC-Web (``Content-Type: application/grpc...``): fray serves the Connect protocol
  only (uvicorn has no HTTP/2, so gRPC cannot work anyway); 415, where connectrpc logged a
  traceback for every such request; WebSocket upgrades get a 403 (connectrpc raised: 500 and
  a traceback);
- gzip bodies (connectrpc clients send them by default) are decompressed here, up to the size
  limit, and handed on uncompressed, so that the limits below hold for what a small compressed
  body expands to; other encodings are refused (415); a GET message may be gzip (connectrpc
  clients compress them by default; the URL bounds its size);
- request headers or a URL query that are not UTF-8: 400 (connectrpc answered 500);
- a body larger than the server's limit (``--max-request-bytes``), told by its Content-Length
  before it is read or counted while it is read: 429 `resource_exhausted`, naming the limit;
- a request of more than `MAX_REQUEST_ELEMENTS` fields and values: a message of many tiny entries
  takes ~60 times its size once parsed (429 `resource_exhausted`).

(A GET carries its message in the URL, which uvicorn bounds itself: it answers a request line
and headers over ~64 KiB with a plain 400 before any app sees them.)

It is also the backstop: an exception that escapes the app is logged once (with its traceback
only when no answer was sent yet, which is then `internal`) and never reaches uvicorn, which
would log it again and drop the keep-alive connection.
"""

from __future__ import annotations

import logging
import uuid
import zlib
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from typing import Any
from urllib.parse import parse_qs

from connectrpc.code import Code
from google.protobuf.descriptor import Descriptor, FieldDescriptor, ServiceDescriptor

from fray.wire import faults
from fray.wire.auth import TokenCheck
from fray.wire.limits import MAX_REQUEST_ELEMENTS
from fray.wire.serving import send_error

logger = logging.getLogger(__name__)

_Message = MutableMapping[str, Any]
_Receive = Callable[[], Awaitable[_Message]]
_Send = Callable[[_Message], Awaitable[None]]
_App = Callable[[MutableMapping[str, Any], _Receive, _Send], Awaitable[None]]

_GRPC = b"application/grpc"  # also application/grpc+proto, application/grpc-web...
_IDENTITY = (b"", b"identity")
_BODY_HEADERS = (b"content-encoding", b"content-length", b"transfer-encoding")
_ACCEPT_POST = (b"accept-post", b"application/json, application/proto")


class Refusal(Exception):
    """A request the edge answers itself: a Connect error, with an HTTP status of its own when
    the Connect code's does not fit (415)."""

    def __init__(
        self,
        code: Code,
        message: str,
        status: int | None = None,
        headers: tuple[tuple[bytes, bytes], ...] = (),
    ) -> None:
        super().__init__(message)
        self.code, self.message, self.status, self.headers = code, message, status, headers


def request_types(services: Iterable[ServiceDescriptor]) -> dict[str, Descriptor]:
    """The request message of every method of `services`, by path (``/pkg.Service/Method``)."""
    return {
        f"/{service.full_name}/{method.name}": method.input_type
        for service in services
        for method in service.methods
    }


class Edge:
    """An ASGI app in front of `app` that answers bad requests itself (see the module doc).

    `requests` gives each method's request type (`request_types`), for counting the fields of
    binary bodies; `limit_flag` is how users raise `max_request_bytes` (e.g. ``fray controller
    --max-request-bytes``), named in the refusal.
    """

    def __init__(
        self,
        app: _App,
        *,
        server: str,
        max_request_bytes: int,
        limit_flag: str,
        requests: Mapping[str, Descriptor],
        token: str | None = None,
    ) -> None:
        if max_request_bytes < 1:
            raise ValueError("max_request_bytes must be >= 1")
        self._app = faults.wrap(app, server)  # only when $FRAY_TESTING_RPC_FAILURE asks
        self._server = server
        self.max_request_bytes = max_request_bytes
        self._limit_flag = limit_flag
        self._requests = dict(requests)
        self._token = TokenCheck(token)

    async def __call__(
        self, scope: MutableMapping[str, Any], receive: _Receive, send: _Send
    ) -> None:
        if scope["type"] == "websocket":
            await _refuse_websocket(scope, receive, send)
            return
        if scope["type"] != "http":  # lifespan
            await self._app(scope, receive, send)
            return
        try:
            scope, body = await self._admit(scope, receive)
        except Refusal as refusal:
            await send_error(
                send, refusal.code, refusal.message, status=refusal.status, headers=refusal.headers
            )
            return
        except _Disconnected:
            return
        if body is not None:
            receive = _replay(body, receive)
        await self._run(scope, receive, send)

    # ------------------------------------------------------------------ admission

    async def _admit(
        self, scope: MutableMapping[str, Any], receive: _Receive
    ) -> tuple[MutableMapping[str, Any], bytes | None]:
        """Refuse what must not reach the app. Returns the scope to pass on (another one when
        the body was decompressed) and the body when it had to be read here (None: the app
        reads it)."""
        headers: dict[bytes, bytes] = {}
        for name, value in scope["headers"]:
            try:
                name.decode()
                value.decode()
            except UnicodeDecodeError:
                raise Refusal(Code.INVALID_ARGUMENT, "request headers must be UTF-8") from None
            headers[name] = value
        # The token before anything is read or decompressed: without it, a request costs
        # nothing but its headers (RPC paths only; /healthz and pages answer for themselves).
        if scope["path"].startswith("/fray.") and not self._token.accepts_raw(headers):
            raise Refusal(Code.UNAUTHENTICATED, "missing or wrong bearer token")
        content_type = headers.get(b"content-type", b"").partition(b";")[0].strip().lower()
        if content_type.startswith(_GRPC):
            raise Refusal(
                Code.UNIMPLEMENTED,
                "fray serves the Connect protocol: Content-Type application/json or "
                "application/proto (gRPC and gRPC-Web are not served)",
                status=415,
                headers=(_ACCEPT_POST,),
            )
        if scope["method"] == "GET":
            self._check_query(scope.get("query_string", b""))
            return scope, None
        encoding = headers.get(b"content-encoding", b"").strip().lower()
        if encoding not in _IDENTITY and encoding != b"gzip":
            raise _compressed()
        length = _content_length(headers)
        if length is not None and length > self.max_request_bytes:
            raise self._too_large(f"{length} bytes")
        codec = content_type.removeprefix(b"application/")
        # Below these sizes a body cannot hold more than MAX_REQUEST_ELEMENTS (a binary field
        # takes at least 2 bytes, a JSON value at least 1): no need to look at it here.
        threshold = {b"proto": 2 * MAX_REQUEST_ELEMENTS, b"json": MAX_REQUEST_ELEMENTS}
        if encoding != b"gzip" and length is not None and length <= threshold.get(codec, length):
            return scope, None  # within the limit, told by its framing (uvicorn enforces it)
        body = await self._read(receive)
        if encoding == b"gzip":
            body = self._gunzip(body)
            kept = [(k, v) for k, v in scope["headers"] if k not in _BODY_HEADERS]
            kept.append((b"content-length", b"%d" % len(body)))
            scope = {**scope, "headers": kept}
        if len(body) > threshold.get(codec, len(body)):
            self._check_elements(scope["path"], codec, body)
        return scope, body

    def _check_query(self, query: bytes) -> None:
        try:
            text = query.decode()
        except UnicodeDecodeError:
            raise Refusal(Code.INVALID_ARGUMENT, "the URL query must be UTF-8") from None
        compression = parse_qs(text).get("compression", [""])[0]
        if compression.encode().lower() not in (*_IDENTITY, b"gzip"):
            raise _compressed()  # gzip (connectrpc clients' default) is decompressed by connectrpc

    async def _read(self, receive: _Receive) -> bytes:
        """The whole body, refused as soon as it grows past the limit."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Disconnected
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_request_bytes:
                raise self._too_large(f"more than {self.max_request_bytes} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _gunzip(self, body: bytes) -> bytes:
        """A gzip body decompressed, refused as soon as it grows past the limit."""
        limit = self.max_request_bytes
        out = bytearray()
        rest = body
        try:
            while rest:  # one gzip member after another
                member = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
                out += member.decompress(rest, limit + 1 - len(out))
                if len(out) > limit or member.unconsumed_tail:
                    raise self._too_large(f"more than {limit} bytes once decompressed")
                if not member.eof:
                    raise zlib.error("truncated")
                rest = member.unused_data
        except zlib.error as exc:
            raise Refusal(Code.INVALID_ARGUMENT, f"malformed gzip body: {exc}") from None
        return bytes(out)

    def _check_elements(self, path: str, codec: bytes, body: bytes) -> None:
        if codec == b"json":
            # An upper bound (a comma inside a string counts too), at C speed.
            count = body.count(b",") + body.count(b"{") + body.count(b"[")
        elif codec == b"proto" and path in self._requests:
            count = count_fields(self._requests[path], body, MAX_REQUEST_ELEMENTS)
        else:
            return  # connectrpc refuses it (unknown method or content type)
        if count > MAX_REQUEST_ELEMENTS:
            raise Refusal(
                Code.RESOURCE_EXHAUSTED,
                f"the request holds more than {MAX_REQUEST_ELEMENTS} fields and values; "
                "split it into smaller requests",
            )

    def _too_large(self, size: str) -> Refusal:
        return Refusal(
            Code.RESOURCE_EXHAUSTED,
            f"request body of {size} is larger than the {self._server}'s limit of "
            f"{self.max_request_bytes} bytes ({self._limit_flag})",
        )

    # ------------------------------------------------------------------ the backstop

    async def _run(self, scope: MutableMapping[str, Any], receive: _Receive, send: _Send) -> None:
        started = False

        async def tracked(message: _Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self._app(scope, receive, tracked)
        except Exception as exc:
            path = scope.get("path", "")
            if started:  # it answered, then raised (as connectrpc does after some errors)
                logger.warning("%s: %s raised after answering: %r", self._server, path, exc)
                return
            ref = uuid.uuid4().hex[:8]
            logger.exception("%s: internal error answering %s (ref %s)", self._server, path, ref)
            try:
                await send_error(
                    send, Code.INTERNAL, f"internal error (ref {ref}); see the {self._server} log"
                )
            except Exception:  # the connection is gone: nothing left to tell
                logger.debug("could not send the internal error", exc_info=True)


class _Disconnected(Exception):
    """The client went away while the edge read its request."""


def _compressed() -> Refusal:
    return Refusal(
        Code.UNIMPLEMENTED,
        "unsupported compression: POST bodies may be gzip or uncompressed (Content-Encoding "
        "gzip or identity); GET messages gzip or uncompressed",
        status=415,
        headers=((b"accept-encoding", b"gzip, identity"),),
    )


async def _refuse_websocket(scope: Mapping[str, Any], receive: _Receive, send: _Send) -> None:
    """Turn down a WebSocket upgrade (uvicorn answers HTTP 403). connectrpc would raise, which
    uvicorn logs with a traceback and answers 500."""
    message = await receive()  # websocket.connect
    if message["type"] == "websocket.connect":
        await send({"type": "websocket.close", "code": 1008})


def _content_length(headers: Mapping[bytes, bytes]) -> int | None:
    value = headers.get(b"content-length")
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:  # uvicorn refuses such requests before they get here
        return None


def _replay(body: bytes, receive: _Receive) -> _Receive:
    """A `receive` that gives `body` (read already) once, then whatever the client sends."""
    pending = True

    async def replay() -> _Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


# ---------------------------------------------------------------------- counting fields

_MESSAGE_FIELDS: dict[Descriptor, dict[int, Descriptor]] = {}


def _message_fields(descriptor: Descriptor) -> dict[int, Descriptor]:
    """The fields of `descriptor` that hold messages (map entries too), by number."""
    fields = _MESSAGE_FIELDS.get(descriptor)
    if fields is None:
        fields = {
            f.number: f.message_type
            for f in descriptor.fields
            if f.type == FieldDescriptor.TYPE_MESSAGE
        }
        _MESSAGE_FIELDS[descriptor] = fields
    return fields


def count_fields(descriptor: Descriptor, data: bytes, limit: int) -> int:
    """How many fields the binary protobuf `data` (a `descriptor` message) holds, at every
    depth; stops counting past `limit`. Malformed data is counted as far as it reads: the
    parser will refuse it anyway.

    Bytes and strings are skipped, not read, so a large message of a few fields costs little;
    a dense one costs ~1 µs a field (only bodies that could pass the limit are counted).
    """
    count = 0
    stack: list[tuple[dict[int, Descriptor], int, int]] = []  # enclosing messages to resume
    fields, pos, end = _message_fields(descriptor), 0, len(data)
    try:
        while True:
            if pos >= end:
                if not stack:
                    return count
                fields, pos, end = stack.pop()
                continue
            tag, pos = _varint(data, pos)
            count += 1
            if count > limit:
                return count
            wire_type = tag & 7
            if wire_type == 0:
                _, pos = _varint(data, pos)
            elif wire_type == 1:
                pos += 8
            elif wire_type == 5:
                pos += 4
            elif wire_type == 2:
                size, pos = _varint(data, pos)
                inner = fields.get(tag >> 3)
                if inner is not None and size:
                    stack.append((fields, pos + size, end))
                    fields, end = _message_fields(inner), min(pos + size, end)
                    continue
                pos += size
            else:  # groups (unused by fray) or garbage: the parser decides
                return count
    except (IndexError, ValueError):  # truncated, or not a varint
        return count


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """The varint at `pos` and the position after it (ValueError past 10 bytes)."""
    byte = data[pos]
    if byte < 0x80:
        return byte, pos + 1
    value, shift = byte & 0x7F, 7
    while shift < 70:
        pos += 1
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos + 1
        shift += 7
    raise ValueError("varint longer than 10 bytes")
