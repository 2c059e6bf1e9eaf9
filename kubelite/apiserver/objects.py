"""Object semantics over the key-value store: the generic registry every resource goes through.

This is where Kubernetes' metadata rules live (uid, resourceVersion, generation, generateName,
finalizers, graceful deletion, the status/spec split) so that each kind only adds its Strategy.
"""

from __future__ import annotations

import base64
import copy
import secrets
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from kubelite.api import names
from kubelite.api.conversion import to_version
from kubelite.api.kinds import builtin
from kubelite.api.resource import ResourceType
from kubelite.api.schema import Schemas
from kubelite.api.selectors import FieldSelector, LabelSelector
from kubelite.api.strategy import Cause, Obj
from kubelite.api.validation import prune_unknown, validate
from kubelite.apiserver import errors
from kubelite.client.timestamps import now_time
from kubelite.storage import (
    Backend,
    CompactedError,
    ConflictError,
    FutureRevisionError,
    KeyExistsError,
    KeyNotFoundError,
    KeyValue,
)

Hook = Callable[[ResourceType, Obj, Obj | None], Awaitable[None]]
"""Admission hook run before a write is stored: (resource, new object, old object or None)."""


@dataclass
class WriteOptions:
    """Per-request options of a write (query parameters and the caller's identity)."""

    dry_run: bool = False
    field_validation: str = "Strict"
    warnings: list[str] = field(default_factory=list)


@dataclass
class ListOptions:
    labels: LabelSelector | None = None
    fields: FieldSelector | None = None
    limit: int = 0
    continue_token: str = ""
    resource_version: str = ""
    resource_version_match: str = ""


def decode(kv: KeyValue) -> Obj:
    obj = orjson.loads(kv.value)
    obj["metadata"]["resourceVersion"] = str(kv.mod_revision)
    return obj


def encode(obj: Obj) -> bytes:
    meta = obj["metadata"]
    rv = meta.pop("resourceVersion", None)
    try:
        return orjson.dumps(obj)
    finally:
        if rv is not None:
            meta["resourceVersion"] = rv


def encode_continue(revision: int, start_key: str) -> str:
    token = orjson.dumps({"v": "meta.k8s.io/v1", "rv": revision, "start": start_key})
    return base64.urlsafe_b64encode(token).decode()


def decode_continue(token: str) -> tuple[int, str]:
    try:
        data = orjson.loads(base64.urlsafe_b64decode(token.encode()))
        return int(data["rv"]), str(data["start"])
    except (ValueError, KeyError, TypeError) as exc:
        raise errors.bad_request(f"continue key is not valid: {exc}") from exc


OWNED_PARTS: dict[str, tuple[str, str]] = {
    "status": ("status", ""),
    "ephemeralcontainers": ("spec", "ephemeralContainers"),
}
"""The part of an object each of these subresources writes (section, field; "" for the whole section)."""


def _set_part(obj: Obj, section: str, field_name: str, value: Any) -> None:
    """Put value at obj[section][field_name] (obj[section] without a field), removing it when value is None."""
    if not field_name:
        if value is None:
            obj.pop(section, None)
        else:
            obj[section] = value
    elif value is None:
        (obj.get(section) or {}).pop(field_name, None)
    else:
        obj.setdefault(section, {})[field_name] = value


def _spec_part(obj: Obj) -> Obj:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


def parse_rv(value: str, what: str = "resourceVersion") -> int:
    try:
        rv = int(value)
    except ValueError:
        raise errors.bad_request(f'{what}: Invalid value: "{value}": must be an integer') from None
    if rv < 0:
        raise errors.bad_request(f'{what}: Invalid value: "{value}": must be non-negative')
    return rv


class ObjectStore:
    """Create, read, update, delete and list objects of any ResourceType, with Kubernetes' rules."""

    def __init__(self, backend: Backend, schemas: Schemas):
        self.backend = backend
        self.schemas = schemas
        self.admission: list[Hook] = []
        self.on_deleted: list[Callable[[ResourceType, Obj], Awaitable[None]]] = []

    # keys -----------------------------------------------------------------

    @staticmethod
    def prefix(rt: ResourceType, namespace: str | None) -> str:
        group = (rt.group if rt.storage_group is None else rt.storage_group) or "core"
        base = f"/registry/{group}/{rt.plural}/"
        return f"{base}{namespace}/" if rt.namespaced and namespace else base

    def key(self, rt: ResourceType, namespace: str | None, name: str) -> str:
        return self.prefix(rt, namespace if rt.namespaced else None) + name

    # reads ----------------------------------------------------------------

    @staticmethod
    def decode(rt: ResourceType, kv: KeyValue) -> Obj:
        """A stored object as this resource's version shows it (versions sharing storage convert)."""
        obj = decode(kv)
        return obj if obj.get("apiVersion") == rt.group_version else to_version(obj, rt.group_version)

    async def get(self, rt: ResourceType, namespace: str | None, name: str) -> Obj:
        kv = await self.backend.get(self.key(rt, namespace, name))
        if kv is None:
            raise errors.not_found(rt.plural, rt.group, name)
        return self.decode(rt, kv)

    async def list(self, rt: ResourceType, namespace: str | None, opts: ListOptions) -> Obj:
        prefix = self.prefix(rt, namespace)
        revision = 0
        start = prefix
        if opts.continue_token:
            revision, start_suffix = decode_continue(opts.continue_token)
            start = prefix + start_suffix
        elif opts.resource_version and opts.resource_version != "0" and opts.resource_version_match == "Exact":
            revision = parse_rv(opts.resource_version)
        items: list[Obj] = []
        more = False
        last_key = ""
        want = opts.limit
        filtering = opts.labels is not None or opts.fields is not None
        while True:
            page = 0 if not want else want - len(items) + (16 if filtering else 0)
            try:
                at, kvs, more = await self.backend.list(prefix, start_key=start, limit=page, revision=revision)
            except CompactedError as exc:
                if opts.continue_token:
                    raise errors.expired(
                        "The provided continue parameter is too old to display a consistent list result. "
                        "You can start a new list without the continue parameter.") from exc
                raise errors.expired(f"too old resource version: {revision} ({exc.compact_revision})") from exc
            except FutureRevisionError as exc:
                raise errors.timeout(f"Too large resource version: {revision}") from exc
            revision = at
            for index, kv in enumerate(kvs):
                obj = self.decode(rt, kv)
                last_key = kv.key
                if self.matches(rt, obj, opts):
                    items.append(obj)
                    if want and len(items) >= want:
                        more = more or index < len(kvs) - 1
                        break
            if (want and len(items) >= want) or not more or not kvs:
                break
            start = kvs[-1].key + "\x00"
        meta: dict[str, Any] = {"resourceVersion": str(revision)}
        if want and more:
            meta["continue"] = encode_continue(revision, last_key[len(prefix):] + "\x00")
            if not filtering and not opts.continue_token:
                _, total = await self.backend.count(prefix)
                if total > len(items):
                    meta["remainingItemCount"] = total - len(items)
        return {"kind": rt.list_kind, "apiVersion": rt.group_version, "metadata": meta, "items": items}

    def matches(self, rt: ResourceType, obj: Obj, opts: ListOptions) -> bool:
        if opts.labels is not None and not opts.labels.matches(obj["metadata"].get("labels") or {}):
            return False
        return opts.fields is None or opts.fields.matches(rt.strategy.fields(obj))

    # writes ---------------------------------------------------------------

    def _check_identity(self, rt: ResourceType, namespace: str | None, obj: Obj) -> None:
        if not isinstance(obj, dict):
            raise errors.bad_request("the body of the request must be a JSON object")
        api_version = obj.get("apiVersion")
        kind = obj.get("kind")
        if api_version and api_version != rt.group_version:
            raise errors.bad_request(
                f"the API version in the data ({api_version}) does not match the expected API version "
                f"({rt.group_version})")
        if kind and kind != rt.kind:
            raise errors.bad_request(f"the kind in the data ({kind}) does not match the expected kind ({rt.kind})")
        obj["apiVersion"] = rt.group_version
        obj["kind"] = rt.kind
        meta = obj.get("metadata")
        if meta is None:
            meta = obj["metadata"] = {}
        if not isinstance(meta, dict):
            raise errors.bad_request("metadata must be an object")
        if rt.namespaced:
            given = meta.get("namespace")
            if given and namespace and given != namespace:
                raise errors.bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request")
            if namespace:
                meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)

    def _schema_check(self, rt: ResourceType, obj: Obj, opts: WriteOptions) -> list[Cause]:
        try:
            node = self.schemas.node(rt.schema_name)
        except KeyError:
            return []
        causes, unknown = validate(self.schemas, node, obj, strict=True)
        if unknown:
            if opts.field_validation == "Strict":
                detail = ", ".join(f'unknown field "{p}"' for p in unknown)
                raise errors.bad_request(f"strict decoding error: {detail}")
            if opts.field_validation == "Warn":
                opts.warnings.extend(f'unknown field "{p}"' for p in unknown)
            prune_unknown(self.schemas, node, obj)
        return causes

    def _validate(self, rt: ResourceType, obj: Obj, old: Obj | None, opts: WriteOptions, subresource: str = "") -> None:
        """Schema, metadata and kind rules; a binding only sets spec.nodeName, so it skips update rules."""
        causes = self._schema_check(rt, obj, opts)
        meta = obj["metadata"]
        causes += names.validate_object_meta(meta, rt.namespaced, builtin.name_rule(rt))
        strategy = rt.strategy
        if not causes and strategy.validate is not None:
            causes += strategy.validate(obj)
        if old is not None and strategy.validate_update is not None and subresource != "binding":
            causes += strategy.validate_update(obj, old)
        if old is None and strategy.validate_create is not None:
            causes += strategy.validate_create(obj)
        if causes:
            raise errors.invalid(rt.kind, rt.group, meta.get("name") or meta.get("generateName", ""), causes)

    async def _check_namespace(self, rt: ResourceType, namespace: str | None) -> None:
        if not rt.namespaced:
            return
        if not namespace:
            raise errors.bad_request("the server could not find the requested resource: namespace is required")
        kv = await self.backend.get(f"/registry/core/namespaces/{namespace}")
        if kv is None:
            raise errors.not_found("namespaces", "", namespace)
        ns = orjson.loads(kv.value)
        if ns.get("metadata", {}).get("deletionTimestamp"):
            raise errors.forbidden(rt.plural, rt.group, "", f"unable to create new content in namespace "
                                   f"{namespace} because it is being terminated")

    async def create(self, rt: ResourceType, namespace: str | None, obj: Obj, opts: WriteOptions) -> Obj:
        self._check_identity(rt, namespace, obj)
        meta = obj["metadata"]
        if meta.get("resourceVersion"):
            raise errors.bad_request("resourceVersion should not be set on objects to be created")
        if not meta.get("name"):
            generate = meta.get("generateName")
            if not generate:
                raise errors.invalid(rt.kind, rt.group, "", [Cause(
                    "metadata.name", "FieldValueRequired", "metadata.name: Required value: name or "
                    "generateName is required")])
            meta["name"] = generate + random_suffix()
        for dropped in ("uid", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink", "managedFields"):
            meta.pop(dropped, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_time()
        if self._has_generation(rt, obj):
            meta["generation"] = 1
        strategy = rt.strategy
        if strategy.has_status and not strategy.status_on_create and "status" in obj:
            obj["status"] = {}
        if strategy.prepare_create is not None:
            strategy.prepare_create(obj)
        if strategy.defaults is not None:
            strategy.defaults(obj)
        self._validate(rt, obj, None, opts)
        await self._check_namespace(rt, namespace)
        for hook in self.admission:
            await hook(rt, obj, None)
        if opts.dry_run:
            return obj
        try:
            kv = await self.backend.create(self.key(rt, namespace, meta["name"]), encode(obj))
        except KeyExistsError:
            await self._release(rt, obj)
            raise errors.already_exists(rt.plural, rt.group, meta["name"]) from None
        meta["resourceVersion"] = str(kv.mod_revision)
        return obj

    async def _release(self, rt: ResourceType, obj: Obj) -> None:
        for hook in self.on_deleted:
            await hook(rt, obj)

    def _has_generation(self, rt: ResourceType, obj: Obj) -> bool:
        return not rt.schema or (rt.strategy.has_status and "spec" in obj)

    async def update(self, rt: ResourceType, namespace: str | None, name: str, obj: Obj, opts: WriteOptions,
                     subresource: str = "") -> Obj:
        """PUT: replace the object (or only its status), guarded by its resourceVersion if given."""
        self._check_identity(rt, namespace, obj)
        meta = obj["metadata"]
        if meta.get("name") and meta["name"] != name:
            raise errors.bad_request(f'the name of the object ({meta["name"]}) does not match the name on '
                                     f'the URL ({name})')
        meta["name"] = name
        expected = parse_rv(meta["resourceVersion"]) if meta.get("resourceVersion") else 0
        return await self._write(rt, namespace, name, lambda _current: obj, expected, opts, subresource)

    async def mutate(self, rt: ResourceType, namespace: str | None, name: str,
                     change: Callable[[Obj], Obj], opts: WriteOptions, subresource: str = "",
                     expected: int = 0) -> Obj:
        """Read-modify-write with the current resourceVersion as precondition (PATCH, scale, binding)."""
        return await self._write(rt, namespace, name, change, expected, opts, subresource, retry=expected == 0)

    async def _write(self, rt: ResourceType, namespace: str | None, name: str, change: Callable[[Obj], Obj],
                     expected: int, opts: WriteOptions, subresource: str, retry: bool = False) -> Obj:
        key = self.key(rt, namespace, name)
        for _attempt in range(16):
            kv = await self.backend.get(key)
            if kv is None:
                raise errors.not_found(rt.plural, rt.group, name)
            old = self.decode(rt, kv)
            if expected and expected != kv.mod_revision:
                raise errors.conflict(rt.plural, rt.group, name, errors.MODIFIED)
            new = change(copy.deepcopy(old))
            self._check_identity(rt, namespace, new)
            if new["metadata"].get("resourceVersion") and \
                    parse_rv(new["metadata"]["resourceVersion"]) != kv.mod_revision:
                raise errors.conflict(rt.plural, rt.group, name, errors.MODIFIED)
            self._carry_over(rt, new, old, subresource)
            new_meta = new["metadata"]
            if new == old:
                return old
            if subresource in ("", "ephemeralcontainers") and rt.strategy.defaults is not None:
                rt.strategy.defaults(new)
            self._validate(rt, new, old, opts, subresource)
            for hook in self.admission:
                await hook(rt, new, old)
            if opts.dry_run:
                return new
            if new_meta.get("deletionTimestamp") and not _finalizers(rt, new) and not (
                    rt.plural == "pods" and new_meta.get("deletionGracePeriodSeconds")):
                return await self._remove(rt, key, kv.mod_revision, new)
            try:
                stored = await self.backend.update(key, encode(new), kv.mod_revision)
            except ConflictError:
                if retry:
                    continue
                raise errors.conflict(rt.plural, rt.group, name, errors.MODIFIED) from None
            except KeyNotFoundError:
                raise errors.not_found(rt.plural, rt.group, name) from None
            new_meta["resourceVersion"] = str(stored.mod_revision)
            return new
        raise errors.conflict(rt.plural, rt.group, name, errors.MODIFIED)

    def _carry_over(self, rt: ResourceType, new: Obj, old: Obj, subresource: str) -> None:
        """Keep what a client may not change: identity, timestamps, and what another part (status, a pod's ephemeral
        containers) owns and only its subresource writes."""
        meta, old_meta = new["metadata"], old["metadata"]
        if subresource in OWNED_PARTS:
            section, field_name = OWNED_PARTS[subresource]
            part = (new.get(section) or {}).get(field_name) if field_name else new.get(section)
            new.clear()
            new.update(copy.deepcopy(old))
            _set_part(new, section, field_name, part)
            new["metadata"]["resourceVersion"] = old_meta.get("resourceVersion")
            return
        for kept in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "namespace"):
            if kept in old_meta:
                meta[kept] = old_meta[kept]
            else:
                meta.pop(kept, None)
        meta.pop("selfLink", None)
        if rt.strategy.has_status and subresource not in ("status", "binding"):
            if "status" in old:
                new["status"] = old["status"]
            else:
                new.pop("status", None)
        if rt.strategy.prepare_update is not None:
            rt.strategy.prepare_update(new, old)
        if "generation" in old_meta:
            generation = old_meta["generation"]
            if _spec_part(new) != _spec_part(old):
                generation += 1
            meta["generation"] = generation

    async def delete(self, rt: ResourceType, namespace: str | None, name: str, options: Obj,
                     opts: WriteOptions) -> Obj:
        """DELETE: honours preconditions, finalizers, propagationPolicy and pods' grace period."""
        key = self.key(rt, namespace, name)
        for _attempt in range(16):
            kv = await self.backend.get(key)
            if kv is None:
                raise errors.not_found(rt.plural, rt.group, name)
            obj = self.decode(rt, kv)
            meta = obj["metadata"]
            pre = options.get("preconditions") or {}
            if pre.get("uid") and pre["uid"] != meta.get("uid"):
                raise errors.conflict(rt.plural, rt.group, name, f'Precondition failed: UID in precondition: '
                                      f'{pre["uid"]}, UID in object meta: {meta.get("uid")}')
            if pre.get("resourceVersion") and pre["resourceVersion"] != meta["resourceVersion"]:
                raise errors.conflict(rt.plural, rt.group, name, f'Precondition failed: ResourceVersion in '
                                      f'precondition: {pre["resourceVersion"]}, ResourceVersion in object meta: '
                                      f'{meta["resourceVersion"]}')
            updated = self._begin_deletion(rt, obj, options)
            if opts.dry_run:
                return obj
            if updated is None:
                return await self._remove(rt, key, kv.mod_revision, obj)
            if updated is False:
                return obj
            try:
                stored = await self.backend.update(key, encode(obj), kv.mod_revision)
            except (ConflictError, KeyNotFoundError):
                continue
            meta["resourceVersion"] = str(stored.mod_revision)
            return obj
        raise errors.conflict(rt.plural, rt.group, name, errors.MODIFIED)

    def _begin_deletion(self, rt: ResourceType, obj: Obj, options: Obj) -> bool | None:
        """Decide how a delete proceeds: None removes now, True stores a changed object, False nothing."""
        meta = obj["metadata"]
        policy = options.get("propagationPolicy")
        if policy is None and options.get("orphanDependents") is not None:
            policy = "Orphan" if options["orphanDependents"] else "Background"
        finalizers = list(meta.get("finalizers") or [])
        changed = False
        if policy == "Orphan" and "orphan" not in finalizers:
            finalizers.append("orphan")
            changed = True
        elif policy == "Foreground" and "foregroundDeletion" not in finalizers:
            finalizers.append("foregroundDeletion")
            changed = True
        grace = self._grace_period(rt, obj, options)
        if finalizers:
            meta["finalizers"] = finalizers
        if not _finalizers(rt, obj) and not grace:
            return None
        if _is_namespace(rt) and obj.get("status", {}).get("phase") != "Terminating":
            obj.setdefault("status", {})["phase"] = "Terminating"
            changed = True
        if not meta.get("deletionTimestamp"):
            meta["deletionTimestamp"] = (datetime.now(UTC) + timedelta(seconds=grace or 0)).strftime(
                "%Y-%m-%dT%H:%M:%SZ")
            meta["deletionGracePeriodSeconds"] = grace or 0
            changed = True
        elif grace is not None and grace < (meta.get("deletionGracePeriodSeconds") or 0):
            shorter = timedelta(seconds=meta["deletionGracePeriodSeconds"] - grace)
            meta["deletionTimestamp"] = (datetime.fromisoformat(meta["deletionTimestamp"]) - shorter).strftime(
                "%Y-%m-%dT%H:%M:%SZ")
            meta["deletionGracePeriodSeconds"] = grace
            changed = True
        return changed

    @staticmethod
    def _grace_period(rt: ResourceType, obj: Obj, options: Obj) -> int | None:
        """Pods bound to a node end gracefully (the kubelet finishes the deletion); others at once."""
        if rt.plural != "pods" or rt.group:
            return None
        spec = obj.get("spec") or {}
        given = options.get("gracePeriodSeconds")
        if not spec.get("nodeName"):
            return 0
        if (obj.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            return 0
        grace = given if given is not None else spec.get("terminationGracePeriodSeconds", 30)
        return max(int(grace), 0)

    async def _remove(self, rt: ResourceType, key: str, revision: int, obj: Obj) -> Obj:
        try:
            kv = await self.backend.delete(key, revision)
        except KeyNotFoundError:
            raise errors.not_found(rt.plural, rt.group, obj["metadata"]["name"]) from None
        except ConflictError:
            raise errors.conflict(rt.plural, rt.group, obj["metadata"]["name"], errors.MODIFIED) from None
        obj["metadata"]["resourceVersion"] = str(kv.mod_revision)
        await self._release(rt, obj)
        return obj


def _is_namespace(rt: ResourceType) -> bool:
    return rt.plural == "namespaces" and not rt.group


def _finalizers(rt: ResourceType, obj: Obj) -> list[str]:
    """What still holds a deleted object: metadata.finalizers, and spec.finalizers for namespaces."""
    held = list(obj["metadata"].get("finalizers") or [])
    if _is_namespace(rt):
        held += (obj.get("spec") or {}).get("finalizers") or []
    return held


def random_suffix() -> str:
    """Five characters as Kubernetes appends to generated names (no vowels, no look-alike digits)."""
    alphabet = "bcdfghjklmnpqrstvwxz2456789"
    return "".join(secrets.choice(alphabet) for _ in range(5))
