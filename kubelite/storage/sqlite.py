"""The default backend: SQLite in WAL mode with durable group commits from one writer thread.

Writes queue to a single thread that runs every pending write in one transaction, commits once (fsynced:
synchronous=FULL), and only then resolves the callers and publishes the events on the event loop. The
current state and the recent events live in memory (StateCache), so reads never wait behind the writer;
only reads and watches older than the in-memory event ring go to the log table, on reader threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import queue
import sqlite3
import threading
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from kubelite.storage.backend import (
    ADDED,
    DELETED,
    MODIFIED,
    Event,
    KeyValue,
    StorageError,
)
from kubelite.storage.cache import WATCH_QUEUE_LIMIT, CachedBackend, StateCache, WriteOp, plan_write, prefix_end

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_BATCH = 1000
"""Most writes grouped into one transaction, bounding how long one commit holds the writer."""
READERS = 2
"""Reader threads (each with its own connection) for history older than the event ring."""
CHUNK = 1000
"""Rows per history read and per compaction step, so neither holds a transaction for long."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS log (
    revision INTEGER PRIMARY KEY,
    key TEXT NOT NULL,
    create_revision INTEGER NOT NULL,
    prev_revision INTEGER NOT NULL,
    deleted INTEGER NOT NULL,
    value BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS log_key_revision ON log (key, revision);
CREATE TABLE IF NOT EXISTS current (
    key TEXT PRIMARY KEY,
    create_revision INTEGER NOT NULL,
    mod_revision INTEGER NOT NULL,
    value BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (name, value) VALUES ('revision', 0), ('compact_revision', 0);
"""
# log.prev_revision is the revision of the live version a change replaced (0 for a create); a deleted row
# stores no value of its own: its value is that previous version's.

SELECT_CURRENT = "SELECT create_revision, mod_revision, value FROM current WHERE key = ?"
INSERT_LOG = ("INSERT INTO log (revision, key, create_revision, prev_revision, deleted, value) "
              "VALUES (?, ?, ?, ?, ?, ?)")
UPSERT_CURRENT = ("INSERT INTO current (key, create_revision, mod_revision, value) VALUES (?, ?, ?, ?) "
                  "ON CONFLICT (key) DO UPDATE SET create_revision = excluded.create_revision, "
                  "mod_revision = excluded.mod_revision, value = excluded.value")


@dataclass(slots=True)
class _Write:
    """A write waiting for the writer thread."""

    op: WriteOp
    future: asyncio.Future[KeyValue]


@dataclass(slots=True)
class _Task:
    """Maintenance (compaction) run by the writer thread in a transaction of its own."""

    run: Callable[[sqlite3.Connection], Any]
    future: asyncio.Future[Any]


def _resolve(future: asyncio.Future[Any], outcome: object) -> None:
    """Deliver a result or an error to a waiting caller, unless it gave up waiting."""
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


def _connect(path: str) -> sqlite3.Connection:
    """A connection in WAL mode that fsyncs every commit; transactions are explicit."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=10000")
    return conn


def _lock(path: str) -> int:
    """Hold an exclusive lock beside the database: a second process would make the in-memory state stale."""
    fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        os.close(fd)
        raise StorageError(f"datastore {path} is in use by another process") from exc
    return fd


def _key_range(column: str, prefix: str, start_key: str) -> tuple[str, list[str]]:
    """SQL condition and parameters selecting keys with prefix that are >= start_key."""
    high = prefix_end(prefix)
    if high is None:
        return f"{column} >= ?", [max(prefix, start_key)]
    return f"{column} >= ? AND {column} < ?", [max(prefix, start_key), high]


def _select_version(key: str, revision: int, conn: sqlite3.Connection) -> KeyValue | None:
    """The key's value as of revision, from the log."""
    row = conn.execute("SELECT create_revision, revision, deleted, value FROM log "
                       "WHERE key = ? AND revision <= ? ORDER BY revision DESC LIMIT 1", (key, revision)).fetchone()
    if row is None or row[2]:
        return None
    return KeyValue(key, row[3], row[0], row[1])


def _select_range(prefix: str, start_key: str, limit: int, revision: int,
                  conn: sqlite3.Connection) -> tuple[list[KeyValue], bool]:
    """Keys in range as of revision, from the log: each key's newest row at or before it, if not a delete."""
    condition, params = _key_range("l.key", prefix, start_key)
    rows = conn.execute(
        "SELECT l.key, l.create_revision, l.revision, l.value FROM log AS l "
        f"WHERE {condition} AND l.revision <= ? AND l.deleted = 0 AND NOT EXISTS ("
        "SELECT 1 FROM log AS n WHERE n.key = l.key AND n.revision > l.revision AND n.revision <= ?) "
        "ORDER BY l.key LIMIT ?", (*params, revision, revision, limit + 1 if limit else -1)).fetchall()
    more = bool(limit) and len(rows) > limit
    if more:
        rows.pop()
    return [KeyValue(key, value, create, mod) for key, create, mod, value in rows], more


def _select_events(prefix: str, after: int, upto: int, conn: sqlite3.Connection) -> list[Event]:
    """Up to CHUNK events under prefix in (after, upto], rebuilt from log rows and the rows they replaced."""
    condition, params = _key_range("l.key", prefix, "")
    rows = conn.execute(
        "SELECT l.revision, l.key, l.create_revision, l.prev_revision, l.deleted, l.value, "
        "p.create_revision, p.value FROM log AS l LEFT JOIN log AS p ON p.revision = l.prev_revision "
        f"WHERE l.revision > ? AND l.revision <= ? AND {condition} ORDER BY l.revision LIMIT ?",
        (after, upto, *params, CHUNK))
    events = []
    for revision, key, create, prev_revision, deleted, value, prev_create, prev_value in rows:
        prev = KeyValue(key, prev_value, prev_create, prev_revision) if prev_revision else None
        if deleted:
            events.append(Event(DELETED, KeyValue(key, prev_value, prev_create, revision), prev))
        else:
            events.append(Event(MODIFIED if prev else ADDED, KeyValue(key, value, create, revision), prev))
    return events


def _save_compact_revision(revision: int, conn: sqlite3.Connection) -> None:
    """Persist the compact revision before any row goes, so a crash mid-compaction stays consistent."""
    conn.execute("UPDATE meta SET value = MAX(value, ?) WHERE name = 'compact_revision'", (revision,))


def _delete_compacted(revision: int, cursor: int, conn: sqlite3.Connection) -> int | None:
    """One compaction step over the next CHUNK log rows after cursor; returns the new cursor, None when done.

    A row at or before `revision` goes if it is a delete or a newer row at or before `revision` replaced it.
    """
    (end,) = conn.execute("SELECT MAX(revision) FROM (SELECT revision FROM log WHERE revision > ? AND "
                          "revision <= ? ORDER BY revision LIMIT ?)", (cursor, revision, CHUNK)).fetchone()
    if end is None:
        return None
    conn.execute("DELETE FROM log WHERE revision > ? AND revision <= ? AND (deleted = 1 OR EXISTS ("
                 "SELECT 1 FROM log AS n WHERE n.key = log.key AND n.revision > log.revision "
                 "AND n.revision <= ?))", (cursor, end, revision))
    return end


class SqliteBackend(CachedBackend):
    """A durable single-file store; see the module docstring for how writes, reads and watches flow."""

    def __init__(self, path: str, *, compact_interval: float = 300.0, compact_keep: int = 1000,
                 ring_size: int = 10_000, watch_queue_limit: int = WATCH_QUEUE_LIMIT):
        self.path = path
        self.commits = 0
        """Write transactions committed: with group commit, far fewer than the writes."""
        self._compact_interval = compact_interval
        self._compact_keep = compact_keep
        self._ring_size = ring_size
        self._watch_queue_limit = watch_queue_limit
        self._queue: queue.SimpleQueue[_Write | _Task | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._written_revision = 0  # owned by the writer thread once it runs
        self._readers: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._read_pool: ThreadPoolExecutor | None = None
        self._compactor: asyncio.Task[None] | None = None
        self._lock_fd: int | None = None

    # lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        """Open (creating if needed) the database, load the current state, start the writer and compactor."""
        self._loop = asyncio.get_running_loop()
        self._conn, kvs, revision, compact_revision = await asyncio.to_thread(self._open)
        self._written_revision = revision
        self._cache = StateCache(kvs, revision, compact_revision, self._ring_size, self._watch_queue_limit)
        self._read_pool = ThreadPoolExecutor(READERS, thread_name_prefix="kubelite-sqlite-read")
        self._writer = threading.Thread(target=self._write_loop, name="kubelite-sqlite-writer", daemon=True)
        self._writer.start()
        self._compactor = asyncio.create_task(self._compact_periodically(self._compact_interval, self._compact_keep))

    def _open(self) -> tuple[sqlite3.Connection, dict[str, KeyValue], int, int]:
        """Lock and open the file, create the schema, and read the state back (runs on a worker thread)."""
        try:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), mode=0o700, exist_ok=True)
            self._lock_fd = _lock(self.path)
        except OSError as exc:
            raise StorageError(f"cannot open datastore {self.path}: {exc}") from exc
        try:
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))  # secrets live here: owner only
            conn = _connect(self.path)
            conn.executescript(SCHEMA)
            meta = dict(conn.execute("SELECT name, value FROM meta").fetchall())
            (newest,) = conn.execute("SELECT MAX(revision) FROM log").fetchone()
            kvs = {key: KeyValue(key, value, create, mod) for key, create, mod, value in conn.execute(
                "SELECT key, create_revision, mod_revision, value FROM current")}
            for _ in range(READERS):
                self._readers.put(_connect(self.path))
        except (sqlite3.Error, OSError) as exc:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise StorageError(f"cannot open datastore {self.path}: {exc}") from exc
        # the newest log rows may have been compacted away; meta keeps the revision from going backwards
        return conn, kvs, max(meta["revision"], newest or 0), meta["compact_revision"]

    async def close(self) -> None:
        """Stop compacting, let the writer finish every queued write, end watches and close the file."""
        if self._closed:
            return
        self._closed = True
        if self._compactor is not None:
            self._compactor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._compactor
        if self._writer is not None:
            self._queue.put(None)
            await asyncio.to_thread(self._writer.join)
            self._cache.close()
        if self._read_pool is not None:
            await asyncio.to_thread(self._read_pool.shutdown)
            self._conn.close()
        while not self._readers.empty():
            self._readers.get().close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # writes ------------------------------------------------------------------

    def _submit(self, item: _Write | _Task) -> None:
        """Hand an item to the writer thread."""
        if self._closed or self._writer is None:
            raise StorageError("datastore is closed" if self._closed else "datastore is not started")
        self._queue.put(item)

    async def _write(self, op: WriteOp) -> KeyValue:
        """Queue a write; returns once its transaction is committed, fsynced and visible to readers."""
        future: asyncio.Future[KeyValue] = self._loop.create_future()
        self._submit(_Write(op, future))
        return await future

    async def _run(self, run: Callable[[sqlite3.Connection], T]) -> T:
        """Run maintenance on the writer thread, between write batches."""
        future: asyncio.Future[T] = self._loop.create_future()
        self._submit(_Task(run, future))
        return await future

    def _write_loop(self) -> None:
        """The writer thread: take everything queued, commit the writes as one transaction, repeat."""
        while True:
            batch = [self._queue.get()]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            writes = [item for item in batch if isinstance(item, _Write)]
            if writes:
                self._commit(writes)
            for item in batch:
                if isinstance(item, _Task):
                    self._run_task(item)
            if any(item is None for item in batch):
                return

    def _commit(self, writes: list[_Write]) -> None:
        """Check each write against the state so far, store the ones that pass, commit once, then publish."""
        conn = self._conn
        revision = self._written_revision
        events: list[Event] = []
        outcomes: list[tuple[asyncio.Future[KeyValue], object]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for write in writes:
                op = write.op
                row = conn.execute(SELECT_CURRENT, (op.key,)).fetchone()
                current = None if row is None else KeyValue(op.key, row[2], row[0], row[1])
                try:
                    event = plan_write(op, current, revision + 1)
                except StorageError as exc:  # this write's precondition failed; the others carry on
                    outcomes.append((write.future, exc))
                    continue
                revision += 1
                kv = event.kv
                replaced = event.prev.mod_revision if event.prev else 0
                if event.type == DELETED:
                    conn.execute(INSERT_LOG, (revision, op.key, kv.create_revision, replaced, 1, b""))
                    conn.execute("DELETE FROM current WHERE key = ?", (op.key,))
                else:
                    conn.execute(INSERT_LOG, (revision, op.key, kv.create_revision, replaced, 0, kv.value))
                    conn.execute(UPSERT_CURRENT, (op.key, kv.create_revision, revision, kv.value))
                events.append(event)
                outcomes.append((write.future, kv))
            if events:
                conn.execute("UPDATE meta SET value = ? WHERE name = 'revision'", (revision,))
            conn.execute("COMMIT")
        except Exception as exc:  # whatever went wrong, fail this batch but keep the writer alive
            self._rollback()
            log.exception("datastore write transaction failed")
            outcomes = [(write.future, StorageError(f"datastore write failed: {exc}")) for write in writes]
            events = []
        if events:
            self._written_revision = revision
            self.commits += 1
        self._loop.call_soon_threadsafe(self._publish, events, outcomes)

    def _publish(self, events: list[Event], outcomes: list[tuple[asyncio.Future[KeyValue], object]]) -> None:
        """On the event loop: make a committed batch visible, then answer its callers."""
        if events:
            self._cache.apply(events)
        for future, outcome in outcomes:
            _resolve(future, outcome)

    def _run_task(self, task: _Task) -> None:
        """Run one maintenance step in its own transaction and answer its caller."""
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            outcome = task.run(self._conn)
            self._conn.execute("COMMIT")
        except Exception as exc:  # keep the writer alive
            self._rollback()
            log.exception("datastore maintenance failed")
            outcome = StorageError(f"datastore maintenance failed: {exc}")
        self._loop.call_soon_threadsafe(_resolve, task.future, outcome)

    def _rollback(self) -> None:
        """Abandon the writer's open transaction, if any."""
        with contextlib.suppress(sqlite3.Error):
            self._conn.execute("ROLLBACK")

    # compaction ----------------------------------------------------------------

    async def compact(self, revision: int) -> None:
        """Persist the new compact revision, stop serving older reads, then delete old rows in small steps."""
        if not self._should_compact(revision):
            return
        await self._run(partial(_save_compact_revision, revision))
        self._cache.compact(revision)
        cursor: int | None = 0
        while cursor is not None:
            cursor = await self._run(partial(_delete_compacted, revision, cursor))
        log.debug("datastore compacted to revision %d", revision)


    # history older than the event ring -----------------------------------------


    async def _read(self, run: Callable[[sqlite3.Connection], T]) -> T:
        """Run a query on a reader thread with its own connection; WAL lets it proceed beside the writer."""
        if self._read_pool is None or self._closed:
            raise StorageError("datastore is closed")
        return await self._loop.run_in_executor(self._read_pool, self._with_reader, run)

    def _with_reader(self, run: Callable[[sqlite3.Connection], T]) -> T:
        """Borrow a reader connection for one query."""
        conn = self._readers.get()
        try:
            return run(conn)
        except sqlite3.Error as exc:
            raise StorageError(f"datastore read failed: {exc}") from exc
        finally:
            self._readers.put(conn)

    # Each history read checks the compact revision again afterwards: a compaction that started meanwhile
    # may have deleted rows the read needed.

    async def _history_get(self, key: str, revision: int) -> KeyValue | None:
        """See CachedBackend._history_get."""
        self._check_compacted(revision)
        kv = await self._read(partial(_select_version, key, revision))
        self._check_compacted(revision)
        return kv

    async def _history_list(self, prefix: str, start_key: str, limit: int,
                            revision: int) -> tuple[list[KeyValue], bool]:
        """See CachedBackend._history_list."""
        self._check_compacted(revision)
        found = await self._read(partial(_select_range, prefix, start_key, limit, revision))
        self._check_compacted(revision)
        return found

    async def _history_events(self, prefix: str, after: int, upto: int) -> AsyncGenerator[list[Event], None]:
        """See CachedBackend._history_events; reads the log CHUNK rows at a time."""
        cursor = after
        while True:
            self._check_compacted(cursor)
            events = await self._read(partial(_select_events, prefix, cursor, upto))
            self._check_compacted(cursor)
            if events:
                yield events
            if len(events) < CHUNK:
                return
            cursor = events[-1].revision
