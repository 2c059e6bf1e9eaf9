"""Kubernetes OpenAPI schemas: the upstream definitions plus custom-resource schemas added at run time.

The upstream definitions come from the `kubernetes-validate` package (JSON Schema 2020-12, nullable
types written as `["string", "null"]`); CRD schemas are OpenAPI v3 (`nullable: true`,
`x-kubernetes-int-or-string`, ...). `Node` compiles either dialect into one shape that the validator
and the strategic-merge patcher walk, and `Schemas` also converts the definitions for /openapi/v2 and
/openapi/v3.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterable
from functools import cache
from typing import Any

import orjson

KUBERNETES_VERSION = "v1.33.0"
OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
INT_OR_STRING = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"
QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
REF_PREFIXES = ("#/$defs/", "#/definitions/", "#/components/schemas/")
# Keys that may sit beside a $ref and change how the referenced type is patched or merged.
_REF_OVERRIDES = ("x-kubernetes-patch-strategy", "x-kubernetes-patch-merge-key", "x-kubernetes-list-type",
                  "x-kubernetes-list-map-keys", "x-kubernetes-map-type")
# OpenAPI v3 value validations that a CRD schema may carry (checked by the validator).
LIMIT_KEYS = ("minimum", "maximum", "minLength", "maxLength", "pattern", "minItems", "maxItems",
              "minProperties", "maxProperties")
_STRING = {"type": "string"}


def definitions_path() -> str:
    """Where kubernetes-validate keeps the definitions (found without importing the package: 90 ms)."""
    spec = importlib.util.find_spec("kubernetes_validate")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the kubernetes-validate package is not installed")
    base = list(spec.submodule_search_locations)[0]
    return os.path.join(base, "kubernetes-json-schema", f"{KUBERNETES_VERSION}-local", "_definitions.json")


def ref_name(ref: str) -> str:
    """The definition name a $ref points at, whichever document style wrote it."""
    for prefix in REF_PREFIXES:
        if ref.startswith(prefix):
            return ref[len(prefix):]
    return ref


class Node:
    """One schema node compiled for walking; children compile lazily on first use (schemas are cyclic)."""

    __slots__ = ("schemas", "raw", "crd", "resource", "name", "types", "nullable", "required", "enum",
                 "format", "open", "strategy", "merge_key", "limits", "has_default", "_props", "_additional",
                 "_items")

    def __init__(self, schemas: Schemas, raw: dict[str, Any], crd: bool, name: str | None = None):
        self.schemas = schemas
        self.raw = raw
        self.crd = crd
        """True for custom-resource schemas: unknown fields and disallowed nulls are pruned, not kept."""
        self.name = name
        self.resource = bool(raw.get("x-kubernetes-embedded-resource"))
        """True where apiVersion, kind and an ObjectMeta metadata are implied (CR roots, embedded objects)."""
        types, nullable = _types(raw)
        self.types = types
        """Allowed JSON types ("object", "array", "string", "integer", "number", "boolean"); None: any."""
        self.nullable = nullable
        self.required: tuple[str, ...] = tuple(raw.get("required") or ())
        self.enum: tuple[Any, ...] | None = tuple(raw["enum"]) if raw.get("enum") else None
        self.format: str | None = raw.get("format")
        self.has_default = "default" in raw
        additional = raw.get("additionalProperties")
        if raw.get("x-kubernetes-preserve-unknown-fields") is True or types is None or additional is True:
            self.open = True
        else:
            # Built-in objects without declared fields (RawExtension, FieldsV1) hold arbitrary JSON;
            # a CRD object without declared fields holds nothing.
            self.open = not crd and "properties" not in raw and additional is None
        """True when fields the schema does not declare are kept (not unknown)."""
        strategy = raw.get("x-kubernetes-patch-strategy")
        self.strategy = frozenset(strategy.split(",")) if isinstance(strategy, str) else frozenset()
        """Patch strategies (merge, retainKeys, replace) for the strategic merge patch."""
        self.merge_key: str | None = raw.get("x-kubernetes-patch-merge-key")
        self.limits = tuple((key, raw[key]) for key in LIMIT_KEYS
                            if crd and key in raw and _usable_limit(key, raw[key]))
        """CRD value validations as (keyword, limit), those of a usable type only."""
        self._props: dict[str, Node] | None = None
        self._additional: Node | None | bool = False
        self._items: Node | None | bool = False

    @property
    def props(self) -> dict[str, Node]:
        """The declared fields, by name."""
        props = self._props
        if props is None:
            compile_node = self.schemas.compile
            declared = self.raw.get("properties") or {}
            props = {key: compile_node(value, self.crd) for key, value in declared.items()}
            if self.resource:
                props["apiVersion"] = props["kind"] = compile_node(_STRING, self.crd)
                props["metadata"] = self.schemas.node(OBJECT_META)
            self._props = props
        return props

    @property
    def additional(self) -> Node | None:
        """The schema of map values (additionalProperties), or None when the node is not a map."""
        additional = self._additional
        if additional is False:
            raw = self.raw.get("additionalProperties")
            additional = self.schemas.compile(raw, self.crd) if isinstance(raw, dict) else None
            self._additional = additional
        return additional  # type: ignore[return-value]

    @property
    def items(self) -> Node | None:
        """The schema of list items, or None when any item goes."""
        items = self._items
        if items is False:
            raw = self.raw.get("items")
            items = self.schemas.compile(raw, self.crd) if isinstance(raw, dict) else None
            self._items = items
        return items  # type: ignore[return-value]

    def child(self, key: str) -> Node | None:
        """The schema of one field of an object: declared, else the map value schema, else None."""
        node = self.props.get(key)
        return node if node is not None else self.additional


def _usable_limit(key: str, limit: Any) -> bool:
    """True when a value-validation keyword carries a limit of the type it needs."""
    if key == "pattern":
        return isinstance(limit, str)
    if key in ("minimum", "maximum"):
        return isinstance(limit, int | float) and not isinstance(limit, bool)
    return isinstance(limit, int) and not isinstance(limit, bool)


def _types(raw: dict[str, Any]) -> tuple[frozenset[str] | None, bool]:
    """The allowed types of a schema node and whether null is allowed, in either dialect."""
    if raw.get("x-kubernetes-int-or-string"):
        return frozenset(("integer", "string")), bool(raw.get("nullable"))
    declared = raw.get("type")
    if declared is None and raw.get("oneOf"):
        declared = []
        for branch in raw["oneOf"]:
            branch_type = branch.get("type") if isinstance(branch, dict) else None
            declared.extend(branch_type if isinstance(branch_type, list) else [branch_type])
        if None in declared:
            return None, True
    if declared is None:
        return None, True
    names = {declared} if isinstance(declared, str) else set(declared)
    nullable = bool(raw.get("nullable")) or "null" in names
    names.discard("null")
    return frozenset(names) or None, nullable


class Schemas:
    """The schema registry: upstream definitions (loaded on first use) and registered CRD schemas."""

    def __init__(self, path: str | None = None):
        self._path = path
        self._defs: dict[str, dict[str, Any]] | None = None
        self._registered: dict[str, dict[str, Any]] = {}
        self._registered_gvk: dict[tuple[str, str, str], str] = {}
        self._nodes: dict[str, Node] = {}
        self._gvk: dict[tuple[str, str, str], str] | None = None
        self._converted: dict[tuple[str, bool], dict[str, Any]] = {}

    @property
    def definitions(self) -> dict[str, dict[str, Any]]:
        """The upstream definitions by name, read once."""
        if self._defs is None:
            with open(self._path or definitions_path(), "rb") as f:
                self._defs = orjson.loads(f.read())["$defs"]
        return self._defs

    def names(self) -> list[str]:
        """Every definition name, upstream then registered."""
        return [*self.definitions, *(n for n in self._registered if n not in self.definitions)]

    def definition(self, name: str) -> dict[str, Any]:
        """One definition, registered or upstream; KeyError when unknown."""
        found = self._registered.get(name)
        return found if found is not None else self.definitions[name]

    def resolve(self, node: dict[str, Any]) -> dict[str, Any]:
        """Follow $ref; keys beside the $ref that change patching win over the target's."""
        ref = node.get("$ref")
        if not isinstance(ref, str):
            return node
        target = self.resolve(self.definition(ref_name(ref)))
        overrides = {key: node[key] for key in _REF_OVERRIDES if key in node}
        return {**target, **overrides} if overrides else target

    def property_schema(self, node: dict[str, Any], name: str) -> dict[str, Any] | None:
        """The (resolved) schema of field `name` of an object schema, or of its map values."""
        node = self.resolve(node)
        found = (node.get("properties") or {}).get(name)
        if found is None and isinstance(node.get("additionalProperties"), dict):
            found = node["additionalProperties"]
        return self.resolve(found) if found is not None else None

    def for_gvk(self, group: str, version: str, kind: str) -> str | None:
        """The definition name serving a group/version/kind (registered CRDs included)."""
        key = (group, version, kind)
        if key in self._registered_gvk:
            return self._registered_gvk[key]
        if self._gvk is None:
            index: dict[tuple[str, str, str], str] = {}
            for name, schema in self.definitions.items():
                for gvk in schema.get("x-kubernetes-group-version-kind", ()):
                    index.setdefault((gvk["group"], gvk["version"], gvk["kind"]), name)
            self._gvk = index
        return self._gvk.get(key)

    def register(self, name: str, schema: dict[str, Any], gvk: tuple[str, str, str] | None = None) -> None:
        """Add (or replace) a CRD's openAPIV3Schema under `name`; `gvk` makes for_gvk find it."""
        self.unregister(name)
        self._registered[name] = schema
        if gvk is not None:
            self._registered_gvk[gvk] = name

    def unregister(self, name: str) -> None:
        """Forget a registered schema and everything compiled or converted from it."""
        self._registered.pop(name, None)
        self._nodes.pop(name, None)
        self._converted.pop((name, False), None)
        self._converted.pop((name, True), None)
        for key in [k for k, v in self._registered_gvk.items() if v == name]:
            del self._registered_gvk[key]

    def node(self, schema: str | dict[str, Any]) -> Node:
        """The compiled node of a definition name (cached; KeyError if unknown) or of an upstream dict."""
        if isinstance(schema, dict):
            return self.compile(schema, False)
        node = self._nodes.get(schema)
        if node is None:
            if schema in self._registered:
                root = {**self._registered[schema], "x-kubernetes-embedded-resource": True}
                node = Node(self, root, True, schema)
            else:
                node = Node(self, self.definitions[schema], False, schema)
            self._nodes[schema] = node
        return node

    def compile(self, raw: dict[str, Any], crd: bool) -> Node:
        """Compile a schema dict; a $ref reuses the target's cached node unless keys beside it differ."""
        ref = raw.get("$ref")
        if not isinstance(ref, str):
            return Node(self, raw, crd)
        name = ref_name(ref)
        if name not in self._registered and name not in self.definitions:
            return Node(self, {}, crd)
        target = self.node(name)
        overrides = {key: raw[key] for key in _REF_OVERRIDES if key in raw}
        if not overrides:
            return target
        return Node(self, {**target.raw, **overrides}, target.crd, target.name)

    def openapi_v2(self, paths: dict[str, Any]) -> dict[str, Any]:
        """The swagger 2.0 document /openapi/v2 serves, with the caller's paths."""
        return {
            "swagger": "2.0",
            "info": {"title": "Kubernetes", "version": KUBERNETES_VERSION},
            "paths": paths,
            "definitions": {name: self._convert(name, False) for name in self.names()},
            "securityDefinitions": {"BearerToken": {"type": "apiKey", "name": "authorization", "in": "header",
                                                    "description": "Bearer Token authentication"}},
            "security": [{"BearerToken": []}],
        }

    def openapi_v3_components(self, roots: Iterable[str] | None = None) -> dict[str, Any]:
        """The `components` object of an OpenAPI v3 document: all schemas, or `roots` and what they use."""
        names = self.names() if roots is None else self._closure(roots)
        return {"schemas": {name: self._convert(name, True) for name in names}}

    def _closure(self, roots: Iterable[str]) -> list[str]:
        """The given definitions plus every definition they reference, transitively."""
        seen: dict[str, None] = {}
        pending = [name for name in roots if name in self._registered or name in self.definitions]
        while pending:
            name = pending.pop()
            if name in seen:
                continue
            seen[name] = None
            pending.extend(_refs(self.definition(name)))
            if name in self._registered:
                pending.append(OBJECT_META)
        return list(seen)

    def _convert(self, name: str, v3: bool) -> dict[str, Any]:
        """One definition in the /openapi/v2 or /openapi/v3 dialect (cached)."""
        key = (name, v3)
        converted = self._converted.get(key)
        if converted is None:
            if name in self._registered:
                converted = _convert_crd(self._registered[name], v3)
                gvk = [{"group": g, "version": v, "kind": k} for (g, v, k), n in self._registered_gvk.items()
                       if n == name]
                if gvk:
                    converted["x-kubernetes-group-version-kind"] = gvk
            else:
                converted = _convert_builtin(name, self.definitions[name], v3)
            self._converted[key] = converted
        return converted


def _refs(schema: Any) -> Iterable[str]:
    """Every definition name referenced anywhere inside a schema."""
    if isinstance(schema, dict):
        for key, value in schema.items():
            if key == "$ref" and isinstance(value, str):
                yield ref_name(value)
            elif key == "properties" and isinstance(value, dict):
                for prop in value.values():
                    yield from _refs(prop)
            elif isinstance(value, dict | list):
                yield from _refs(value)
    elif isinstance(schema, list):
        for item in schema:
            yield from _refs(item)


def _convert_builtin(name: str, schema: dict[str, Any], v3: bool) -> dict[str, Any]:
    """An upstream definition for OpenAPI: single types, document-local refs, special scalar types."""
    description = {"description": schema["description"]} if "description" in schema else {}
    if name == INT_OR_STRING:
        kind: dict[str, Any] = {"x-kubernetes-int-or-string": True} if v3 else {"type": "string",
                                                                              "format": "int-or-string"}
        return {**description, **kind}
    if name == QUANTITY:
        return {**description, "type": "string"}
    return _convert_schema(schema, "#/components/schemas/" if v3 else "#/definitions/", v3)


def _convert_schema(schema: dict[str, Any], prefix: str, v3: bool) -> dict[str, Any]:
    """Rewrite one schema node (recursively) from JSON Schema 2020-12 to OpenAPI."""
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "$ref":
            out[key] = prefix + ref_name(value)
        elif key == "type" and isinstance(value, list):
            types = [t for t in value if t != "null"]
            if len(types) == 1:
                out[key] = types[0]
        elif key == "properties":
            out[key] = {prop: _convert_schema(sub, prefix, v3) for prop, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = _convert_schema(value, prefix, v3)
        else:
            out[key] = value
    if v3 and "$ref" in out and len(out) > 1:
        # OpenAPI 3.0 ignores keys beside a $ref; Kubernetes wraps the ref in allOf to keep them.
        out["allOf"] = [{"$ref": out.pop("$ref")}]
    return out


def _convert_crd(schema: dict[str, Any], v3: bool) -> dict[str, Any]:
    """A registered CR schema as published: root fields added, v2 without nullable or combinators."""
    prefix = "#/components/schemas/" if v3 else "#/definitions/"
    converted = schema if v3 else _strip_v2(schema)
    properties = {"apiVersion": _STRING, "kind": _STRING, **(converted.get("properties") or {})}
    properties["metadata"] = {"$ref": prefix + OBJECT_META}
    return {**converted, "type": "object", "properties": properties}


def _strip_v2(schema: Any) -> Any:
    """Drop what swagger 2.0 cannot say (nullable, oneOf/anyOf/allOf/not), as Kubernetes does."""
    if isinstance(schema, list):
        return [_strip_v2(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, value in schema.items():
        if key in ("nullable", "oneOf", "anyOf", "allOf", "not"):
            continue
        if key == "properties" and isinstance(value, dict):
            out[key] = {prop: _strip_v2(sub) for prop, sub in value.items()}
        elif key in ("items", "additionalProperties"):
            out[key] = _strip_v2(value)
        else:
            out[key] = value
    return out


@cache
def default_schemas() -> Schemas:
    """The process-wide registry (definitions still load lazily, on first use)."""
    return Schemas()
