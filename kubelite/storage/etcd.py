"""The etcd backend: etcd v3 through its JSON gateway (/v3/...) with aiohttp, for a datastore several API
servers can share.

etcd does the durable writes (one compare-and-swap transaction each), keeps the history and compacts it.
Each backend mirrors the whole keyspace into the shared StateCache from one etcd watch, and every write and
every read waits until the mirror has caught up with etcd; so reads and watches behave as with SQLite, and a
server sees the writes of every other server on the same etcd. A fresh etcd is at revision 1, so etcd's
revisions are ours plus OFFSET: the first write is revision 1 here as in the other backends.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Any

import aiohttp

from kubelite.storage.backend import (
    ADDED,
    DELETED,
    MODIFIED,
    CompactedError,
    Event,
    FutureRevisionError,
    KeyValue,
    StorageError,
)
from kubelite.storage.cache import WATCH_QUEUE_LIMIT, CachedBackend, StateCache, WriteOp, plan_write, prefix_end

log = logging.getLogger(__name__)

OFFSET = 1
"""etcd revision = our revision + OFFSET."""
ALL = "AA=="
"""Base64 of b"\\0": as key and range_end, the whole keyspace."""
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=30, connect=5)
WATCH_TIMEOUT = aiohttp.ClientTimeout(total=None, connect=5)
SYNC_TIMEOUT = 30.0
"""Longest a read or write waits for the mirror to reach etcd's revision."""
RETRY_INTERVAL = 1.0
"""Pause before re-opening a failed mirror watch."""


def _b64(data: bytes) -> str:
    """etcd's JSON encoding of keys and values."""
    return base64.b64encode(data).decode()


def _kv(data: dict[str, Any]) -> KeyValue:
    """A KeyValue from etcd's JSON (absent fields are zero or empty)."""
    return KeyValue(base64.b64decode(data["key"]).decode(), base64.b64decode(data.get("value", "")),
                    int(data.get("create_revision", 0)) - OFFSET, int(data.get("mod_revision", 0)) - OFFSET)


def _event(data: dict[str, Any]) -> Event:
    """An Event from an etcd watch event requested with prev_kv (a delete's prev is always readable: etcd only
    watches from after its compact revision)."""
    prev = _kv(data["prev_kv"]) if "prev_kv" in data else None
    if data.get("type") == "DELETE":
        assert prev is not None
        return Event(DELETED, dataclasses.replace(prev, mod_revision=_kv(data["kv"]).mod_revision), prev)
    kv = _kv(data["kv"])
    if kv.create_revision == kv.mod_revision:
        return Event(ADDED, kv, None)
    return Event(MODIFIED, kv, prev)


class EtcdBackend(CachedBackend):
    """One or more etcd endpoints of one cluster (the next is tried when one refuses connections); see the
    module docstring. compact_revision is what this backend compacted to or learned from etcd."""

    def __init__(self, endpoints: list[str], *, compact_interval: float = 300.0, compact_keep: int = 1000,
                 ring_size: int = 10_000, watch_queue_limit: int = WATCH_QUEUE_LIMIT):
        self.endpoints = [endpoint.rstrip("/") for endpoint in endpoints]
        self._current = 0  # index of the endpoint in use
        self._compact_interval = compact_interval
        self._compact_keep = compact_keep
        self._ring_size = ring_size
        self._watch_queue_limit = watch_queue_limit
        self._session: aiohttp.ClientSession | None = None
        self._applied = asyncio.Condition()
        self._mirror_task: asyncio.Task[None] | None = None
        self._compactor: asyncio.Task[None] | None = None

    # lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        """Load the keyspace, then mirror etcd's changes and compact in the background."""
        self._session = aiohttp.ClientSession()
        try:
            self._cache = await self._load(0)
        except StorageError:
            await self._session.close()
            self._session = None
            raise
        self._mirror_task = asyncio.create_task(self._mirror())
        self._compactor = asyncio.create_task(self._compact_periodically(self._compact_interval, self._compact_keep))

    async def _load(self, compact_revision: int) -> StateCache:
        """A cache of the current keyspace, read in one range."""
        reply = await self._post("/v3/kv/range", {"key": ALL, "range_end": ALL})
        kvs = {kv.key: kv for kv in map(_kv, reply.get("kvs", []))}
        revision = int(reply["header"]["revision"]) - OFFSET
        return StateCache(kvs, revision, compact_revision, self._ring_size, self._watch_queue_limit)

    async def close(self) -> None:
        """Stop mirroring and compacting, end watches and waiting callers, close the connections."""
        if self._closed:
            return
        self._closed = True
        for task in (self._mirror_task, self._compactor):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._session is not None:
            self._cache.close()
            async with self._applied:
                self._applied.notify_all()
            await self._session.close()

    # requests --------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _request(self, path: str, body: dict[str, Any],
                       limits: aiohttp.ClientTimeout) -> AsyncIterator[aiohttp.ClientResponse]:
        """POST to the endpoint in use, moving on to the next while connections are refused."""
        if self._session is None or self._closed:
            raise StorageError("datastore is closed" if self._closed else "datastore is not started")
        refused = []
        for _ in self.endpoints:
            url = self.endpoints[self._current] + path
            try:
                response = await self._session.post(url, json=body, timeout=limits)
            except aiohttp.ClientConnectorError as exc:  # nothing was sent: safe to try the next endpoint
                refused.append(f"{url}: {exc}")
                self._current = (self._current + 1) % len(self.endpoints)
                continue
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise StorageError(f"etcd request {url} failed: {exc!r}") from exc
            async with response:
                try:
                    yield response
                except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                    raise StorageError(f"etcd request {url} failed: {exc!r}") from exc
            return
        raise StorageError(f"cannot reach etcd ({'; '.join(refused)}): start etcd, or point --datastore-endpoint "
                           "at its client URLs (http://HOST:2379, comma-separated)")

    async def _post(self, path: str, body: dict[str, Any], revision: int = 0) -> dict[str, Any]:
        """One unary call; etcd's errors about `revision` become CompactedError and FutureRevisionError."""
        async with self._request(path, body, REQUEST_TIMEOUT) as response:
            reply: dict[str, Any] = await response.json(content_type=None)
        if "error" not in reply:
            return reply
        message = reply.get("message") or reply["error"]
        if "required revision has been compacted" in message:
            raise CompactedError(revision, max(self._cache.compact_revision, revision + 1))
        if "required revision is a future revision" in message:
            raise FutureRevisionError(revision, self._cache.revision)
        raise StorageError(f"etcd: {message}")

    async def _stream(self, after: int) -> AsyncGenerator[list[Event], None]:
        """Every change in the keyspace after revision `after`, as etcd's watch batches them."""
        body = {"create_request": {"key": ALL, "range_end": ALL, "start_revision": str(after + 1 + OFFSET),
                                   "prev_kv": True}}
        async with self._request("/v3/watch", body, WATCH_TIMEOUT) as response:
            buffer = b""
            async for chunk in response.content.iter_any():  # newline-separated JSON, of any length
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    message = json.loads(line)
                    if "error" in message:
                        raise StorageError(f"etcd watch: {message['error'].get('message')}")
                    result = message["result"]
                    if "compact_revision" in result:
                        raise CompactedError(after, int(result["compact_revision"]) - OFFSET)
                    if result.get("canceled"):
                        raise StorageError(f"etcd cancelled the watch: {result.get('cancel_reason', '')}")
                    if "events" in result:
                        yield [_event(event) for event in result["events"]]
        raise StorageError("etcd ended the watch")

    # the mirror ------------------------------------------------------------

    async def _mirror(self) -> None:
        """Apply etcd's changes to the cache; re-watch after failures, reload if etcd compacted past us."""
        stale = False
        while True:
            try:
                if stale:
                    await self._reload()
                    stale = False
                async with aclosing(self._stream(self._cache.revision)) as stream:
                    async for events in stream:
                        self._cache.apply(events)
                        async with self._applied:
                            self._applied.notify_all()
            except CompactedError as exc:
                log.warning("etcd compacted past this server's copy (%s): reloading it", exc)
                stale = True
            except StorageError as exc:
                log.warning("etcd watch failed, retrying: %s", exc)
                await asyncio.sleep(RETRY_INTERVAL)

    async def _reload(self) -> None:
        """Replace the cache with etcd's current keyspace; its watchers must re-list, as after an overflow."""
        old = self._cache
        self._cache = await self._load(old.compact_revision)
        for watchers in old.watchers.values():
            for watcher in watchers:
                watcher.overflowed = True
                watcher.ready.set()
        old.watchers.clear()

    async def _wait_for(self, revision: int) -> None:
        """Wait until the mirror has applied `revision` (or the store closes)."""
        try:
            async with asyncio.timeout(SYNC_TIMEOUT), self._applied:
                await self._applied.wait_for(lambda: self._cache.revision >= revision or self._closed)
        except TimeoutError:
            raise StorageError(f"etcd watch did not reach revision {revision} in {SYNC_TIMEOUT:.0f} s") from None

    async def _sync(self, revision: int) -> None:
        """Before a read: catch up with etcd (to `revision` if given), so every server reads what any wrote."""
        if revision and revision <= self._cache.revision:
            return
        reply = await self._post("/v3/kv/range", {"key": ALL, "count_only": True})
        latest = int(reply["header"]["revision"]) - OFFSET
        if revision > latest:
            raise FutureRevisionError(revision, latest)
        await self._wait_for(revision or latest)

    async def get(self, key: str, revision: int = 0) -> KeyValue | None:
        """See Backend.get; served from the mirror once it has caught up."""
        await self._sync(revision)
        return await super().get(key, revision)

    async def list(self, prefix: str, start_key: str = "", limit: int = 0,
                   revision: int = 0) -> tuple[int, list[KeyValue], bool]:
        """See Backend.list; served from the mirror once it has caught up."""
        await self._sync(revision)
        return await super().list(prefix, start_key, limit, revision)

    async def count(self, prefix: str) -> tuple[int, int]:
        """See Backend.count; served from the mirror once it has caught up."""
        await self._sync(0)
        return await super().count(prefix)

    # writes ----------------------------------------------------------------

    async def _write(self, op: WriteOp) -> KeyValue:
        """One transaction: the precondition as a compare, the write on success, a read of the key on failure."""
        key = _b64(op.key.encode())
        if op.kind == ADDED:
            compare = {"key": key, "target": "CREATE", "create_revision": "0"}
        elif op.expected_revision:
            compare = {"key": key, "target": "MOD", "mod_revision": str(op.expected_revision + OFFSET)}
        else:
            compare = {"key": key, "target": "CREATE", "result": "GREATER", "create_revision": "0"}
        if op.kind == DELETED:
            success = {"request_delete_range": {"key": key, "prev_kv": True}}
        else:
            success = {"request_put": {"key": key, "value": _b64(op.value), "prev_kv": True}}
        reply = await self._post("/v3/kv/txn", {"compare": [compare], "success": [success],
                                                "failure": [{"request_range": {"key": key}}]})
        revision = int(reply["header"]["revision"]) - OFFSET
        (response,) = reply["responses"]
        if not reply.get("succeeded"):
            kvs = response["response_range"].get("kvs")
            plan_write(op, _kv(kvs[0]) if kvs else None, revision + 1)  # raises the precondition's error
            raise StorageError(f"etcd refused the write to {op.key}")
        if op.kind == DELETED:
            kv = dataclasses.replace(_kv(response["response_delete_range"]["prev_kvs"][0]), mod_revision=revision)
        elif op.kind == MODIFIED:
            prev = _kv(response["response_put"]["prev_kv"])
            kv = KeyValue(op.key, op.value, prev.create_revision, revision)
        else:
            kv = KeyValue(op.key, op.value, revision, revision)
        await self._wait_for(revision)
        return kv

    # compaction ----------------------------------------------------------------

    async def compact(self, revision: int) -> None:
        """Compact etcd (another server may have compacted further already), then the cache."""
        if not self._should_compact(revision):
            return
        with contextlib.suppress(CompactedError):
            await self._post("/v3/kv/compaction", {"revision": str(revision + OFFSET)}, revision)
        self._cache.compact(revision)
        log.debug("datastore compacted to revision %d", revision)


    # history older than the event ring -----------------------------------------


    async def _history_get(self, key: str, revision: int) -> KeyValue | None:
        """See CachedBackend._history_get."""
        self._check_compacted(revision)
        reply = await self._post("/v3/kv/range", {"key": _b64(key.encode()), "revision": str(revision + OFFSET)},
                                 revision)
        kvs = reply.get("kvs")
        return _kv(kvs[0]) if kvs else None

    async def _history_list(self, prefix: str, start_key: str, limit: int,
                            revision: int) -> tuple[list[KeyValue], bool]:
        """See CachedBackend._history_list."""
        self._check_compacted(revision)
        high = prefix_end(prefix)
        body = {"key": _b64(max(prefix, start_key).encode() or b"\0"),
                "range_end": ALL if high is None else _b64(high.encode()),
                "revision": str(revision + OFFSET), "limit": str(limit)}
        reply = await self._post("/v3/kv/range", body, revision)
        return [_kv(kv) for kv in reply.get("kvs", [])], bool(reply.get("more"))

    async def _history_events(self, prefix: str, after: int, upto: int) -> AsyncGenerator[list[Event], None]:
        """See CachedBackend._history_events; a watch of the whole keyspace, so it knows when it reaches upto."""
        self._check_compacted(after)
        async with aclosing(self._stream(after)) as stream:
            async for events in stream:
                selected = [event for event in events if event.revision <= upto and event.kv.key.startswith(prefix)]
                if selected:
                    yield selected
                if events[-1].revision >= upto:
                    return
