"""Types and help of the `fray` command's options: bad values are argparse errors (exit 2 with
a usage line), never tracebacks, and help shows each option's default and the environment
variable it reads."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

from fray.common.net import CONTROLLER_ADDRESS_ENV, DEFAULT_CONTROLLER_ADDRESS
from fray.common.sizes import parse_bytes

__all__ = [
    "LOG_LEVELS",
    "HelpFormatter",
    "add_client_args",
    "add_controller_arg",
    "add_limit_args",
    "add_tls_ca_arg",
    "add_tls_server_args",
    "at_least",
    "log_level",
    "parse_resources",
    "port_number",
    "request_size",
    "seconds",
]
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def port_number(text: str) -> int:
    """A --port value: 0 (any free port) to 65535."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0-65535, got {port}")
    return port


def at_least(low: int) -> Callable[[str], int]:
    """An int option's type: an integer >= `low`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


def seconds(text: str) -> float:
    """A duration option's type: seconds > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be > 0 seconds, got {text}")
    return value


def log_level(text: str) -> str:
    """A --log-level value, any case."""
    if text.upper() not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(
            f"unknown log level {text!r}; one of {', '.join(LOG_LEVELS)} (any case)"
        )
    return text.upper()


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Appends "(default: X)" to an option's help unless the help already says its default or
    there is none to show."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        shown = action.default not in (None, False, argparse.SUPPRESS, "")
        if shown and "default" not in text and action.option_strings:
            text += " (default: %(default)s)"
        return text


def parse_resources(text: str) -> dict[str, str]:
    """'cpus=4,memory=8GiB,zone=us-east' -> a dict; cpus and memory are checked (memory as
    :func:`fray.common.sizes.parse_bytes` reads sizes: units are powers of 1024)."""
    out: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise argparse.ArgumentTypeError(f"resources need key=value, got {item!r}")
        out[key.strip()] = value.strip()
    if "cpus" in out:
        try:
            cpus = float(out["cpus"])
        except ValueError:
            cpus = float("nan")
        if not 0 <= cpus < float("inf"):
            raise argparse.ArgumentTypeError(f"cpus must be a number >= 0, got {out['cpus']!r}")
    if "memory" in out:
        try:
            parse_bytes(out["memory"])
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"memory: {exc}") from None
    return out


def request_size(text: str) -> int:
    """A --max-request-bytes value: a size as `parse_bytes` reads it (``512MiB``, ``1g``), from
    1 byte to the protobuf limit of 2 GiB - 1."""
    from fray.wire.limits import MAX_MESSAGE_BYTES

    try:
        size = parse_bytes(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if not 1 <= size <= MAX_MESSAGE_BYTES:
        raise argparse.ArgumentTypeError(f"must be from 1 byte to {MAX_MESSAGE_BYTES} bytes")
    return size


# ---------------------------------------------------------------------- option groups


def add_tls_server_args(p: argparse.ArgumentParser, what: str) -> None:
    """--tls-cert/--tls-key: serve HTTPS (both or neither; see fray.wire.tls)."""
    p.add_argument(
        "--tls-cert",
        default=os.environ.get("FRAY_TLS_CERT") or None,
        help=f"PEM certificate (chain) {what} serves HTTPS with; needs --tls-key "
        "(default: $FRAY_TLS_CERT)",
    )
    p.add_argument(
        "--tls-key",
        default=os.environ.get("FRAY_TLS_KEY") or None,
        help="PEM private key of --tls-cert (default: $FRAY_TLS_KEY)",
    )


def add_tls_ca_arg(p: argparse.ArgumentParser) -> None:
    """--tls-ca: the CA bundle that verifies https:// servers."""
    p.add_argument(
        "--tls-ca",
        default=None,
        help="PEM CA bundle that verifies an https:// controller (default: $FRAY_TLS_CA, "
        "else the system store)",
    )


def add_limit_args(p: argparse.ArgumentParser, *, per_client: bool) -> None:
    """--max-request-bytes (and, for the controller, --max-queued-tasks-per-client)."""
    from fray.wire import limits

    p.add_argument(
        "--max-request-bytes",
        type=request_size,
        default=limits.DEFAULT_MAX_REQUEST_BYTES,
        metavar="SIZE",
        help="largest request accepted, e.g. 512MiB (default 1GiB; at most 2GiB-1); larger "
        "ones are refused with resource_exhausted (HTTP 429)",
    )
    if per_client:
        p.add_argument(
            "--max-queued-tasks-per-client",
            type=int,
            default=limits.DEFAULT_MAX_QUEUED_TASKS_PER_CLIENT,
            metavar="N",
            help="unfinished queued tasks one client may have; more are refused with "
            f"resource_exhausted (default {limits.DEFAULT_MAX_QUEUED_TASKS_PER_CLIENT})",
        )


def add_controller_arg(p: argparse.ArgumentParser) -> None:
    """--controller: the controller's address (default $FRAY_CONTROLLER_ADDRESS)."""
    p.add_argument(
        "--controller",
        default=os.environ.get(CONTROLLER_ADDRESS_ENV) or None,
        metavar="URL",
        help=f"the controller's address (default: ${CONTROLLER_ADDRESS_ENV}, else "
        f"{DEFAULT_CONTROLLER_ADDRESS})",
    )


def add_client_args(p: argparse.ArgumentParser) -> None:
    """What a command talking to a controller takes: --controller, --token, --connect-timeout,
    --tls-ca."""
    add_controller_arg(p)
    p.add_argument("--token", default=None, help="bearer token (default: $FRAY_TOKEN)")
    p.add_argument(
        "--connect-timeout",
        type=seconds,
        default=5.0,
        help="seconds to wait for the controller to answer",
    )
    add_tls_ca_arg(p)
