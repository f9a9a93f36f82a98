"""Checking a controller address: a malformed URL is refused at once, and an address where no
fray controller answers gets a message a person can act on ("no fray controller at URL; start
one with `fray controller`"), never the transport's raw error text alone.

`check_address` validates the URL's shape; `probe` asks the controller for its summary
(`GetClusterSummary`) for a few seconds and explains what went wrong: nothing listens there,
the host does not resolve, or something else answers (a fray worker, another HTTP server).
"""

from __future__ import annotations

import json
import re
import ssl
import urllib.error
import urllib.request
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from connectrpc.code import Code
from connectrpc.errors import ConnectError

from fray.errors import ControllerUnavailableError
from fray.wire import tls
from fray.wire.pb import controller_pb2 as pb

if TYPE_CHECKING:
    from fray.wire.controller_client import ControllerClient

__all__ = ["DEFAULT_PROBE_TIMEOUT", "check_address", "explain_transport_error", "probe"]

# How long a new context waits for its controller to answer before giving up.
DEFAULT_PROBE_TIMEOUT = 3.0
_START_HINT = "start one with `fray controller`"


def check_address(address: str) -> str:
    """`address` ("host:port" or an http(s) URL) as a URL without a trailing slash; ValueError,
    saying why, when it is not one."""
    text = address.strip().rstrip("/")
    if not text:
        raise ValueError("controller address is empty")
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"controller address {address!r}: the scheme must be http or https")
    if not parts.hostname or re.search(r"\s", text):
        raise ValueError(f"controller address {address!r} is not a URL (host:port or http://...)")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"controller address {address!r}: the port must be 0-65535") from None
    if port == 0:
        raise ValueError(f"controller address {address!r}: port 0 is not a controller's port")
    if parts.query or parts.fragment:
        raise ValueError(f"controller address {address!r}: no query or fragment expected")
    return text


def explain_transport_error(message: str) -> str:
    """A transport error's text in a few words ("connection refused", "cannot resolve host
    X"), or a shortened form of it."""
    lowered = message.lower()
    if "connection refused" in lowered:
        return "connection refused"
    if "dns error" in lowered or "name or service not known" in lowered:
        host = re.search(r'Name\("([^"]+?)\.?"\)', message) or re.search(
            r"cannot resolve host (\S+):", message
        )
        return f"cannot resolve host {host.group(1)}" if host else "cannot resolve the host"
    if "timed out" in lowered or "deadline" in lowered:
        return "no answer in time"
    return message if len(message) <= 160 else message[:157] + "..."


def probe(client: ControllerClient, timeout: float = DEFAULT_PROBE_TIMEOUT) -> None:
    """Ask the controller at `client.address` for its summary within `timeout` seconds.

    Raises ControllerUnavailableError when nothing answers there or what answers is not a fray
    controller (saying which). A controller that refuses us (a wrong token) passes: the caller's
    first real call reports that, with its code.
    """
    address = client.address
    try:
        client.call(
            client.rpc.get_cluster_summary,
            pb.GetClusterSummaryRequest(),
            retry_timeout=timeout,
            quiet=True,
            call_timeout=timeout,
        )
        return
    except ControllerUnavailableError as exc:
        cause = exc.__cause__
        if not isinstance(cause, ConnectError) or "TLS handshake" in str(exc):
            raise  # already says what is wrong
        why = explain_transport_error(cause.message)
        raise ControllerUnavailableError(
            f"no fray controller at {address} ({why}); {_START_HINT}"
            + tls.plaintext_hint(address, cause.message)
        ) from None
    except ConnectError as exc:
        if exc.code is Code.DEADLINE_EXCEEDED:
            raise ControllerUnavailableError(
                f"no fray controller answered at {address} within {timeout:g}s; {_START_HINT}"
            ) from None
        if exc.code in (Code.UNAUTHENTICATED, Code.PERMISSION_DENIED, Code.RESOURCE_EXHAUSTED):
            return  # a controller, refusing us: the first real call says so, with the code
        what = _what_answers(address, client.tls_ca)
        raise ControllerUnavailableError(
            f"{address} is {what}, not a fray controller (GetClusterSummary: {exc.code.name} "
            f"{explain_transport_error(exc.message)!r}); {_START_HINT}, or give its address"
        ) from None


def _what_answers(address: str, tls_ca: str | None) -> str:
    """'a fray worker' when GET /healthz says so, else 'another HTTP server'."""
    context = ssl.create_default_context(cafile=tls_ca) if address.startswith("https") else None
    try:
        with urllib.request.urlopen(f"{address}/healthz", timeout=2, context=context) as answer:
            body = json.loads(answer.read(65536))
    except (OSError, ValueError, urllib.error.URLError):
        return "another HTTP server"
    if isinstance(body, dict) and "worker_id" in body:
        return f"a fray worker ({body['worker_id']}, whose controller is {body.get('controller')})"
    return "another HTTP server"
