"""OpenAPI v2 and v3 documents with a path for every served resource (kubectl explain, validation)."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
from aiohttp import web

from kubelite import KUBERNETES_VERSION
from kubelite.api.registry import Registry
from kubelite.api.resource import ResourceType
from kubelite.api.schema import Schemas
from kubelite.apiserver import errors, openapi_pb

WRITE_PARAMS = ("dryRun", "fieldManager", "fieldValidation")
LIST_PARAMS = ("labelSelector", "fieldSelector", "limit", "continue", "resourceVersion",
               "resourceVersionMatch", "timeoutSeconds", "watch", "allowWatchBookmarks", "sendInitialEvents")


def _param(name: str, location: str = "query", v3: bool = True) -> dict[str, Any]:
    kind = {"type": "boolean"} if name in ("watch", "allowWatchBookmarks", "sendInitialEvents") else (
        {"type": "integer"} if name in ("limit", "timeoutSeconds") else {"type": "string"})
    param: dict[str, Any] = {"name": name, "in": location, "uniqueItems": True}
    if location == "path":
        param["required"] = True
    if v3:
        param["schema"] = kind
    else:
        param.update(kind)
    return param


def _paths(rt: ResourceType, v3: bool) -> dict[str, Any]:
    prefix = f"/apis/{rt.group}/{rt.version}" if rt.group else f"/api/{rt.version}"
    scope = "/namespaces/{namespace}" if rt.namespaced else ""
    collection = f"{prefix}{scope}/{rt.plural}"
    gvk = {"group": rt.group, "version": rt.version, "kind": rt.kind}
    ref_base = "#/components/schemas/" if v3 else "#/definitions/"
    ref = {"$ref": ref_base + rt.schema_name}
    path_params = [_param("namespace", "path", v3)] if rt.namespaced else []

    def op(verb: str, action: str, params: tuple[str, ...] = (), body: bool = False) -> dict[str, Any]:
        operation: dict[str, Any] = {
            "operationId": f"{verb}{rt.kind}", "tags": [rt.group_version.replace("/", "_")],
            "parameters": [_param(p, v3=v3) for p in params],
            "responses": {"200": {"description": "OK", **({"content": {"application/json": {"schema": ref}}}
                                                          if v3 else {"schema": ref})}},
            "x-kubernetes-action": action, "x-kubernetes-group-version-kind": gvk,
        }
        if body:
            if v3:
                operation["requestBody"] = {"content": {"*/*": {"schema": ref}}, "required": True}
            else:
                operation["parameters"].append({"name": "body", "in": "body", "required": True, "schema": ref})
        return operation

    paths: dict[str, Any] = {}
    item: dict[str, Any] = {"parameters": path_params}
    if "list" in rt.verbs:
        item["get"] = op("list", "list", LIST_PARAMS)
    if "create" in rt.verbs:
        item["post"] = op("create", "post", WRITE_PARAMS, body=True)
    if "deletecollection" in rt.verbs:
        item["delete"] = op("deletecollection", "deletecollection", LIST_PARAMS)
    paths[collection] = item
    if "get" in rt.verbs:
        named: dict[str, Any] = {"parameters": [*path_params, _param("name", "path", v3)],
                                 "get": op("read", "get"), "put": op("replace", "put", WRITE_PARAMS, body=True),
                                 "patch": op("patch", "patch", WRITE_PARAMS + ("force",), body=True),
                                 "delete": op("delete", "delete", ("dryRun", "gracePeriodSeconds",
                                                                   "propagationPolicy"))}
        paths[f"{collection}/{{name}}"] = named
        for sub in rt.subresources:
            if sub in ("status", "scale"):
                paths[f"{collection}/{{name}}/{sub}"] = {
                    "parameters": named["parameters"], "get": op(f"read{sub}", "get"),
                    "put": op(f"replace{sub}", "put", WRITE_PARAMS, body=True),
                    "patch": op(f"patch{sub}", "patch", WRITE_PARAMS + ("force",), body=True)}
    return paths


class OpenAPI:
    """Builds and caches /openapi/v2, /openapi/v3 and its per-group-version documents."""

    def __init__(self, registry: Registry, schemas: Schemas):
        self.registry = registry
        self.schemas = schemas
        self._cache: dict[str, bytes] = {}
        self._generation = -1

    def _refresh(self) -> None:
        if self._generation != self.registry.generation:
            self._cache.clear()
            self._generation = self.registry.generation

    def _v2_document(self) -> dict[str, Any]:
        paths: dict[str, Any] = {}
        for rt in self.registry.resources():
            paths.update(_paths(rt, v3=False))
        return self.schemas.openapi_v2(paths)

    def v2(self) -> bytes:
        self._refresh()
        if "v2" not in self._cache:
            self._cache["v2"] = orjson.dumps(self._v2_document())
        return self._cache["v2"]

    def v2_protobuf(self) -> bytes:
        """The v2 document as gnostic protobuf, which kubectl up to 1.27 asks for."""
        self._refresh()
        if "v2pb" not in self._cache:
            self._cache["v2pb"] = openapi_pb.encode_document(self._v2_document())
        return self._cache["v2pb"]

    def _group_versions(self) -> dict[str, list[ResourceType]]:
        result: dict[str, list[ResourceType]] = {}
        for rt in self.registry.resources():
            key = f"apis/{rt.group}/{rt.version}" if rt.group else f"api/{rt.version}"
            result.setdefault(key, []).append(rt)
        return result

    def v3_document(self, gv: str) -> bytes:
        self._refresh()
        key = "v3:" + gv
        if key not in self._cache:
            resources = self._group_versions().get(gv)
            if resources is None:
                raise errors.StatusError(404, "NotFound", "the server could not find the requested resource")
            paths: dict[str, Any] = {}
            for rt in resources:
                paths.update(_paths(rt, v3=True))
            roots = [rt.schema_name for rt in resources] + [
                "io.k8s.apimachinery.pkg.apis.meta.v1.Status", "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions"]
            doc = {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": KUBERNETES_VERSION},
                   "paths": paths, "components": self.schemas.openapi_v3_components(roots)}
            self._cache[key] = orjson.dumps(doc)
        return self._cache[key]

    def v3_index(self) -> bytes:
        self._refresh()
        if "v3" not in self._cache:
            index = {}
            for gv in sorted(self._group_versions()):
                digest = hashlib.sha512(self.v3_document(gv)).hexdigest()[:64].upper()
                index[gv] = {"serverRelativeURL": f"/openapi/v3/{gv}?hash={digest}"}
            self._cache["v3"] = orjson.dumps({"paths": index})
        return self._cache["v3"]

    async def handle(self, request: web.Request, parts: list[str]) -> web.Response:
        if parts == ["openapi", "v2"]:
            if openapi_pb.wants_protobuf(request.headers.get("Accept", "")):
                return web.Response(body=self.v2_protobuf(), headers={"Content-Type": openapi_pb.CONTENT_TYPE})
            return web.Response(body=self.v2(), content_type="application/json")
        if parts == ["openapi", "v3"]:
            return web.Response(body=self.v3_index(), content_type="application/json")
        if parts[:2] == ["openapi", "v3"]:
            headers = {"Cache-Control": "public, immutable"} if "hash" in request.query else None
            return web.Response(body=self.v3_document("/".join(parts[2:])), content_type="application/json",
                                headers=headers)
        raise errors.StatusError(404, "NotFound", "the server could not find the requested resource")
