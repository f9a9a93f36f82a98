"""The worker's objects: those tasks name (from `ctx.put`, or large arguments), and the large
results its tasks returned.

Tasks and actor constructors name the objects they need (`object_ids`); the slot or actor host
asks the cache. A small object is its pickled bytes, fetched once from the controller (the
executor unpickles them); the least recently used are dropped once the cache holds more than
its budget. A large one lives in a file (`fray.wire.objects`): the controller answers where
(or, for a direct task's objects that its client stored on this host, the client said so with
the task: `hint`), and the worker's `ObjectPlane` gives a local path (the owner's file on this
host, or a copy fetched from the owner's object server); the executor gets that path
(`ObjectFile`) and maps it.

A task result too large to go inline is written by the executor into the plane's directory for
children; `store_result` adopts the file, tells the controller where it is (`PutObject` with a
location, the worker its owner) and gives the result bytes the client decodes (a pickled
`StoredValue`).

Every `LeaseTasks` lists the ids held (`ids`: cached bytes, files, owned results) and its
answer names those the controller no longer stores (`ctx.free`, a result its client read, an
owner gone): `drop` forgets them and deletes this worker's files of them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping

from fray.errors import ObjectLostError
from fray.wire.controller_client import ControllerClient
from fray.wire.objects import ObjectPlane, StoredValue, host_key
from fray.wire.pb import controller_pb2 as pb
from fray.worker.executor import ObjectData, ObjectFile

__all__ = ["DEFAULT_BUDGET_BYTES", "ObjectCache", "ObjectFile"]

logger = logging.getLogger(__name__)

DEFAULT_BUDGET_BYTES = 1 << 30
MAX_HINTS = 1024  # object locations from clients, waiting for their tasks


class ObjectCache:
    """Objects by id: small ones' pickled bytes (least recently used first), large ones' local
    files, and the results this worker owns (thread-safe). Without a `plane`, large objects
    cannot be read (a controller answering a location fails the task)."""

    def __init__(
        self,
        client: ControllerClient,
        budget_bytes: int = DEFAULT_BUDGET_BYTES,
        plane: ObjectPlane | None = None,
    ) -> None:
        self._client = client
        self._budget = budget_bytes
        self._plane = plane
        self._objects: OrderedDict[str, bytes] = OrderedDict()
        self._bytes = 0
        self._files: dict[str, str] = {}  # large objects: their local path
        self._owned: set[str] = set()  # results stored here, known to the controller
        self._hints: dict[str, pb.ObjectLocation] = {}  # where clients say objects are
        self._result_dir: str | None = None
        self._lock = threading.Lock()

    def get(self, object_id: str) -> ObjectData:
        """An object's pickled bytes or, for a large one, its file, from the cache, a hint (a
        file on this host) or the controller (which may raise a `ConnectError`, `not_found`
        for an object that was freed; a large object whose owner is gone raises
        `ObjectLostError`)."""
        with self._lock:
            data = self._objects.get(object_id)
            if data is not None:
                self._objects.move_to_end(object_id)
                return data
            path = self._files.get(object_id)
            hint = self._hints.pop(object_id, None)
        if path is not None and os.path.exists(path):
            return ObjectFile(path)
        if hint is not None and _readable_here(hint):
            with contextlib.suppress(ObjectLostError):  # (freed just now): ask the controller
                return ObjectFile(self._open(object_id, hint))
        request = pb.GetObjectRequest(object_id=object_id)
        response = self._client.call(self._client.rpc.get_object, request)
        if response.HasField("location"):
            return ObjectFile(self._open(object_id, response.location))
        data = response.data
        with self._lock:
            if object_id not in self._objects:  # another thread may have fetched it too
                self._objects[object_id] = data
                self._bytes += len(data)
            while self._bytes > self._budget and len(self._objects) > 1:
                _, old = self._objects.popitem(last=False)
                self._bytes -= len(old)
        return data

    def hint(self, locations: Mapping[str, pb.ObjectLocation]) -> None:
        """Where a direct task's client says some of its objects are (it stored them): `get`
        opens those whose file is on this host and readable without asking the controller
        (other hints are ignored: the controller is asked). Only the latest `MAX_HINTS` are
        kept."""
        with self._lock:
            hints = self._hints
            for object_id, location in locations.items():
                if object_id not in self._files:
                    hints.pop(object_id, None)  # (re-inserted: the newest)
                    hints[object_id] = kept = pb.ObjectLocation()
                    kept.CopyFrom(location)  # (not a view that keeps the whole request)
            while len(hints) > MAX_HINTS:
                del hints[next(iter(hints))]

    def _open(self, object_id: str, location: pb.ObjectLocation) -> str:
        if self._plane is None:
            raise RuntimeError(f"object {object_id} is stored as a file and this cache has none")
        path = self._plane.open(object_id, location)
        with self._lock:
            self._files[object_id] = path
        return path

    def result_dir(self) -> str | None:
        """The directory where executors write large results (None: no plane, results go
        inline)."""
        if self._plane is None:
            return None
        with self._lock:
            if self._result_dir is None:
                self._result_dir = self._plane.store.directory_for_child()
            return self._result_dir

    def store_result(self, object_id: str) -> bytes:
        """Adopt the large result an executor wrote (`object_id` in `result_dir`), tell the
        controller where it is, and give the task's result bytes: a pickled `StoredValue`.
        On failure the file is deleted and the error raised."""
        plane, directory = self._plane, self.result_dir()
        if plane is None or directory is None:
            raise RuntimeError("a stored result without an object plane")
        path = os.path.join(directory, object_id)
        try:
            location = plane.adopt(object_id, path)
            request = pb.PutObjectRequest(object_id=object_id, location=location)
            self._client.call(self._client.rpc.put_object, request)
        except BaseException:
            plane.delete([object_id])
            with contextlib.suppress(OSError):  # not adopted yet (e.g. no server): by path
                os.unlink(path)
            raise
        with self._lock:
            self._owned.add(object_id)  # listed from now on: the controller knows it
        value = StoredValue(object_id=object_id, location=location.SerializeToString())
        return pickle.dumps(value, protocol=5)

    def ids(self) -> list[str]:
        """The ids held: cached bytes, local files, results owned here."""
        with self._lock:
            return list(dict.fromkeys([*self._objects, *self._files, *self._owned]))

    def drop(self, object_ids: Iterable[str]) -> None:
        """Forget objects (freed at the controller) and delete this worker's files of them;
        tasks running with them keep their copy (a file already mapped stays readable)."""
        object_ids = list(object_ids)
        with self._lock:
            for object_id in object_ids:
                data = self._objects.pop(object_id, None)
                if data is not None:
                    self._bytes -= len(data)
                self._files.pop(object_id, None)
                self._owned.discard(object_id)
        if self._plane is not None:
            try:
                self._plane.delete(object_ids)
            except Exception:  # never let a cleanup stop the lease loop
                logger.exception("could not delete objects %s", object_ids[:5])

    @property
    def size_bytes(self) -> int:
        """The bytes held: cached bytes and the plane's files."""
        files = self._plane.store.size_bytes if self._plane is not None else 0
        return self._bytes + files

    def close(self) -> None:
        """Delete this worker's object files (the plane's server stops)."""
        if self._plane is not None:
            self._plane.close()


def _readable_here(location: pb.ObjectLocation) -> bool:
    """Whether `location` is a file on this host that this process can read."""
    return bool(location.host == host_key() and location.path and os.access(location.path, os.R_OK))
