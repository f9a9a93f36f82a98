"""The shared token: where it comes from and how it travels (``Authorization: Bearer <token>``).

Tasks are pickles, so whoever reaches a controller or a worker can run code on the workers:
anything bound off loopback requires a token (``require_token_off_loopback``).
"""

from __future__ import annotations

import hmac
import ipaddress
import os

TOKEN_ENV = "FRAY_TOKEN"
AUTHORIZATION = "authorization"


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


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def require_token_off_loopback(host: str, token: str | None, what: str) -> None:
    """Refuse to serve `what` on a non-loopback `host` without a token."""
    if not is_loopback(host) and not token:
        raise ValueError(
            f"refusing to listen on {host} without a token: set FRAY_TOKEN (or --token) "
            f"(anyone who can reach the {what} can run code on the workers)"
        )
