"""The connections a FrayContext shares with its parts, and what their errors mean.

- `WorkerClients`: one `FrayWorker` client per worker address (the direct path and actor calls);
- `ClientLink`: what actor handles get from their context (its controller client, its worker
  clients, its owner name, and how to find the same link in a process that unpickles a handle);
- `never_connected` and `refused`: reading Connect errors.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from connectrpc.code import Code
from connectrpc.errors import ConnectError

from fray import errors
from fray.wire import auth
from fray.wire.controller_client import ControllerClient
from fray.wire.limits import MAX_MESSAGE_BYTES
from fray.wire.pb.worker_connect import FrayWorkerClientSync


class WorkerClients:
    """One FrayWorker client per worker address, shared by a context's threads."""

    def __init__(self, token: str | None) -> None:
        self.headers = auth.auth_headers(token)
        self._clients: dict[str, FrayWorkerClientSync] = {}
        self._lock = threading.Lock()

    def get(self, address: str) -> FrayWorkerClientSync:
        client = self._clients.get(address)
        if client is None:
            with self._lock:
                client = self._clients.get(address)
                if client is None:
                    client = FrayWorkerClientSync(
                        address,
                        send_compression=None,
                        accept_compression=(),
                        read_max_bytes=MAX_MESSAGE_BYTES,
                    )
                    self._clients[address] = client
        return client

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()


@dataclass(frozen=True)
class ClientLink:
    """What actor handles use of their context.

    `reopen(address)` gives the link of this process's shared context for a controller: a
    module-level function (so that it pickles by reference), called where a handle is unpickled.
    """

    controller: ControllerClient
    workers: WorkerClients
    owner: str
    reopen: Callable[[str], ClientLink]

    @property
    def address(self) -> str:
        return self.controller.address


def never_connected(exc: ConnectError) -> bool:
    """A refused connection: nothing reached the worker. (pyqwest says so only in its text.)"""
    return exc.code == Code.UNAVAILABLE and "Connection refused" in exc.message


def refused(exc: ConnectError, what: str) -> errors.ControllerError:
    """The fray error for a request the controller answered with a Connect error."""
    code = exc.code.name.lower()
    return errors.ControllerError(
        f"the controller refused {what} ({code}): {exc.message}", code=code
    )
