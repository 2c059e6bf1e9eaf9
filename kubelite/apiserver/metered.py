"""A Backend wrapper that times every storage operation into etcd_request_duration_seconds."""

from __future__ import annotations

from collections.abc import AsyncIterator

from kubelite.apiserver.metrics import Metrics
from kubelite.storage import Backend, Event, KeyValue


def _resource(key: str) -> str:
    """The resource of a storage key: /registry/GROUP/PLURAL/... -> PLURAL."""
    parts = key.split("/", 4)
    return parts[3] if len(parts) > 3 else key


class MeteredBackend(Backend):
    """Delegates to another backend, observing each call's latency by operation and resource."""

    def __init__(self, inner: Backend, metrics: Metrics):
        self.inner = inner
        self.metrics = metrics

    async def start(self) -> None:
        await self.inner.start()

    async def close(self) -> None:
        await self.inner.close()

    async def get(self, key: str, revision: int = 0) -> KeyValue | None:
        with self.metrics.storage_timer("get", _resource(key)):
            return await self.inner.get(key, revision)

    async def create(self, key: str, value: bytes) -> KeyValue:
        with self.metrics.storage_timer("create", _resource(key)):
            return await self.inner.create(key, value)

    async def update(self, key: str, value: bytes, expected_revision: int) -> KeyValue:
        with self.metrics.storage_timer("update", _resource(key)):
            return await self.inner.update(key, value, expected_revision)

    async def delete(self, key: str, expected_revision: int = 0) -> KeyValue:
        with self.metrics.storage_timer("delete", _resource(key)):
            return await self.inner.delete(key, expected_revision)

    async def list(self, prefix: str, start_key: str = "", limit: int = 0,
                   revision: int = 0) -> tuple[int, list[KeyValue], bool]:
        with self.metrics.storage_timer("list", _resource(prefix)):
            return await self.inner.list(prefix, start_key, limit, revision)

    async def count(self, prefix: str) -> tuple[int, int]:
        with self.metrics.storage_timer("count", _resource(prefix)):
            return await self.inner.count(prefix)

    def watch(self, prefix: str, after_revision: int) -> AsyncIterator[list[Event]]:
        return self.inner.watch(prefix, after_revision)

    async def current_revision(self) -> int:
        return await self.inner.current_revision()

    async def compact(self, revision: int) -> None:
        with self.metrics.storage_timer("compact", "all"):
            await self.inner.compact(revision)

    @property
    def compact_revision(self) -> int:
        return self.inner.compact_revision
