"""Micro-benchmark of the SQLite datastore: writes with 50 concurrent writers, gets, 3,000-key lists.

Run: python bench/storage_bench.py  (uses a temporary directory; prints one figure per line)
"""

from __future__ import annotations

import asyncio
import os
import random
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

import orjson

from kubelite.storage import SqliteBackend

WRITERS = 50
OBJECTS = 3000  # per resource; two resources are written
GETS = 30_000
LIST_RUNS = 20


def _value(name: str, generation: int) -> bytes:
    """A pod-like JSON object of about 2 KB."""
    return orjson.dumps({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": "web", "tier": "frontend"},
                     "annotations": {"note": "x" * 1500}, "generation": generation},
        "spec": {"containers": [{"name": "web", "image": "busybox:1.35", "command": ["sleep", "3600"]}]},
    })


async def _concurrently(jobs: list[Callable[[], Awaitable[object]]]) -> float:
    """Run jobs with WRITERS workers pulling from a shared list; returns the seconds taken."""
    todo = iter(jobs)

    async def worker() -> None:
        for job in todo:
            await job()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(WRITERS)))
    return time.perf_counter() - started


async def _list_ms(store: SqliteBackend, prefix: str, revision: int = 0, limit: int = 0) -> float:
    """Median milliseconds to list every key under prefix (in pages of `limit` when given)."""
    times = []
    for _ in range(LIST_RUNS):
        started = time.perf_counter()
        start, total = "", 0
        while True:
            at, items, more = await store.list(prefix, start_key=start, limit=limit, revision=revision)
            total += len(items)
            if not more:
                break
            start, revision = items[-1].key + "\x00", at
        times.append((time.perf_counter() - started) * 1000)
        assert total == OBJECTS, total
    return statistics.median(times)


async def _sql_gets_per_second(path: str, keys: list[str]) -> float:
    """For comparison: gets served by SELECTs on a thread pool instead of the in-memory state."""
    connections = [sqlite3.connect(path, check_same_thread=False) for _ in range(2)]

    def select(key: str) -> object:
        conn = connections.pop()
        try:
            return conn.execute("SELECT value FROM current WHERE key = ?", (key,)).fetchone()
        finally:
            connections.append(conn)

    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(2) as pool:
        started = time.perf_counter()
        for key in keys:
            await loop.run_in_executor(pool, select, key)
        elapsed = time.perf_counter() - started
    for conn in connections:
        conn.close()
    return len(keys) / elapsed


async def main(directory: str) -> None:
    """Fill a fresh store and print the figures."""
    path = os.path.join(directory, "state.db")
    store = SqliteBackend(path)
    await store.start()
    pods = [f"/registry/core/pods/default/web-{i:05d}" for i in range(OBJECTS)]
    configmaps = [f"/registry/core/configmaps/default/cm-{i:05d}" for i in range(OBJECTS)]
    creates = [lambda key=key: store.create(key, _value(key, 1)) for key in pods + configmaps]
    seconds = await _concurrently(creates)
    print(f"creates/s ({WRITERS} concurrent, ~2 KB): {len(creates) / seconds:,.0f}  "
          f"({store.commits} commits for {len(creates)} writes)")

    before_updates = await store.current_revision()
    commits = store.commits
    updates = [lambda key=key: store.update(key, _value(key, 2), 0) for key in pods]
    seconds = await _concurrently(updates)
    print(f"updates/s ({WRITERS} concurrent): {len(updates) / seconds:,.0f}  "
          f"({store.commits - commits} commits)")

    keys = [random.choice(pods) for _ in range(GETS)]
    started = time.perf_counter()
    for key in keys:
        await store.get(key)
    print(f"gets/s (sequential): {GETS / (time.perf_counter() - started):,.0f}")

    prefix = "/registry/core/pods/default/"
    print(f"list {OBJECTS} (current): {await _list_ms(store, prefix):.2f} ms")
    print(f"list {OBJECTS} in pages of 500 (current): {await _list_ms(store, prefix, limit=500):.2f} ms")
    print(f"list {OBJECTS} at a past revision (event ring): "
          f"{await _list_ms(store, prefix, revision=before_updates):.2f} ms")
    await store.close()

    started = time.perf_counter()
    store = SqliteBackend(path)
    await store.start()
    print(f"reopen ({2 * OBJECTS} keys): "
          f"{(time.perf_counter() - started) * 1000:.0f} ms")
    print(f"list {OBJECTS} at a past revision (log table, after restart): "
          f"{await _list_ms(store, prefix, revision=before_updates):.2f} ms")
    await store.close()
    print(f"for comparison, gets/s via SELECT on a thread pool: {await _sql_gets_per_second(path, keys[:5000]):,.0f}")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="kubelite-bench-") as tmp:
        asyncio.run(main(tmp))
        print(f"database file: {os.path.getsize(os.path.join(tmp, 'state.db')) / 1e6:.1f} MB")
