"""Network helpers."""

from __future__ import annotations

import ipaddress
import socket

__all__ = [
    "CONTROLLER_ADDRESS_ENV",
    "DEFAULT_CONTROLLER_ADDRESS",
    "DEFAULT_CONTROLLER_PORT",
    "free_port",
]

# fray's controller port: not one Ray (6379, 8265, 10001, 8076, 52365, 8000) or Dask (8786-8789)
# uses, nor a common service's.
DEFAULT_CONTROLLER_PORT = 7625
DEFAULT_CONTROLLER_ADDRESS = f"http://127.0.0.1:{DEFAULT_CONTROLLER_PORT}"
# The controller clients use when not told (`create_job_ctx("fray")`, `fray worker`, `fray
# status`), as `ray.init()` reads RAY_ADDRESS; also set for code running in fray tasks.
CONTROLLER_ADDRESS_ENV = "FRAY_CONTROLLER_ADDRESS"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that was free a moment ago (it may be taken by the time it is
    used: for a server that must be told a port, or a "nothing listens here" address)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or an address) is this machine's loopback."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
