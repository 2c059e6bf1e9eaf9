"""Validate an object against its schema: types, enums, required fields, formats, unknown fields.

Messages follow the apiextensions (CRD) validator, e.g.
`spec.replicas: Invalid value: "string": spec.replicas in body must be of type integer: "string"`.
Unknown fields come back as paths (`spec.containers[0].foo`) for the caller to turn into a strict
decoding error, warnings, or nothing, as fieldValidation asks.
"""

from __future__ import annotations

import binascii
import re
from typing import Any

from kubelite.api.schema import QUANTITY, Node, Schemas
from kubelite.api.strategy import Cause, invalid, required, unsupported

JSON_TYPES: dict[type, str] = {dict: "object", list: "array", str: "string", int: "integer", float: "number",
                               bool: "boolean", type(None): "null"}
_DATE_TIME = re.compile(r"\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:\d\d(\.\d+)?([Zz]|[+-]\d\d:\d\d)")
_DATE = re.compile(r"\d{4}-\d\d-\d\d")
_QUANTITY = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([KMGTPE]i|[numkMGTPE]|[eE][+-]?\d+)?")
QUANTITY_ERROR = "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
_INT_RANGES = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}


def validate(schemas: Schemas, node: str | dict[str, Any] | Node, obj: Any,
             strict: bool) -> tuple[list[Cause], list[str]]:
    """Check obj against a definition name, schema dict or Node: (causes, unknown paths when strict)."""
    root = node if isinstance(node, Node) else schemas.node(node)
    causes: list[Cause] = []
    unknown: list[str] | None = [] if strict else None
    try:
        _check(root, obj, "", causes, unknown)
    except RecursionError:
        causes.append(invalid("<root>", "object", "the object is nested too deeply"))
    return causes, unknown or []


def prune_unknown(schemas: Schemas, node: str | dict[str, Any] | Node, obj: Any) -> Any:
    """Drop fields the schema does not declare (and, for CRs, nulls it does not allow); returns obj."""
    try:
        _prune(node if isinstance(node, Node) else schemas.node(node), obj)
    except RecursionError:
        pass  # validate reports the nesting; what was pruned so far stays pruned
    return obj


def join(path: str, key: str) -> str:
    """The field path of a child field."""
    return f"{path}.{key}" if path else key


def _type_error(path: str, node: Node, kind: str) -> Cause:
    """The cause for a value of the wrong JSON type."""
    expected = " or ".join(sorted(node.types or ()))
    return invalid(path, kind, f'{path} in body must be of type {expected}: "{kind}"')


def _check(node: Node, value: Any, path: str, causes: list[Cause], unknown: list[str] | None) -> None:
    """Check one value against one node, appending what is wrong."""
    types = node.types
    if types is None:
        return
    kind = JSON_TYPES.get(type(value)) or _kind(value)
    if kind not in types:
        if kind == "null":
            # A CR's non-nullable null is pruned (prune_unknown), not rejected, as apiextensions does.
            if not node.nullable and not node.crd:
                causes.append(_type_error(path, node, kind))
            return
        if not (kind == "integer" and "number" in types
                or kind == "number" and node.crd and "integer" in types and value.is_integer()):
            causes.append(_type_error(path, node, kind))
            return
    if kind == "object":
        _check_object(node, value, path, causes, unknown)
    elif kind == "array":
        items = node.items
        if items is not None:
            for index, item in enumerate(value):
                _check(items, item, f"{path}[{index}]", causes, unknown)
    else:
        _check_scalar(node, value, kind, path, causes)
    if node.limits:
        _check_limits(node, value, path, causes)


def _kind(value: Any) -> str:
    """The JSON type of a value whose Python type is a subclass of a JSON one."""
    for python_type, name in JSON_TYPES.items():
        if isinstance(value, python_type) and not (python_type is int and isinstance(value, bool)):
            return name
    return "unknown"


def _check_object(node: Node, value: dict[str, Any], path: str, causes: list[Cause],
                  unknown: list[str] | None) -> None:
    """Check the fields of an object: declared, map values, unknown, then the required ones."""
    props = node.props
    additional = node.additional
    required_keys = node.required
    for key, sub in value.items():
        child = props.get(key)
        if child is not None:
            if sub is None and key in required_keys:
                continue  # reported below as a missing required value
            _check(child, sub, join(path, key), causes, unknown)
        elif additional is not None:
            _check(additional, sub, f"{path}[{key}]", causes, unknown)
        elif not node.open and unknown is not None:
            unknown.append(join(path, key))
    if not node.crd and (path == "status" or path.startswith("status.")):
        return  # built-in status is decoded leniently (Go zero values); its writers are trusted components
    for key in required_keys:
        if value.get(key) is None:
            child = props.get(key)
            if key in value and node.crd and child is not None and child.nullable:
                continue
            causes.append(required(join(path, key)))


def _check_scalar(node: Node, value: Any, kind: str, path: str, causes: list[Cause]) -> None:
    """Check a string, number or boolean: enum, format, Quantity syntax, integer range."""
    enum = node.enum
    if enum is not None and value not in enum and (node.crd or value != ""):
        causes.append(unsupported(path, value, [str(e) for e in enum]))
    if kind == "string":
        fmt = node.format
        if fmt is not None:
            problem = _format_problem(fmt, value)
            if problem:
                causes.append(invalid(path, "string" if fmt == "byte" else value,
                                      f"{path} in body must be of type {fmt}: {problem}"))
        elif node.name == QUANTITY and not _QUANTITY.fullmatch(value):
            causes.append(invalid(path, value, QUANTITY_ERROR))
    elif kind == "integer" and node.format in _INT_RANGES:
        low, high = _INT_RANGES[node.format]
        if value < low:
            causes.append(invalid(path, value, f"{path} in body should be greater than or equal to {low}"))
        elif value > high:
            causes.append(invalid(path, value, f"{path} in body should be less than or equal to {high}"))


def _format_problem(fmt: str, value: str) -> str:
    """Why a string does not have its declared format ("" when it does, or the format is unchecked)."""
    if fmt == "byte":
        try:
            binascii.a2b_base64(value.replace("\n", "").replace("\r", ""), strict_mode=True)
        except ValueError:  # binascii.Error, or a non-ASCII string
            return "illegal base64 data"
    elif fmt == "date-time" and not _DATE_TIME.fullmatch(value):
        return f'"{value}"'
    elif fmt == "date" and not _DATE.fullmatch(value):
        return f'"{value}"'
    return ""


def _check_limits(node: Node, value: Any, path: str, causes: list[Cause]) -> None:
    """The OpenAPI value validations a CRD may declare (minimum, maxLength, pattern, ...)."""
    raw = node.raw
    for key, limit in node.limits:
        detail = ""
        if isinstance(value, int | float) and not isinstance(value, bool):
            if key == "minimum":
                exclusive = raw.get("exclusiveMinimum") is True
                if value < limit or (exclusive and value == limit):
                    detail = f"should be greater than {'' if exclusive else 'or equal to '}{limit}"
            elif key == "maximum":
                exclusive = raw.get("exclusiveMaximum") is True
                if value > limit or (exclusive and value == limit):
                    detail = f"should be less than {'' if exclusive else 'or equal to '}{limit}"
        elif isinstance(value, str):
            if key == "minLength" and len(value) < limit:
                detail = f"should be at least {limit} chars long"
            elif key == "maxLength" and len(value) > limit:
                detail = f"should be at most {limit} chars long"
            elif key == "pattern" and not _pattern(limit).search(value):
                detail = f"should match '{limit}'"
        elif isinstance(value, list):
            if key == "minItems" and len(value) < limit:
                detail = f"should have at least {limit} items"
            elif key == "maxItems" and len(value) > limit:
                detail = f"should have at most {limit} items"
        elif isinstance(value, dict):
            if key == "minProperties" and len(value) < limit:
                detail = f"should have at least {limit} properties"
            elif key == "maxProperties" and len(value) > limit:
                detail = f"should have at most {limit} properties"
        if detail:
            shown = value if isinstance(value, int | float | str) else JSON_TYPES.get(type(value), "object")
            causes.append(invalid(path, shown, f"{path} in body {detail}"))


_patterns: dict[str, re.Pattern[str]] = {}


def _pattern(source: str) -> re.Pattern[str]:
    """A CRD pattern, compiled once (an unusable pattern matches nothing rather than crashing)."""
    compiled = _patterns.get(source)
    if compiled is None:
        try:
            compiled = re.compile(source)
        except re.error:
            compiled = re.compile(r"(?!)")
        _patterns[source] = compiled
    return compiled


def _prune(node: Node, value: Any) -> None:
    """Remove undeclared fields (and CR nulls the schema does not allow) in place, recursively."""
    if isinstance(value, dict):
        if node.types is None or "object" not in node.types:
            return
        props = node.props
        additional = node.additional
        for key in list(value):
            child = props.get(key) or additional
            if child is None:
                if not node.open:
                    del value[key]
            elif value[key] is None:
                if child.crd and not child.nullable and not child.has_default and child.types is not None:
                    del value[key]
            else:
                _prune(child, value[key])
    elif isinstance(value, list):
        items = node.items
        if items is not None:
            for item in value:
                _prune(items, item)
