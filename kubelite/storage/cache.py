"""The in-memory half shared by the drivers: current state, recent events and watcher fan-out.

Reads of the current state never leave memory and never wait behind the writer. Reads at a past revision
undo the recent events newer than it; only when those events are no longer in memory does a driver consult
its log (`_history_*`).
"""

from __future__ import annotations

import abc
import asyncio
import bisect
import dataclasses
import heapq
import logging
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass
from itertools import islice

from kubelite.storage.backend import (
    ADDED,
    DELETED,
    MODIFIED,
    Backend,
    CompactedError,
    ConflictError,
    Event,
    FutureRevisionError,
    KeyExistsError,
    KeyNotFoundError,
    KeyValue,
    StorageError,
    WatchOverflowError,
)

log = logging.getLogger(__name__)
WATCH_QUEUE_LIMIT = 50_000
"""Events a watcher may have pending before it is dropped; memory per event is one shared reference."""


def prefix_end(prefix: str) -> str | None:
    """The smallest string greater than every string starting with prefix (None: no bound), for range scans."""
    chars = list(prefix)
    while chars:
        code = ord(chars.pop()) + 1
        if 0xD800 <= code <= 0xDFFF:  # surrogates cannot be stored; skip to the next encodable character
            code = 0xE000
        if code <= 0x10FFFF:
            return "".join(chars) + chr(code)
    return None


def _check_value(value: bytes) -> None:
    """Reject non-bytes values up front, so a caller's bug cannot fail the other writes batched with it."""
    if not isinstance(value, bytes):
        raise TypeError(f"datastore values are bytes, not {type(value).__name__}")


def _revision(event: Event) -> int:
    """Sort key for bisecting the event ring by revision."""
    return event.kv.mod_revision


@dataclass(frozen=True, slots=True)
class WriteOp:
    """One requested write; expected_revision 0 means unconditional."""

    kind: str  # ADDED (create), MODIFIED (update) or DELETED (delete)
    key: str
    value: bytes = b""
    expected_revision: int = 0


def plan_write(op: WriteOp, current: KeyValue | None, revision: int) -> Event:
    """Check op's precondition against the key's current value and return the event it makes at revision."""
    if op.kind == ADDED:
        if current is not None:
            raise KeyExistsError(op.key)
        return Event(ADDED, KeyValue(op.key, op.value, revision, revision), None)
    if current is None:
        raise KeyNotFoundError(op.key)
    if op.expected_revision and op.expected_revision != current.mod_revision:
        raise ConflictError(op.key, op.expected_revision, current)
    if op.kind == MODIFIED:
        return Event(MODIFIED, KeyValue(op.key, op.value, current.create_revision, revision), current)
    return Event(DELETED, dataclasses.replace(current, mod_revision=revision), current)


class Watcher:
    """One watch's bounded queue of event batches; overflowing drops the watcher instead of slowing writers."""

    __slots__ = ("prefix", "limit", "batches", "pending", "overflowed", "closed", "ready")

    def __init__(self, prefix: str, limit: int):
        self.prefix = prefix
        self.limit = limit
        self.batches: deque[list[Event]] = deque()
        self.pending = 0
        self.overflowed = False
        self.closed = False
        self.ready = asyncio.Event()

    def push(self, events: list[Event]) -> bool:
        """Queue a batch; False (and the watcher is finished) when that would exceed the limit."""
        if self.pending + len(events) > self.limit:
            self.overflowed = True
            self.batches.clear()
            self.ready.set()
            return False
        self.batches.append(events)
        self.pending += len(events)
        self.ready.set()
        return True

    def close(self) -> None:
        """End the watch quietly (the store is closing)."""
        self.closed = True
        self.batches.clear()
        self.ready.set()

    async def next(self) -> list[Event] | None:
        """The next batch, None once closed; raises WatchOverflowError if the watcher fell too far behind."""
        while True:
            if self.overflowed:
                raise WatchOverflowError(f"watch on {self.prefix!r} fell more than {self.limit} events behind")
            if self.closed:
                return None
            if self.batches:
                batch = self.batches.popleft()
                self.pending -= len(batch)
                return batch
            self.ready.clear()
            await self.ready.wait()


class StateCache:
    """Current state (a dict plus sorted keys), a ring of recent events, and the watchers to fan out to.

    Lives on the event loop thread; drivers call apply() only after a batch is durable.
    """

    def __init__(self, kvs: dict[str, KeyValue], revision: int, compact_revision: int,
                 ring_size: int | None, watch_queue_limit: int):
        self.kvs = kvs
        self.keys = sorted(kvs)
        self.revision = revision
        self.compact_revision = compact_revision
        self.ring: list[Event] = []
        self.ring_start = revision  # the ring holds every event with a revision above this
        self.ring_size = ring_size
        self.watch_queue_limit = watch_queue_limit
        self.watchers: dict[str, set[Watcher]] = {}

    def _range(self, prefix: str, start_key: str) -> tuple[str, str | None, int, int]:
        """(low key, high bound, first index, end index) of the keys selected by prefix and start_key."""
        low = max(prefix, start_key)
        high = prefix_end(prefix)
        first = bisect.bisect_left(self.keys, low)
        end = len(self.keys) if high is None else bisect.bisect_left(self.keys, high, first)
        return low, high, first, end

    def list(self, prefix: str, start_key: str, limit: int) -> tuple[list[KeyValue], bool]:
        """Current keys in range, at most limit of them, and whether more remain."""
        _, _, first, end = self._range(prefix, start_key)
        stop = end if not limit else min(end, first + limit)
        kvs = self.kvs
        return [kvs[key] for key in self.keys[first:stop]], stop < end

    def count(self, prefix: str) -> int:
        """Live keys with the prefix."""
        _, _, first, end = self._range(prefix, "")
        return end - first

    def events_after(self, revision: int) -> list[Event] | None:
        """Every event newer than revision, or None if the ring no longer reaches back that far."""
        if revision < self.ring_start:
            return None
        return self.ring[bisect.bisect_right(self.ring, revision, key=_revision):]

    def get_at(self, key: str, newer: list[Event]) -> KeyValue | None:
        """The key's value before the events in `newer` happened."""
        for event in newer:
            if event.kv.key == key:
                return event.prev
        return self.kvs.get(key)

    def list_at(self, prefix: str, start_key: str, limit: int,
                newer: list[Event]) -> tuple[list[KeyValue], bool]:
        """Like list(), but as of before the events in `newer`: undo them over the current state."""
        low, high, first, end = self._range(prefix, start_key)
        before: dict[str, KeyValue | None] = {}
        for event in newer:
            key = event.kv.key
            if key not in before and low <= key and (high is None or key < high):
                before[key] = event.prev
        if not before:
            return self.list(prefix, start_key, limit)
        keys = self.keys
        unchanged = (key for key in (keys[i] for i in range(first, end)) if key not in before)
        existed = sorted(key for key, kv in before.items() if kv is not None)
        chosen = list(islice(heapq.merge(unchanged, existed), limit + 1 if limit else None))
        more = bool(limit) and len(chosen) > limit
        if more:
            chosen.pop()
        return [before.get(key) or self.kvs[key] for key in chosen], more

    def apply(self, events: list[Event]) -> None:
        """Make a durable batch visible: update the state, remember the events, wake matching watchers."""
        kvs, keys = self.kvs, self.keys
        for event in events:
            key = event.kv.key
            if event.type == DELETED:
                del kvs[key]
                del keys[bisect.bisect_left(keys, key)]
            else:
                if key not in kvs:
                    bisect.insort(keys, key)
                kvs[key] = event.kv
        self.revision = events[-1].revision
        self.ring.extend(events)
        if self.ring_size is not None and len(self.ring) > self.ring_size:
            drop = len(self.ring) - self.ring_size
            self.ring_start = self.ring[drop - 1].revision
            del self.ring[:drop]
        for prefix, watchers in self.watchers.items():
            selected = [event for event in events if event.kv.key.startswith(prefix)] if prefix else events
            if selected:
                for watcher in [w for w in watchers if not w.push(selected)]:
                    watchers.discard(watcher)

    def compact(self, revision: int) -> None:
        """Raise the compact revision and drop the events it makes unreachable."""
        self.compact_revision = max(self.compact_revision, revision)
        del self.ring[:bisect.bisect_right(self.ring, self.compact_revision, key=_revision)]
        self.ring_start = max(self.ring_start, self.compact_revision)

    def register(self, prefix: str) -> Watcher:
        """A new watcher that receives every batch applied from now on."""
        watcher = Watcher(prefix, self.watch_queue_limit)
        self.watchers.setdefault(prefix, set()).add(watcher)
        return watcher

    def unregister(self, watcher: Watcher) -> None:
        """Stop delivering to a watcher."""
        watchers = self.watchers.get(watcher.prefix)
        if watchers is not None:
            watchers.discard(watcher)
            if not watchers:
                del self.watchers[watcher.prefix]

    def close(self) -> None:
        """End every watch."""
        for watchers in self.watchers.values():
            for watcher in watchers:
                watcher.close()
        self.watchers.clear()


class CachedBackend(Backend):
    """Reads, watches and the write verbs over a StateCache; a driver supplies durability and old history."""

    _cache: StateCache
    _closed: bool = False

    @abc.abstractmethod
    async def _write(self, op: WriteOp) -> KeyValue:
        """Apply one write durably, then to the cache; returns the written (or deleted) key-value."""

    @abc.abstractmethod
    async def _history_get(self, key: str, revision: int) -> KeyValue | None:
        """get() at a revision older than the event ring; raises CompactedError if it is gone."""

    @abc.abstractmethod
    async def _history_list(self, prefix: str, start_key: str, limit: int,
                            revision: int) -> tuple[list[KeyValue], bool]:
        """list() at a revision older than the event ring; raises CompactedError if it is gone."""

    @abc.abstractmethod
    def _history_events(self, prefix: str, after: int, upto: int) -> AsyncGenerator[list[Event], None]:
        """Events under prefix in (after, upto] older than the event ring; raises CompactedError if gone."""

    def _check_not_future(self, revision: int) -> None:
        """Reject reads at revisions the store has not reached."""
        if revision > self._cache.revision:
            raise FutureRevisionError(revision, self._cache.revision)

    async def get(self, key: str, revision: int = 0) -> KeyValue | None:
        """See Backend.get; current reads are a dict lookup."""
        cache = self._cache
        if revision == 0:
            return cache.kvs.get(key)
        self._check_not_future(revision)
        newer = cache.events_after(revision)
        if newer is None:
            return await self._history_get(key, revision)
        return cache.get_at(key, newer)

    async def create(self, key: str, value: bytes) -> KeyValue:
        """See Backend.create."""
        _check_value(value)
        return await self._write(WriteOp(ADDED, key, value))

    async def update(self, key: str, value: bytes, expected_revision: int) -> KeyValue:
        """See Backend.update."""
        _check_value(value)
        return await self._write(WriteOp(MODIFIED, key, value, expected_revision))

    async def delete(self, key: str, expected_revision: int = 0) -> KeyValue:
        """See Backend.delete."""
        return await self._write(WriteOp(DELETED, key, b"", expected_revision))

    async def list(self, prefix: str, start_key: str = "", limit: int = 0,
                   revision: int = 0) -> tuple[int, list[KeyValue], bool]:
        """See Backend.list; the current state and recent revisions are served from memory."""
        cache = self._cache
        if revision == 0:
            items, more = cache.list(prefix, start_key, limit)
            return cache.revision, items, more
        self._check_not_future(revision)
        newer = cache.events_after(revision)
        if newer is None:
            items, more = await self._history_list(prefix, start_key, limit, revision)
        else:
            items, more = cache.list_at(prefix, start_key, limit, newer)
        return revision, items, more

    async def count(self, prefix: str) -> tuple[int, int]:
        """See Backend.count."""
        return self._cache.revision, self._cache.count(prefix)

    async def current_revision(self) -> int:
        """See Backend.current_revision."""
        return self._cache.revision

    @property
    def compact_revision(self) -> int:
        """See Backend.compact_revision."""
        return self._cache.compact_revision

    def _should_compact(self, revision: int) -> bool:
        """Validate a compaction target: False if already compacted that far, FutureRevisionError if ahead."""
        self._check_not_future(revision)
        return revision > self._cache.compact_revision

    def _check_compacted(self, revision: int) -> None:
        """Raise CompactedError for a revision older than the compact revision."""
        if revision < self._cache.compact_revision:
            raise CompactedError(revision, self._cache.compact_revision)

    async def _compact_periodically(self, interval: float, keep: int) -> None:
        """Keep the history from growing without bound under churn: every interval seconds, keep only the last
        keep revisions (as kube-apiserver compacts etcd)."""
        while True:
            await asyncio.sleep(interval)
            target = self._cache.revision - keep
            if target > self._cache.compact_revision:
                try:
                    await self.compact(target)
                except StorageError as exc:
                    log.warning("automatic compaction to %d failed: %s", target, exc)

    async def watch(self, prefix: str, after_revision: int) -> AsyncIterator[list[Event]]:
        """See Backend.watch: register first so nothing falls between the replay and the live events."""
        if self._closed:
            raise StorageError("datastore is closed")
        cache = self._cache
        watcher = cache.register(prefix)
        try:
            upto = cache.revision
            if after_revision < upto:
                async with aclosing(self._replay(prefix, after_revision, upto)) as replay:
                    async for batch in replay:
                        yield batch
            floor = max(after_revision, upto)
            while (batch := await watcher.next()) is not None:
                if batch[0].revision <= floor:  # only when watching from a revision not reached yet
                    batch = [event for event in batch if event.revision > floor]
                if batch:
                    yield batch
        finally:
            cache.unregister(watcher)

    async def _replay(self, prefix: str, after: int, upto: int) -> AsyncGenerator[list[Event], None]:
        """Events under prefix in (after, upto], from the ring when it reaches back far enough."""
        newer = self._cache.events_after(after)
        if newer is None:
            async with aclosing(self._history_events(prefix, after, upto)) as history:
                async for batch in history:
                    yield batch
            return
        newer = newer[:bisect.bisect_right(newer, upto, key=_revision)]
        selected = [event for event in newer if event.kv.key.startswith(prefix)]
        if selected:
            yield selected
