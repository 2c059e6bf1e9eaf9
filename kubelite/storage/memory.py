"""The in-memory backend, for unit tests: the shared cache with an unbounded event log and no disk."""

from __future__ import annotations

from collections.abc import AsyncGenerator

from kubelite.storage.backend import CompactedError, Event, KeyValue, StorageError
from kubelite.storage.cache import WATCH_QUEUE_LIMIT, CachedBackend, StateCache, WriteOp, plan_write


class MemoryBackend(CachedBackend):
    """Every event since the last compaction stays in the cache, so anything older than it is compacted."""

    def __init__(self, *, watch_queue_limit: int = WATCH_QUEUE_LIMIT):
        self._cache = StateCache({}, 0, 0, None, watch_queue_limit)

    async def start(self) -> None:
        """Nothing to open or recover."""

    async def close(self) -> None:
        """End every watch; later writes fail."""
        self._closed = True
        self._cache.close()

    async def _write(self, op: WriteOp) -> KeyValue:
        """Check the precondition and apply at the next revision."""
        if self._closed:
            raise StorageError("datastore is closed")
        event = plan_write(op, self._cache.kvs.get(op.key), self._cache.revision + 1)
        self._cache.apply([event])
        return event.kv

    async def compact(self, revision: int) -> None:
        """Drop the events at or before revision."""
        if self._should_compact(revision):
            self._cache.compact(revision)

    def _compacted(self, revision: int) -> CompactedError:
        """The error for any revision older than the cache's reach, which is exactly the compact revision."""
        return CompactedError(revision, self._cache.compact_revision)

    async def _history_get(self, key: str, revision: int) -> KeyValue | None:
        """History before the cache's reach has been compacted."""
        raise self._compacted(revision)

    async def _history_list(self, prefix: str, start_key: str, limit: int,
                            revision: int) -> tuple[list[KeyValue], bool]:
        """History before the cache's reach has been compacted."""
        raise self._compacted(revision)

    def _history_events(self, prefix: str, after: int, upto: int) -> AsyncGenerator[list[Event], None]:
        """History before the cache's reach has been compacted."""
        raise self._compacted(after)
