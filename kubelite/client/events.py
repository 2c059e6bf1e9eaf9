"""Event recording: core/v1 Events about objects, written in the background, repeats counted on one Event."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from kubelite.client.errors import CONNECTION_ERRORS, ApiError, is_not_found
from kubelite.client.resources import EVENTS
from kubelite.client.rest import ApiClient
from kubelite.client.timestamps import now_time

log = logging.getLogger(__name__)

Obj = dict[str, Any]
AGGREGATION_WINDOW = 600.0
"""Identical events this close together update one Event's count (client-go's 10 minutes)."""
CACHE_SIZE = 4096
"""Events remembered for aggregation (client-go's LRU size)."""
ATTEMPTS = 3
RETRY_DELAY = 1.0
REFERENCE_FIELDS = ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion")
EventKey = tuple[str, ...]


@dataclass
class _Pending:
    """One call of event(), captured with its time."""

    key: EventKey
    involved: Obj
    type: str
    reason: str
    message: str
    timestamp: str


@dataclass
class _Seen:
    """The Event written for a key: where it is, how many times it happened, and when we last wrote it."""

    name: str
    namespace: str
    count: int
    first_timestamp: str
    written_at: float


class EventRecorder:
    """Records Events for one component; event() never blocks and never raises."""

    def __init__(self, client: ApiClient, component: str, host: str = "", *, queue_size: int = 1000):
        self.client = client
        self.component = component
        self.host = host
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue(queue_size)
        self._seen: OrderedDict[EventKey, _Seen] = OrderedDict()
        self._task: asyncio.Task[None] | None = None
        self._dropped = 0

    def _drop(self, why: str) -> None:
        """Count a dropped event; log the first and then every 1,000th, so a burst stays one line per 1,000."""
        if self._dropped % 1000 == 0:
            log.warning("%s: dropped an event (%d dropped so far)", why, self._dropped + 1)
        self._dropped += 1

    def event(self, obj: Obj, type: str, reason: str, message: str) -> None:
        """Queue an Event about `obj` ("Normal" or "Warning"); dropped with a log line if the queue is full."""
        meta = obj.get("metadata") or {}
        if not meta.get("name"):
            log.warning("event %s about an object without a name dropped", reason)
            return
        involved = {f: obj.get(f) if f in ("kind", "apiVersion") else meta.get(f) for f in REFERENCE_FIELDS}
        involved = {k: v for k, v in involved.items() if v}
        key = (*(str(involved.get(f, "")) for f in REFERENCE_FIELDS if f != "resourceVersion"), type, reason, message)
        try:
            self._queue.put_nowait(_Pending(key, involved, type, reason, message, now_time()))
            if self._task is None:
                self._task = asyncio.get_running_loop().create_task(self._drain(), name=f"events-{self.component}")
        except asyncio.QueueFull:
            self._drop("event queue full")
        except RuntimeError:
            self._drop("no running event loop")

    async def flush(self) -> None:
        """Wait until every queued event has been written (or given up on)."""
        if self._task is not None:
            await self._queue.join()

    async def close(self) -> None:
        """Stop the background writer; events still queued are dropped."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _drain(self) -> None:
        while True:
            pending = await self._queue.get()
            try:
                await self._write_with_retries(pending)
            except Exception:
                log.exception("recording event %s failed", pending.reason)
            finally:
                self._queue.task_done()

    async def _write_with_retries(self, pending: _Pending) -> None:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                await self._write(pending)
                return
            except (ApiError, *CONNECTION_ERRORS) as exc:
                server_side = isinstance(exc, ApiError) and exc.code < 500
                if server_side or attempt == ATTEMPTS:
                    log.warning("could not write event %s %s about %s: %s", pending.type, pending.reason,
                                pending.involved.get("name"), exc)
                    return
                await asyncio.sleep(RETRY_DELAY * attempt)

    async def _write(self, pending: _Pending) -> None:
        """PATCH count and lastTimestamp of the Event for a recent identical one, else create an Event."""
        seen = self._seen.get(pending.key)
        if seen is not None and time.monotonic() - seen.written_at > AGGREGATION_WINDOW:
            seen = None
        written = None
        if seen is not None:
            patch = {"count": seen.count + 1, "lastTimestamp": pending.timestamp, "message": pending.message}
            try:
                written = await self.client.patch(EVENTS, seen.name, patch, seen.namespace, type="strategic")
            except ApiError as exc:
                if not is_not_found(exc):
                    raise
        if written is None:
            written = await self.client.create(EVENTS, self._new_event(pending, seen))
        self._remember(pending.key, written)

    def _new_event(self, pending: _Pending, seen: _Seen | None) -> Obj:
        """A core/v1 Event named <object name>.<hex nanoseconds> (or the aggregated one that vanished)."""
        involved = pending.involved
        source = {"component": self.component, **({"host": self.host} if self.host else {})}
        return {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": seen.name if seen else f"{involved['name']}.{time.time_ns():x}",
                         "namespace": involved.get("namespace") or "default"},
            "involvedObject": involved, "reason": pending.reason, "message": pending.message, "type": pending.type,
            "source": source, "firstTimestamp": seen.first_timestamp if seen else pending.timestamp,
            "lastTimestamp": pending.timestamp, "count": seen.count + 1 if seen else 1,
            "reportingComponent": self.component, "reportingInstance": self.host,
        }

    def _remember(self, key: EventKey, event: Obj) -> None:
        meta = event["metadata"]
        self._seen[key] = _Seen(meta["name"], meta["namespace"], event.get("count") or 1,
                                event.get("firstTimestamp") or "", time.monotonic())
        self._seen.move_to_end(key)
        while len(self._seen) > CACHE_SIZE:
            self._seen.popitem(last=False)
