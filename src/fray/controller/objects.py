"""The object store: values clients `put` once (`ctx.put`) for many tasks and actors to use.

Objects are kept by id until a client deletes them; tasks and actors name them in their specs,
and workers fetch them with `GetObject`. Puts and deletes are marked in `changes`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from fray.controller.changes import Changes
from fray.controller.records import AlreadyExists, InvalidRequest, NotFound
from fray.wire.limits import MAX_ID_LENGTH


class ObjectStore:
    """Bytes by object id."""

    def __init__(self, changes: Changes | None = None) -> None:
        self.by_id: dict[str, bytes] = {}
        self.changes = Changes() if changes is None else changes

    def put(self, data: bytes, object_id: str = "") -> str:
        """Store `data` under `object_id` (a new id when empty). The same id with the same
        size again is a repeat of a put whose answer was lost: nothing changes."""
        if object_id:
            if len(object_id) > MAX_ID_LENGTH:
                raise InvalidRequest(f"object_id longer than {MAX_ID_LENGTH} characters")
            held = self.by_id.get(object_id)
            if held is not None:
                if len(held) == len(data):
                    return object_id
                raise AlreadyExists(f"object {object_id} already exists")
        object_id = object_id or uuid.uuid4().hex
        self.by_id[object_id] = data
        self.changes.object(object_id)
        return object_id

    def get(self, object_id: str) -> bytes:
        data = self.by_id.get(object_id)
        if data is None:
            raise NotFound(f"object {object_id} not found")
        return data

    def delete(self, object_ids: Iterable[str]) -> int:
        """Delete objects; returns how many existed."""
        deleted = 0
        for object_id in object_ids:
            if self.by_id.pop(object_id, None) is not None:
                self.changes.object(object_id)
                deleted += 1
        return deleted

    def first_missing(self, object_ids: Iterable[str]) -> str | None:
        """The first of `object_ids` that is not stored (None: all are)."""
        return next((o for o in object_ids if o not in self.by_id), None)
