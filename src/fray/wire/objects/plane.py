"""What a process uses for large objects: its store, its object server, and reading others'."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import threading
from collections.abc import Iterable
from concurrent.futures import Future
from typing import Any

from fray.errors import ObjectLostError
from fray.wire.objects.fetch import fetch_to_file
from fray.wire.objects.layout import Encoded, load_file
from fray.wire.objects.server import ObjectServer
from fray.wire.objects.store import LocalStore, host_key
from fray.wire.pb import controller_pb2 as pb

logger = logging.getLogger(__name__)


def objects_token(token: str | None) -> str | None:
    """The token object servers ask for, derived from the cluster's: object streams are plain
    HTTP, so what they carry must not be the token that lets one run code on the cluster."""
    if not token:
        return None
    return hmac.new(token.encode(), b"fray-objects", hashlib.sha256).hexdigest()


class ObjectPlane:
    """One process's object files for `owner`, served on `bind_host` (thread-safe). `token`
    is the cluster's; its servers and fetches use `objects_token(token)`."""

    def __init__(
        self,
        owner: str,
        *,
        bind_host: str = "127.0.0.1",
        advertise_host: str | None = None,
        token: str | None = None,
        store: LocalStore | None = None,
    ) -> None:
        self.owner = owner
        self.bind_host = bind_host
        self.advertise_host = advertise_host
        self.token = objects_token(token)
        self.store = store if store is not None else LocalStore(owner)
        self._lock = threading.Lock()
        self._server: ObjectServer | None = None
        self._fetching: dict[str, Future[str]] = {}
        self._closed = False

    # ------------------------------------------------------------------ serving

    @property
    def server(self) -> ObjectServer:
        """The object server, started on first use."""
        with self._lock:
            if self._closed:
                raise RuntimeError(f"object plane of {self.owner} is closed")
            if self._server is None:
                server = ObjectServer(
                    self.store, self.bind_host, self.token, advertise_host=self.advertise_host
                )
                server.start()
                self._server = server
            return self._server

    def put(self, object_id: str, encoded: Encoded) -> pb.ObjectLocation:
        """Write `encoded` to this process's store; its location (with url)."""
        server = self.server  # first: a server that cannot start leaves no file behind
        location = self.store.write(object_id, encoded)
        location.url = server.url(object_id)
        return location

    def adopt(self, object_id: str, path: str) -> pb.ObjectLocation:
        """Take over a file a child process wrote into `store.directory_for_child()`."""
        server = self.server
        location = self.store.register(object_id, path)
        location.url = server.url(object_id)
        return location

    # ------------------------------------------------------------------ reading

    def open(self, object_id: str, location: pb.ObjectLocation) -> str:
        """A local path holding the object: own file, the owner's file on this host, or a
        copy fetched once into this store."""
        with self._lock:
            pending = self._fetching.get(object_id)
            if pending is None:
                own = self.store.path(object_id)
                if own is not None:
                    return own
                if location.host == host_key():
                    if location.path and os.access(location.path, os.R_OK):
                        return location.path
                    if not location.url:  # (else: another user, a private /tmp or /dev/shm)
                        raise self._gone(object_id, location)
                pending = Future()
                self._fetching[object_id] = pending
                mine = True
            else:
                mine = False
        if not mine:
            return pending.result()
        try:
            path = self._fetch(object_id, location)
        except BaseException as exc:
            pending.set_exception(exc)
            raise
        else:
            pending.set_result(path)
            return path
        finally:
            with self._lock:
                self._fetching.pop(object_id, None)

    @staticmethod
    def _gone(object_id: str, location: pb.ObjectLocation) -> ObjectLostError:
        return ObjectLostError(
            f"object {object_id} is gone: its file {location.path or '(none)'} on this host "
            f"no longer exists (freed, or its owner {location.owner or '?'} went away)",
            object_id=object_id,
        )

    def _fetch(self, object_id: str, location: pb.ObjectLocation) -> str:
        if not location.url:
            raise ObjectLostError(
                f"object {object_id} is on host {location.host} with no url to fetch it from",
                object_id=object_id,
            )
        path = self.store.reserve(object_id, location.size_bytes, hidden=True)
        try:
            fetch_to_file(location.url, path, location.size_bytes, self.token)
        except BaseException:
            self.store.delete([object_id])
            raise
        if not self.store.reveal(object_id):
            raise ObjectLostError(
                f"object {object_id} was freed while fetched", object_id=object_id
            )
        logger.debug("object %s fetched from %s", object_id, location.url)
        return path

    def load(self, object_id: str, location: pb.ObjectLocation) -> Any:
        """The object's value (out-of-band buffers mapped, not copied)."""
        path = self.open(object_id, location)
        try:
            return load_file(path)
        except FileNotFoundError as exc:
            raise ObjectLostError(
                f"object {object_id} is gone: {path} was removed (freed, or its owner went away)",
                object_id=object_id,
            ) from exc

    # ------------------------------------------------------------------ lifetime

    def delete(self, object_ids: Iterable[str]) -> None:
        self.store.delete(object_ids)

    def ids(self) -> list[str]:
        return self.store.ids()

    def close(self) -> None:
        """Stop the server and remove this process's files (idempotent)."""
        with self._lock:
            self._closed = True
            server, self._server = self._server, None
        if server is not None:
            server.stop()
        self.store.close()
