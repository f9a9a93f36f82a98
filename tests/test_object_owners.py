"""The controller forgets the large objects of processes that went away (object_owners)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

from fray.controller import object_owners
from fray.controller.state import ControllerState
from fray.wire import objects
from fray.wire.pb import controller_pb2 as pb


def located(owner: str, pid: int, *, host: str | None = None, url: str = "") -> pb.ObjectLocation:
    start = objects.process_start(pid) or 0
    return pb.ObjectLocation(
        size_bytes=100,
        owner=owner,
        host=host or objects.host_key(),
        path=f"/dev/shm/none/{owner}",
        url=url,
        pid=pid,
        pid_start=start,
    )


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_objects_of_a_dead_process_on_this_host_are_dropped_and_live_ones_kept() -> None:
    state = ControllerState()
    state.put_object(b"", "mine", located("me", os.getpid()))
    state.put_object(b"", "gone-1", located("gone", dead_pid()))
    state.put_object(b"", "small", None)  # no location: kept in the controller
    assert asyncio.run(object_owners.check_once(state)) == 1
    assert state.missing_objects(["mine", "gone-1", "small"]) == ["gone-1"]


def test_an_owner_on_another_host_is_asked_through_its_object_server() -> None:
    state = ControllerState()
    # Nothing listens there: the owner is gone (refused at once).
    state.put_object(
        b"", "far", located("far", 1, host="another-host", url="http://127.0.0.1:9/objects/far")
    )
    misses: dict[object_owners.OwnerKey, int] = {}
    for _ in range(object_owners.MISSES - 1):  # a short fault loses nothing
        assert asyncio.run(object_owners.check_once(state, misses)) == 0
    assert asyncio.run(object_owners.check_once(state, misses)) == 1
    assert state.missing_objects(["far"]) == ["far"] and misses == {}


def test_a_pid_reused_by_another_process_counts_as_gone() -> None:
    state = ControllerState()
    where = located("me", os.getpid())
    where.pid_start += 1  # the same pid, started at another time: not the owner
    state.put_object(b"", "reused", where)
    assert asyncio.run(object_owners.check_once(state)) == 1
