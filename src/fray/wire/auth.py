"""The shared token: where it comes from, how it travels (``Authorization: Bearer <token>``) and
how servers check it.

Tasks are pickles, so whoever reaches a controller or a worker can run code on the workers:
anything bound off loopback requires a token (``require_token_off_loopback``). Every server
checks it the same way: `TokenCheck` (constant time), which `TokenInterceptor` applies to
connectrpc calls and `fray.wire.serving.PlainUnary` to the calls it answers itself.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Mapping
from typing import Any

from connectrpc.code import Code
from connectrpc.errors import ConnectError
from connectrpc.request import RequestContext

from fray.common.net import is_loopback

TOKEN_ENV = "FRAY_TOKEN"
AUTHORIZATION = "authorization"
_AUTHORIZATION_RAW = AUTHORIZATION.encode()  # ASGI header names are lower-case bytes


def token_from_env(token: str | None) -> str | None:
    """`token` if given, else ``$FRAY_TOKEN`` (an empty one means none)."""
    return token if token is not None else (os.environ.get(TOKEN_ENV) or None)


def auth_headers(token: str | None) -> dict[str, str] | None:
    """The request headers that carry `token` (None without one)."""
    return {AUTHORIZATION: f"Bearer {token}"} if token else None


def expected_authorization(token: str | None) -> bytes | None:
    """The raw header value a server expects (None: no token, nothing to check)."""
    return f"Bearer {token}".encode() if token else None


def authorized(expected: bytes | None, given: bytes | str | None) -> bool:
    """Constant-time check of an ``Authorization`` header value against `expected`."""
    if expected is None:
        return True
    if given is None:
        return False
    if isinstance(given, str):
        given = given.encode()
    return hmac.compare_digest(given, expected)


class TokenCheck:
    """A server's check of the ``Authorization`` header against its token (every request
    passes when the server has none)."""

    def __init__(self, token: str | None) -> None:
        self._expected = expected_authorization(token)

    def accepts(self, given: bytes | str | None) -> bool:
        """Whether a header value carries the token."""
        return authorized(self._expected, given)

    def accepts_raw(self, headers: Mapping[bytes, bytes]) -> bool:
        """Whether raw (ASGI) request headers, by lower-case name, carry the token."""
        return authorized(self._expected, headers.get(_AUTHORIZATION_RAW))


class TokenInterceptor:
    """A connectrpc interceptor that requires the token on every call (`unauthenticated`)."""

    def __init__(self, token: str) -> None:
        self._check = TokenCheck(token)

    async def on_start(self, ctx: RequestContext[Any, Any]) -> None:
        if not self._check.accepts(ctx.request_headers.get(AUTHORIZATION)):
            raise ConnectError(Code.UNAUTHENTICATED, "missing or wrong bearer token")

    async def on_end(
        self, token: None, ctx: RequestContext[Any, Any], error: Exception | None
    ) -> None:
        return None


def require_token_off_loopback(host: str, token: str | None, what: str) -> None:
    """Refuse to serve `what` on a non-loopback `host` without a token."""
    if not is_loopback(host) and not token:
        raise ValueError(
            f"refusing to listen on {host} without a token: set FRAY_TOKEN (or --token) "
            f"(anyone who can reach the {what} can run code on the workers)"
        )
