"""The worker's cache of objects from `ctx.put`: fetched once from the controller, then kept.

Tasks and actor constructors name the objects they need (`object_ids`); the slot or actor host
asks the cache, which returns the pickled bytes (a task's executor unpickles them). The least
recently used objects are dropped once the cache holds more than its budget.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

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
            self._objects[object_id] = data
            self._bytes += len(data)
            while self._bytes > self._budget and len(self._objects) > 1:
                _, old = self._objects.popitem(last=False)
                self._bytes -= len(old)
        return data
