"""CustomResourceDefinitions: serve what an established CRD declares, and clean up when it goes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import orjson

from kubelite.api.resource import ALL_VERBS, ResourceType, ScalePaths
from kubelite.api.strategy import NAME_COLUMN, Column, Obj, Strategy, age
from kubelite.apiserver import errors
from kubelite.apiserver.context import ApiContext
from kubelite.apiserver.objects import ListOptions, WriteOptions, decode
from kubelite.client.timestamps import now_time

log = logging.getLogger(__name__)
CLEANUP_FINALIZER = "customresourcecleanup.apiextensions.k8s.io"
CRD_PREFIX = "/registry/apiextensions.k8s.io/customresourcedefinitions/"


def _json_path(obj: Any, path: str) -> Any:
    """Evaluate the simple JSONPath of a printer column (`.spec.replicas`, `.status.conditions[0].type`)."""
    value = obj
    for part in path.strip().lstrip("{").rstrip("}").lstrip(".").replace("]", "").split("."):
        if not part:
            continue
        name, _, index = part.partition("[")
        if name:
            value = value.get(name) if isinstance(value, dict) else None
        if index and isinstance(value, list):
            position = int(index) if index.lstrip("-").isdigit() else 0
            value = value[position] if -len(value) <= position < len(value) else None
        if value is None:
            return None
    return value


def _cell(column: dict[str, Any], obj: Obj) -> Any:
    value = _json_path(obj, column.get("jsonPath", ""))
    if value is None:
        return None
    if column.get("type") == "date":
        return age({"metadata": {"creationTimestamp": value}})
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    return value


def _strategy(version: dict[str, Any]) -> Strategy:
    subresources = version.get("subresources") or {}
    printer = version.get("additionalPrinterColumns") or []
    if not printer:
        return Strategy(has_status="status" in subresources)
    columns = [NAME_COLUMN] + [Column(c["name"], c.get("type", "string"), c.get("format", ""),
                                      c.get("description", ""), c.get("priority", 0)) for c in printer]

    def row(obj: Obj) -> list[Any]:
        return [obj["metadata"].get("name", "")] + [_cell(c, obj) for c in printer]

    return Strategy(has_status="status" in subresources, columns=columns, row=row)


def resource_types(crd: Obj) -> list[ResourceType]:
    """The ResourceTypes a CRD serves, one per served version."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    result = []
    for version in spec.get("versions") or []:
        if not version.get("served"):
            continue
        subresources = version.get("subresources") or {}
        scale = subresources.get("scale")
        result.append(ResourceType(
            group=spec["group"], version=version["name"], kind=names["kind"], plural=names["plural"],
            namespaced=spec.get("scope") == "Namespaced", strategy=_strategy(version),
            singular=names.get("singular") or names["kind"].lower(),
            short_names=tuple(names.get("shortNames") or ()), categories=tuple(names.get("categories") or ()),
            verbs=ALL_VERBS, subresources=tuple(s for s in ("status", "scale") if s in subresources),
            scale=ScalePaths(scale["specReplicasPath"], scale["statusReplicasPath"],
                             scale.get("labelSelectorPath")) if scale else None,
        ))
    return result


def _schema(crd: Obj, version: str) -> dict[str, Any] | None:
    for entry in (crd.get("spec") or {}).get("versions") or []:
        if entry.get("name") == version:
            return ((entry.get("schema") or {}).get("openAPIV3Schema")) or None
    return None


class CrdServer:
    """Keeps the registry in step with stored CRDs and drives their Established condition and cleanup."""

    def __init__(self, ctx: ApiContext):
        self.ctx = ctx
        self.served: dict[str, list[ResourceType]] = {}
        self._task: asyncio.Task[None] | None = None
        self.crd_type = ctx.registry.get("apiextensions.k8s.io", "v1", "customresourcedefinitions")

    async def start(self) -> None:
        assert self.crd_type is not None
        listed = await self.ctx.store.list(self.crd_type, None, ListOptions())
        for crd in listed["items"]:
            await self._sync(crd)
        self._task = asyncio.create_task(self._watch(int(listed["metadata"]["resourceVersion"])))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def admit(self, rt: ResourceType, obj: Obj, old: Obj | None) -> None:
        """Admission for CRDs: names must not clash with a served resource; add the cleanup finalizer."""
        if rt is not self.crd_type or obj["metadata"].get("deletionTimestamp"):
            return
        spec = obj.get("spec") or {}
        group, plural = spec.get("group", ""), (spec.get("names") or {}).get("plural", "")
        expected = f"{plural}.{group}"
        if obj["metadata"]["name"] != expected:
            raise errors.invalid("CustomResourceDefinition", "apiextensions.k8s.io", obj["metadata"]["name"], [
                errors.Cause("metadata.name", "FieldValueInvalid", f'metadata.name: Invalid value: '
                             f'"{obj["metadata"]["name"]}": must be spec.names.plural+"."+spec.group')])
        if old is None:
            for version in spec.get("versions") or []:
                existing = self.ctx.registry.get(group, version.get("name", ""), plural)
                if existing is not None and existing.schema:
                    raise errors.invalid("CustomResourceDefinition", "apiextensions.k8s.io", expected, [
                        errors.Cause("spec.group", "FieldValueInvalid",
                                     f"spec.group: Invalid value: {group}: is a built-in group")])
            finalizers = obj["metadata"].setdefault("finalizers", [])
            if CLEANUP_FINALIZER not in finalizers:
                finalizers.append(CLEANUP_FINALIZER)

    async def _watch(self, after: int) -> None:
        while True:
            try:
                async for batch in self.ctx.backend.watch(CRD_PREFIX, after):
                    for event in batch:
                        after = event.revision
                        if event.type == "DELETED":
                            self._unserve(decode(event.kv))
                        else:
                            await self._sync(decode(event.kv))
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - keep serving CRDs whatever one event does
                log.exception("CRD watch failed; re-listing")
                await asyncio.sleep(1)
                assert self.crd_type is not None
                listed = await self.ctx.store.list(self.crd_type, None, ListOptions())
                after = int(listed["metadata"]["resourceVersion"])
                for crd in listed["items"]:
                    await self._sync(crd)

    def _unserve(self, crd: Obj) -> None:
        for rt in self.served.pop(crd["metadata"]["name"], []):
            self.ctx.registry.remove(rt.group, rt.version, rt.plural)
            self.ctx.schemas.unregister(rt.schema_name)

    def _serve(self, crd: Obj) -> None:
        self._unserve(crd)
        types = resource_types(crd)
        for rt in types:
            schema = _schema(crd, rt.version)
            if schema is not None:
                self.ctx.schemas.register(rt.schema_name, schema, (rt.group, rt.version, rt.kind))
            self.ctx.registry.add(rt)
        self.served[crd["metadata"]["name"]] = types

    async def _sync(self, crd: Obj) -> None:
        name = crd["metadata"]["name"]
        if crd["metadata"].get("deletionTimestamp"):
            await self._cleanup(crd)
            return
        self._serve(crd)
        conditions = {c.get("type"): c.get("status") for c in (crd.get("status") or {}).get("conditions") or []}
        if conditions.get("Established") == "True" and conditions.get("NamesAccepted") == "True":
            return
        names = (crd.get("spec") or {}).get("names") or {}

        def establish(current: Obj) -> Obj:
            now = now_time()
            current["status"] = {
                "conditions": [
                    {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
                     "message": "no conflicts found", "lastTransitionTime": now},
                    {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
                     "message": "the initial names have been accepted", "lastTransitionTime": now},
                ],
                "acceptedNames": names,
                "storedVersions": [v["name"] for v in (current.get("spec") or {}).get("versions") or []
                                   if v.get("storage")],
            }
            return current

        assert self.crd_type is not None
        with contextlib.suppress(errors.StatusError):
            await self.ctx.store.mutate(self.crd_type, None, name, establish, WriteOptions(), "status")

    async def _cleanup(self, crd: Obj) -> None:
        """Delete every custom resource of a CRD being deleted, then drop its finalizer."""
        name = crd["metadata"]["name"]
        if CLEANUP_FINALIZER not in (crd["metadata"].get("finalizers") or []):
            return
        remaining = 0
        for rt in self.served.get(name) or resource_types(crd):
            listed = await self.ctx.store.list(rt, None, ListOptions())
            for item in listed["items"]:
                meta = item["metadata"]
                with contextlib.suppress(errors.StatusError):
                    left = await self.ctx.store.delete(rt, meta.get("namespace"), meta["name"], {}, WriteOptions())
                    remaining += bool(left["metadata"].get("finalizers"))
        if remaining:
            # Some custom resources wait for their own finalizers: look again shortly, as Kubernetes does.
            asyncio.get_running_loop().call_later(2, lambda: asyncio.ensure_future(self._sync(crd)))
            return
        self._unserve(crd)

        def release(current: Obj) -> Obj:
            current["metadata"]["finalizers"] = [f for f in current["metadata"].get("finalizers") or []
                                                 if f != CLEANUP_FINALIZER]
            return current

        assert self.crd_type is not None
        with contextlib.suppress(errors.StatusError):
            await self.ctx.store.mutate(self.crd_type, None, name, release, WriteOptions())

