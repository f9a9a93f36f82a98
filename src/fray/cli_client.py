"""How `fray` subcommands talk to a controller: one ControllerClient from --controller, --token,
--tls-ca and --connect-timeout, and errors printed as one line ``fray COMMAND: ...`` (exit 1)
instead of tracebacks. Shared by `fray.cli` and `fray.cli_job`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from fray.common.net import DEFAULT_CONTROLLER_ADDRESS

if TYPE_CHECKING:
    from fray.wire.controller_client import ControllerClient

__all__ = ["talking_to_controller", "with_client"]


def talking_to_controller(command: str, run: Callable[[], int]) -> int:
    """``run()``; exit code 1, with the reason on stderr, when the controller cannot be
    reached or refuses."""
    from connectrpc.errors import ConnectError

    from fray.errors import ControllerUnavailableError

    try:
        return run()
    except ControllerUnavailableError as exc:
        print(f"fray {command}: {exc}", file=sys.stderr)
    except ConnectError as exc:
        said = f"the controller said {exc.code.name}: {exc.message}"
        print(f"fray {command}: {said}", file=sys.stderr)
    return 1


def with_client(
    command: str, args: argparse.Namespace, use: Callable[[ControllerClient], int]
) -> int:
    """`use(client)` with a ControllerClient for --controller; errors as `fray COMMAND: ...`."""
    from fray.wire.controller_client import ControllerClient

    try:
        client = ControllerClient(
            args.controller or DEFAULT_CONTROLLER_ADDRESS,
            token=args.token,
            tls_ca=args.tls_ca,
            retry_timeout=args.connect_timeout,
        )
    except ValueError as exc:  # e.g. a malformed address, an unreadable --tls-ca
        print(f"fray {command}: {exc}", file=sys.stderr)
        return 2

    def probed() -> int:
        from fray.wire.probe import probe

        probe(client, args.connect_timeout)  # "no fray controller at ...", not a raw error
        return use(client)

    try:
        return talking_to_controller(command, probed)
    finally:
        client.close()
