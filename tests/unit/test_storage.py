"""Datastore semantics, the same suite for every driver, plus SQLite durability and group commit, and etcd
shared by several backends."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from kubelite.storage import (
    ADDED,
    DELETED,
    MODIFIED,
    Backend,
    CompactedError,
    ConflictError,
    EtcdBackend,
    Event,
    FutureRevisionError,
    KeyExistsError,
    KeyNotFoundError,
    KeyValue,
    MemoryBackend,
    SqliteBackend,
    StorageError,
    WatchOverflowError,
    open_backend,
)
from kubelite.storage import etcd as etcd_driver
from kubelite.storage import sqlite as sqlite_driver
from kubelite.storage.cache import CachedBackend
from tests.etcdserver import free_port, running_etcd

REPO = Path(__file__).resolve().parents[2]
Make = Callable[..., Awaitable[Backend]]


def _new(driver: str, path: Path, etcd: str, **options: int) -> Backend:
    """A backend of the given flavour; the "-log" ones keep no event ring, so history always comes from the log
    (SQLite's table, etcd's history)."""
    if driver == "memory":
        return MemoryBackend(**options)
    if driver.endswith("-log"):
        options = {"ring_size": 1, **options}
    if driver.startswith("etcd"):
        return EtcdBackend([etcd], **options)
    return SqliteBackend(str(path / "state.db"), **options)


@pytest.fixture(params=["memory", "sqlite", "sqlite-log", "etcd", "etcd-log"])
async def make(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Make]:
    """A factory of started backends of one driver (for etcd: all on one fresh etcd), all closed after the test."""
    opened: list[Backend] = []
    with ExitStack() as stack:
        etcd = stack.enter_context(running_etcd(tmp_path / "etcd")) if request.param.startswith("etcd") else ""

        async def make_backend(**options: int) -> Backend:
            backend = _new(request.param, tmp_path / str(len(opened)), etcd, **options)
            await backend.start()
            opened.append(backend)
            return backend

        yield make_backend
        for backend in opened:
            await backend.close()


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[str]:
    """The client URL of a fresh etcd."""
    with running_etcd(tmp_path / "etcd") as url:
        yield url


@pytest.fixture
async def store(make: Make) -> Backend:
    """One started backend."""
    return await make()


async def _next(events: AsyncIterator[list[Event]]) -> list[Event]:
    """The next batch of a watch, failing the test instead of hanging."""
    return await asyncio.wait_for(anext(events), 5)


async def _collect(events: AsyncIterator[list[Event]], count: int) -> list[Event]:
    """At least `count` events from a watch."""
    got: list[Event] = []
    while len(got) < count:
        got.extend(await _next(events))
    return got


def _summary(events: list[Event]) -> list[tuple[str, str, int, bytes, int | None]]:
    """(type, key, revision, value, previous mod revision) of each event, for compact assertions."""
    return [(e.type, e.kv.key, e.revision, e.kv.value, e.prev.mod_revision if e.prev else None) for e in events]


# basic verbs ------------------------------------------------------------------


async def test_empty_store_reports_revision_zero(store: Backend) -> None:
    assert await store.current_revision() == 0
    assert await store.list("/registry/") == (0, [], False)
    assert await store.count("/registry/") == (0, 0)
    assert await store.get("/registry/pods/default/web") is None


async def test_create_then_get(store: Backend) -> None:
    kv = await store.create("/registry/pods/default/web", b'{"a":1}')
    assert kv == KeyValue("/registry/pods/default/web", b'{"a":1}', 1, 1)
    assert await store.get("/registry/pods/default/web") == kv
    assert await store.current_revision() == 1


async def test_create_of_existing_key_fails_without_using_a_revision(store: Backend) -> None:
    await store.create("/k", b"1")
    with pytest.raises(KeyExistsError):
        await store.create("/k", b"2")
    with pytest.raises(TypeError):
        await store.create("/text", "not bytes")  # type: ignore[arg-type]
    assert (await store.get("/k")).value == b"1"
    assert await store.current_revision() == 1


async def test_update_keeps_create_revision_and_bumps_mod_revision(store: Backend) -> None:
    created = await store.create("/k", b"1")
    await store.create("/other", b"x")
    updated = await store.update("/k", b"2", created.mod_revision)
    assert updated == KeyValue("/k", b"2", created.create_revision, 3)
    unconditional = await store.update("/k", b"3", 0)
    assert unconditional == KeyValue("/k", b"3", 1, 4)
    assert await store.get("/k") == unconditional


async def test_update_with_stale_revision_conflicts_and_reports_current(store: Backend) -> None:
    created = await store.create("/k", b"1")
    current = await store.update("/k", b"2", created.mod_revision)
    with pytest.raises(ConflictError) as caught:
        await store.update("/k", b"3", created.mod_revision)
    assert caught.value.current == current
    assert (await store.get("/k")).value == b"2"
    assert await store.current_revision() == 2


async def test_update_and_delete_of_missing_key_fail(store: Backend) -> None:
    with pytest.raises(KeyNotFoundError):
        await store.update("/missing", b"x", 0)
    with pytest.raises(KeyNotFoundError):
        await store.delete("/missing")
    assert await store.current_revision() == 0


async def test_delete_returns_last_value_at_the_delete_revision(store: Backend) -> None:
    created = await store.create("/k", b"last")
    with pytest.raises(ConflictError) as caught:
        await store.delete("/k", created.mod_revision + 7)
    assert caught.value.current == created
    deleted = await store.delete("/k", created.mod_revision)
    assert deleted == KeyValue("/k", b"last", 1, 2)
    assert await store.get("/k") is None
    with pytest.raises(KeyNotFoundError):
        await store.delete("/k")


async def test_recreate_after_delete_gets_a_new_create_revision(store: Backend) -> None:
    await store.create("/k", b"1")
    await store.delete("/k")
    again = await store.create("/k", b"2")
    assert again == KeyValue("/k", b"2", 3, 3)


async def test_revisions_strictly_increase_across_all_verbs(store: Backend) -> None:
    seen = [(await store.create(f"/k{i}", b"v")).mod_revision for i in range(5)]
    seen.append((await store.update("/k1", b"w", 0)).mod_revision)
    seen.append((await store.delete("/k2")).mod_revision)
    seen.append((await store.create("/k2", b"again")).mod_revision)
    assert seen == list(range(1, 9))
    assert await store.current_revision() == 8


# list and count ---------------------------------------------------------------


async def test_list_selects_prefix_sorted_with_limit_and_continue(store: Backend) -> None:
    names = [f"web-{i:02d}" for i in range(10)]
    for name in reversed(names):
        await store.create(f"/registry/pods/default/{name}", name.encode())
    await store.create("/registry/pods/kube-system/dns", b"x")
    await store.create("/registry/podsecurity/x", b"x")
    await store.create("/registry/pods/default", b"not under the prefix")

    revision, items, more = await store.list("/registry/pods/default/")
    assert revision == 13 and not more
    assert [kv.key.rsplit("/", 1)[1] for kv in items] == names

    pages, start = [], ""
    while True:
        revision, items, more = await store.list("/registry/pods/default/", start_key=start, limit=3)
        assert revision == 13
        pages.append([kv.value.decode() for kv in items])
        if not more:
            break
        start = items[-1].key + "\x00"
    assert pages == [names[0:3], names[3:6], names[6:9], names[9:10]]

    _, items, more = await store.list("/registry/pods/default/", limit=10)
    assert len(items) == 10 and not more
    _, items, _ = await store.list("/registry/pods/", start_key="/registry/a")
    assert len(items) == 12
    _, everything, _ = await store.list("")
    assert len(everything) == 13
    assert await store.count("/registry/pods/") == (13, 12)
    assert await store.count("/registry/pods/default/") == (13, 10)


async def test_list_and_get_at_a_past_revision(store: Backend) -> None:
    for name in "abc":
        await store.create(f"/p/{name}", name.encode())
    at = await store.current_revision()
    await store.update("/p/a", b"a2", 0)
    await store.delete("/p/b")
    await store.create("/p/d", b"d")
    await store.delete("/p/c")
    await store.create("/p/c", b"c2")
    await store.create("/q/z", b"z")

    assert await store.list("/p/", revision=at) == (at, [
        KeyValue("/p/a", b"a", 1, 1), KeyValue("/p/b", b"b", 2, 2), KeyValue("/p/c", b"c", 3, 3)], False)
    assert await store.list("/p/", limit=2, revision=at) == (at, [
        KeyValue("/p/a", b"a", 1, 1), KeyValue("/p/b", b"b", 2, 2)], True)
    assert await store.list("/p/", start_key="/p/b\x00", limit=2, revision=at) == (at, [
        KeyValue("/p/c", b"c", 3, 3)], False)
    assert await store.get("/p/a", at) == KeyValue("/p/a", b"a", 1, 1)
    assert await store.get("/p/d", at) is None
    assert await store.get("/p/b", 5) is None
    assert await store.get("/p/a", 4) == KeyValue("/p/a", b"a2", 1, 4)
    _, now, _ = await store.list("/p/")
    assert [(kv.key, kv.value) for kv in now] == [("/p/a", b"a2"), ("/p/c", b"c2"), ("/p/d", b"d")]
    current = await store.current_revision()
    assert await store.list("/p/", revision=current) == (current, now, False)


async def test_reading_a_future_revision_fails(store: Backend) -> None:
    await store.create("/k", b"v")
    with pytest.raises(FutureRevisionError):
        await store.list("/", revision=2)
    with pytest.raises(FutureRevisionError):
        await store.get("/k", 2)


# compaction -----------------------------------------------------------------


async def test_compaction_forgets_older_revisions_but_keeps_the_state_at_it(store: Backend) -> None:
    await store.create("/c/a", b"1")
    await store.create("/c/b", b"1")
    await store.update("/c/a", b"2", 0)
    await store.delete("/c/b")
    await store.create("/c/x", b"1")
    await store.update("/c/a", b"3", 0)  # revision 6
    assert store.compact_revision == 0

    before = await store.list("/c/", revision=5)
    await store.compact(5)
    assert store.compact_revision == 5
    assert await store.list("/c/", revision=5) == before
    assert await store.get("/c/a", 5) == KeyValue("/c/a", b"2", 1, 3)
    with pytest.raises(CompactedError) as caught:
        await store.list("/c/", revision=4)
    assert caught.value.compact_revision == 5
    with pytest.raises(CompactedError):
        await store.get("/c/a", 2)
    await store.compact(3)  # older than the compact revision: nothing to do
    assert store.compact_revision == 5
    with pytest.raises(FutureRevisionError):
        await store.compact(99)
    _, items, _ = await store.list("/c/")
    assert [(kv.key, kv.value) for kv in items] == [("/c/a", b"3"), ("/c/x", b"1")]


async def test_watch_from_before_the_compact_revision_fails_before_yielding(store: Backend) -> None:
    for i in range(4):
        await store.create(f"/w/{i}", b"v")
    await store.compact(3)
    with pytest.raises(CompactedError) as caught:
        await _next(store.watch("/w/", 2))
    assert caught.value.compact_revision == 3
    events = store.watch("/w/", 3)
    assert _summary(await _next(events)) == [(ADDED, "/w/3", 4, b"v", None)]
    await events.aclose()


# watch ----------------------------------------------------------------------


async def test_watch_replays_history_then_streams_live_events(store: Backend) -> None:
    await store.create("/w/a", b"1")
    await store.update("/w/a", b"2", 1)
    await store.create("/w/b", b"1")
    await store.delete("/w/a")
    events = store.watch("/w/", 0)
    assert _summary(await _collect(events, 4)) == [
        (ADDED, "/w/a", 1, b"1", None),
        (MODIFIED, "/w/a", 2, b"2", 1),
        (ADDED, "/w/b", 3, b"1", None),
        (DELETED, "/w/a", 4, b"2", 2),
    ]
    await store.update("/w/b", b"2", 3)
    await store.create("/w/a", b"again")
    assert _summary(await _collect(events, 2)) == [
        (MODIFIED, "/w/b", 5, b"2", 3),
        (ADDED, "/w/a", 6, b"again", None),
    ]
    await events.aclose()


async def test_watch_from_a_revision_replays_only_newer_events(store: Backend) -> None:
    for i in range(5):
        await store.create(f"/w/{i}", str(i).encode())
    events = store.watch("/w/", 3)
    assert [e.revision for e in await _collect(events, 2)] == [4, 5]
    await store.create("/w/5", b"5")
    assert [e.revision for e in await _next(events)] == [6]
    await events.aclose()


async def test_watch_sees_only_its_prefix(store: Backend) -> None:
    pods = store.watch("/registry/pods/", 0)
    everything = store.watch("", 0)
    await store.create("/registry/services/s", b"s")
    await store.create("/registry/pods/p", b"p")
    await store.create("/registry/podsecurity/x", b"x")
    assert [e.kv.key for e in await _next(pods)] == ["/registry/pods/p"]
    assert [e.kv.key for e in await _collect(everything, 3)] == [
        "/registry/services/s", "/registry/pods/p", "/registry/podsecurity/x"]
    await pods.aclose()
    await everything.aclose()


async def test_watch_of_deleted_key_carries_last_value_and_prev(store: Backend) -> None:
    await store.create("/d/k", b"first")
    last = await store.update("/d/k", b"last", 0)
    events = store.watch("/d/", last.mod_revision)
    deleted = await store.delete("/d/k", last.mod_revision)
    (event,) = await _next(events)
    assert event.type == DELETED
    assert event.kv == deleted == KeyValue("/d/k", b"last", 1, 3)
    assert event.prev == last
    assert event.revision == 3
    await events.aclose()


async def test_watch_from_a_future_revision_waits_for_it(store: Backend) -> None:
    await store.create("/f/a", b"1")
    events = store.watch("/f/", 3)
    pending = asyncio.ensure_future(anext(events))
    await store.create("/f/b", b"2")
    await store.create("/f/c", b"3")
    await store.create("/f/d", b"4")
    batch = await asyncio.wait_for(pending, 5)
    assert [e.revision for e in batch] == [4]
    await events.aclose()


async def test_closing_a_watch_unregisters_it(store: Backend) -> None:
    assert isinstance(store, CachedBackend)
    events = store.watch("/u/", 0)
    pending = asyncio.ensure_future(anext(events))
    await asyncio.sleep(0)
    assert store._cache.watchers
    pending.cancel()  # the apiserver's pattern: cancel a pending read, then close the generator
    with pytest.raises(asyncio.CancelledError):
        await pending
    await events.aclose()
    assert not store._cache.watchers

    other = store.watch("/u/", 0)
    await store.create("/u/x", b"x")
    await _next(other)
    await other.aclose()
    assert not store._cache.watchers


async def test_slow_watcher_is_dropped_instead_of_blocking_writers(make: Make) -> None:
    store = await make(watch_queue_limit=10)
    slow = store.watch("/s/", 0)
    await store.create("/s/first", b"x")
    assert len(await _next(slow)) == 1
    fast = store.watch("/s/", 1)
    for i in range(30):
        await store.create(f"/s/{i}", b"x")
        await _next(fast)
    assert await store.count("/s/") == (31, 31)
    with pytest.raises(WatchOverflowError):
        await _next(slow)
    await fast.aclose()


async def test_close_ends_watches_and_rejects_later_writes(store: Backend) -> None:
    events = store.watch("/", 0)
    pending = asyncio.ensure_future(anext(events))
    await asyncio.sleep(0)
    await store.close()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(pending, 5)
    with pytest.raises(StorageError):
        await store.create("/k", b"v")
    await store.close()


# concurrency -----------------------------------------------------------------


async def test_concurrent_creates_all_succeed_with_distinct_revisions(store: Backend) -> None:
    created = await asyncio.gather(*(store.create(f"/many/{i}", b"v") for i in range(100)))
    revisions = sorted(kv.mod_revision for kv in created)
    assert revisions == list(range(1, 101))
    assert await store.count("/many/") == (100, 100)


async def test_one_failed_precondition_does_not_fail_the_others(store: Backend) -> None:
    base = await store.create("/race", b"0")
    await store.create("/dup", b"0")
    results = await asyncio.gather(
        *(store.update("/race", str(i).encode(), base.mod_revision) for i in range(20)),
        store.create("/dup", b"again"),
        *(store.create(f"/fresh/{i}", b"v") for i in range(10)),
        return_exceptions=True)
    updates, dup, fresh = results[:20], results[20], results[21:]
    assert sum(isinstance(r, KeyValue) for r in updates) == 1
    assert all(isinstance(r, ConflictError) for r in updates if not isinstance(r, KeyValue))
    assert isinstance(dup, KeyExistsError)
    assert all(isinstance(r, KeyValue) for r in fresh)
    assert await store.current_revision() == 2 + 1 + 10


async def test_past_reads_agree_with_a_replay_of_random_history(make: Make,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_driver, "CHUNK", 7)  # many small log reads and compaction steps
    store = await make()
    rng = random.Random(7)
    states: list[dict[str, bytes]] = [{}]
    state: dict[str, bytes] = {}
    for step in range(300):
        key = f"/r/{rng.randrange(25):02d}"
        value = f"{step}".encode()
        if key not in state:
            await store.create(key, value)
            state[key] = value
        elif rng.random() < 0.3:
            await store.delete(key)
            del state[key]
        else:
            await store.update(key, value, 0)
            state[key] = value
        states.append(dict(state))

    async def check(revision: int) -> None:
        _, items, _ = await store.list("/r/", revision=revision)
        assert {kv.key: kv.value for kv in items} == states[revision]
        _, page, more = await store.list("/r/", start_key="/r/10", limit=4, revision=revision)
        expected = sorted(k for k in states[revision] if k >= "/r/10")
        assert [kv.key for kv in page] == expected[:4] and more == (len(expected) > 4)

    for revision in range(1, 301, 7):
        await check(revision)
    await store.compact(150)
    for revision in range(150, 301, 5):
        await check(revision)
    events = store.watch("/r/", 150)
    replayed = await _collect(events, 150)
    assert [e.revision for e in replayed] == list(range(151, 301))
    await events.aclose()


# SQLite: durability and group commit ----------------------------------------------


async def _sqlite(path: Path, **options: Any) -> SqliteBackend:
    """A started SQLite backend on path."""
    backend = SqliteBackend(str(path), **options)
    await backend.start()
    return backend


async def test_sqlite_reopen_keeps_data_revision_and_history(tmp_path: Path) -> None:
    path = tmp_path / "db" / "state.db"
    store = await _sqlite(path)
    await store.create("/k/a", b"1")
    await store.create("/k/b", b"1")
    await store.update("/k/a", b"2", 1)
    await store.delete("/k/b")
    await store.close()
    assert oct(path.stat().st_mode & 0o777) == "0o600"

    store = await _sqlite(path)
    assert await store.current_revision() == 4
    assert await store.get("/k/a") == KeyValue("/k/a", b"2", 1, 3)
    assert await store.get("/k/b") is None
    assert await store.list("/k/", revision=2) == (2, [KeyValue("/k/a", b"1", 1, 1), KeyValue("/k/b", b"1", 2, 2)],
                                                   False)
    events = store.watch("/k/", 0)
    assert _summary(await _collect(events, 4)) == [
        (ADDED, "/k/a", 1, b"1", None), (ADDED, "/k/b", 2, b"1", None),
        (MODIFIED, "/k/a", 3, b"2", 1), (DELETED, "/k/b", 4, b"1", 2)]
    assert (await store.create("/k/c", b"1")).mod_revision == 5
    assert [e.revision for e in await _next(events)] == [5]
    await events.aclose()
    await store.close()


async def test_sqlite_never_reuses_a_revision_after_compacting_the_newest_rows(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = await _sqlite(path)
    await store.create("/k", b"1")
    await store.create("/gone", b"1")
    await store.delete("/gone")
    await store.compact(3)  # removes the tombstone, the newest log row
    await store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT MAX(revision) FROM log").fetchone() == (1,)
    conn.close()

    store = await _sqlite(path)
    assert await store.current_revision() == 3
    assert store.compact_revision == 3
    assert (await store.create("/new", b"1")).mod_revision == 4
    await store.close()


def test_sqlite_acknowledged_writes_survive_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    child = textwrap.dedent("""
        import asyncio, sys
        from kubelite.storage import SqliteBackend

        async def main():
            store = SqliteBackend(sys.argv[1])
            await store.start()
            async def writer(w):
                for i in range(1_000_000):
                    kv = await store.create(f"/crash/{w}/{i}", b"x" * 512)
                    print(kv.key, kv.mod_revision, flush=True)
            await asyncio.gather(*(writer(w) for w in range(20)))

        asyncio.run(main())
    """)
    proc = subprocess.Popen([sys.executable, "-c", child, str(path)], stdout=subprocess.PIPE, text=True,
                            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout is not None
    acknowledged = []
    for line in proc.stdout:
        acknowledged.append(line.split())
        if len(acknowledged) >= 500:
            break
    os.kill(proc.pid, signal.SIGKILL)
    rest = proc.stdout.read()
    proc.wait()
    acknowledged += [line.split() for line in rest.split("\n")[:-1]]  # a cut-off last line was not finished
    assert len(acknowledged) >= 500

    async def check() -> None:
        store = await _sqlite(path)
        for key, revision in acknowledged:
            kv = await store.get(key)
            assert kv is not None and kv.mod_revision == int(revision), key
        assert await store.current_revision() >= max(int(revision) for _, revision in acknowledged)
        await store.close()

    asyncio.run(check())


async def test_sqlite_group_commit_batches_concurrent_writes(tmp_path: Path) -> None:
    store = await _sqlite(tmp_path / "state.db")
    assert store._conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert store._conn.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL: every commit is fsynced
    await store.create("/warm", b"x")
    before = store.commits
    assert before == 1
    created = await asyncio.gather(*(store.create(f"/g/{i}", b"x" * 2048) for i in range(50)))
    assert len({kv.mod_revision for kv in created}) == 50
    assert store.commits - before <= 5
    await store.close()


async def test_sqlite_compacts_automatically(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = await _sqlite(path, compact_interval=0.02, compact_keep=5)
    created = await store.create("/hot", b"0")
    for i in range(60):
        await store.update("/hot", str(i).encode(), 0)
    await store.create("/gone", b"x")
    await store.delete("/gone")
    for _ in range(250):
        if store.compact_revision >= await store.current_revision() - 5:
            break
        await asyncio.sleep(0.02)
    assert store.compact_revision == 63 - 5
    await store.close()
    with sqlite3.connect(path) as conn:
        revisions = [row[0] for row in conn.execute("SELECT revision FROM log ORDER BY revision")]
    conn.close()
    assert revisions == [58, 59, 60, 61, 62, 63]  # the version at the compact revision, and everything newer
    store = await _sqlite(path)
    assert await store.get("/hot") == KeyValue("/hot", b"59", created.create_revision, 61)
    await store.close()


async def test_sqlite_refuses_a_second_opener(tmp_path: Path) -> None:
    first = await _sqlite(tmp_path / "state.db")
    second = SqliteBackend(str(tmp_path / "state.db"))
    with pytest.raises(StorageError, match="in use"):
        await second.start()
    await first.close()
    await second.start()
    await second.close()


def test_open_backend_understands_endpoints(tmp_path: Path) -> None:
    default = open_backend("", str(tmp_path))
    assert isinstance(default, SqliteBackend)
    assert default.path == str(tmp_path / "server" / "db" / "state.db")
    assert isinstance(open_backend("sqlite", str(tmp_path)), SqliteBackend)
    explicit = open_backend(f"sqlite://{tmp_path}/other.db", str(tmp_path))
    assert isinstance(explicit, SqliteBackend) and explicit.path == f"{tmp_path}/other.db"
    assert isinstance(open_backend("memory://", str(tmp_path)), MemoryBackend)
    single = open_backend("https://127.0.0.1:2379", str(tmp_path))
    assert isinstance(single, EtcdBackend) and single.endpoints == ["https://127.0.0.1:2379"]
    several = open_backend("http://a:2379, http://b:2379/", str(tmp_path))
    assert isinstance(several, EtcdBackend) and several.endpoints == ["http://a:2379", "http://b:2379"]
    with pytest.raises(StorageError, match="http"):
        open_backend("http://a:2379,b:2379", str(tmp_path))
    with pytest.raises(StorageError):
        open_backend("mysql://x", str(tmp_path))


# etcd: the datastore several API servers share ------------------------------------


async def test_etcd_open_backend_talks_to_a_real_etcd(etcd: str, tmp_path: Path) -> None:
    store = open_backend(etcd, str(tmp_path))
    assert isinstance(store, EtcdBackend)
    await store.start()
    created = await store.create("/registry/pods/default/web", b"{}")
    assert await store.get("/registry/pods/default/web") == created == KeyValue("/registry/pods/default/web",
                                                                                 b"{}", 1, 1)
    await store.close()


async def test_etcd_backends_on_one_etcd_see_each_others_writes(etcd: str) -> None:
    first, second = EtcdBackend([etcd]), EtcdBackend([etcd])
    await first.start()
    await first.create("/shared/before", b"0")
    await second.start()
    assert (await second.get("/shared/before")).value == b"0"
    events = second.watch("/shared/", 0)
    assert _summary(await _next(events)) == [(ADDED, "/shared/before", 1, b"0", None)]
    created = await first.create("/shared/a", b"1")
    assert _summary(await _next(events)) == [(ADDED, "/shared/a", 2, b"1", None)]
    assert await second.get("/shared/a") == created  # a read right after another server's write sees it
    updated = await second.update("/shared/a", b"2", created.mod_revision)
    with pytest.raises(ConflictError) as caught:
        await first.update("/shared/a", b"lost", created.mod_revision)
    assert caught.value.current == updated
    assert await first.list("/shared/") == (3, [KeyValue("/shared/a", b"2", 2, 3), KeyValue("/shared/before",
                                                                                           b"0", 1, 1)], False)
    await first.delete("/shared/before")
    assert _summary(await _next(events)) == [(MODIFIED, "/shared/a", 3, b"2", 2)]
    assert _summary(await _next(events)) == [(DELETED, "/shared/before", 4, b"0", 1)]
    assert await second.count("/shared/") == (4, 1)
    await events.aclose()
    await first.close()
    await second.close()


async def test_etcd_uses_the_next_endpoint_when_one_is_down(etcd: str) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"  # bound but not listening: connections are refused
        store = EtcdBackend([dead, etcd])
        await store.start()
        assert (await store.create("/k", b"v")).mod_revision == 1
        await store.close()


async def test_etcd_unreachable_endpoint_says_what_to_do() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        store = EtcdBackend([f"http://127.0.0.1:{sock.getsockname()[1]}"])
        with pytest.raises(StorageError, match="cannot reach etcd.*--datastore-endpoint"):
            await store.start()
    await store.close()



async def test_etcd_backend_rides_out_an_etcd_restart(tmp_path: Path) -> None:
    ports = (free_port(), free_port())
    with running_etcd(tmp_path / "etcd", ports) as url:
        store = EtcdBackend([url])
        await store.start()
        events = store.watch("/r/", 0)
        await store.create("/r/a", b"1")
    with pytest.raises(StorageError, match="etcd"):  # refused, or a pooled connection found dead
        await store.get("/r/a")
    with running_etcd(tmp_path / "etcd", ports):
        await store.create("/r/b", b"2")  # returns once the mirror has re-watched and seen it
        assert [e.kv.key for e in await _collect(events, 2)] == ["/r/a", "/r/b"]
        await events.aclose()
        await store.close()


async def test_etcd_backend_reloads_when_etcd_compacted_past_it(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(etcd_driver, "RETRY_INTERVAL", 2.0)  # time for the other server to write and compact
    ports = (free_port(), free_port())
    with running_etcd(tmp_path / "etcd", ports) as url:
        behind = EtcdBackend([url])
        await behind.start()
        await behind.create("/c/a", b"1")
        events = behind.watch("/c/", 1)
    with running_etcd(tmp_path / "etcd", ports):
        ahead = EtcdBackend([url])
        await ahead.start()
        await ahead.delete("/c/a")
        await ahead.create("/c/b", b"2")
        await ahead.compact(3)
        with pytest.raises(WatchOverflowError):  # the watcher must re-list, as after falling behind
            await _next(events)
        assert await behind.list("/c/") == (3, [KeyValue("/c/b", b"2", 3, 3)], False)
        await ahead.close()
        await behind.close()
