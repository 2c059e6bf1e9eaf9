"""Informers: list, then watch, into a local Store, telling handlers about adds, updates and deletes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubelite.client.errors import CONNECTION_ERRORS, ApiError, GoneError
from kubelite.client.resources import Resource
from kubelite.client.rest import ApiClient
from kubelite.client.store import IndexFunc, Store, key_of

log = logging.getLogger(__name__)

Obj = dict[str, Any]
MIN_WATCH_TIMEOUT = 300
"""Watches ask the server to end them after 5-10 minutes (client-go's reflector), then resume."""
SHORT_WATCH = 1.0
"""A watch that ends this soon without any event is treated as a failure, so it cannot spin."""


@dataclass
class Handlers:
    """Callbacks of one consumer; they run on the event loop and must not block (enqueue keys, no I/O)."""

    on_add: Callable[[Obj], None] | None = None
    on_update: Callable[[Obj, Obj], None] | None = None
    on_delete: Callable[[Obj], None] | None = None


class Backoff:
    """client-go's reflector backoff: from 0.8 s, doubling with jitter up to a cap; reset by success."""

    def __init__(self, initial: float = 0.8, cap: float = 30.0):
        self.initial = initial
        self.cap = cap
        self._delay = initial

    def reset(self) -> None:
        """Start from the initial delay again (after something worked)."""
        self._delay = self.initial

    async def sleep(self) -> None:
        """Wait the current delay (with jitter) and double it for next time."""
        delay = min(self._delay * (1 + random.random()), self.cap)
        self._delay = min(self._delay * 2, self.cap)
        await asyncio.sleep(delay)


class Informer:
    """A level-triggered cache of one resource: relists on 410 Gone, resumes watches after disconnects."""

    def __init__(self, client: ApiClient, resource: Resource, *, namespace: str | None = None,
                 label_selector: str = "", field_selector: str = "", resync_period: float = 0.0,
                 indexers: dict[str, IndexFunc] | None = None, page_size: int = 500, max_backoff: float = 30.0):
        self.client = client
        self.resource = resource
        self.namespace = namespace
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.resync_period = resync_period
        self.page_size = page_size
        self.max_backoff = max_backoff
        self.store = Store(indexers)
        self.resource_version = ""
        """The last resourceVersion seen (list, event or bookmark): where a resumed watch starts."""
        self._handlers: list[Handlers] = []
        self._synced = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def has_synced(self) -> bool:
        """True once the first list is in the store and handlers have heard of every object in it."""
        return self._synced.is_set()

    async def wait_synced(self) -> None:
        """Wait for the first list (bound it with asyncio.timeout)."""
        await self._synced.wait()

    def add_handlers(self, on_add: Callable[[Obj], None] | None = None,
                     on_update: Callable[[Obj, Obj], None] | None = None,
                     on_delete: Callable[[Obj], None] | None = None) -> None:
        """Subscribe; a late subscriber first gets an add for every cached object, as in client-go."""
        handlers = Handlers(on_add, on_update, on_delete)
        self._handlers.append(handlers)
        if self.has_synced and on_add is not None:
            for obj in self.store.list():
                _call(on_add, obj)

    def start(self) -> None:
        """Run list-and-watch (and resync) in a background task until stop()."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"informer-{self.resource.plural}")

    async def stop(self) -> None:
        """Cancel the background task and wait for it to end."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        async with asyncio.TaskGroup() as group:
            if self.resync_period > 0:
                group.create_task(self._resync_loop())
            group.create_task(self._list_and_watch())

    async def _list_and_watch(self) -> None:
        backoff = Backoff(cap=self.max_backoff)
        while True:
            try:
                await self._list()
                backoff.reset()
                await self._watch(backoff)
            except GoneError as exc:
                log.info("%s: list expired (%s); listing again", self.resource.plural, exc.message)
            except (ApiError, *CONNECTION_ERRORS) as exc:
                log.warning("%s: list failed: %s; retrying", self.resource.plural, _describe(exc))
                await backoff.sleep()
            except Exception:
                log.exception("%s: list and watch failed; retrying", self.resource.plural)
                await backoff.sleep()

    async def _list(self) -> None:
        """List everything, replace the store, and tell handlers what changed since the last list."""
        listed = await self.client.list_all(self.resource, self.namespace, label_selector=self.label_selector,
                                            field_selector=self.field_selector, page_size=self.page_size)
        kind = self.resource.kind or listed.get("kind", "").removesuffix("List")
        items = listed.get("items") or []
        for obj in items:
            obj.setdefault("apiVersion", self.resource.api_version)
            obj.setdefault("kind", kind)
        previous = self.store.replace(items)
        self.resource_version = listed["metadata"]["resourceVersion"]
        for obj in items:
            self._added_or_updated(previous.pop(key_of(obj), None), obj)
        for gone in previous.values():
            self._notify_delete(gone)
        self._synced.set()

    async def _watch(self, backoff: Backoff) -> None:
        """Watch from the last seen resourceVersion until the server says 410 Gone (then relist)."""
        loop = asyncio.get_running_loop()
        while True:
            started, received = loop.time(), False
            try:
                stream = self.client.watch(
                    self.resource, self.namespace, resource_version=self.resource_version,
                    label_selector=self.label_selector, field_selector=self.field_selector,
                    timeout_seconds=random.randint(MIN_WATCH_TIMEOUT, 2 * MIN_WATCH_TIMEOUT), allow_bookmarks=True)
                async with contextlib.aclosing(stream):
                    async for type_, obj in stream:
                        received = True
                        backoff.reset()
                        self._apply(type_, obj)
                if not received and loop.time() - started < SHORT_WATCH:
                    log.info("%s: watch closed at once without events; backing off", self.resource.plural)
                    await backoff.sleep()
            except GoneError as exc:
                log.info("%s: watch expired at %s (%s); listing again", self.resource.plural,
                         self.resource_version, exc.message)
                return
            except CONNECTION_ERRORS as exc:
                log.info("%s: watch interrupted (%s); resuming from %s", self.resource.plural,
                         _describe(exc), self.resource_version)
                await backoff.sleep()

    def _apply(self, type_: str, obj: Obj) -> None:
        """One watch event into the store and out to handlers; bookmarks only move the resourceVersion."""
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        if rv:
            self.resource_version = rv
        if type_ in ("ADDED", "MODIFIED"):
            self._added_or_updated(self.store.put(obj), obj)
        elif type_ == "DELETED":
            self.store.delete(key_of(obj))
            self._notify_delete(obj)

    def _added_or_updated(self, old: Obj | None, new: Obj) -> None:
        if old is None:
            for handlers in self._handlers:
                if handlers.on_add is not None:
                    _call(handlers.on_add, new)
        elif old["metadata"].get("resourceVersion") != new["metadata"].get("resourceVersion"):
            self._notify_update(old, new)

    def _notify_update(self, old: Obj, new: Obj) -> None:
        for handlers in self._handlers:
            if handlers.on_update is not None:
                _call(handlers.on_update, old, new)

    def _notify_delete(self, obj: Obj) -> None:
        for handlers in self._handlers:
            if handlers.on_delete is not None:
                _call(handlers.on_delete, obj)

    async def _resync_loop(self) -> None:
        """Every resync_period, an update(obj, obj) for every cached object, so missed work gets redone."""
        while True:
            await asyncio.sleep(self.resync_period)
            if self.has_synced:
                for obj in self.store.list():
                    self._notify_update(obj, obj)


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _call(handler: Callable[..., None], *args: Obj) -> None:
    """Run a handler; its exception is logged so one bad consumer cannot stop the informer."""
    try:
        handler(*args)
    except Exception:
        log.exception("informer event handler %r failed", handler)


InformerKey = tuple[Resource, str | None, str, str]


class SharedInformerFactory:
    """One informer per (resource, namespace, selectors) for the whole process, shared by all controllers."""

    def __init__(self, client: ApiClient, *, resync_period: float = 0.0):
        self.client = client
        self.resync_period = resync_period
        self._informers: dict[InformerKey, Informer] = {}

    def informer(self, resource: Resource, *, namespace: str | None = None, label_selector: str = "",
                 field_selector: str = "") -> Informer:
        """The shared informer of this resource and selection, made on first request."""
        key = (resource, namespace, label_selector, field_selector)
        informer = self._informers.get(key)
        if informer is None:
            informer = self._informers[key] = Informer(
                self.client, resource, namespace=namespace, label_selector=label_selector,
                field_selector=field_selector, resync_period=self.resync_period)
        return informer

    def start(self) -> None:
        """Start every informer not running yet (call again after asking for new ones)."""
        for informer in self._informers.values():
            informer.start()

    async def wait_for_sync(self) -> None:
        """Wait until every informer has listed once (bound it with asyncio.timeout)."""
        await asyncio.gather(*(i.wait_synced() for i in self._informers.values()))

    async def stop(self) -> None:
        """Stop every informer."""
        await asyncio.gather(*(i.stop() for i in self._informers.values()))
