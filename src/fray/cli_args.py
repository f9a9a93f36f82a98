"""Types and help of the `fray` command's options: bad values are argparse errors (exit 2 with
a usage line), never tracebacks, and help shows each option's default and the environment
variable it reads."""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable
from typing import NamedTuple

from fray.common.net import CONTROLLER_ADDRESS_ENV, DEFAULT_CONTROLLER_ADDRESS
from fray.common.sizes import parse_bytes
from fray.wire.pb import controller_pb2 as pb

__all__ = [
    "AMOUNT_KEYS",
    "LOG_LEVELS",
    "RESOURCES_SYNTAX",
    "SIZE_KEYS",
    "HelpFormatter",
    "ResourceArgs",
    "add_client_args",
    "add_controller_arg",
    "add_limit_args",
    "add_tls_ca_arg",
    "add_tls_server_args",
    "at_least",
    "env_pair",
    "job_name",
    "log_level",
    "parse_resources",
    "port_number",
    "request_size",
    "requirements",
    "seconds",
    "worker_resources",
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


# --resources: keys whose values must be numbers (sizes for SIZE_KEYS), whatever they look like.
SIZE_KEYS = ("memory", "disk")
AMOUNT_KEYS = ("cpus", "gpus", "tpus", *SIZE_KEYS)
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
RESOURCES_SYNTAX = (
    "numbers are amounts (cpus=8, gpus=2; memory and disk are sizes in bytes such as 32GiB or "
    "512m, powers of 1024), any other value is a label (gpu_type=H100, tpu=v5litepod-4, "
    "zone=us-east1)"
)


class ResourceArgs(NamedTuple):
    """A parsed --resources value: amounts (numbers; memory and disk in bytes) and labels."""

    amounts: dict[str, float]
    labels: dict[str, str]


def parse_resources(text: str) -> ResourceArgs:
    """'cpus=8,memory=32GiB,gpu_type=H100' -> amounts {cpus: 8, memory: 34359738368} and labels
    {gpu_type: H100}.

    A value that reads as a number is an amount (finite, >= 0); ``memory`` and ``disk`` are sizes
    (:func:`fray.common.sizes.parse_bytes`: units are powers of 1024); ``cpus``, ``gpus``,
    ``tpus``, ``memory`` and ``disk`` must be amounts; anything else is a label. A key given
    twice keeps its last value. Bad input is an ``argparse.ArgumentTypeError`` naming it.
    """
    amounts: dict[str, float] = {}
    labels: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = (part.strip() for part in item.partition("="))
        if not sep or not key or not value:
            raise argparse.ArgumentTypeError(f"resources need key=value, got {item!r}")
        amounts.pop(key, None)
        labels.pop(key, None)
        if key in SIZE_KEYS:
            try:
                amounts[key] = float(parse_bytes(value))
            except ValueError as exc:
                raise argparse.ArgumentTypeError(f"{key}: {exc}") from None
        elif _NUMBER.fullmatch(value):
            amount = float(value)
            if not 0 <= amount < float("inf"):
                raise argparse.ArgumentTypeError(f"{key} must be a number >= 0, got {value!r}")
            amounts[key] = amount
        elif key in AMOUNT_KEYS:
            raise argparse.ArgumentTypeError(f"{key} must be a number >= 0, got {value!r}")
        else:
            labels[key] = value
    return ResourceArgs(amounts, labels)


def worker_resources(parsed: ResourceArgs) -> pb.Resources:
    """What `fray worker --resources` offers on the wire: every amount as a capacity, the labels,
    and ``cpus``/``memory_bytes`` mirrored when given (left out otherwise: the worker fills in
    the machine's)."""
    resources = pb.Resources(capacities=parsed.amounts, labels=parsed.labels)
    if "cpus" in parsed.amounts:
        resources.cpus = parsed.amounts["cpus"]
    if "memory" in parsed.amounts:
        resources.memory_bytes = int(parsed.amounts["memory"])
    return resources


def requirements(parsed: ResourceArgs) -> pb.Requirements:
    """What `fray job submit --resources` asks of each replica's worker."""
    return pb.Requirements(resources=parsed.amounts, labels=parsed.labels)


def env_pair(text: str) -> tuple[str, str]:
    """An --env value: KEY=VALUE (the value may be empty or hold '=')."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"needs KEY=VALUE, got {text!r}")
    return key, value


def job_name(text: str) -> str:
    """A --name value: 1 to 100 characters, no '/'."""
    if not text or "/" in text or len(text) > 100:
        raise argparse.ArgumentTypeError(
            f"a job name is 1-100 characters without '/', got {text!r}"
        )
    return text


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
