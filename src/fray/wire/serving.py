"""What the controller and the workers share to serve Connect RPCs with uvicorn.

- a JSON codec that suits curl (malformed JSON is `invalid_argument`, its message made safe to
  send: `safe_text`);
- error mapping, in one place: `ErrorMapping` turns a server's own exceptions into Connect
  codes (any other into `internal`, logged), and `HTTP_STATUS` gives each code its HTTP status;
- `interceptors`: the chain every connectrpc app gets (the token check from `fray.wire.auth`,
  then `ErrorInterceptor`: no exception escapes a handler);
- `PlainUnary`: answers the plain binary case of chosen unary RPCs without connectrpc's
  machinery (same wire format, same token check, same error mapping);
- `Server`: uvicorn on a pre-bound socket, run in the calling thread or in a background one
  (HTTPS given a `fray.wire.tls.ServerTLS`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from typing import Any, TypeVar, cast

import uvicorn
from connectrpc.code import Code
from connectrpc.errors import ConnectError
from connectrpc.request import RequestContext
from google.protobuf import json_format
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.message_factory import GetMessageClass

from fray.wire import auth
from fray.wire.plain_client import snake_case
from fray.wire.tls import ServerTLS, warn_if_plaintext

logger = logging.getLogger(__name__)


_M = TypeVar("_M", bound=Message)

# The HTTP status of each Connect error code (the Connect protocol's mapping).
HTTP_STATUS: dict[Code, int] = {
    Code.CANCELED: 499,
    Code.UNKNOWN: 500,
    Code.INVALID_ARGUMENT: 400,
    Code.DEADLINE_EXCEEDED: 504,
    Code.NOT_FOUND: 404,
    Code.ALREADY_EXISTS: 409,
    Code.PERMISSION_DENIED: 403,
    Code.RESOURCE_EXHAUSTED: 429,
    Code.FAILED_PRECONDITION: 400,
    Code.ABORTED: 409,
    Code.OUT_OF_RANGE: 400,
    Code.UNIMPLEMENTED: 501,
    Code.INTERNAL: 500,
    Code.UNAVAILABLE: 503,
    Code.DATA_LOSS: 500,
    Code.UNAUTHENTICATED: 401,
}


MAX_ERROR_MESSAGE = 1000  # characters of an error message sent to a client


def safe_text(text: str, limit: int = MAX_ERROR_MESSAGE) -> str:
    """`text` made safe to send in an error: encodable as UTF-8 (a lone surrogate from a JSON
    request, such as ``"\\ud800"``, is written as that escape) and at most `limit` characters.

    connectrpc encodes error messages strictly: one it cannot encode makes it answer 500 and
    drop the connection instead of sending the error.
    """
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= limit else text[: limit - 3] + "..."


class CurlFriendlyJSONCodec:
    """Proto3 JSON (a connectrpc codec) that prints every field, zeros and empty lists too,
    ends with a newline, and rejects unknown request fields: a typo is an error, not a field
    silently ignored. A request it cannot read is `invalid_argument`, with a message that is
    safe to send (`safe_text`)."""

    def name(self) -> str:
        return "json"

    def encode(self, message: Any) -> bytes:
        text = json_format.MessageToJson(
            message, always_print_fields_with_no_presence=True, sort_keys=True
        )
        return (text + "\n").encode()

    def decode(self, data: bytes | bytearray, message_class: type[_M]) -> _M:
        message = message_class()
        try:
            json_format.Parse(bytes(data), message, ignore_unknown_fields=False)
        except Exception as exc:  # ParseError, and what the json module raises (RecursionError)
            what = str(exc) or type(exc).__name__
            text = safe_text(f"cannot read the JSON request: {what}")
            raise ConnectError(Code.INVALID_ARGUMENT, text) from None
        return message


class ErrorMapping:
    """A server's exceptions as Connect errors: those in `codes` get their code (the first
    class that matches), a `ConnectError` stays as it is, anything else is `internal`.

    An internal error is logged with a reference that the client's message repeats; the message
    names no internals. Every message is made safe to send (`safe_text`).
    """

    def __init__(self, codes: Mapping[type[Exception], Code], server: str) -> None:
        self._codes = dict(codes)
        self._server = server

    def to_connect(self, exc: Exception, method: str) -> ConnectError:
        """The error to answer with; call it in the `except` block (for the traceback)."""
        if isinstance(exc, ConnectError):
            message = safe_text(exc.message)
            return exc if message == exc.message else ConnectError(exc.code, message)
        code = next((c for cls, c in self._codes.items() if isinstance(exc, cls)), None)
        if code is not None:
            return ConnectError(code, safe_text(str(exc)))
        ref = uuid.uuid4().hex[:8]
        logger.exception("internal error in %s (ref %s)", method, ref)
        return ConnectError(
            Code.INTERNAL,
            f"internal error in {method} (ref {ref}); see the {self._server} log",
        )


class ErrorInterceptor:
    """Applies an `ErrorMapping` to connectrpc calls.

    A stray exception must not reach uvicorn: it would answer 500 with the exception text and drop
    the keep-alive connection.
    """

    def __init__(self, errors: ErrorMapping) -> None:
        self._errors = errors

    async def intercept_unary(
        self,
        call_next: Callable[[Any, RequestContext[Any, Any]], Awaitable[Any]],
        request: Any,
        ctx: RequestContext[Any, Any],
    ) -> Any:
        try:
            return await call_next(request, ctx)
        except Exception as exc:
            raise self._errors.to_connect(exc, ctx.method.name) from None


def interceptors(
    token: str | None, codes: Mapping[type[Exception], Code], server: str
) -> list[Any]:
    """The interceptor chain: the token check (when there is a token), then error mapping."""
    chain: list[Any] = [auth.TokenInterceptor(token)] if token else []
    chain.append(ErrorInterceptor(ErrorMapping(codes, server)))
    return chain


async def send_error(
    send: Any,
    code: Code,
    message: str,
    *,
    status: int | None = None,
    headers: Sequence[tuple[bytes, bytes]] = (),
) -> None:
    """Answer an ASGI request with a Connect unary error: a JSON body, HTTP status `status`
    (default `HTTP_STATUS[code]`) and extra `headers`."""
    data = json.dumps({"code": code.value, "message": safe_text(message)}).encode()
    all_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(data)),
        *headers,
    ]
    await send(
        {
            "type": "http.response.start",
            "status": status or HTTP_STATUS[code],
            "headers": all_headers,
        }
    )
    await send({"type": "http.response.body", "body": data})


# A unary handler as generated service classes define them: (request, context) -> response.
UnaryHandler = Callable[[Any, Any], Awaitable[Message]]


class PlainContext:
    """What a handler reads of its request's context on the plain path: the time left before
    the client's deadline (``connect-timeout-ms``), like connectrpc's `RequestContext`."""

    __slots__ = ("_end",)

    def __init__(self, timeout_ms: float | None) -> None:
        self._end = None if timeout_ms is None else time.monotonic() + timeout_ms / 1000

    @property
    def timeout_ms(self) -> float | None:
        return None if self._end is None else (self._end - time.monotonic()) * 1000


class PlainUnary:
    """Answers the plain case of a service's unary Connect RPCs itself: POST, binary protobuf,
    no compression, an accepted token. connectrpc's machinery costs about 0.15 ms a call; the
    wire format is the same. Anything else (JSON, compression, a missing token) is for
    connectrpc, which also gives the refusals: `plain_first` routes.

    `service` is the object whose methods connectrpc calls (``list_workers(request, ctx)``);
    they get a `PlainContext`. Errors go through the same `ErrorMapping` as the connectrpc
    app's. With `watch_disconnects`, a long poll (a request with a non-zero ``wait_ms``) is
    cancelled when its client goes away, as connectrpc does: a dead worker's parked
    LeaseTasks must not take tasks.
    """

    def __init__(
        self,
        service: object,
        descriptor: ServiceDescriptor,
        token: str | None,
        codes: Mapping[type[Exception], Code],
        server: str,
        *,
        watch_disconnects: bool = False,
    ) -> None:
        self._handlers: dict[str, tuple[type[Message], UnaryHandler]] = {
            f"/{descriptor.full_name}/{m.name}": (
                GetMessageClass(m.input_type),
                getattr(service, snake_case(m.name)),
            )
            for m in descriptor.methods
        }
        self._long_polls = (
            {
                p
                for p, (cls, _) in self._handlers.items()
                if "wait_ms" in cls.DESCRIPTOR.fields_by_name
            }
            if watch_disconnects
            else set()
        )
        self._token = auth.TokenCheck(token)
        self._errors = ErrorMapping(codes, server)

    def accepts(self, scope: Mapping[str, Any]) -> bool:
        if scope["path"] not in self._handlers or scope["method"] != "POST":
            return False
        headers = dict(scope["headers"])
        if headers.get(b"content-type") != b"application/proto":
            return False
        if headers.get(b"content-encoding", b"identity") != b"identity":
            return False
        return self._token.accepts_raw(headers)

    async def __call__(self, scope: Mapping[str, Any], receive: Any, send: Any) -> None:
        timeout_ms: float | None = None
        for name, value in scope["headers"]:
            if name == b"connect-timeout-ms":  # 1 to 10 digits (the Connect protocol)
                if not (value.isdigit() and len(value) <= 10):
                    await send_error(send, Code.INVALID_ARGUMENT, "malformed connect-timeout-ms")
                    return
                timeout_ms = float(value)
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        path = scope["path"]
        request_class, handler = self._handlers[path]
        try:
            request = request_class.FromString(b"".join(chunks))
        except DecodeError as exc:
            await send_error(send, Code.INVALID_ARGUMENT, f"malformed request: {exc}")
            return
        try:
            if path in self._long_polls and cast(Any, request).wait_ms:
                answer = await _unless_disconnected(
                    handler(request, PlainContext(timeout_ms)), receive
                )
                if answer is None:
                    return  # the client went away: nobody to answer
                response = answer
            else:
                response = await handler(request, PlainContext(timeout_ms))
        except Exception as exc:
            error = self._errors.to_connect(exc, path.rsplit("/", 1)[-1])
            await send_error(send, error.code, error.message)
            return
        data = response.SerializeToString()
        headers = [(b"content-type", b"application/proto"), (b"content-length", b"%d" % len(data))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": data})


async def _unless_disconnected(call: Awaitable[Message], receive: Any) -> Message | None:
    """`call`'s answer, or None (`call` cancelled) if the client disconnects first."""
    handler = asyncio.ensure_future(call)
    gone = asyncio.ensure_future(_disconnect(receive))
    try:
        await asyncio.wait((handler, gone), return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not handler.done():
            handler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await handler
    return None if handler.cancelled() else handler.result()


async def _disconnect(receive: Any) -> None:
    """Return once the client has disconnected (the body was read before)."""
    while (await receive())["type"] != "http.disconnect":
        pass


def plain_first(plain: PlainUnary, app: Any) -> Any:
    """An ASGI app: what `plain` accepts goes to it, everything else to `app` (connectrpc)."""

    async def route(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and plain.accepts(scope):
            await plain(scope, receive, send)
        else:
            await app(scope, receive, send)

    return route


def url(host: str, port: int, *, secure: bool = False) -> str:
    """The address of `host:port` (``https://`` when `secure`: the server speaks TLS)."""
    scheme = "https" if secure else "http"
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


class _Uvicorn(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, on_shutdown: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_shutdown = on_shutdown

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._on_shutdown()  # long polls end now instead of at their deadlines
        await super().shutdown(sockets)

    def handle_exit(self, sig: int, frame: Any) -> None:
        super().handle_exit(sig, frame)
        # A graceful stop on SIGTERM/SIGINT exits 0; uvicorn would re-raise the signal afterwards.
        self._captured_signals.clear()


class Server:
    """An ASGI app served by uvicorn (uvloop + httptools) on `host:port` (0: a free port).

    The socket is bound at construction, so `port` and `url` are known before serving starts.
    `on_shutdown` runs when shutdown begins. With `tls` it serves HTTPS (and `url` says so);
    without, off loopback, it logs a warning.
    """

    def __init__(
        self,
        app: Any,
        host: str,
        port: int,
        *,
        name: str,
        on_shutdown: Callable[[], None] = lambda: None,
        lifespan: bool = False,
        tls: ServerTLS | None = None,
    ) -> None:
        warn_if_plaintext(host, name, tls)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, port))
        self._socket.listen(2048)  # connections wait in the backlog until uvicorn is up
        self.host = host
        self.port: int = self._socket.getsockname()[1]
        self.name = name
        self.tls = tls
        config = uvicorn.Config(
            app,
            loop="uvloop",
            http="httptools",
            ws="none",  # fray serves no WebSockets: upgrades reach the edge, which refuses them
            lifespan="on" if lifespan else "off",
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=5,
            timeout_keep_alive=75,
            proxy_headers=False,  # fray is not served behind a proxy; this saves ~5 µs a call
            **(tls.uvicorn_options() if tls else {}),
        )
        self._server = _Uvicorn(config, on_shutdown)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return url(self.host, self.port, secure=self.tls is not None)

    def run(self) -> None:
        """Serve until SIGINT/SIGTERM (in the main thread) or `stop()`."""
        self._server.run(sockets=[self._socket])

    def start(self, timeout: float = 30.0) -> None:
        """Serve from a background thread; returns once the server accepts connections."""
        self._thread = threading.Thread(target=self.run, name=f"fray-{self.name}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:  # uvicorn offers no start event
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the {self.name} server failed to start; see the log")
            time.sleep(0.005)

    def stop(self, timeout: float = 10.0) -> None:
        """Shut down gracefully; returns when the server has stopped."""
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self._socket.close()
