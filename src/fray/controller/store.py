"""The controller's durable state: one SQLite database (stdlib `sqlite3`), and the SQL.

`StateStore` opens (or creates) the database, loads it (`load`, at start-up) and writes the
journal's batches (`write`, each one transaction, from the journal's thread). Tables: `meta`
(the controller's id, the schema version), `tasks`, `workers`, `actors`, `objects`,
`finished_logs` (per client: the position of the first unread entry), `finished_entries`
(the unread entries), `jobs` (`job_convert`) and `functions`. Columns are listed in `rows`.

- A task's function (its pickle, usually the same for thousands of tasks) is saved once in
  `functions`, by digest: the task's row holds the digest (`function_digest`) and a NULL
  function. Functions of `SPILL_BYTES` or more stay in the row (and a file, below). Functions
  no unfinished task names are removed at load.

- WAL mode with ``synchronous=NORMAL``: a commit survives the controller's process dying at any
  moment (even SIGKILL); a power loss or an OS crash may lose the last commits.
- The database is locked for one process (``locking_mode=EXCLUSIVE``): a second controller on
  the same file fails at start-up instead of corrupting it.
- Values of `SPILL_BYTES` or more (task functions, arguments and results, objects, actor
  classes and arguments) are written to files in ``<database>.blobs/`` (fsynced before the
  commit that names them); the column then holds the file's name (TEXT) instead of the bytes
  (BLOB). Files no row names (a crash between writing and committing) are removed at load.
- Files are created readable by their owner only: they hold pickles, i.e. code.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sqlite3
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fray.controller import job_convert, rows
from fray.controller.recovery import SavedLog, SavedState
from fray.controller.rows import Row
from fray.wire.pb import controller_pb2 as pb

logger = logging.getLogger(__name__)

SCHEMA_VERSION = "1"
SPILL_BYTES = 1 << 20

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tasks (
    saved_row INTEGER PRIMARY KEY, task_id TEXT, owner TEXT, name TEXT, function, args,
    object_ids TEXT, timeout_seconds REAL, max_retries INTEGER, spec_infra_failures INTEGER,
    state TEXT, attempts INTEGER, user_failures INTEGER, infra_failures INTEGER, worker_id TEXT,
    submitted_at REAL, started_at REAL, finished_at REAL, result, error BLOB,
    cancel_requested INTEGER, direct INTEGER, need TEXT);
CREATE TABLE IF NOT EXISTS workers (
    worker_id TEXT PRIMARY KEY, address TEXT, slots INTEGER, prefetch INTEGER,
    registered_at REAL, cpus REAL, memory_bytes INTEGER, labels TEXT, tasks_completed INTEGER,
    tasks_failed INTEGER, draining INTEGER, capacities TEXT);
CREATE TABLE IF NOT EXISTS actors (
    actor_id TEXT PRIMARY KEY, name TEXT, class_name TEXT, cls, args, object_ids TEXT,
    max_restarts INTEGER, owner TEXT, detached INTEGER, created_at REAL, state TEXT,
    worker_id TEXT, incarnation INTEGER, restarts INTEGER, error BLOB, need TEXT);
CREATE TABLE IF NOT EXISTS objects (object_id TEXT PRIMARY KEY, data);
CREATE TABLE IF NOT EXISTS finished_logs (
    owner TEXT PRIMARY KEY, base INTEGER NOT NULL, dropped_until INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS finished_entries (
    owner TEXT NOT NULL, pos INTEGER NOT NULL, task_id TEXT NOT NULL,
    PRIMARY KEY (owner, pos)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS jobs (job_id TEXT PRIMARY KEY, seq INTEGER, spec BLOB, progress TEXT);
CREATE TABLE IF NOT EXISTS functions (digest BLOB PRIMARY KEY, data BLOB NOT NULL) WITHOUT ROWID;
"""


# Columns added since schema 1 was first written: a file that lacks them gets them (NULL: a
# task or actor that asks for nothing; a worker offering its cpus and memory).
_ADDED_COLUMNS = {
    "tasks": (("need", "TEXT"), ("function_digest", "BLOB")),
    "workers": (("capacities", "TEXT"),),
    "actors": (("need", "TEXT"),),
    "objects": (("location", "BLOB"),),  # a large object's pb.ObjectLocation (data empty)
}


def _add_missing_columns(db: sqlite3.Connection) -> None:
    for table, columns in _ADDED_COLUMNS.items():
        have = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        for name, kind in columns:
            if name not in have:
                db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")


def _insert(table: str, columns: Sequence[str], verb: str = "INSERT OR REPLACE") -> str:
    return f"{verb} INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"


def _update(table: str, columns: Sequence[str], key: str) -> str:
    return f"UPDATE {table} SET {', '.join(f'{c} = ?' for c in columns)} WHERE {key} = ?"


_INSERT_TASK = _insert("tasks", (*rows.TASK_COLUMNS, "function_digest"))
_FUNCTION = rows.TASK_COLUMNS.index("function")
_DIGESTS_KEPT = 4096  # function pickle -> digest, remembered for the next rows
_TASK_PROGRESS = _update("tasks", rows.TASK_PROGRESS_COLUMNS, "saved_row")
_TASK_END = _update("tasks", rows.TASK_END_COLUMNS, "saved_row")
_INSERT_WORKER = _insert("workers", rows.WORKER_COLUMNS)
_INSERT_ACTOR = _insert("actors", rows.ACTOR_COLUMNS)
_ACTOR_PROGRESS = _update("actors", rows.ACTOR_PROGRESS_COLUMNS, "actor_id")
_TASK_BLOBS = [rows.TASK_COLUMNS.index(c) for c in rows.TASK_BLOBS]
_TASK_END_RESULT = rows.TASK_END_COLUMNS.index("result")
_ACTOR_BLOBS = [rows.ACTOR_COLUMNS.index(c) for c in rows.ACTOR_BLOBS]
_INSERT_JOB = _insert("jobs", job_convert.JOB_COLUMNS)
_JOB_PROGRESS = _update("jobs", job_convert.JOB_PROGRESS_COLUMNS, "job_id")


class StoreError(OSError):
    """The state file cannot be used (in use by another controller, another schema, ...)."""


@dataclass
class Batch:
    """One transaction: the rows the journal built from one round of changes. Each id is in
    one list at most."""

    new_tasks: list[Row] = field(default_factory=list)  # rows.TASK_COLUMNS
    task_progress: list[Row] = field(default_factory=list)  # rows.task_progress_row
    task_ends: list[Row] = field(default_factory=list)  # rows.task_end_row
    gone_tasks: list[int] = field(default_factory=list)  # saved rows
    workers: list[Row] = field(default_factory=list)
    gone_workers: list[str] = field(default_factory=list)
    new_actors: list[Row] = field(default_factory=list)
    actor_progress: list[Row] = field(default_factory=list)
    objects: list[tuple[str, bytes, bytes | None]] = field(default_factory=list)
    gone_objects: list[str] = field(default_factory=list)
    logs: list[tuple[str, int, int]] = field(default_factory=list)  # owner, base, dropped_until
    entries: list[tuple[str, int, str]] = field(default_factory=list)  # owner, position, task
    new_jobs: list[Row] = field(default_factory=list)  # job_convert.JOB_COLUMNS
    job_progress: list[Row] = field(default_factory=list)  # job_convert.job_progress_row
    gone_jobs: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return sum(len(v) for v in vars(self).values())


class StateStore:
    """The state database at `path` (created if missing), locked for this process (waiting up
    to `wait` seconds for another process to let go of it)."""

    def __init__(self, path: str | os.PathLike[str], wait: float = 2.0) -> None:
        self.path = Path(path)
        self.blob_dir = self.path.with_name(self.path.name + ".blobs")
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.blob_dir.mkdir(exist_ok=True, mode=0o700)
        if not self.path.exists():  # private from the start (never close a file SQLite
            # has open: that would drop its POSIX locks)
            os.close(os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600))
        self._files: dict[str, list[str]] = {}  # "t:<row>", "o:<id>", "a:<id>" -> its files
        self._digests: dict[bytes, bytes] = {}  # function pickle -> its digest
        self._saved_functions: set[bytes] = set()  # digests in `functions`
        try:
            self._db = sqlite3.connect(
                self.path, timeout=wait, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the state file {self.path}: {exc}") from exc
        try:
            self._db.execute("PRAGMA locking_mode = EXCLUSIVE")
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._db.execute("PRAGMA cache_size = -32768")  # 32 MiB
            self._db.execute("BEGIN IMMEDIATE")  # takes the lock, for as long as we run
            self._db.executescript(_SCHEMA)  # (commits)
            _add_missing_columns(self._db)
            self.controller_id = self._meta()
        except sqlite3.Error as exc:
            self._db.close()
            if "locked" in str(exc):
                raise StoreError(
                    f"the state file {self.path} is in use by another controller"
                ) from None
            raise StoreError(f"cannot use the state file {self.path}: {exc}") from exc
        except BaseException:
            self._db.close()
            raise

    def _meta(self) -> str:
        meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        if not meta:
            meta = {"schema": SCHEMA_VERSION, "controller_id": uuid.uuid4().hex[:12]}
            self._db.execute("BEGIN")
            self._db.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
            self._db.execute("COMMIT")
        if meta.get("schema") != SCHEMA_VERSION:
            raise StoreError(
                f"the state file {self.path} has schema {meta.get('schema')!r}; this fray "
                f"reads {SCHEMA_VERSION!r} (move the file away to start afresh)"
            )
        return meta["controller_id"]

    # ------------------------------------------------------------------ loading

    def load(self) -> SavedState:
        """Everything saved, as records (blobs read back from their files)."""
        db = self._db
        saved = SavedState(self.controller_id)
        db.execute("BEGIN")
        db.execute(  # functions no unfinished task names any more
            "DELETE FROM functions WHERE digest NOT IN (SELECT function_digest FROM tasks "
            "WHERE function IS NULL AND function_digest IS NOT NULL)"
        )
        db.execute("COMMIT")
        functions = dict(db.execute("SELECT digest, data FROM functions"))
        self._saved_functions = set(functions)
        columns = ", ".join(rows.TASK_COLUMNS)
        query = f"SELECT {columns}, function_digest FROM tasks ORDER BY saved_row"
        for *values, digest in db.execute(query):
            if values[_FUNCTION] is None and digest is not None:
                function = functions.get(digest)
                if function is None:
                    raise StoreError(f"the state file {self.path} lacks a task's function")
                values[_FUNCTION] = function
            row = tuple(values)
            saved.tasks.append(
                rows.task_from_row(self._read_blobs(f"t:{row[0]}", row, _TASK_BLOBS))
            )
        columns = ", ".join(rows.WORKER_COLUMNS)
        saved.workers = [
            rows.worker_from_row(r) for r in db.execute(f"SELECT {columns} FROM workers")
        ]
        columns = ", ".join(rows.ACTOR_COLUMNS)
        for row in db.execute(f"SELECT {columns} FROM actors ORDER BY rowid"):
            saved.actors.append(
                rows.actor_from_row(self._read_blobs("a:" + row[0], row, _ACTOR_BLOBS))
            )
        for object_id, data, location in db.execute(
            "SELECT object_id, data, location FROM objects"
        ):
            if location is not None:
                saved.located[object_id] = pb.ObjectLocation.FromString(location)
            else:
                saved.objects[object_id] = self._read_blobs("o:" + object_id, (data,), [0])[0]
        logs = {
            owner: SavedLog(owner, base, dropped_until, [])
            for owner, base, dropped_until in db.execute("SELECT * FROM finished_logs")
        }
        query = "SELECT owner, pos, task_id FROM finished_entries ORDER BY owner, pos"
        for owner, pos, task_id in db.execute(query):
            log = logs.get(owner)
            if log is not None and pos == log.base + len(log.ids):  # contiguous from base
                log.ids.append(task_id)
        saved.logs = list(logs.values())
        columns = ", ".join(job_convert.JOB_COLUMNS)
        for row in db.execute(f"SELECT {columns} FROM jobs ORDER BY seq"):
            saved.jobs.append(job_convert.job_from_row(row))
        self._remove_stray_files()
        return saved

    def _read_blobs(self, key: str, row: Row, columns: list[int]) -> Row:
        """`row` with the blobs kept in files read back (and the files noted as the row's)."""
        if not any(isinstance(row[i], str) for i in columns):
            return row
        values = list(row)
        for i in columns:
            if isinstance(values[i], str):
                self._files.setdefault(key, []).append(values[i])
                try:
                    values[i] = (self.blob_dir / values[i]).read_bytes()
                except OSError as exc:
                    raise StoreError(f"the state file {self.path} needs a file: {exc}") from exc
        return tuple(values)

    def _remove_stray_files(self) -> None:
        named = {name for names in self._files.values() for name in names}
        for path in self.blob_dir.iterdir():
            if path.name not in named:
                path.unlink(missing_ok=True)

    # ------------------------------------------------------------------ writing

    def _function_saved_once(self, row: Row, functions: list[tuple[bytes, bytes]]) -> Row:
        """A new task's row with its function replaced by the function's digest (NULL
        function, digest last), the function added to `functions` when not saved yet; a row
        whose function is in a file (or empty) keeps it, with a NULL digest."""
        function = row[_FUNCTION]
        if not isinstance(function, bytes) or not function:
            return (*row, None)
        digest = self._digests.get(function)  # (bytes cache their hash: no rehashing)
        if digest is None:
            if len(self._digests) >= _DIGESTS_KEPT:
                self._digests.clear()
            digest = self._digests[function] = hashlib.blake2b(function, digest_size=16).digest()
        if digest not in self._saved_functions:
            self._saved_functions.add(digest)
            functions.append((digest, function))
        return (*row[:_FUNCTION], None, *row[_FUNCTION + 1 :], digest)

    def write(self, batch: Batch) -> None:
        """Commit one batch (one transaction); files it replaces are removed afterwards."""
        db, stale = self._db, []
        spilled = False

        def spill(prefix: str, key: int, row: Row, columns: list[int]) -> Row:
            """`row` with its big blobs written to files (the row's key: prefix + row[key])."""
            nonlocal spilled
            for i in columns:  # the common case (nothing big) first, and fast
                if row[i] is not None and len(row[i]) >= SPILL_BYTES:
                    break
            else:
                return row
            spilled = True
            values = list(row)
            for i in columns:
                if isinstance(values[i], bytes) and len(values[i]) >= SPILL_BYTES:
                    values[i] = self._write_file(f"{prefix}{row[key]}", values[i])
            return tuple(values)

        functions: list[tuple[bytes, bytes]] = []  # saved for the first time
        db.execute("BEGIN")
        try:
            if batch.new_tasks:
                for row in batch.new_tasks:
                    stale += self._files.pop(f"t:{row[0]}", [])
                new = [
                    self._function_saved_once(spill("t:", 0, r, _TASK_BLOBS), functions)
                    for r in batch.new_tasks
                ]
                if functions:
                    db.executemany("INSERT OR IGNORE INTO functions VALUES (?, ?)", functions)
                db.executemany(_INSERT_TASK, new)
            if batch.task_progress:
                db.executemany(_TASK_PROGRESS, batch.task_progress)
            if batch.task_ends:
                for row in batch.task_ends:  # its function and args go
                    stale += self._files.pop(f"t:{row[-1]}", [])
                ends = [spill("t:", -1, r, [_TASK_END_RESULT]) for r in batch.task_ends]
                db.executemany(_TASK_END, ends)
            if batch.gone_tasks:
                stale += self._gone("t:", batch.gone_tasks)
                db.executemany("DELETE FROM tasks WHERE saved_row = ?", _keys(batch.gone_tasks))
            if batch.workers:
                db.executemany(_INSERT_WORKER, batch.workers)
            if batch.gone_workers:
                query = "DELETE FROM workers WHERE worker_id = ?"
                db.executemany(query, _keys(batch.gone_workers))
            if batch.new_actors:
                new = [spill("a:", 0, r, _ACTOR_BLOBS) for r in batch.new_actors]
                db.executemany(_INSERT_ACTOR, new)
            if batch.actor_progress:
                db.executemany(_ACTOR_PROGRESS, batch.actor_progress)
            if batch.objects:
                new = [spill("o:", 0, r, [1]) for r in batch.objects]
                query = (
                    "INSERT OR REPLACE INTO objects (object_id, data, location) VALUES (?, ?, ?)"
                )
                db.executemany(query, new)
            if batch.gone_objects:
                stale += self._gone("o:", batch.gone_objects)
                query = "DELETE FROM objects WHERE object_id = ?"
                db.executemany(query, _keys(batch.gone_objects))
            if batch.entries:
                db.executemany(
                    "INSERT OR REPLACE INTO finished_entries VALUES (?, ?, ?)", batch.entries
                )
            if batch.logs:
                db.executemany("INSERT OR REPLACE INTO finished_logs VALUES (?, ?, ?)", batch.logs)
                db.executemany(
                    "DELETE FROM finished_entries WHERE owner = ? AND pos < ?",
                    [(owner, base) for owner, base, _ in batch.logs],
                )
            if batch.new_jobs:
                db.executemany(_INSERT_JOB, batch.new_jobs)
            if batch.job_progress:
                db.executemany(_JOB_PROGRESS, batch.job_progress)
            if batch.gone_jobs:
                db.executemany("DELETE FROM jobs WHERE job_id = ?", _keys(batch.gone_jobs))
            if spilled:
                _fsync_dir(self.blob_dir)
            db.execute("COMMIT")
        except BaseException:
            self._saved_functions.difference_update(digest for digest, _ in functions)
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise
        for name in stale:
            (self.blob_dir / name).unlink(missing_ok=True)

    def _write_file(self, key: str, data: bytes) -> str:
        name = uuid.uuid4().hex
        fd = os.open(self.blob_dir / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        self._files.setdefault(key, []).append(name)
        return name

    def _gone(self, prefix: str, ids: Iterable[str | int]) -> list[str]:
        return [name for i in ids for name in self._files.pop(f"{prefix}{i}", [])]

    def last_task_row(self) -> int:
        """The highest saved row of a task (0: none)."""
        return int(self._db.execute("SELECT COALESCE(MAX(saved_row), 0) FROM tasks").fetchone()[0])

    def close(self) -> None:
        """Checkpoint the WAL into the database and close it."""
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._db.close()


def _keys(ids: Iterable[str | int]) -> list[tuple[str | int]]:
    return [(i,) for i in ids]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
