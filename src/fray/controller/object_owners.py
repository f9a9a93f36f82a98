"""Large objects die with the process holding them: the controller checks those processes.

A located object (see `fray.controller.objects`) can be read only while its owner (the client
that put it, or the worker whose task returned it) lives. Every `CHECK_SECONDS` the controller
asks each owner once (`fray.wire.objects.owner_alive`: its process on this host, a ping of its
object server elsewhere) and forgets the objects of those that are gone (on this host at once;
elsewhere after `MISSES` failed pings in a row, so that a short network fault or a busy owner
loses nothing); workers holding copies
drop them at their next lease, and tasks needing them fail with `not_found`. Object files left
in shared memory or on disk by processes that died without cleaning up are removed
(`fray.wire.objects.sweep`) when the controller starts and whenever an owner is found gone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from fray.controller.objects import OwnerKey
from fray.controller.state import ControllerState
from fray.wire import objects

logger = logging.getLogger(__name__)

CHECK_SECONDS = 2.0
MISSES = 3  # failed pings in a row after which an owner on another host is gone


async def sweep() -> None:
    """Remove the object files of dead processes (never raises)."""
    try:
        removed = await asyncio.to_thread(objects.sweep)
    except Exception:
        logger.exception("sweeping object files failed")
        return
    if removed:
        logger.info("removed the object files of %d processes that are gone", removed)


async def watch(state: ControllerState, on_dropped: Callable[[], None]) -> None:
    """Check object owners forever; `on_dropped` runs after objects were forgotten."""
    await sweep()
    misses: dict[OwnerKey, int] = {}
    while True:
        await asyncio.sleep(CHECK_SECONDS)
        try:
            if await check_once(state, misses):
                on_dropped()
                await sweep()
        except Exception:  # keep watching: a dead watcher leaks every object
            logger.exception("checking object owners failed")


async def check_once(state: ControllerState, misses: dict[OwnerKey, int] | None = None) -> int:
    """Forget the objects of owners that are gone; returns how many objects were dropped.
    `misses`: failed pings so far by owner on another host (None: one is enough)."""
    owners = state.object_owners()
    if misses is not None:
        for key in set(misses) - set(owners):
            del misses[key]  # forgotten meanwhile
    if not owners:
        return 0
    keys = list(owners)
    alive = await asyncio.to_thread(lambda: [objects.owner_alive(owners[k], None) for k in keys])
    here = objects.host_key()
    dropped = 0
    for key, is_alive in zip(keys, alive, strict=True):
        if is_alive:
            if misses is not None:
                misses.pop(key, None)
            continue
        if misses is not None and owners[key].host != here:
            misses[key] = misses.get(key, 0) + 1
            if misses[key] < MISSES:
                continue
            del misses[key]
        gone = state.drop_object_owner(key)
        dropped += len(gone)
        logger.info("owner %s of %d objects is gone: objects dropped", key[0], len(gone))
    return dropped
