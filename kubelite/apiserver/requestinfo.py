"""Turn a request path and method into what it addresses: group, version, resource, name, verb."""

from __future__ import annotations

from dataclasses import dataclass

from multidict import MultiDict, MultiMapping


@dataclass(slots=True)
class RequestInfo:
    """The parts of a resource request, as Kubernetes' RequestInfoFactory names them."""

    group: str
    version: str
    resource: str
    namespace: str | None = None
    name: str = ""
    subresource: str = ""
    verb: str = ""


def _is_watch(query: MultiMapping[str]) -> bool:
    return query.get("watch", "") in ("1", "true", "True")


def parse(method: str, path: str, query: MultiMapping[str]) -> RequestInfo | None:
    """Parse /api/v1/... or /apis/GROUP/VERSION/...; None when the path is not a resource path."""
    parts = [p for p in path.split("/") if p]
    if not parts:
        return None
    if parts[0] == "api":
        if len(parts) < 3:
            return None
        group, version, rest = "", parts[1], parts[2:]
    elif parts[0] == "apis":
        if len(parts) < 4:
            return None
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    namespace: str | None = None
    if rest[0] == "namespaces" and len(rest) >= 3:
        namespace, rest = rest[1], rest[2:]
        if len(rest) == 1 and rest[0] in ("status", "finalize"):
            rest = ["namespaces", namespace, rest[0]]
            namespace = None
    elif rest[0] == "watch":
        return _legacy_watch(group, version, rest[1:])
    info = RequestInfo(group=group, version=version, resource=rest[0], namespace=namespace)
    if len(rest) > 1:
        info.name = rest[1]
    if len(rest) > 2:
        info.subresource = rest[2]
    if len(rest) > 3 and info.subresource != "proxy":
        return None
    proxied = info.subresource == "proxy"  # a GET through the proxy is a get, whatever its query says
    info.verb = _verb(method, bool(info.name), MultiDict() if proxied else query)
    return info


def _legacy_watch(group: str, version: str, rest: list[str]) -> RequestInfo | None:
    """The deprecated /watch/ path prefix still used by some clients."""
    if not rest:
        return None
    namespace = None
    if rest[0] == "namespaces" and len(rest) >= 3:
        namespace, rest = rest[1], rest[2:]
    info = RequestInfo(group=group, version=version, resource=rest[0], namespace=namespace, verb="watch")
    if len(rest) > 1:
        info.name = rest[1]
    return info


def _verb(method: str, named: bool, query: MultiMapping[str]) -> str:
    if method == "GET" or method == "HEAD":
        if _is_watch(query):
            return "watch"
        return "get" if named else "list"
    if method == "POST":
        return "create"
    if method == "PUT":
        return "update"
    if method == "PATCH":
        return "patch"
    if method == "DELETE":
        return "delete" if named else "deletecollection"
    return method.lower()
