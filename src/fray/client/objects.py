"""A context's objects: small ones inside the controller, large ones in this process's files.

An object whose pickle is at most `layout.INLINE_MAX_BYTES` travels as bytes (PutObject data,
task arguments, results), as it always did. A larger one is written once into this process's
`ObjectPlane` (shared memory, or spilled to disk) and only its `pb.ObjectLocation` goes to the
controller; readers on this host map the file, others fetch it from the plane's object server.

`ClientObjects` is what a `FrayContext` (and its actor handles, through its `ClientLink`) uses:
`put`/`get`/`free`, large call arguments (`store_arguments`: freed when the call's future is
done), large results (`load_result`: loaded once, then freed at the controller) and `close`
(the plane's files go, and the controller forgets them). The plane, and its server, are made
at the first large object; it binds the local address this process reaches the controller from.
Frees reach the controller from a thread of its own (`_Releaser`), never from the threads that
settle futures.
"""

from __future__ import annotations

import collections
import concurrent.futures
import ipaddress
import logging
import pickle
import socket
import threading
import uuid
import weakref
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from connectrpc.errors import ConnectError

from fray import errors
from fray.client.connections import refused
from fray.wire import payload
from fray.wire.controller_client import ControllerClient
from fray.wire.objects import ObjectPlane, StoredValue, layout
from fray.wire.payload import ObjectRef
from fray.wire.pb import controller_pb2 as pb

logger = logging.getLogger(__name__)

_CLOSE_RETRY_SECONDS = 2.0
_LATER_SECONDS = 1.0  # how often objects released from the garbage collector are sent


class ClientObjects:
    """The objects of one context (`owner`); see the module docstring. Thread-safe."""

    def __init__(self, controller: ControllerClient, owner: str, token: str | None) -> None:
        self._controller = controller
        self._owner = owner
        self._token = token
        self._lock = threading.Lock()
        self._plane: ObjectPlane | None = None
        # Located objects we put (args included), not freed yet, and where they are.
        self._owned: dict[str, pb.ObjectLocation] = {}
        self._unread: set[str] = set()  # large results not loaded (nor freed) yet
        self._releaser = _Releaser(controller)
        self._closed = False

    @property
    def plane(self) -> ObjectPlane:
        """This process's plane for the context, made on first use."""
        plane = self._plane
        if plane is None:
            with self._lock:
                if self._closed:
                    raise errors.FrayError("the FrayContext is closed")
                plane = self._plane
                if plane is None:
                    bind_host = local_address_for(self._controller.address)
                    plane = self._plane = ObjectPlane(
                        self._owner, bind_host=bind_host, token=self._token
                    )
        return plane

    # ------------------------------------------------------------------ put, get, free

    def put(self, value: Any) -> ObjectRef:
        """Store `value`: inline at the controller when small, else in our plane."""
        encoded = layout.encode(value, "the object given to put()")
        object_id = uuid.uuid4().hex  # ours: a retried PutObject repeats it
        if encoded.data_bytes <= layout.INLINE_MAX_BYTES:
            request = pb.PutObjectRequest(data=layout.inline_bytes(encoded), object_id=object_id)
            return ObjectRef(object_id, self._put(request).size_bytes)
        location = self._put_located(object_id, encoded)
        return ObjectRef(object_id, location.size_bytes)

    def get(self, ref: ObjectRef) -> Any:
        """The value of a stored object: our own file, mapped; else as the controller says."""
        plane = self._plane
        if plane is not None:
            path = plane.store.path(ref.object_id)
            if path is not None:
                return layout.load_file(path)
        try:
            response = self._controller.call(
                self._controller.rpc.get_object, pb.GetObjectRequest(object_id=ref.object_id)
            )
        except ConnectError as exc:
            raise refused(exc, "the request") from None
        if response.HasField("location"):
            plane = self.plane
            value = plane.load(ref.object_id, response.location)
            plane.delete([ref.object_id])  # a copy fetched from another host: its maps stay
            return value
        return payload.loads(response.data)

    def free(self, object_ids: list[str]) -> int:
        """Delete objects at the controller and our files of them; how many it had."""
        try:
            deleted = self._controller.call(
                self._controller.rpc.delete_objects, pb.DeleteObjectsRequest(object_ids=object_ids)
            ).deleted
        except ConnectError as exc:
            raise refused(exc, "the request") from None
        self._forget(object_ids)
        return deleted

    def locations(self, object_ids: Iterable[str]) -> dict[str, pb.ObjectLocation]:
        """Where those of `object_ids` that this context stored are (not freed yet): sent with
        a direct task, so that its worker need not ask the controller."""
        with self._lock:
            owned = self._owned
            return {oid: owned[oid] for oid in object_ids if oid in owned}

    # ------------------------------------------------------------------ arguments, results

    def store_arguments(
        self,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        name: str,
        future: concurrent.futures.Future[Any] | None,
    ) -> tuple[bytes, str]:
        """Large call arguments as an object: the small args that stand for them and its id
        (the call's object_ids must list it). Freed when `future` is done, however it ends
        (no future: an actor's constructor arguments, kept for its restarts until close)."""
        encoded = layout.encode((args, dict(kwargs)), f"the arguments of {name}")
        object_id = uuid.uuid4().hex
        location = self._put_located(object_id, encoded)
        stand_in = StoredValue(object_id, location.SerializeToString())
        if future is not None:
            future.add_done_callback(lambda _: self.release([object_id]))
        return pickle.dumps(stand_in, protocol=payload.PROTOCOL), object_id

    def unread(self, stored: StoredValue, holder: object) -> None:
        """A large result not loaded yet: freed when loaded, when `holder` (its future) is
        garbage, or at close."""
        with self._lock:
            self._unread.add(stored.object_id)
        self._releaser.start()  # its finalizer only queues the id for that thread
        finalizer = weakref.finalize(holder, self.release_result, stored.object_id)
        finalizer.atexit = False  # close() frees what is left

    def load_result(self, stored: StoredValue) -> Any:
        """A large result's value (ObjectLostError when it is gone); freed once read (or
        found lost). Other failures (a timeout reaching another host) leave it for a retry."""
        try:
            value = self.plane.load(stored.object_id, stored.location_pb())
        except errors.ObjectLostError:
            self.release([stored.object_id])
            raise
        self.release([stored.object_id])  # a fetched copy goes too: its maps stay valid
        return value

    def release_result(self, object_id: str) -> None:
        """A result that will never be read (its future was garbage-collected): free it,
        unless read. Runs inside the garbage collector, maybe in a thread that holds one of
        our locks: it takes none (set and deque operations are atomic)."""
        if object_id in self._unread:
            self._unread.discard(object_id)
            self._releaser.release_later(object_id)

    def release(self, object_ids: list[str]) -> None:
        """Free objects in the background: our files now, the controller's entries soon."""
        self._forget(object_ids)
        self._releaser.release(object_ids)

    def _forget(self, object_ids: list[str]) -> None:
        with self._lock:
            for object_id in object_ids:
                self._owned.pop(object_id, None)
            self._unread.difference_update(object_ids)
            plane = self._plane
        if plane is not None:
            plane.delete(object_ids)

    # ------------------------------------------------------------------ the controller

    def _put_located(self, object_id: str, encoded: layout.Encoded) -> pb.ObjectLocation:
        """Write an object into our plane and tell the controller where it is."""
        plane = self.plane
        location = plane.put(object_id, encoded)
        with self._lock:
            self._owned[object_id] = location
        try:
            self._put(pb.PutObjectRequest(object_id=object_id, location=location))
        except BaseException:
            self._forget([object_id])
            raise
        return location

    def _put(self, request: pb.PutObjectRequest) -> pb.PutObjectResponse:
        try:
            return self._controller.call(self._controller.rpc.put_object, request)
        except ConnectError as exc:
            raise refused(exc, "the request") from None

    def close(self) -> None:
        """Free what we hold at the controller (best effort), remove our files."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            leftover = sorted(self._owned.keys() | self._unread)
            self._owned.clear()
            self._unread.clear()
            plane, self._plane = self._plane, None
        self._releaser.close(leftover)
        if plane is not None:
            plane.close()


class _Releaser:
    """Sends DeleteObjects for released objects, in batches, from a thread of its own."""

    def __init__(self, controller: ControllerClient) -> None:
        self._controller = controller
        self._cond = threading.Condition()
        self._pending: list[str] = []
        self._later: collections.deque[str] = collections.deque()  # from release_later
        self._thread: threading.Thread | None = None
        self._closed = False

    def release_later(self, object_id: str) -> None:
        """Free an object at the next round (no lock taken: safe inside the garbage
        collector)."""
        self._later.append(object_id)

    def release(self, object_ids: Iterable[str]) -> None:
        with self._cond:
            if self._closed:
                return
            self._pending.extend(object_ids)
            self._cond.notify()
            self._start()

    def start(self) -> None:
        """Have the thread running (`release_later` cannot start it)."""
        with self._cond:
            if not self._closed:
                self._start()

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._loop, name="fray-objects-free", daemon=True
            )
            self._thread.start()

    def close(self, more: list[str]) -> None:
        """Free what is pending and `more` now (a short try), then stop."""
        with self._cond:
            self._closed = True
            pending, self._pending = self._pending + more + list(self._later), []
            self._later.clear()
            self._cond.notify()
            thread = self._thread
        if thread is not None:
            thread.join(_CLOSE_RETRY_SECONDS * 2)
        if pending:
            self._delete(pending, _CLOSE_RETRY_SECONDS)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._later and not self._closed:
                    self._cond.wait(_LATER_SECONDS)  # `release_later` does not notify
                if self._closed:
                    return
                batch, self._pending = self._pending, []
            while self._later:
                batch.append(self._later.popleft())
            self._delete(batch, None)

    def _delete(self, object_ids: list[str], retry_timeout: float | None) -> None:
        controller = self._controller
        request = pb.DeleteObjectsRequest(object_ids=object_ids)
        try:
            if retry_timeout is None:
                controller.call(controller.rpc.delete_objects, request)
            else:
                controller.call(controller.rpc.delete_objects, request, retry_timeout=retry_timeout)
        except (ConnectError, errors.FrayError) as exc:
            logger.warning("could not free %d objects at the controller: %s", len(object_ids), exc)


def pack_arguments(
    objects: ClientObjects | None,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    name: str,
    future: concurrent.futures.Future[Any] | None,
) -> tuple[bytes, list[str], str]:
    """A call's pickled arguments, the objects it names, and the object made of them ("" when
    none was): arguments larger than `layout.INLINE_MAX_BYTES` pickled become an object of
    `objects` (`ClientObjects.store_arguments`, freed when `future` is done), unless `objects`
    is None (they then go inline). An unpicklable argument fails here, named. Arrays are kept
    out of the first pickle (not copied) until their size is known."""
    object_ids = payload.object_ids_of(args, kwargs)
    buffers: list[pickle.PickleBuffer] = []
    data = payload.dumps_arguments(args, kwargs, name, buffers.append)
    if not buffers and len(data) <= layout.INLINE_MAX_BYTES:  # the common case: small
        return data, object_ids, ""
    size = len(data) + sum(memoryview(b).nbytes for b in buffers)
    if objects is None or size <= layout.INLINE_MAX_BYTES:  # in one pickle, arrays too
        return payload.dumps_arguments(args, kwargs, name), object_ids, ""
    data, stored = objects.store_arguments(args, kwargs, name, future)
    return data, [*object_ids, stored], stored


def local_address_for(address: str) -> str:
    """The local address this process reaches `address` (a URL) from: loopback for a loopback
    controller, else the interface's address (no packet is sent)."""
    parts = urlsplit(address)
    host = parts.hostname or "127.0.0.1"
    try:
        family, _, _, _, sockaddr = socket.getaddrinfo(
            host, parts.port or 80, type=socket.SOCK_STREAM
        )[0]
        if ipaddress.ip_address(str(sockaddr[0]).split("%")[0]).is_loopback:
            return str(sockaddr[0])
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect(sockaddr)
            return str(probe.getsockname()[0])
    except (OSError, ValueError) as exc:
        logger.warning("no local address found for %s (%s): serving objects on 0.0.0.0", host, exc)
        return "0.0.0.0"
