"""The object server: a process's object files as raw bytes over HTTP/1.1 (``sendfile``).

``GET /objects/<id>`` answers the file (200, Content-Length), 404 for an unknown id, 401
without the bearer token when one is set; ``GET /ping`` answers "ok". Off loopback it does not
start without a token.
"""

from __future__ import annotations

import hmac
import http.server
import logging
import os
import socket
import socketserver
import threading
from typing import Any

from fray.common.net import is_loopback
from fray.wire.objects.layout import open_object
from fray.wire.objects.store import LocalStore

logger = logging.getLogger(__name__)

OBJECTS_PREFIX = "/objects/"
_SOCKET_TIMEOUT = 120.0  # a stalled reader is dropped after this long


def bracket(host: str) -> str:
    """`host` as it goes in a URL (IPv6 literals in brackets)."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = _SOCKET_TIMEOUT
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("object server %s: " + format, self.address_string(), *args)

    def _reply(self, status: int, body: bytes = b"") -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path != "/ping" and not path.startswith(OBJECTS_PREFIX):
            self._reply(404, b"not found\n")
            return
        if not self.server.authorized(self.headers.get("Authorization")):
            self._reply(401, b"missing or wrong bearer token\n")
            return
        if path == "/ping":
            self._reply(200, b"ok")
            return
        self._send_object(path[len(OBJECTS_PREFIX) :])

    def _send_object(self, object_id: str) -> None:
        file_path = self.server.store.path(object_id)
        try:
            fd = open_object(file_path) if file_path else -1  # (not recycled while sent)
        except FileNotFoundError:
            fd = -1
        if fd < 0:
            self._reply(404, f"no object {object_id}\n".encode())
            return
        with os.fdopen(fd, "rb") as file:
            size = os.fstat(fd).st_size
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(size))
            self.end_headers()
            sent = self.connection.sendfile(file, 0, size) if size else 0
        if sent != size:
            logger.debug("object %s: sent %d of %d bytes", object_id, sent, size)
            self.close_connection = True

    def _not_allowed(self) -> None:
        self._reply(405, b"method not allowed\n")

    do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _not_allowed


class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], store: LocalStore, token: str | None) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.store = store
        self._expected = f"Bearer {token}".encode() if token else None
        super().__init__(address, _Handler)

    def authorized(self, given: str | None) -> bool:
        """Whether an Authorization header value carries the token (constant time)."""
        if self._expected is None:
            return True
        return given is not None and hmac.compare_digest(given.encode(), self._expected)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks the host's name up (socket.getfqdn): slow, and unused.
        socketserver.TCPServer.server_bind(self)
        self.server_name = str(self.server_address[0])
        self.server_port = int(self.server_address[1])

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.debug("object server: request from %s failed", client_address, exc_info=True)


class ObjectServer:
    """Serves `store`'s files on ``(host, 0)``; `base_url` uses `advertise_host` if given."""

    def __init__(
        self,
        store: LocalStore,
        host: str,
        token: str | None,
        *,
        advertise_host: str | None = None,
    ) -> None:
        self.store = store
        self.host = host.strip("[]")
        self.token = token
        self.advertise_host = advertise_host
        self._server: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind and serve in a daemon thread. Off loopback a token is required (objects are
        pickles: what reaches another host is guarded like the RPCs are)."""
        if self._server is not None:
            return
        if not self.token and not is_loopback(self.host):
            raise PermissionError(
                f"serving objects on {self.host} needs a token (--token / FRAY_TOKEN), "
                "as the controller and workers do off loopback"
            )
        self._server = _HTTPServer((self.host, 0), self.store, self.token)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="fray-object-server",
            daemon=True,
        )
        self._thread.start()
        logger.debug("object server of %s at %s", self.store.owner, self.base_url)

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("object server not started")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://{bracket(self.advertise_host or self.host)}:{self.port}"

    def url(self, object_id: str) -> str:
        return f"{self.base_url}{OBJECTS_PREFIX}{object_id}"

    def stop(self) -> None:
        """Stop serving and close the listening socket (idempotent)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
