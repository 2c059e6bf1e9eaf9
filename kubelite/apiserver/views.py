"""Server-side printing: objects and lists as meta.k8s.io Table or PartialObjectMetadata."""

from __future__ import annotations

from typing import Any

from kubelite.api.resource import ResourceType
from kubelite.api.strategy import Obj


def partial(obj: Obj) -> Obj:
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj.get("metadata", {})}


def table(rt: ResourceType, objects: list[Obj], list_meta: dict[str, Any], include: str = "Metadata",
          headers: bool = True) -> Obj:
    """A Table of the kind's columns; each row carries the object as `includeObject` asks."""
    strategy = rt.strategy
    rows = []
    for obj in objects:
        row: dict[str, Any] = {"cells": strategy.row(obj)}
        if include == "Object":
            row["object"] = obj
        elif include != "None":
            row["object"] = partial(obj)
        rows.append(row)
    result: Obj = {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": list_meta, "rows": rows}
    result["columnDefinitions"] = [c.as_dict() for c in strategy.columns] if headers else []
    return result


def view(rt: ResourceType, obj: Obj, as_: str, include: str) -> Obj:
    """Render one object (or a list object) in the requested view."""
    if as_ == "Table":
        if "items" in obj:
            return table(rt, obj["items"], obj["metadata"], include)
        return table(rt, [obj], {"resourceVersion": obj["metadata"].get("resourceVersion", "")}, include)
    if as_ == "PartialObjectMetadataList" or (as_ == "PartialObjectMetadata" and "items" in obj):
        return {"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"],
                "items": [partial(o) for o in obj["items"]]}
    if as_ == "PartialObjectMetadata":
        return partial(obj)
    return obj
