"""Reading another host's object: one raw HTTP GET received straight into a mapped file."""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import socket
from urllib.parse import urlsplit

from fray.errors import ObjectLostError
from fray.wire.objects.server import OBJECTS_PREFIX
from fray.wire.objects.store import host_key, process_start
from fray.wire.pb import controller_pb2 as pb

logger = logging.getLogger(__name__)

_HEAD_MAX = 64 * 1024
_RECV_CHUNK = 16 * 1024 * 1024
_RCVBUF = 4 * 1024 * 1024
_GONE = "the process holding it is gone or unreachable"


def _object_id(url: str) -> str:
    path = urlsplit(url).path
    return path[len(OBJECTS_PREFIX) :] if path.startswith(OBJECTS_PREFIX) else ""


def _request(url: str, token: str | None) -> tuple[tuple[str, int], bytes]:
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"not an object server url: {url!r}")
    port = parts.port or 80
    lines = [
        f"GET {parts.path or '/'} HTTP/1.1",
        f"Host: {parts.netloc}",
        "Connection: close",
    ]
    if token:
        lines.append(f"Authorization: Bearer {token}")
    return (parts.hostname, port), ("\r\n".join(lines) + "\r\n\r\n").encode()


def _read_head(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """(status, lower-case headers, body bytes read past the head)."""
    data = b""
    while b"\r\n\r\n" not in data:
        if len(data) > _HEAD_MAX:
            raise ConnectionError("response head too long")
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed before a response")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    fields = status_line.split(" ", 2)
    if len(fields) < 2 or not fields[0].startswith("HTTP/") or not fields[1].isdigit():
        raise ConnectionError(f"bad status line {status_line!r}")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(fields[1]), headers, rest


def _connect(address: tuple[str, int], timeout: float) -> socket.socket:
    sock = socket.create_connection(address, timeout=timeout)
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF)
    return sock


def fetch_to_file(url: str, path: str, size: int, token: str | None, timeout: float = 60.0) -> None:
    """GET `url` into the existing `size`-byte file at `path` (received into a map of it)."""
    object_id = _object_id(url)
    address, request = _request(url, token)
    try:
        with _connect(address, timeout) as sock:
            sock.sendall(request)
            status, headers, rest = _read_head(sock)
            if status == 404:
                raise ObjectLostError(f"object {object_id} is gone from {url}", object_id=object_id)
            if status == 401:
                raise PermissionError(f"object server {url} refused the token (401)")
            if status != 200:
                raise ObjectLostError(
                    f"object {object_id}: {url} answered HTTP {status}", object_id=object_id
                )
            length = int(headers.get("content-length", "-1"))
            if length != size:
                raise ValueError(f"object {object_id}: {url} sends {length} bytes, expected {size}")
            _receive(sock, path, size, rest)
    except OSError as exc:  # refused, reset, timed out, closed early, no such host
        if isinstance(exc, PermissionError | FileNotFoundError):  # local file problems
            raise
        if isinstance(exc, ConnectionRefusedError):  # nothing listens there: the owner is gone
            raise ObjectLostError(
                f"cannot fetch object {object_id} from {url}: {_GONE} ({exc})",
                object_id=object_id,
            ) from exc
        # A reset, a timeout, a partition: maybe passing (the task is retried, the result
        # can be asked for again).
        raise ConnectionError(f"fetching object {object_id} from {url} failed: {exc}") from exc
    logger.debug("fetched object %s (%d bytes) from %s", object_id, size, url)


def _receive(sock: socket.socket, path: str, size: int, first: bytes) -> None:
    if len(first) > size:
        raise ConnectionError("more bytes than Content-Length")
    if size == 0:
        return
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        if os.fstat(fd).st_size < size:
            raise ValueError(f"{path} is smaller than the {size} bytes to fetch")
        # MAP_SHARED; no MAP_POPULATE: faulting pages in while bytes arrive is faster
        mapped = mmap.mmap(fd, size, access=mmap.ACCESS_WRITE)
    finally:
        os.close(fd)
    with mapped, memoryview(mapped) as view:
        view[: len(first)] = first
        done = len(first)
        while done < size:
            with view[done : done + _RECV_CHUNK] as chunk:
                got = sock.recv_into(chunk)
            if not got:
                raise ConnectionError(f"connection closed after {done} of {size} bytes")
            done += got


def owner_alive(location: pb.ObjectLocation, token: str | None, timeout: float = 2.0) -> bool:
    """Whether the process holding `location` is still there."""
    if location.host == host_key():
        return location.pid > 0 and process_start(location.pid) == location.pid_start
    if not location.url:
        return False
    parts = urlsplit(location.url)
    ping = f"{parts.scheme}://{parts.netloc}/ping"
    try:
        address, request = _request(ping, token)
        with _connect(address, timeout) as sock:
            sock.sendall(request)
            status, _, _ = _read_head(sock)
    except (OSError, ValueError) as exc:
        logger.debug("owner %s of %s unreachable: %s", location.owner, ping, exc)
        return False
    return status in (200, 401)
