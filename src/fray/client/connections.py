"""The connections a FrayContext shares with its parts, and what their errors mean.

- `WorkerClients`: one `FrayWorker` client per worker address (the direct path and actor calls):
  `PlainWorkerClient` for ``http://`` workers, connectrpc's client verifying ``https://`` ones
  as `fray.wire.tls` says;
- `ClientLink`: what actor handles get from their context (its controller client, its worker
  clients, its owner name, and how to find the same link in a process that unpickles a handle);
- `never_connected` and `refused`: reading Connect errors.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from connectrpc.code import Code
from connectrpc.errors import ConnectError

from fray import errors
from fray.client.output import DriverLog
from fray.wire import auth, tls
from fray.wire.controller_client import ControllerClient
from fray.wire.limits import MAX_MESSAGE_BYTES
from fray.wire.pb import worker_pb2 as wpb
from fray.wire.pb.worker_connect import FrayWorkerClientSync
from fray.wire.plain_client import NOT_SENT, PlainService

if TYPE_CHECKING:
    from fray.client.objects import ClientObjects


class WorkerClients:
    """One FrayWorker client per worker address, shared by a context's threads.

    ``http://`` workers are called through `fray.wire.plain_client` (same requests and
    answers, a fraction of the cost per call). ``https://`` workers get connectrpc's
    client, verifying them with `tls_ca` (a PEM bundle; None: the system store); a failed
    handshake with one is a `failed_precondition` saying why (`tls.HandshakeErrors`): nothing
    reached the worker.
    """

    def __init__(self, token: str | None, tls_ca: str | None = None) -> None:
        self.headers = auth.auth_headers(token)
        self._tls_ca = tls_ca
        self._trusting = tls.trusting(tls_ca) if tls_ca else None  # a bad bundle fails here
        self._clients: dict[str, FrayWorkerClientSync] = {}
        self._lock = threading.Lock()

    def get(self, address: str) -> FrayWorkerClientSync:
        client = self._clients.get(address)
        if client is None:
            with self._lock:
                client = self._clients.get(address)
                if client is None and not tls.is_https(address):
                    plain = PlainService(
                        address,
                        wpb.DESCRIPTOR.services_by_name["FrayWorker"],
                        read_max_bytes=MAX_MESSAGE_BYTES,
                    )  # the generated client's methods, duck-typed
                    client = self._clients[address] = cast(FrayWorkerClientSync, plain)
                if client is None:
                    client = self._clients[address] = FrayWorkerClientSync(
                        address,
                        send_compression=None,
                        accept_compression=(),
                        read_max_bytes=MAX_MESSAGE_BYTES,
                        interceptors=[tls.HandshakeErrors(address, self._tls_ca, "the worker")],
                        http_client=self._trusting,
                    )
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
    driver_log: DriverLog | None = None  # prints what actor calls printed (log_to_driver)
    objects: ClientObjects | None = None  # holds large call arguments and results

    @property
    def address(self) -> str:
        return self.controller.address


def never_connected(exc: ConnectError) -> bool:
    """A refused connection (or no address to connect to): nothing reached the worker. (The
    clients say so only in their text.)"""
    return exc.code == Code.UNAVAILABLE and (
        "Connection refused" in exc.message or NOT_SENT in exc.message
    )


def refused(exc: ConnectError, what: str) -> errors.ControllerError:
    """The fray error for a request the controller answered with a Connect error."""
    code = exc.code.name.lower()
    return errors.ControllerError(
        f"the controller refused {what} ({code}): {exc.message}", code=code
    )
