"""The object registry: values clients `put` once (`ctx.put`) for many tasks and actors to use.

Small objects are kept here as their pickled bytes. A large one (see `fray.wire.objects`) is
kept as its `pb.ObjectLocation` only: its bytes stay in a file of the process that made it (its
owner), and readers map that file or stream it from the owner. Objects are kept by id until a
client deletes them or, for located ones, until their owner goes away (`owners`,
`drop_owner`). Tasks and actors name them in their specs, and workers fetch them with
`GetObject`. Puts and deletes are marked in `changes`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from fray.controller.changes import Changes
from fray.controller.records import AlreadyExists, InvalidRequest, NotFound
from fray.wire.limits import MAX_ID_LENGTH
from fray.wire.pb import controller_pb2 as pb

# Who holds located objects: (owner, host, pid, pid start, object server).
OwnerKey = tuple[str, str, int, int, str]


def owner_key(location: pb.ObjectLocation) -> OwnerKey:
    return (location.owner, location.host, location.pid, location.pid_start, location.url)


class ObjectStore:
    """Pickled bytes (`by_id`) or locations (`located`) by object id."""

    def __init__(self, changes: Changes | None = None) -> None:
        self.by_id: dict[str, bytes] = {}
        self.located: dict[str, pb.ObjectLocation] = {}
        self.changes = Changes() if changes is None else changes

    def put(
        self, data: bytes, object_id: str = "", location: pb.ObjectLocation | None = None
    ) -> tuple[str, int]:
        """Store `data`, or where the object is (`location`), under `object_id` (a new id when
        empty); returns the id and the object's size. The same id with the same size again is
        a repeat of a put whose answer was lost: nothing changes."""
        if location is not None:
            _check_location(location, data)
        size = location.size_bytes if location is not None else len(data)
        if object_id:
            if len(object_id) > MAX_ID_LENGTH:
                raise InvalidRequest(f"object_id longer than {MAX_ID_LENGTH} characters")
            if self.contains(object_id):
                if self.size_of(object_id) == size:
                    return object_id, size
                raise AlreadyExists(f"object {object_id} already exists")
        object_id = object_id or uuid.uuid4().hex
        if location is not None:
            self.located[object_id] = location
        else:
            self.by_id[object_id] = data
        self.changes.object(object_id)
        return object_id, size

    def get(self, object_id: str) -> bytes | pb.ObjectLocation:
        """An object's pickled bytes, or where it is."""
        found = self.by_id.get(object_id)
        if found is None:
            found = self.located.get(object_id)  # type: ignore[assignment]
        if found is None:
            raise NotFound(f"object {object_id} not found")
        return found

    def contains(self, object_id: str) -> bool:
        return object_id in self.by_id or object_id in self.located

    def size_of(self, object_id: str) -> int:
        data = self.by_id.get(object_id)
        return len(data) if data is not None else self.located[object_id].size_bytes

    def delete(self, object_ids: Iterable[str]) -> int:
        """Delete objects; returns how many existed."""
        deleted = 0
        for object_id in object_ids:
            if (
                self.by_id.pop(object_id, None) is not None
                or self.located.pop(object_id, None) is not None
            ):
                self.changes.object(object_id)
                deleted += 1
        return deleted

    def first_missing(self, object_ids: Iterable[str]) -> str | None:
        """The first of `object_ids` that is not stored (None: all are)."""
        return next((o for o in object_ids if not self.contains(o)), None)

    def owners(self) -> dict[OwnerKey, pb.ObjectLocation]:
        """One location per process holding located objects."""
        return {owner_key(loc): loc for loc in self.located.values()}

    def drop_owner(self, key: OwnerKey) -> list[str]:
        """Forget the objects of a process that went away; returns their ids."""
        gone = [oid for oid, loc in self.located.items() if owner_key(loc) == key]
        self.delete(gone)
        return gone

    def __len__(self) -> int:
        return len(self.by_id) + len(self.located)

    @property
    def size_bytes(self) -> int:
        """The bytes of every object, wherever they are."""
        inline = sum(len(b) for b in self.by_id.values())
        return inline + sum(loc.size_bytes for loc in self.located.values())

    @property
    def held_bytes(self) -> int:
        """The bytes this process holds (small objects only)."""
        return sum(len(b) for b in self.by_id.values())


def _check_location(location: pb.ObjectLocation, data: bytes) -> None:
    if data:
        raise InvalidRequest("a PutObject carries either data or a location, not both")
    if location.size_bytes <= 0:
        raise InvalidRequest("location.size_bytes must be > 0")
    if not location.owner or not location.host or not (location.path or location.url):
        raise InvalidRequest("location needs owner, host, and a path or url")
    for name in ("owner", "host", "path", "url"):
        if len(getattr(location, name)) > 4096:
            raise InvalidRequest(f"location.{name} is too long")
