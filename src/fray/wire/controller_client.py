"""A FrayController client: bearer token, TLS settings (`fray.wire.tls`), bounded retries while
the controller is unreachable."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

from connectrpc.code import Code
from connectrpc.errors import ConnectError

from fray.errors import ControllerUnavailableError
from fray.wire import auth, tls
from fray.wire.limits import CONTROLLER_CALL_MARGIN_MS, MAX_MESSAGE_BYTES
from fray.wire.pb import controller_pb2 as pb
from fray.wire.pb.controller_connect import FrayControllerClientSync
from fray.wire.plain_client import PlainService
from fray.wire.probe import check_address

logger = logging.getLogger(__name__)

_REQ = TypeVar("_REQ")
_RES = TypeVar("_RES")

DEFAULT_RETRY_TIMEOUT = 30.0
_FIRST_DELAY = 0.05


def normalize_address(address: str) -> str:
    """ "host:port" or an http(s) URL, as a URL; ValueError saying why for a malformed one."""
    return check_address(address)


class ControllerClient:
    """Calls the controller; retries `unavailable` with backoff for up to `retry_timeout` seconds.

    Other errors (not_found, invalid_argument, ...) are raised at once as `ConnectError`, and a
    failed TLS handshake as `ControllerUnavailableError` saying why. An ``https://`` controller is
    verified with `tls_ca` (default: ``$FRAY_TLS_CA``), a PEM bundle, or else the system store.
    """

    def __init__(
        self,
        address: str,
        *,
        token: str | None = None,
        tls_ca: str | None = None,
        retry_timeout: float = DEFAULT_RETRY_TIMEOUT,
        call_timeout: float = 60.0,
    ) -> None:
        self.address = normalize_address(address)
        self.retry_timeout = retry_timeout
        self.tls_ca = tls.ca_from_env(tls_ca)
        if tls.is_https(self.address):
            self.rpc = FrayControllerClientSync(
                self.address,
                # Pickles barely compress: gzip (connectrpc's default, both ways) only burns
                # CPU, on the controller's single event loop too.
                send_compression=None,
                accept_compression=(),
                timeout_ms=int(call_timeout * 1000),
                read_max_bytes=MAX_MESSAGE_BYTES,
                http_client=tls.http_client(self.address, self.tls_ca),
            )
        else:  # the generated client's methods over a plain socket (`fray.wire.plain_client`)
            plain = PlainService(
                self.address,
                pb.DESCRIPTOR.services_by_name["FrayController"],
                read_max_bytes=MAX_MESSAGE_BYTES,
                default_timeout_ms=int(call_timeout * 1000),
            )
            self.rpc = cast(FrayControllerClientSync, plain)
        self._headers = auth.auth_headers(auth.token_from_env(token))
        self.closed = False

    def call(
        self,
        method: Callable[..., _RES],
        request: Any,
        *,
        wait_ms: int = 0,
        retry_timeout: float | None = None,
        quiet: bool = False,
        call_timeout: float | None = None,
    ) -> _RES:
        """`method(request)` (a bound method of `self.rpc`), retrying while unreachable.

        `wait_ms` is the server-side wait of a long poll: the call's own timeout grows by it.
        `quiet` skips the warning logged when the controller is unavailable. `call_timeout`
        (seconds) bounds each try instead of the client's own call timeout.
        """
        budget = self.retry_timeout if retry_timeout is None else retry_timeout
        deadline = time.monotonic() + budget
        delay = _FIRST_DELAY
        kwargs: dict[str, Any] = {"headers": self._headers}
        if wait_ms:
            kwargs["timeout_ms"] = wait_ms + CONTROLLER_CALL_MARGIN_MS
        elif call_timeout is not None:
            kwargs["timeout_ms"] = max(1, int(call_timeout * 1000))
        while True:
            try:
                return method(request, **kwargs)
            except ConnectError as exc:
                if exc.code != Code.UNAVAILABLE or self.closed:
                    raise
                failed = tls.handshake_failure(
                    "the controller", self.address, exc.message, self.tls_ca
                )
                if failed is not None:  # it would fail the same way again
                    raise ControllerUnavailableError(failed) from exc
                if time.monotonic() + delay > deadline:
                    raise ControllerUnavailableError(
                        f"controller at {self.address} unreachable for {budget:g}s: {exc.message}"
                        + tls.plaintext_hint(self.address, exc.message)
                    ) from exc
                if delay == _FIRST_DELAY and not quiet:  # once per call, not at every try
                    logger.warning(
                        "controller at %s unavailable (%s); retrying for up to %gs",
                        self.address,
                        exc.message,
                        budget,
                    )
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    def close(self) -> None:
        self.closed = True
        self.rpc.close()
