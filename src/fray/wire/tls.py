"""TLS settings, in one place: what servers serve with, what clients trust, and what a failed
handshake means.

Servers (controller, workers): `ServerTLS.load(cert, key)` checks a certificate chain and its
key (both or neither: ``--tls-cert``/``--tls-key``, or ``$FRAY_TLS_CERT``/``$FRAY_TLS_KEY`` as
the command line reads them) and gives uvicorn its options. A server bound off loopback without
TLS logs one warning (`warn_if_plaintext`): the token and the tasks cross the network in the
clear.

Clients (FrayContext, workers calling their controller, `fray status`): an ``https://`` address
is verified with the system store (pyqwest's default client, which also honours
``$SSL_CERT_FILE``), or with only the CA bundle given as ``tls_ca=`` / ``$FRAY_TLS_CA`` (a PEM
file, like ``curl --cacert``). `http_client` is None for ``http://`` addresses and for ``https://``
without a CA: connectrpc's default client, exactly as before, so plain HTTP costs nothing more.

A handshake that fails will fail again: `handshake_failure` recognises one (pyqwest only says so
in its message) and explains it, so that callers raise at once instead of retrying.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyqwest
from connectrpc.code import Code
from connectrpc.errors import ConnectError
from connectrpc.request import RequestContext

from fray.common.net import is_loopback

logger = logging.getLogger(__name__)

CA_ENV = "FRAY_TLS_CA"
CERT_ENV = "FRAY_TLS_CERT"
KEY_ENV = "FRAY_TLS_KEY"

# What rustls (under pyqwest) says when a handshake fails: an untrusted or mismatched
# certificate, a server that does not speak TLS, an alert from the server.
_HANDSHAKE_ERRORS = (
    "invalid peer certificate",
    "received corrupt message",
    "received fatal alert",
    "peer is incompatible",
    "peer misbehaved",
    "invalid certificate",
)
# What a plain-HTTP client gets from a TLS port: the server hangs up without a word.
_CLOSED_EARLY = "connection closed before message completed"


def is_https(address: str) -> bool:
    """Whether a normalized address (``scheme://host:port``) uses TLS."""
    return address.startswith("https://")


# ---------------------------------------------------------------------- servers


@dataclass(frozen=True)
class ServerTLS:
    """A server's certificate chain and private key (PEM files), checked to belong together."""

    cert: str
    key: str

    @classmethod
    def load(cls, cert: str | None, key: str | None) -> ServerTLS | None:
        """The settings for `cert` and `key` (None when neither is given).

        Raises ValueError, with a message fit for the command line, when only one is given or
        the files cannot be used (missing, unreadable, not PEM, a key that does not match).
        """
        cert, key = cert or None, key or None
        if cert is None and key is None:
            return None
        if cert is None or key is None:
            given, missing = (
                ("--tls-cert", "--tls-key") if key is None else ("--tls-key", "--tls-cert")
            )
            env = KEY_ENV if key is None else CERT_ENV
            raise ValueError(
                f"{given} needs {missing} too (or ${env}): TLS takes a certificate and its key"
            )
        try:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(cert, key, password=_no_password)  # never a prompt
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise ValueError(
                f"cannot serve TLS with certificate {cert} and key {key}: {exc}"
            ) from None
        return cls(cert, key)

    def uvicorn_options(self) -> dict[str, Any]:
        """Keyword arguments for `uvicorn.Config`."""
        return {"ssl_certfile": self.cert, "ssl_keyfile": self.key}


def _no_password() -> str:
    raise ValueError("the key is encrypted; fray takes an unencrypted one (readable by it only)")


def warn_if_plaintext(host: str, what: str, tls: ServerTLS | None) -> None:
    """Log one warning when `what` listens on a non-loopback `host` without TLS."""
    if tls is None and not is_loopback(host):
        logger.warning(
            "the %s listens on %s without TLS: its token and tasks cross the network in the "
            "clear; give it --tls-cert and --tls-key (or $%s/$%s) to encrypt them",
            what,
            host,
            CERT_ENV,
            KEY_ENV,
        )


# ---------------------------------------------------------------------- clients


def ca_from_env(tls_ca: str | None) -> str | None:
    """`tls_ca` if given, else ``$FRAY_TLS_CA``; empty means none (the system store)."""
    ca = tls_ca if tls_ca is not None else os.environ.get(CA_ENV)
    return ca or None


_clients: dict[bytes, pyqwest.SyncClient] = {}
_clients_lock = threading.Lock()


def http_client(address: str, tls_ca: str | None) -> pyqwest.SyncClient | None:
    """The pyqwest client for a normalized `address`: None (connectrpc's default client) unless
    it is ``https://`` and `tls_ca` names a CA bundle; then `trusting(tls_ca)`."""
    if tls_ca is None or not is_https(address):
        return None
    return trusting(tls_ca)


def trusting(tls_ca: str) -> pyqwest.SyncClient:
    """A pyqwest client that trusts only the certificates in the PEM file `tls_ca`, shared by
    every client of this process that trusts the same ones (like pyqwest's default client, it
    lives as long as the process). ValueError when the file cannot be read or holds none."""
    try:
        pem = Path(tls_ca).read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read the TLS CA bundle {tls_ca} (${CA_ENV}): {exc}") from None
    with _clients_lock:
        client = _clients.get(pem)
        if client is None:
            try:
                transport = pyqwest.SyncHTTPTransport(tls_ca_cert=pem)
            except ValueError as exc:  # no PEM certificate in it
                raise ValueError(f"the TLS CA bundle {tls_ca} (${CA_ENV}): {exc}") from None
            client = _clients[pem] = pyqwest.SyncClient(transport)
    return client


def handshake_failure(what: str, address: str, message: str, tls_ca: str | None) -> str | None:
    """If `message` (of an `unavailable` error) says the TLS handshake with `what` (e.g. "the
    controller") at `address` failed, what went wrong and what to do; else None. Such a
    failure repeats: do not retry it."""
    if not any(marker in message for marker in _HANDSHAKE_ERRORS):
        return None
    reason = message.rsplit("(Connect): ", 1)[-1]
    if "corrupt message" in reason:
        advice = "does it serve TLS? A server without --tls-cert takes http:// addresses"
    elif "not valid for name" in reason or "NotValidForName" in reason:
        advice = "dial it by a name or address its certificate lists"
    elif "xpired" in reason or "NotValidYet" in reason:
        advice = "its certificate is out of its validity period"
    elif "certificate" not in reason:
        advice = "check that it serves TLS with a valid certificate"
    elif tls_ca is None:
        advice = (
            "its certificate is not trusted by the system store: set $FRAY_TLS_CA (or pass "
            "tls_ca=) to the PEM file of the CA that signed it"
        )
    else:
        advice = f"is its certificate signed by a CA in {tls_ca}?"
    return f"TLS handshake with {what} at {address} failed ({reason}): {advice}"


def plaintext_hint(address: str, message: str) -> str:
    """A hint for an ``http://`` call that the server hung up on (what a TLS port does)."""
    if is_https(address) or _CLOSED_EARLY not in message:
        return ""
    return "; if it serves TLS, use an https:// address"


class HandshakeErrors:
    """A connectrpc client interceptor for an ``https://`` server: a failed handshake becomes
    `failed_precondition` with an explanation (nothing reached the server, and retrying would
    fail the same way), logged once per client. `what` names the server (e.g. "the worker")."""

    def __init__(self, address: str, tls_ca: str | None, what: str) -> None:
        self._address = address
        self._tls_ca = tls_ca
        self._what = what
        self._warned = False

    def intercept_unary_sync(
        self, call_next: Any, request: Any, ctx: RequestContext[Any, Any]
    ) -> Any:
        try:
            return call_next(request, ctx)
        except ConnectError as exc:
            if exc.code != Code.UNAVAILABLE:
                raise
            explained = handshake_failure(self._what, self._address, exc.message, self._tls_ca)
            if explained is None:
                raise
            if not self._warned:
                self._warned = True
                logger.warning("%s", explained)
            raise ConnectError(Code.FAILED_PRECONDITION, explained) from exc
