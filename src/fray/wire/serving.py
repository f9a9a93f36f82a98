"""What the controller and the workers share to serve Connect RPCs with uvicorn.

A JSON codec that suits curl, the interceptors (bearer token; no exception escapes a handler),
the loopback rule, and `Server`: uvicorn on a pre-bound socket, run in the calling thread or in a
background one.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import uvicorn
from connectrpc.code import Code
from connectrpc.errors import ConnectError
from connectrpc.request import RequestContext
from google.protobuf import json_format
from google.protobuf.message import Message

from fray.wire import auth

logger = logging.getLogger(__name__)


_M = TypeVar("_M", bound=Message)


class CurlFriendlyJSONCodec:
    """Proto3 JSON (a connectrpc codec) that prints every field, zeros and empty lists too,
    ends with a newline, and rejects unknown request fields: a typo is an error, not a field
    silently ignored."""

    def name(self) -> str:
        return "json"

    def encode(self, message: Any) -> bytes:
        text = json_format.MessageToJson(
            message, always_print_fields_with_no_presence=True, sort_keys=True
        )
        return (text + "\n").encode()

    def decode(self, data: bytes | bytearray, message_class: type[_M]) -> _M:
        message = message_class()
        json_format.Parse(bytes(data), message, ignore_unknown_fields=False)
        return message


class ErrorInterceptor:
    """Turns the exceptions in `codes` into their Connect codes, any other into `internal`.

    A stray exception must not reach uvicorn: it would answer 500 with the exception text and drop
    the keep-alive connection. It is logged with a reference that the client's message repeats.
    """

    def __init__(self, codes: Mapping[type[Exception], Code], server: str) -> None:
        self._codes = dict(codes)
        self._server = server

    async def intercept_unary(
        self,
        call_next: Callable[[Any, RequestContext[Any, Any]], Awaitable[Any]],
        request: Any,
        ctx: RequestContext[Any, Any],
    ) -> Any:
        try:
            return await call_next(request, ctx)
        except ConnectError:
            raise
        except Exception as exc:
            code = next((c for cls, c in self._codes.items() if isinstance(exc, cls)), None)
            if code is not None:
                raise ConnectError(code, str(exc)) from None
            ref = uuid.uuid4().hex[:8]
            logger.exception("internal error in %s (ref %s)", ctx.method.name, ref)
            raise ConnectError(
                Code.INTERNAL,
                f"internal error in {ctx.method.name} (ref {ref}); see the {self._server} log",
            ) from None


class TokenInterceptor:
    """Requires `Authorization: Bearer <token>` on every call."""

    def __init__(self, token: str) -> None:
        self._expected = auth.expected_authorization(token)

    async def on_start(self, ctx: RequestContext[Any, Any]) -> None:
        if not auth.authorized(self._expected, ctx.request_headers.get(auth.AUTHORIZATION)):
            raise ConnectError(Code.UNAUTHENTICATED, "missing or wrong bearer token")

    async def on_end(
        self, token: None, ctx: RequestContext[Any, Any], error: Exception | None
    ) -> None:
        return None


def interceptors(
    token: str | None, codes: Mapping[type[Exception], Code], server: str
) -> list[Any]:
    """The interceptor chain: the token check (when there is a token), then error mapping."""
    chain: list[Any] = [TokenInterceptor(token)] if token else []
    chain.append(ErrorInterceptor(codes, server))
    return chain


def url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


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
    `on_shutdown` runs when shutdown begins.
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
    ) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, port))
        self._socket.listen(2048)  # connections wait in the backlog until uvicorn is up
        self.host = host
        self.port: int = self._socket.getsockname()[1]
        self.name = name
        config = uvicorn.Config(
            app,
            loop="uvloop",
            http="httptools",
            lifespan="on" if lifespan else "off",
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=5,
            timeout_keep_alive=75,
        )
        self._server = _Uvicorn(config, on_shutdown)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return url(self.host, self.port)

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
