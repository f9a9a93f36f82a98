"""The worker's cache of objects from `ctx.put`: fetched once from the controller, then kept
until the controller says they were freed.

Tasks and actor constructors name the objects they need (`object_ids`); the slot or actor host
asks the cache, which returns the pickled bytes (a task's executor unpickles them). Every
`LeaseTasks` lists the cached ids (`ids`) and its answer names those the controller no longer
stores (`ctx.free`, or a controller that lost them): the cache drops them (`drop`), as it
reconciles tasks and actors. The least recently used objects are also dropped once the cache
holds more than its budget.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable

from fray.wire.controller_client import ControllerClient
from fray.wire.pb import controller_pb2 as pb

DEFAULT_BUDGET_BYTES = 1 << 30


class ObjectCache:
    """Objects' pickled bytes by id, least recently used first (thread-safe)."""

    def __init__(self, client: ControllerClient, budget_bytes: int = DEFAULT_BUDGET_BYTES) -> None:
        self._client = client
        self._budget = budget_bytes
        self._objects: OrderedDict[str, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, object_id: str) -> bytes:
        """An object's pickled bytes, from the cache or the controller (which may raise a
        `ConnectError`, `not_found` for an object that was freed)."""
        with self._lock:
            data = self._objects.get(object_id)
            if data is not None:
                self._objects.move_to_end(object_id)
                return data
        request = pb.GetObjectRequest(object_id=object_id)
        data = self._client.call(self._client.rpc.get_object, request).data
        with self._lock:
            if object_id not in self._objects:  # another thread may have fetched it too
                self._objects[object_id] = data
                self._bytes += len(data)
            while self._bytes > self._budget and len(self._objects) > 1:
                _, old = self._objects.popitem(last=False)
                self._bytes -= len(old)
        return data

    def ids(self) -> list[str]:
        """The ids of the cached objects."""
        with self._lock:
            return list(self._objects)

    def drop(self, object_ids: Iterable[str]) -> None:
        """Forget objects (freed at the controller); tasks running with them keep their copy."""
        with self._lock:
            for object_id in object_ids:
                data = self._objects.pop(object_id, None)
                if data is not None:
                    self._bytes -= len(data)

    @property
    def size_bytes(self) -> int:
        """The bytes held."""
        return self._bytes
