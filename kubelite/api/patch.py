"""The three PATCH flavours: JSON patch (RFC 6902), merge patch (RFC 7386), strategic merge patch.

The strategic merge patch follows apimachinery's strategicpatch as the apiserver applies it: lists
whose schema says `x-kubernetes-patch-strategy: merge` merge by their merge key (or as a set of
primitives), other lists are replaced, `null` deletes, and the directives `$patch`, `$retainKeys`,
`$setElementOrder/<list>` and `$deleteFromPrimitiveList/<list>` are honoured. Without a schema
(custom resources, preserved unknown fields) it degrades to a merge patch. Inputs are never mutated.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jsonpatch

from kubelite.api.schema import Node, Schemas

DIRECTIVE = "$patch"
RETAIN_KEYS = "$retainKeys"
SET_ORDER = "$setElementOrder/"
DELETE_PRIMITIVES = "$deleteFromPrimitiveList/"
_MISSING = object()


class PatchError(Exception):
    """A patch that cannot be applied; the message is meant for the client (a 4xx Status)."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def json_patch(obj: Any, ops: Any) -> Any:
    """Apply an RFC 6902 JSON patch (a list of operations) to a copy of obj."""
    if not isinstance(ops, list):
        raise PatchError("json patch must be a list of operations")
    try:
        return jsonpatch.JsonPatch(ops).apply(obj, in_place=False)
    except jsonpatch.JsonPatchTestFailed as e:
        raise PatchError(f"the test operation failed: {e}") from e
    except jsonpatch.JsonPointerException as e:
        raise PatchError(f"the path of a json patch operation is invalid: {e}") from e
    except (jsonpatch.JsonPatchException, AttributeError, KeyError, IndexError, TypeError, ValueError) as e:
        raise PatchError(f"unable to apply the json patch: {e}") from e


def merge_patch(obj: Any, patch: Any) -> Any:
    """Apply an RFC 7386 JSON merge patch to a copy of obj: objects merge, null deletes, the rest replaces."""
    try:
        return _merge_patch(obj, patch)
    except RecursionError as e:
        raise PatchError("the patch is nested too deeply") from e


def _merge_patch(obj: Any, patch: Any) -> Any:
    """RFC 7386, recursively."""
    if not isinstance(patch, dict):
        return clone(patch)
    result = {key: clone(value) for key, value in obj.items()} if isinstance(obj, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value)
    return result


def strategic_merge_patch(schemas: Schemas, node: str | dict[str, Any] | Node | None, obj: dict[str, Any],
                          patch: Any) -> dict[str, Any]:
    """Apply a strategic merge patch to a copy of obj, guided by the schema node (None: no schema)."""
    if not isinstance(patch, dict):
        raise PatchError("a strategic merge patch must be a JSON object")
    root = schemas.node(node) if isinstance(node, str | dict) else node
    try:
        return _merge_map(clone(obj) if isinstance(obj, dict) else {}, patch, root)
    except RecursionError as e:
        raise PatchError("the patch is nested too deeply") from e


def clone(value: Any) -> Any:
    """A deep copy of a JSON value (several times faster than copy.deepcopy)."""
    if isinstance(value, dict):
        return {key: clone(item) for key, item in value.items()}
    if isinstance(value, list):
        return [clone(item) for item in value]
    return value


def _child(node: Node | None, key: str) -> Node | None:
    """The schema of a field, when the parent is a schema-described object."""
    if node is None or node.open and not node.props:
        return None
    return node.child(key)


def _merge_map(original: dict[str, Any], patch: dict[str, Any], node: Node | None) -> dict[str, Any]:
    """Merge a patch map into `original` (owned by the caller, changed in place) and return the result."""
    directive = patch.get(DIRECTIVE, _MISSING)
    if directive is not _MISSING:
        if directive == "replace":
            return _merge_map({}, {k: v for k, v in patch.items() if k != DIRECTIVE}, node)
        if directive == "delete":
            return {}
        if directive != "merge":
            raise PatchError(f"unknown patch type: {directive} in map")
    if RETAIN_KEYS in patch:
        _retain_keys(original, patch)
    orders: dict[str, tuple[Any, list[Any]]] = {}
    for key, value in patch.items():
        if key.startswith(SET_ORDER):
            field = key[len(SET_ORDER):]
            before = original.get(field)
            orders[field] = (value, list(before) if isinstance(before, list) else [])
        elif key.startswith(DELETE_PRIMITIVES):
            field = key[len(DELETE_PRIMITIVES):]
            if not isinstance(value, list):
                raise PatchError(f"invalid patch: {key} must be a list")
            current = original.get(field)
            if isinstance(current, list):
                original[field] = [item for item in current if item not in value]
    for key, value in patch.items():
        if _is_directive(key):
            continue
        if value is None:
            original.pop(key, None)
            continue
        original[key] = _merge_value(original.get(key, _MISSING), value, _child(node, key))
    for field, (order, before) in orders.items():
        _set_order(original, field, order, before, patch.get(field), _child(node, field))
    return original


def _is_directive(key: str) -> bool:
    """True for the keys of a patch map that are instructions rather than fields."""
    return key in (DIRECTIVE, RETAIN_KEYS) or key.startswith((SET_ORDER, DELETE_PRIMITIVES))


def _merge_value(current: Any, value: Any, node: Node | None) -> Any:
    """The result of patching one field's current value (or _MISSING) with a patch value."""
    if isinstance(value, dict):
        if isinstance(current, dict) and not (node is not None and "replace" in node.strategy):
            return _merge_map(current, value, node)
        return _merge_map({}, value, node)
    if isinstance(value, list):
        if node is not None and "merge" in node.strategy:
            return _merge_list(current if isinstance(current, list) else [], value, node)
        return [_merge_value(_MISSING, item, node.items if node is not None else None) for item in value]
    return value


def _retain_keys(original: dict[str, Any], patch: dict[str, Any]) -> None:
    """Apply `$retainKeys`: drop fields of original the list does not name, after checking the patch."""
    retain = patch[RETAIN_KEYS]
    if not isinstance(retain, list) or not all(isinstance(key, str) for key in retain):
        raise PatchError("invalid patch: $retainKeys must be a list of field names")
    kept = set(retain)
    for key, value in patch.items():
        if value is None or _is_directive(key):
            continue
        if key not in kept:
            raise PatchError(f"invalid patch: field {key!r} is not listed in $retainKeys {retain}")
    for key in [k for k in original if k not in kept]:
        del original[key]


def _merge_key_value(item: Any, key: str) -> Any:
    """The merge key value of a list element, or a PatchError when it has none."""
    if not isinstance(item, dict):
        raise PatchError(f"invalid patch: list element {item!r} is not an object with merge key {key!r}")
    if key not in item:
        raise PatchError(f"map: {item} does not contain declared merge key: {key}")
    return item[key]


def _merge_list(original: list[Any], patch: list[Any], node: Node) -> list[Any]:
    """Merge a patch list into a list whose strategy is merge (by merge key, or as a set of scalars)."""
    key = node.merge_key
    items_node = node.items
    if key is None or not any(isinstance(item, dict) and DIRECTIVE not in item for item in original + patch):
        return _merge_scalars(original, patch)
    server_order = original
    kept: list[Any] = []
    replace = False
    for item in patch:
        directive = item.get(DIRECTIVE, _MISSING) if isinstance(item, dict) else _MISSING
        if directive is _MISSING:
            kept.append(item)
        elif directive == "delete":
            value = _merge_key_value(item, key)
            server_order = [e for e in server_order if not (isinstance(e, dict) and e.get(key) == value)]
        elif directive == "replace":
            replace = True
        elif directive == "merge":
            raise PatchError("merging lists cannot yet be specified in the patch")
        else:
            raise PatchError(f"unknown patch type: {directive} in map: {item}")
    if replace:
        return [_merge_value(_MISSING, item, items_node) for item in kept]
    merged = list(server_order)
    for item in kept:
        value = _merge_key_value(item, key)
        for index, existing in enumerate(merged):
            if isinstance(existing, dict) and existing.get(key) == value:
                merged[index] = _merge_map(existing, item, items_node)
                break
        else:
            merged.append(_merge_map({}, item, items_node))
    patch_keys = [_merge_key_value(item, key) for item in kept]
    return _order(merged, patch_keys, [e.get(key) if isinstance(e, dict) else e for e in server_order],
                  lambda e: e.get(key) if isinstance(e, dict) else _MISSING)


def _merge_scalars(original: list[Any], patch: list[Any]) -> list[Any]:
    """Union of a primitive merge list and its patch, duplicates dropped, ordered as upstream orders it."""
    if any(isinstance(item, dict) and item.get(DIRECTIVE) == "replace" for item in patch):
        return [item for item in patch if not isinstance(item, dict)]
    merged: list[Any] = []
    for item in original + patch:
        if item not in merged:
            merged.append(item)
    return _order(merged, patch, original, lambda e: e)


def _order(merged: list[Any], patch_order: list[Any], server_order: list[Any],
           ident: Callable[[Any], Any]) -> list[Any]:
    """Interleave patch items (patch order) and server-only items (server order) as apimachinery does."""
    # A server-only item goes before the next patch item only when both are in the server order and
    # it came first there; otherwise the patch item goes first (so new items lead the list).
    patch_rank = {_hashable(v): i for i, v in reversed(list(enumerate(patch_order)))}
    server_rank = {_hashable(v): i for i, v in reversed(list(enumerate(server_order)))}
    in_patch, server_only = [], []
    for item in merged:
        (in_patch if _hashable(ident(item)) in patch_rank else server_only).append(item)
    in_patch.sort(key=lambda e: patch_rank[_hashable(ident(e))])
    server_only.sort(key=lambda e: server_rank.get(_hashable(ident(e)), len(server_rank)))
    result: list[Any] = []
    i = j = 0
    while i < len(server_only) and j < len(in_patch):
        left = server_rank.get(_hashable(ident(server_only[i])))
        right = server_rank.get(_hashable(ident(in_patch[j])))
        if left is not None and right is not None and left < right:
            result.append(server_only[i])
            i += 1
        else:
            result.append(in_patch[j])
            j += 1
    return result + server_only[i:] + in_patch[j:]


def _hashable(value: Any) -> Any:
    """A dictionary key standing for a JSON value (merge keys are scalars; be safe with the rest)."""
    if isinstance(value, dict | list):
        return repr(value)
    return (type(value) is bool, value)


def _set_order(original: dict[str, Any], field: str, order: Any, before: list[Any], patch_list: Any,
               node: Node | None) -> None:
    """Apply `$setElementOrder/<field>`: reorder the merged list (server-only items keep `before`'s order)."""
    if not isinstance(order, list):
        raise PatchError(f"invalid patch: {SET_ORDER}{field} must be a list")
    current = original.get(field)
    if not isinstance(current, list):
        return
    key = node.merge_key if node is not None else None
    if key is not None and any(isinstance(item, dict) for item in current):
        wanted = [_merge_key_value(item, key) for item in order]

        def ident(e: Any) -> Any:
            return e.get(key) if isinstance(e, dict) else _MISSING
    else:
        wanted = order

        def ident(e: Any) -> Any:
            return e
    if isinstance(patch_list, list):
        _check_order(patch_list, wanted, ident, field)
    original[field] = _order(current, wanted, [ident(e) for e in before], ident)


def _check_order(patch_list: list[Any], wanted: list[Any], ident: Callable[[Any], Any], field: str) -> None:
    """The items of the patch list must appear in the $setElementOrder list, in the same relative order."""
    patch_ids = [ident(item) for item in patch_list if not (isinstance(item, dict) and DIRECTIVE in item)]
    position = 0
    for value in patch_ids:
        while position < len(wanted) and wanted[position] != value:
            position += 1
        if position == len(wanted):
            raise PatchError(f"invalid patch: the order in the {field} list doesn't match the "
                             f"{SET_ORDER}{field} list")
        position += 1
