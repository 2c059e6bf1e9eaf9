"""Watch streams: initial state, then every change, filtered by selectors, with bookmarks."""

from __future__ import annotations

import asyncio
import contextlib
import random
from functools import lru_cache
from typing import Any

import orjson
from aiohttp import web

from kubelite.api.conversion import to_version
from kubelite.api.resource import ResourceType
from kubelite.api.strategy import Obj
from kubelite.apiserver import errors, negotiation, views
from kubelite.apiserver.context import ApiContext
from kubelite.apiserver.objects import ListOptions, parse_rv
from kubelite.storage import CompactedError, Event, KeyValue, StorageError

BOOKMARK_INTERVAL = 30.0
MIN_TIMEOUT = 1800


@lru_cache(maxsize=8192)
def _decoded(kv: KeyValue) -> Obj:
    """Decode each stored version once for all watchers (callers treat the result as read-only)."""
    obj = orjson.loads(kv.value)
    obj["metadata"]["resourceVersion"] = str(kv.mod_revision)
    return obj


@lru_cache(maxsize=8192)
def _line(type_: str, kv: KeyValue) -> bytes:
    """One watch line of the plain JSON view, shared by every watcher that receives it."""
    return orjson.dumps({"type": type_, "object": _decoded(kv)}) + b"\n"


class WatchStream:
    """One client's watch: turns storage events into lines of the view the client asked for."""

    def __init__(self, rt: ResourceType, opts: ListOptions, out: negotiation.Output, include: str):
        self.rt = rt
        self.opts = opts
        self.out = out
        self.include = include
        self.filtering = opts.labels is not None or opts.fields is not None
        self.first = True
        self.last_revision = 0

    def _matches(self, kv: KeyValue | None) -> bool:
        if kv is None:
            return False
        obj = _decoded(kv)
        if self.opts.labels is not None and not self.opts.labels.matches(obj["metadata"].get("labels") or {}):
            return False
        return self.opts.fields is None or self.opts.fields.matches(self.rt.strategy.fields(obj))

    def line(self, type_: str, obj: Obj) -> bytes:
        """One watch line with `obj` in the client's view."""
        if not self.out.view:
            return orjson.dumps({"type": type_, "object": obj}) + b"\n"
        if self.out.view == "Table":
            meta = {"resourceVersion": obj["metadata"].get("resourceVersion", "")}
            rendered = views.table(self.rt, [obj], meta, self.include, headers=self.first)
            self.first = False
        else:
            rendered = views.partial(obj)
        return orjson.dumps({"type": type_, "object": rendered}) + b"\n"

    def event_line(self, event: Event) -> bytes | None:
        self.last_revision = event.revision
        type_ = event.type
        if self.filtering:
            now, before = self._matches(event.kv), type_ == "MODIFIED" and self._matches(event.prev)
            if type_ == "MODIFIED":
                if now and not before:
                    type_ = "ADDED"
                elif before and not now:
                    type_ = "DELETED"
                elif not now:
                    return None
            elif not now:
                return None
        obj = _decoded(event.kv)
        if obj.get("apiVersion") != self.rt.group_version:
            return self.line(type_, to_version(obj, self.rt.group_version))
        if not self.out.view:
            return _line(type_, event.kv)
        return self.line(type_, obj)

    def bookmark(self, annotations: dict[str, str] | None = None) -> bytes:
        meta: dict[str, Any] = {"resourceVersion": str(self.last_revision)}
        if annotations:
            meta["annotations"] = annotations
        obj = {"kind": self.rt.kind, "apiVersion": self.rt.group_version, "metadata": meta}
        return orjson.dumps({"type": "BOOKMARK", "object": obj}) + b"\n"


def _error_line(err: errors.StatusError) -> bytes:
    return orjson.dumps({"type": "ERROR", "object": err.status()}) + b"\n"


async def serve(ctx: ApiContext, request: web.Request, rt: ResourceType, namespace: str | None,
                opts: ListOptions) -> web.StreamResponse:
    """Answer ?watch=1: stream events until the timeout, the client leaving, or a 410."""
    query = request.query
    out = negotiation.output(request)
    stream = WatchStream(rt, opts, out, query.get("includeObject", "Metadata"))
    bookmarks = query.get("allowWatchBookmarks") in ("true", "1")
    send_initial = query.get("sendInitialEvents") in ("true", "1")
    timeout = _timeout(query.get("timeoutSeconds"))
    rv = opts.resource_version
    initial: list[Obj] = []
    if rv in ("", "0") or send_initial:
        listed = await ctx.store.list(rt, namespace, ListOptions(labels=opts.labels, fields=opts.fields))
        after = int(listed["metadata"]["resourceVersion"])
        initial = listed["items"]
    else:
        after = parse_rv(rv)
    response = web.StreamResponse(headers={"Content-Type": "application/json", "Cache-Control": "no-cache"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    stream.last_revision = after
    ctx.metrics.watch_started(rt.group, rt.version, rt.kind)
    try:
        if initial:
            await response.write(b"".join(stream.line("ADDED", obj) for obj in initial))
        if send_initial and bookmarks:
            await response.write(stream.bookmark({"k8s.io/initial-events-end": "true"}))
        await asyncio.wait_for(_pump(ctx, response, stream, namespace, after, bookmarks), timeout)
    except TimeoutError:
        pass
    finally:
        ctx.metrics.watch_ended(rt.group, rt.version, rt.kind)
    with contextlib.suppress(ConnectionResetError):
        await response.write_eof()
    return response


async def _pump(ctx: ApiContext, response: web.StreamResponse, stream: WatchStream, namespace: str | None,
                after: int, bookmarks: bool) -> None:
    loop = asyncio.get_running_loop()
    events = ctx.backend.watch(ctx.store.prefix(stream.rt, namespace), after)
    next_bookmark = loop.time() + BOOKMARK_INTERVAL
    pending: asyncio.Future[list[Event]] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(events))
            done, _ = await asyncio.wait({pending}, timeout=BOOKMARK_INTERVAL if bookmarks else None)
            if bookmarks and loop.time() >= next_bookmark:
                await response.write(stream.bookmark())
                next_bookmark = loop.time() + BOOKMARK_INTERVAL
            if not done:
                continue
            finished, pending = pending, None
            try:
                batch = finished.result()
            except StopAsyncIteration:
                return
            except CompactedError as exc:
                await response.write(_error_line(errors.expired(
                    f"too old resource version: {after} ({exc.compact_revision})")))
                return
            except StorageError as exc:
                await response.write(_error_line(errors.expired(f"watch ended: {exc}; please re-list")))
                return
            lines = [line for line in map(stream.event_line, batch) if line is not None]
            if lines:
                await response.write(b"".join(lines))
    finally:
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(BaseException):
                await pending
        await events.aclose()


def _timeout(value: str | None) -> float:
    if value:
        try:
            return max(float(value), 0.0) or 0.001
        except ValueError:
            raise errors.bad_request(f'timeoutSeconds: Invalid value: "{value}"') from None
    return MIN_TIMEOUT * (1 + random.random())
