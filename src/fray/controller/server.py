"""The controller as a server: `ControllerServer` builds the state machine (`state`) and its
Connect service (`service.ControllerService`), and serves them with uvicorn, in the calling thread
(`run`, the `fray controller` command) or in a background thread (`start`, for tests and local
clusters).

It also decides how the state's request errors read on the wire (their Connect codes) and that
a controller off loopback needs a token.
"""

from __future__ import annotations

from connectrpc.code import Code
from connectrpc.compat import google_protobuf_binary_codec

from fray.controller.records import AlreadyExists, InvalidRequest, NotFound
from fray.controller.service import ControllerService
from fray.controller.state import ControllerState
from fray.wire import auth, serving
from fray.wire.limits import MAX_MESSAGE_BYTES
from fray.wire.pb.controller_connect import FrayControllerASGIApplication

__all__ = ["DEFAULT_PORT", "ControllerServer"]

DEFAULT_PORT = 8265

# What each request error (`records.StateError`) is on the wire; other StateErrors are internal.
_STATE_ERROR_CODES: dict[type[Exception], Code] = {
    InvalidRequest: Code.INVALID_ARGUMENT,
    NotFound: Code.NOT_FOUND,
    AlreadyExists: Code.ALREADY_EXISTS,
}


class ControllerServer:
    """A FrayController served by uvicorn on `host:port` (port 0 picks a free port).

    Binding to anything but loopback requires a token: tasks are pickles, so whoever can reach the
    controller can run code on every worker.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        *,
        token: str | None = None,
        heartbeat_timeout: float = 10.0,
        max_infra_attempts: int = 3,
        max_finished_tasks: int = 100_000,
    ) -> None:
        auth.require_token_off_loopback(host, token, "controller")
        self.state = ControllerState(
            heartbeat_timeout=heartbeat_timeout,
            max_infra_attempts=max_infra_attempts,
            max_finished_tasks=max_finished_tasks,
        )
        self.service = ControllerService(self.state)
        self.app = FrayControllerASGIApplication(
            self.service.lifespan(),
            interceptors=serving.interceptors(token, _STATE_ERROR_CODES, "controller"),
            read_max_bytes=MAX_MESSAGE_BYTES,
            codecs=[google_protobuf_binary_codec(), serving.CurlFriendlyJSONCodec()],
        )
        self._server = serving.Server(
            self.app,
            host,
            port,
            name="controller",
            on_shutdown=self.service.begin_shutdown,
            lifespan=True,
        )
        self.host, self.port = host, self._server.port

    @property
    def address(self) -> str:
        return self._server.url

    def run(self) -> None:
        """Serve until SIGINT/SIGTERM (in the main thread) or `stop()`."""
        self._server.run()

    def start(self, timeout: float = 30.0) -> ControllerServer:
        """Serve from a background thread; returns once the server accepts connections."""
        self._server.start(timeout)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Shut down gracefully; returns when the server has stopped."""
        self._server.stop(timeout)

    def __enter__(self) -> ControllerServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
