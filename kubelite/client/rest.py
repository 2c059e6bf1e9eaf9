"""The API client: one keep-alive HTTPS session, JSON in and out, verbs addressed by Resource."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Literal

import aiohttp
import orjson

from kubelite import __version__
from kubelite.client.config import ClientConfig
from kubelite.client.errors import ApiError, error_from_status, status_for
from kubelite.client.ratelimit import TokenBucket
from kubelite.client.resources import Resource
from kubelite.client.watch import decode_events

Obj = dict[str, Any]
JSON = "application/json"
PATCH_TYPES = {
    "merge": "application/merge-patch+json",
    "strategic": "application/strategic-merge-patch+json",
    "json": "application/json-patch+json",
}
PatchType = Literal["merge", "strategic", "json"]
MAX_CONNECTIONS = 8
"""Connections a client keeps for its requests (watches have their own): an API server serves one request per
connection at a time, and a handful keeps group commits full while sparing the handshakes of one per request."""
WATCH_READ_MARGIN = 30.0
"""Seconds past timeoutSeconds after which a silent watch connection counts as dead."""


class ApiClient:
    """Talks to one API server; rate limited like client-go (qps/burst) so a busy component stays polite."""

    def __init__(self, config: ClientConfig, *, qps: float = 50.0, burst: int = 100,
                 max_connections: int = MAX_CONNECTIONS, timeout: float = 60.0,
                 user_agent: str = f"kubelite/{__version__}"):
        self.config = config
        self.limiter = TokenBucket(qps, burst) if qps > 0 else None
        self.max_connections = max_connections
        self.timeout = timeout
        self.user_agent = user_agent
        self._sessions: dict[str, aiohttp.ClientSession] = {}

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the sessions and their connections."""
        sessions, self._sessions = self._sessions, {}
        for session in sessions.values():
            await session.close()

    def _client_session(self, kind: str = "requests") -> aiohttp.ClientSession:
        """The session for requests (at most max_connections pooled connections: a burst of calls queues for them
        instead of paying a TLS handshake each, on both sides) or for watches (one connection per watch, held for
        its life, so watches never wait for requests nor requests for watches); made on first use inside the
        running loop, as aiohttp requires."""
        session = self._sessions.get(kind)
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(limit=self.max_connections if kind == "requests" else 0,
                                             ssl=self.config.ssl_context or False, keepalive_timeout=90)
            session = self._sessions[kind] = aiohttp.ClientSession(
                connector=connector, headers={"Accept": JSON, "User-Agent": self.user_agent})
        return session

    def _request_kwargs(self, params: dict[str, Any] | None, body: Any, content_type: str) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"headers": dict(self.config.request_headers())}
        if params:
            kwargs["params"] = {k: _param(v) for k, v in params.items() if v is not None and v != ""}
        if body is not None:
            kwargs["data"] = orjson.dumps(body)
            kwargs["headers"]["Content-Type"] = content_type
        if self.config.tls_server_name:
            kwargs["server_hostname"] = self.config.tls_server_name
        return kwargs

    async def request(self, method: str, path: str, *, params: dict[str, Any] | None = None, body: Any = None,
                      content_type: str = JSON) -> Any:
        """One API call: the decoded JSON answer, or ApiError with the server's Status."""
        if self.limiter is not None:
            await self.limiter.wait()
        kwargs = self._request_kwargs(params, body, content_type)
        async with self._client_session().request(method, self.config.server + path,
                                                  timeout=aiohttp.ClientTimeout(total=self.timeout),
                                                  **kwargs) as response:
            raw = await response.read()
            if response.status >= 300:
                raise _error(response.status, raw)
            return orjson.loads(raw) if raw else None

    @staticmethod
    def _namespace(resource: Resource, namespace: str | None, obj: Obj | None = None) -> str | None:
        """The namespace of a request: given, else the object's; required for namespaced object paths."""
        if not resource.namespaced:
            return None
        namespace = namespace or ((obj or {}).get("metadata") or {}).get("namespace")
        if not namespace:
            raise ValueError(f"{resource.plural} are namespaced: give a namespace")
        return namespace

    async def get(self, resource: Resource, name: str, namespace: str | None = None, *, subresource: str = "") -> Obj:
        """GET one object (or a subresource of it, e.g. scale)."""
        ns = self._namespace(resource, namespace)
        return await self.request("GET", resource.path(ns, name, subresource))

    async def list(self, resource: Resource, namespace: str | None = None, *, label_selector: str = "",
                   field_selector: str = "", limit: int = 0, continue_: str = "", resource_version: str = "") -> Obj:
        """One page of a list (all namespaces when namespace is None); metadata.continue names the next one."""
        params = {"labelSelector": label_selector, "fieldSelector": field_selector, "limit": limit or None,
                  "continue": continue_, "resourceVersion": resource_version}
        return await self.request("GET", resource.path(namespace if resource.namespaced else None), params=params)

    async def list_all(self, resource: Resource, namespace: str | None = None, *, label_selector: str = "",
                       field_selector: str = "", page_size: int = 500) -> Obj:
        """Every matching object, fetched page by page; the result's resourceVersion is the first page's."""
        page = await self.list(resource, namespace, label_selector=label_selector, field_selector=field_selector,
                               limit=page_size)
        items = list(page.get("items") or [])
        token = (page.get("metadata") or {}).get("continue")
        while token:
            more = await self.list(resource, namespace, label_selector=label_selector,
                                   field_selector=field_selector, limit=page_size, continue_=token)
            items += more.get("items") or []
            token = (more.get("metadata") or {}).get("continue")
        return {**page, "items": items, "metadata": {"resourceVersion": page["metadata"]["resourceVersion"]}}

    async def create(self, resource: Resource, obj: Obj, namespace: str | None = None, *,
                     subresource: str = "") -> Obj:
        """POST a new object; with a subresource (binding, eviction) POST to the named object's subresource."""
        ns = self._namespace(resource, namespace, obj)
        name = obj["metadata"]["name"] if subresource else ""
        return await self.request("POST", resource.path(ns, name, subresource), body=obj)

    async def update(self, resource: Resource, obj: Obj, namespace: str | None = None, *,
                     subresource: str = "") -> Obj:
        """PUT the whole object; its metadata.resourceVersion makes it fail with 409 if someone wrote first."""
        ns = self._namespace(resource, namespace, obj)
        return await self.request("PUT", resource.path(ns, obj["metadata"]["name"], subresource), body=obj)

    async def update_status(self, resource: Resource, obj: Obj, namespace: str | None = None) -> Obj:
        """PUT the status subresource: only status changes, guarded by resourceVersion like update."""
        return await self.update(resource, obj, namespace, subresource="status")

    async def patch(self, resource: Resource, name: str, patch: Any, namespace: str | None = None, *,
                    type: PatchType = "merge", subresource: str = "") -> Obj:
        """PATCH with a merge, strategic merge or JSON patch (a list of operations)."""
        ns = self._namespace(resource, namespace)
        return await self.request("PATCH", resource.path(ns, name, subresource), body=patch,
                                  content_type=PATCH_TYPES[type])

    async def delete(self, resource: Resource, name: str, namespace: str | None = None, *,
                     propagation_policy: str = "", grace_period_seconds: int | None = None,
                     preconditions: dict[str, str] | None = None) -> Obj:
        """DELETE an object; the answer is its final state or, while finalizers hold it, the marked object."""
        ns = self._namespace(resource, namespace)
        options: Obj = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if propagation_policy:
            options["propagationPolicy"] = propagation_policy
        if grace_period_seconds is not None:
            options["gracePeriodSeconds"] = grace_period_seconds
        if preconditions:
            options["preconditions"] = preconditions
        return await self.request("DELETE", resource.path(ns, name), body=options)

    async def watch(self, resource: Resource, namespace: str | None = None, *, resource_version: str = "",
                    label_selector: str = "", field_selector: str = "", timeout_seconds: int | None = None,
                    allow_bookmarks: bool = True) -> AsyncIterator[tuple[str, Obj]]:
        """Stream (type, object) events after resource_version; ERROR 410 raises GoneError (list again)."""
        if self.limiter is not None:
            await self.limiter.wait()
        params = {"watch": "true", "resourceVersion": resource_version, "labelSelector": label_selector,
                  "fieldSelector": field_selector, "timeoutSeconds": timeout_seconds,
                  "allowWatchBookmarks": allow_bookmarks or None}
        read_timeout = timeout_seconds + WATCH_READ_MARGIN if timeout_seconds else None
        kwargs = self._request_kwargs(params, None, JSON)
        path = resource.path(namespace if resource.namespaced else None)
        async with self._client_session("watches").get(
                self.config.server + path, timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.timeout,
                                                                         sock_read=read_timeout),
                **kwargs) as response:
            if response.status >= 300:
                raise _error(response.status, await response.read())
            async for event in decode_events(response.content.iter_any()):
                yield event


def _param(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _error(code: int, raw: bytes) -> ApiError:
    """The ApiError of a non-2xx answer: its Status body, or one made from the HTTP status."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = None
    if isinstance(body, dict) and body.get("kind") == "Status":
        return error_from_status({**body, "code": body.get("code") or code})
    return error_from_status(status_for(code, raw.decode(errors="replace")))

