"""The journal: saves the state machine's changes to the state database, with group commit.

The registries mark what changed (`changes`); `Journal.durable()` returns once every change made
so far is committed. A handler that changed the state (or read what another one changed) awaits
it before its answer leaves, so nothing acknowledged can be lost to a crash. Group commit: one
batch is written at a time, by a thread of its own (`store.StateStore.write`, off the event
loop); the changes made while it is written go together in the next batch, so under load a
commit serves many RPCs, and an idle controller commits at once (one event-loop turn later,
which lets the other handlers of that turn join the batch).

Rows are built here, on the event loop, from the records the loop owns (`rows`); the thread
only writes them. A failed write (a full disk, say) leaves memory ahead of the disk: the
journal stops, every later `durable()` raises `JournalError` (clients see `unavailable` and
retry) and `on_failure` is called, so that the controller can stop and be restarted from what
was committed.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from fray.controller import job_convert, rows
from fray.controller.changes import Changes
from fray.controller.records import StateError
from fray.controller.state import ControllerState
from fray.controller.store import Batch, StateStore

logger = logging.getLogger(__name__)


class JournalError(StateError):
    """The state could not be saved (Connect `unavailable`: the controller must restart)."""


class Journal:
    """Saves a `ControllerState` to a `StateStore`; `open` loads what was saved first."""

    def __init__(
        self,
        state: ControllerState,
        store: StateStore,
        on_failure: Callable[[BaseException], None] = lambda exc: None,
    ) -> None:
        self._state = state
        self._store = store
        self._on_failure = on_failure
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="fray-journal")
        self._next: asyncio.Future[None] | None = None  # the batch being gathered
        self._in_flight: asyncio.Future[None] | None = None  # the batch being written
        self._log_ends: dict[str, int] = {}  # per owner: its entries are saved up to here
        self._last_row = store.last_task_row()  # the tasks' saved rows, in submission order
        self.failed: BaseException | None = None
        self.batches = 0  # committed so far
        self.rows = 0  # in those batches
        state.changes.enabled = True

    @classmethod
    def open(
        cls,
        state: ControllerState,
        path: str | os.PathLike[str],
        on_failure: Callable[[BaseException], None] = lambda exc: None,
    ) -> Journal:
        """Open the database at `path` (creating it), restore what it holds into `state` (a
        new one) and journal `state` from now on. Raises `store.StoreError`."""
        store = StateStore(path)
        try:
            journal = cls(state, store, on_failure)
            saved = store.load()
            state.restore(saved)  # what reconciling changes is marked, and saved next
        except BaseException:
            store.close()
            raise
        journal._log_ends = {log.owner: log.base + len(log.ids) for log in saved.logs}
        logger.info(
            "controller %s: restored %d tasks, %d workers, %d actors, %d objects from %s",
            store.controller_id,
            len(saved.tasks),
            len(saved.workers),
            len(saved.actors),
            len(saved.objects),
            store.path,
        )
        return journal

    @property
    def controller_id(self) -> str:
        """The id saved with the state: the same across restarts of the same file."""
        return self._store.controller_id

    async def durable(self) -> None:
        """Return once every change made so far is committed (raises JournalError if the
        journal failed)."""
        if self.failed is not None:
            raise JournalError(f"the controller could not save its state: {self.failed}")
        if self._state.changes:  # not taken yet: wait for the next batch
            if self._next is None:
                self._next = asyncio.get_running_loop().create_future()
                if self._in_flight is None:
                    asyncio.get_running_loop().call_soon(self._flush)
            waiting = self._next
        elif self._in_flight is not None:  # what we saw may be in the batch being written
            waiting = self._in_flight
        else:
            return
        await asyncio.shield(waiting)

    async def close(self) -> None:
        """Save what is left, then close the database (at shutdown)."""
        try:
            if self.failed is None:
                await self.durable()
        finally:
            logger.info("journal: %d rows saved in %d commits", self.rows, self.batches)
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._executor, self._store.close)
            self._executor.shutdown(wait=False)

    def save_now(self) -> None:
        """Write every change now, from the calling thread (for tests and tools: only while
        no event loop uses this journal)."""
        self._store.write(self._batch(self._state.changes.take()))
        self.batches += 1

    def close_now(self) -> None:
        """Close without saving what is left (the server did not run, or its loop is gone)."""
        self._executor.shutdown(wait=True)
        self._store.close()

    # ------------------------------------------------------------------ the batches

    def _flush(self) -> None:
        future, self._next = self._next, None
        if future is None or self.failed is not None:
            return
        try:
            batch = self._batch(self._state.changes.take())
        except Exception as exc:  # a bug; the state cannot be saved from now on
            self._fail(exc, future)
            return
        self._in_flight = future
        self.rows += len(batch)
        loop = asyncio.get_running_loop()
        writing = loop.run_in_executor(self._executor, self._store.write, batch)
        writing.add_done_callback(lambda done: self._written(done, future))

    def _written(self, done: asyncio.Future[None], future: asyncio.Future[None]) -> None:
        self._in_flight = None
        exc = done.exception()
        if exc is not None:
            self._fail(exc, future)
            return
        self.batches += 1
        future.set_result(None)
        if self._next is not None:  # changes made meanwhile
            self._flush()

    def _fail(self, exc: BaseException, future: asyncio.Future[None]) -> None:
        logger.critical(
            "the controller's state could not be saved (%r); refusing calls from now on: "
            "restart the controller to resume from what was saved",
            exc,
            exc_info=exc,
        )
        self.failed = exc
        for waiting in (future, self._next):
            if waiting is not None and not waiting.done():
                waiting.set_exception(JournalError(f"the state could not be saved: {exc}"))
                waiting.exception()  # retrieved: no "never retrieved" warning if none waits
        self._next = None
        self._on_failure(exc)

    def _batch(self, changes: Changes) -> Batch:
        """The rows for `changes`, from the records as they are now."""
        state, batch = self._state, Batch()
        tasks = state.tasks
        for task_id in changes.tasks:
            task = tasks.get(task_id)
            if task is None:
                continue  # forgotten; if it was saved, its row is in gone_rows
            if task_id in changes.new_tasks:
                if not task.saved_row:
                    self._last_row += 1
                    task.saved_row = self._last_row
                batch.new_tasks.append(rows.task_row(task))
            elif task.state.finished:
                batch.task_ends.append(rows.task_end_row(task))
            else:
                batch.task_progress.append(rows.task_progress_row(task))
        batch.gone_tasks = changes.gone_rows
        for worker_id in changes.workers:
            worker = state.workers.get(worker_id)
            if worker is None:
                batch.gone_workers.append(worker_id)
            else:
                batch.workers.append(rows.worker_row(worker))
        for actor_id in changes.actors:
            actor = state.actors[actor_id]  # actors are never forgotten
            if actor_id in changes.new_actors:
                batch.new_actors.append(rows.actor_row(actor))
            else:
                batch.actor_progress.append(rows.actor_progress_row(actor))
        for object_id in changes.objects:
            data = state.objects.by_id.get(object_id)
            location = state.objects.located.get(object_id)
            if data is not None:
                batch.objects.append((object_id, data, None))
            elif location is not None:
                batch.objects.append((object_id, b"", location.SerializeToString()))
            else:
                batch.gone_objects.append(object_id)
        for owner in changes.owners:
            saved_end = self._log_ends.get(owner, 0)
            base, dropped_until, entries = state.saved_log(owner, saved_end)
            batch.logs.append((owner, base, dropped_until))
            batch.entries += [(owner, position, task_id) for position, task_id in entries]
            self._log_ends[owner] = max(saved_end, base, entries[-1][0] + 1 if entries else 0)
        for job_id in changes.jobs:
            job = state.jobs.get(job_id)
            if job is None:  # forgotten (a finished job past the bound)
                if job_id not in changes.new_jobs:
                    batch.gone_jobs.append(job_id)
            elif job_id in changes.new_jobs:
                batch.new_jobs.append(job_convert.job_row(job))
            else:
                batch.job_progress.append(job_convert.job_progress_row(job))
        return batch
