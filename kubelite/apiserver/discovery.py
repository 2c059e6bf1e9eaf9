"""Discovery documents: /api, /apis, per group and version, aggregated (v2 and v2beta1), /version."""

from __future__ import annotations

import base64
import hashlib
import platform
from typing import Any

import orjson
from aiohttp import web

from kubelite import KUBERNETES_VERSION, __version__
from kubelite.api.registry import Registry
from kubelite.api.resource import ResourceType
from kubelite.apiserver import errors

SUBRESOURCE_VERBS = {
    "status": ["get", "patch", "update"],
    "ephemeralcontainers": ["get", "patch", "update"],
    "scale": ["get", "patch", "update"],
    "binding": ["create"],
    "eviction": ["create"],
    "token": ["create"],
    "exec": ["create", "get"],
    "attach": ["create", "get"],
    "portforward": ["create", "get"],
    "proxy": ["create", "delete", "get", "patch", "update"],
}
SUBRESOURCE_KINDS = {
    "scale": ("autoscaling", "v1", "Scale"),
    "binding": ("", "v1", "Binding"),
    "eviction": ("policy", "v1", "Eviction"),
    "token": ("authentication.k8s.io", "v1", "TokenRequest"),
    "exec": ("", "v1", "PodExecOptions"),
    "attach": ("", "v1", "PodAttachOptions"),
    "portforward": ("", "v1", "PodPortForwardOptions"),
}


def subresource_kind(rt: ResourceType, sub: str) -> tuple[str, str, str]:
    """(group, version, kind) a subresource answers with: its own kind, or the resource's."""
    if sub == "proxy":
        return "", "v1", f"{rt.kind}ProxyOptions"
    return SUBRESOURCE_KINDS.get(sub, (rt.group, rt.version, rt.kind))


def version_info() -> dict[str, str]:
    major, minor = KUBERNETES_VERSION.lstrip("v").split(".")[:2]
    return {
        "major": major, "minor": minor, "gitVersion": f"{KUBERNETES_VERSION}+kubelite{__version__}",
        "gitCommit": "", "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": f"python{platform.python_version()}", "compiler": "cpython",
        "platform": f"linux/{'amd64' if platform.machine() == 'x86_64' else platform.machine()}",
    }


def _hash(rt: ResourceType) -> str:
    digest = hashlib.sha256(f"{rt.group}/{rt.version}/{rt.kind}".encode()).digest()
    return base64.b64encode(digest[:8]).decode()


def resource_list(registry: Registry, group: str, version: str) -> dict[str, Any]:
    resources: list[dict[str, Any]] = []
    for rt in registry.in_group_version(group, version):
        entry: dict[str, Any] = {"name": rt.plural, "singularName": rt.singular, "namespaced": rt.namespaced,
                                 "kind": rt.kind, "verbs": sorted(rt.verbs)}
        if rt.short_names:
            entry["shortNames"] = list(rt.short_names)
        if rt.categories:
            entry["categories"] = list(rt.categories)
        if rt.persisted:
            entry["storageVersionHash"] = _hash(rt)
        resources.append(entry)
        for sub in rt.subresources:
            sub_entry: dict[str, Any] = {"name": f"{rt.plural}/{sub}", "singularName": "",
                                         "namespaced": rt.namespaced, "kind": rt.kind,
                                         "verbs": SUBRESOURCE_VERBS.get(sub, ["get"])}
            if sub in SUBRESOURCE_KINDS or sub == "proxy":
                g, v, k = subresource_kind(rt, sub)
                sub_entry.update({"group": g, "version": v, "kind": k})
            resources.append(sub_entry)
    gv = f"{group}/{version}" if group else version
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}


def _group(group: str, versions: list[str]) -> dict[str, Any]:
    entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"name": group, "versions": entries, "preferredVersion": entries[0]}


def _aggregated_resource(rt: ResourceType) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "resource": rt.plural,
        "responseKind": {"group": rt.group, "version": rt.version, "kind": rt.kind},
        "scope": "Namespaced" if rt.namespaced else "Cluster",
        "singularResource": rt.singular,
        "verbs": sorted(rt.verbs),
    }
    if rt.short_names:
        entry["shortNames"] = list(rt.short_names)
    if rt.categories:
        entry["categories"] = list(rt.categories)
    subs = []
    for sub in rt.subresources:
        g, v, k = subresource_kind(rt, sub)
        subs.append({"subresource": sub, "responseKind": {"group": g, "version": v, "kind": k},
                     "verbs": SUBRESOURCE_VERBS.get(sub, ["get"])})
    if subs:
        entry["subresources"] = subs
    return entry


def aggregated(registry: Registry, core: bool, api_version: str) -> dict[str, Any]:
    items = []
    for group, versions in registry.groups():
        if (group == "") != core:
            continue
        items.append({
            "metadata": {"name": group, "creationTimestamp": None},
            "versions": [{"version": v, "freshness": "Current",
                          "resources": [_aggregated_resource(rt) for rt in registry.in_group_version(group, v)]}
                         for v in versions],
        })
    return {"kind": "APIGroupDiscoveryList", "apiVersion": api_version, "metadata": {}, "items": items}


def _wants_aggregated(request: web.Request) -> str | None:
    """The apidiscovery version the client accepts first, if it asked for aggregated discovery."""
    for clause in request.headers.get("Accept", "").split(","):
        params = dict(p.strip().partition("=")[::2] for p in clause.split(";")[1:])
        if params.get("g") == "apidiscovery.k8s.io" and params.get("as") == "APIGroupDiscoveryList":
            if params.get("v") in ("v2", "v2beta1"):
                return params["v"]
        elif clause.strip().split(";")[0] in ("application/json", "*/*"):
            return None
    return None


class Discovery:
    """Serves the discovery endpoints, rebuilding the documents only when the registry changes."""

    def __init__(self, registry: Registry):
        self.registry = registry
        self._cache: dict[tuple[str, ...], bytes] = {}
        self._generation = -1

    def _cached(self, key: tuple[str, ...], build: Any) -> bytes:
        if self._generation != self.registry.generation:
            self._cache.clear()
            self._generation = self.registry.generation
        body = self._cache.get(key)
        if body is None:
            body = self._cache[key] = orjson.dumps(build())
        return body

    async def handle(self, request: web.Request, parts: list[str]) -> web.Response:
        """Answer /api, /apis, /api/v1, /apis/GROUP and /apis/GROUP/VERSION."""
        registry = self.registry
        aggregated_version = _wants_aggregated(request)
        if parts in (["api"], ["apis"]) and aggregated_version:
            core = parts == ["api"]
            body = self._cached(("agg", parts[0], aggregated_version), lambda: aggregated(
                registry, core, f"apidiscovery.k8s.io/{aggregated_version}"))
            content_type = f"application/json;g=apidiscovery.k8s.io;v={aggregated_version};as=APIGroupDiscoveryList"
            return web.Response(body=body, headers={"Content-Type": content_type})
        if parts == ["api"]:
            host = request.host
            body = orjson.dumps({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": host}]})
        elif parts == ["apis"]:
            body = self._cached(("apis",), lambda: {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
                _group(g, vs) for g, vs in registry.groups() if g]})
        elif parts == ["api", "v1"]:
            body = self._cached(("api", "v1"), lambda: resource_list(registry, "", "v1"))
        elif len(parts) == 2 and parts[0] == "apis":
            versions = dict(registry.groups()).get(parts[1])
            if not versions or not parts[1]:
                raise errors.StatusError(404, "NotFound", "the server could not find the requested resource")
            body = orjson.dumps({"kind": "APIGroup", "apiVersion": "v1", **_group(parts[1], versions)})
        elif len(parts) == 3 and parts[0] == "apis":
            if not registry.in_group_version(parts[1], parts[2]):
                raise errors.StatusError(404, "NotFound", "the server could not find the requested resource")
            body = self._cached(tuple(parts), lambda: resource_list(registry, parts[1], parts[2]))
        else:
            raise errors.StatusError(404, "NotFound", "the server could not find the requested resource")
        return web.Response(body=body, content_type="application/json")
