"""The controller as a server: `ControllerServer` builds the state machine (`state`) and its
Connect service (`service.ControllerService`), and serves them with uvicorn, in the calling thread
(`run`, the `fray controller` command) or in a background thread (`start`, for tests and local
clusters).

It also decides how the state's request errors read on the wire (their Connect codes) and that
a controller off loopback needs a token. Besides the RPCs it serves the dashboard (``GET /``),
``/metrics`` and ``/healthz`` (`dashboard`). With `state_path` the state is durable: loaded from
that SQLite file at start-up and journaled to it (`journal`); without (or with ``":memory:"``)
it lives in memory only.
"""

from __future__ import annotations

import os
import signal
import threading

from connectrpc.code import Code
from connectrpc.compat import google_protobuf_binary_codec

from fray.common.net import DEFAULT_CONTROLLER_PORT
from fray.controller.dashboard import ControllerRoutes
from fray.controller.journal import Journal, JournalError
from fray.controller.records import AlreadyExists, InvalidRequest, NotFound
from fray.controller.service import ControllerService
from fray.controller.state import ControllerState
from fray.wire import auth, edge, serving, tls
from fray.wire.limits import DEFAULT_MAX_QUEUED_TASKS_PER_CLIENT, DEFAULT_MAX_REQUEST_BYTES
from fray.wire.pb import controller_pb2 as pb
from fray.wire.pb.controller_connect import FrayControllerASGIApplication

__all__ = ["DEFAULT_PORT", "IN_MEMORY", "ControllerServer"]

DEFAULT_PORT = DEFAULT_CONTROLLER_PORT
IN_MEMORY = ":memory:"  # a `state_path` that means: no durable state

# What each request error (`records.StateError`) is on the wire; other StateErrors are internal.
_STATE_ERROR_CODES: dict[type[Exception], Code] = {
    InvalidRequest: Code.INVALID_ARGUMENT,
    NotFound: Code.NOT_FOUND,
    AlreadyExists: Code.ALREADY_EXISTS,
    JournalError: Code.UNAVAILABLE,
}


class ControllerServer:
    """A FrayController served by uvicorn on `host:port` (port 0 picks a free port).

    Binding to anything but loopback requires a token: tasks are pickles, so whoever can reach the
    controller can run code on every worker. `tls_cert` and `tls_key` (PEM files, both or
    neither) make it serve HTTPS (`address` is then ``https://``). `state_path` makes its state
    durable (see the module docstring); it raises `store.StoreError` (an OSError) when the file
    cannot be used, e.g. when another controller has it open. Requests larger than
    `max_request_bytes`, and tasks past `max_queued_tasks_per_client` unfinished ones of one
    client, are refused with `resource_exhausted`.
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
        tls_cert: str | None = None,
        tls_key: str | None = None,
        state_path: str | os.PathLike[str] | None = None,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        max_queued_tasks_per_client: int = DEFAULT_MAX_QUEUED_TASKS_PER_CLIENT,
    ) -> None:
        auth.require_token_off_loopback(host, token, "controller")
        server_tls = tls.ServerTLS.load(tls_cert, tls_key)  # HTTPS (both or neither)
        self.state = ControllerState(
            heartbeat_timeout=heartbeat_timeout,
            max_infra_attempts=max_infra_attempts,
            max_finished_tasks=max_finished_tasks,
        )
        self.failed: BaseException | None = None  # the journal failed: exit, restart
        self._foreground = False
        self.journal: Journal | None = None
        if state_path is not None and str(state_path) != IN_MEMORY:
            self.journal = Journal.open(self.state, state_path, self._journal_failed)
        self.service = ControllerService(
            self.state,
            journal=self.journal,
            max_queued_tasks_per_client=max_queued_tasks_per_client,
        )
        self.app = FrayControllerASGIApplication(
            self.service.lifespan(),
            interceptors=serving.interceptors(token, _STATE_ERROR_CODES, "controller"),
            read_max_bytes=max_request_bytes,
            codecs=[google_protobuf_binary_codec(), serving.CurlFriendlyJSONCodec()],
        )
        # The plain binary case of every RPC skips connectrpc's machinery (`serving.PlainUnary`).
        plain = serving.PlainUnary(
            self.service,
            pb.DESCRIPTOR.services_by_name["FrayController"],
            token,
            _STATE_ERROR_CODES,
            "controller",
            watch_disconnects=True,
        )
        rpc = serving.plain_first(plain, self.app)
        self._server = serving.Server(
            edge.Edge(  # refuses bad and oversized requests before connectrpc reads them
                # GET / (dashboard), /api/dashboard, /metrics, /healthz; RPCs timed
                ControllerRoutes(rpc, self.service, self.service.metrics, token, self._health),
                server="controller",
                max_request_bytes=max_request_bytes,
                limit_flag="fray controller --max-request-bytes",
                requests=edge.request_types([pb.DESCRIPTOR.services_by_name["FrayController"]]),
                token=token,
            ),
            host,
            port,
            name="controller",
            on_shutdown=self.service.begin_shutdown,
            lifespan=True,
            tls=server_tls,
        )
        self.host, self.port = host, self._server.port

    @property
    def address(self) -> str:
        return self._server.url

    def run(self) -> None:
        """Serve until SIGINT/SIGTERM (in the main thread) or `stop()`, or until the state
        could not be saved (`failed` is then set)."""
        self._foreground = threading.current_thread() is threading.main_thread()
        self._server.run()

    def _health(self) -> str:
        """GET /healthz's status: "ok", "stopping" or "failed" (the state could not be saved)."""
        if self.failed is not None:
            return "failed"
        return "stopping" if self.service.closing else "ok"

    def _journal_failed(self, exc: BaseException) -> None:
        """The journal could not write: refuse every call and, in the foreground (`fray
        controller`), stop, so that the controller is restarted from what was saved."""
        self.failed = exc
        self.service.begin_shutdown()
        if self._foreground:
            signal.raise_signal(signal.SIGTERM)

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
