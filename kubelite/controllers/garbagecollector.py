"""Garbage collector: deletes dependents whose owners are gone and carries out foreground and orphan deletion."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, ClassVar

from kubelite.client.controller import Controller, Requeue
from kubelite.client.errors import CONNECTION_ERRORS, ApiError, is_conflict, is_not_found
from kubelite.client.informer import Informer
from kubelite.client.resources import Resource
from kubelite.client.rest import ApiClient
from kubelite.client.store import OWNER_UID_INDEX, key_of

log = logging.getLogger(__name__)

Obj = dict[str, Any]
FOREGROUND = "foregroundDeletion"
ORPHAN = "orphan"
IGNORED = {("", "events"), ("events.k8s.io", "events")}
"""Upstream's default ignored resources: events never own anything and are too many to watch."""
VERBS = ("list", "watch", "delete")
SOLID, DANGLING, WAITING, UNKNOWN = "solid", "dangling", "waiting", "unknown"


async def served_resources(client: ApiClient, verbs: tuple[str, ...]) -> list[Resource]:
    """Every resource the server serves that allows `verbs`, once per group (preferred version first)."""
    lists = [await client.request("GET", "/api/v1")]
    for group in (await client.request("GET", "/apis")).get("groups") or []:
        preferred = (group.get("preferredVersion") or {}).get("groupVersion")
        versions = sorted((v["groupVersion"] for v in group.get("versions") or []), key=lambda gv: gv != preferred)
        lists += [await client.request("GET", f"/apis/{gv}") for gv in versions]
    found: dict[tuple[str, str], Resource] = {}
    for listed in lists:
        group, _, version = listed["groupVersion"].rpartition("/")
        for entry in listed.get("resources") or []:
            if "/" not in entry["name"] and set(verbs) <= set(entry.get("verbs") or []):
                found.setdefault((group, entry["name"]), Resource(group, version, entry["name"], entry["namespaced"],
                                                                  entry["kind"]))
    return list(found.values())


def _rid(res: Resource) -> str:
    """The resource part of a queue key: plural.group."""
    return f"{res.plural}.{res.group}"


def _key(res: Resource, obj: Obj) -> str:
    """The queue key of an object of any resource."""
    return f"{_rid(res)}|{key_of(obj)}"


def _refs(obj: Obj) -> list[Obj]:
    """An object's ownerReferences."""
    return obj["metadata"].get("ownerReferences") or []


def _deleting_with(obj: Obj, finalizer: str) -> bool:
    """Being deleted and held by `finalizer`."""
    meta = obj["metadata"]
    return bool(meta.get("deletionTimestamp")) and finalizer in (meta.get("finalizers") or [])


class GarbageCollector(Controller):
    """Watches every deletable resource; keys are "plural.group|namespace/name" of owners and dependents."""

    name = "garbagecollector"
    workers = 4
    discovery_period: ClassVar[float] = 30.0
    """Seconds between discoveries, so resources added later (CRDs) are watched too (upstream's 30 s)."""

    def setup(self) -> None:
        """No informers yet: run() discovers which resources to watch."""
        self._resources: dict[str, Resource] = {}
        self._kinds: dict[tuple[str, str], Resource] = {}
        self._watching: dict[str, Informer] = {}
        self._handled: set[Informer] = set()

    async def run(self, stop: asyncio.Event) -> None:
        """Discover the resources to watch, then reconcile, rediscovering every discovery_period."""
        while not await self._discover():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
            if stop.is_set():
                return
        rediscover = asyncio.create_task(self._rediscover())
        try:
            await super().run(stop)
        finally:
            rediscover.cancel()
            await asyncio.gather(rediscover, return_exceptions=True)

    async def _rediscover(self) -> None:
        """Discover again every discovery_period, until cancelled."""
        while True:
            await asyncio.sleep(self.discovery_period)
            await self._discover()

    async def _discover(self) -> bool:
        """Watch newly served resources and stop watching removed ones; False when discovery failed."""
        try:
            found = [r for r in await served_resources(self.client, VERBS) if (r.group, r.plural) not in IGNORED]
        except (ApiError, *CONNECTION_ERRORS) as exc:
            log.warning("%s: discovery failed: %s", self.name, exc)
            return False
        self._resources = {_rid(r): r for r in found}
        self._kinds = {(r.group, r.kind): r for r in found}
        removed = [self._watching.pop(rid) for rid in set(self._watching) - set(self._resources)]
        for rid, res in self._resources.items():
            if rid not in self._watching:
                self._watching[rid] = informer = self.informer(res)
                if informer not in self._handled:
                    self._handled.add(informer)
                    informer.add_handlers(on_add=lambda obj, r=res: self._observed(r, obj),
                                          on_update=lambda old, new, r=res: self._updated(r, old, new),
                                          on_delete=lambda obj, r=res: self._deleted(r, obj))
                informer.start()
        for informer in removed:
            await informer.stop()
        return True

    def _observed(self, res: Resource, obj: Obj) -> None:
        """Check an object with owners, an owner being deleted, and owners waiting for this dependent."""
        if _refs(obj) or _deleting_with(obj, ORPHAN) or _deleting_with(obj, FOREGROUND):
            self.enqueue([_key(res, obj)])
        self._enqueue_waiting_owners(obj)

    def _updated(self, res: Resource, old: Obj, new: Obj) -> None:
        """Only changes of owners or of deletion state matter."""
        old_meta, new_meta = old["metadata"], new["metadata"]
        if (_refs(old) != _refs(new) or old_meta.get("deletionTimestamp") != new_meta.get("deletionTimestamp")
                or old_meta.get("finalizers") != new_meta.get("finalizers")):
            self._observed(res, new)
            self._enqueue_waiting_owners(old)

    def _deleted(self, res: Resource, obj: Obj) -> None:
        """A deleted object's dependents may now be dangling; its foreground owners may be unblocked."""
        self.enqueue(_key(r, d) for r, d in self._dependents(obj))
        self._enqueue_waiting_owners(obj)

    def _enqueue_waiting_owners(self, obj: Obj) -> None:
        """Queue the cached owners of obj that are being deleted (they may wait for it)."""
        for ref in _refs(obj):
            found = self._cached_owner(obj, ref)
            if found is not None and found[1]["metadata"].get("deletionTimestamp"):
                self.enqueue([_key(*found)])

    def _owner_resource(self, ref: Obj) -> Resource | None:
        """The served resource of an ownerReference's group and kind."""
        return self._kinds.get((ref.get("apiVersion", "").rpartition("/")[0], ref.get("kind", "")))

    def _cached_owner(self, dependent: Obj, ref: Obj) -> tuple[Resource, Obj] | None:
        """The owner a reference names, from the cache, if its uid matches."""
        res = self._owner_resource(ref)
        informer = self._watching.get(_rid(res)) if res else None
        if res is None or informer is None:
            return None
        owner = informer.store.get_by_name(dependent["metadata"].get("namespace") if res.namespaced else None,
                                           ref["name"])
        return (res, owner) if owner is not None and owner["metadata"].get("uid") == ref.get("uid") else None

    def _dependents(self, owner: Obj) -> list[tuple[Resource, Obj]]:
        """Cached objects with an ownerReference to owner's uid (in its namespace when it is namespaced)."""
        namespace = owner["metadata"].get("namespace")
        return [(self._resources[rid], dep) for rid, informer in self._watching.items()
                for dep in informer.store.by_index(OWNER_UID_INDEX, owner["metadata"].get("uid", ""))
                if not namespace or dep["metadata"].get("namespace") == namespace]

    async def reconcile(self, key: str) -> Requeue | None:
        """Orphan or delete the dependents of an owner being deleted; delete a dependent whose owners are gone."""
        rid, _, obj_key = key.partition("|")
        informer = self._watching.get(rid)
        obj = informer.store.get(obj_key) if informer else None
        if obj is None:
            return None
        res = self._resources[rid]
        if _deleting_with(obj, ORPHAN):
            await self._orphan_dependents(res, obj)
        elif _deleting_with(obj, FOREGROUND):
            await self._delete_dependents(res, obj)
        elif _refs(obj) and not obj["metadata"].get("deletionTimestamp"):
            return await self._check_owners(res, obj)
        return None

    async def _orphan_dependents(self, res: Resource, owner: Obj) -> None:
        """Remove the references to owner from its dependents, then the orphan finalizer."""
        uid = owner["metadata"]["uid"]
        for dep_res, dep in self._dependents(owner):
            await self._patch_meta(dep_res, dep, ownerReferences=[r for r in _refs(dep) if r.get("uid") != uid] or None)
        await self._remove_finalizer(res, owner, ORPHAN)

    async def _delete_dependents(self, res: Resource, owner: Obj) -> None:
        """Foreground: dependents get deleted by their own reconcile; the owner goes when none blocks it."""
        uid = owner["metadata"]["uid"]
        dependents = self._dependents(owner)
        blocking = [dep for _, dep in dependents
                    if any(r.get("uid") == uid and r.get("blockOwnerDeletion") for r in _refs(dep))]
        if blocking:
            self.enqueue(_key(r, d) for r, d in dependents)
        else:
            await self._remove_finalizer(res, owner, FOREGROUND)

    async def _check_owners(self, res: Resource, dep: Obj) -> Requeue | None:
        """Upstream's attemptToDeleteItem: keep, un-reference dangling owners, or delete the dependent."""
        states = [(ref, await self._owner_state(dep, ref)) for ref in _refs(dep)]
        if any(state == UNKNOWN for _, state in states):
            log.info("%s: %s has an owner of a kind not served (yet); retrying", self.name, key_of(dep))
            return Requeue()
        if any(state == SOLID for _, state in states):
            if all(state == SOLID for _, state in states):
                return None
            refs = [{**ref, "blockOwnerDeletion": False} if state == WAITING else ref
                    for ref, state in states if state != DANGLING]
            await self._patch_meta(res, dep, ownerReferences=refs)
            return None
        meta = dep["metadata"]
        try:
            latest = await self.client.get(res, meta["name"], meta.get("namespace"))
        except ApiError as exc:
            if is_not_found(exc):
                return None
            raise
        if latest["metadata"].get("uid") != meta.get("uid") or _refs(latest) != _refs(dep):
            return None  # changed since cached: the informer's update event brings it back
        finalizers = meta.get("finalizers") or []
        if any(state == WAITING for _, state in states) and self._dependents(dep):
            policy = "Foreground"
        else:
            policy = "Orphan" if ORPHAN in finalizers else "Foreground" if FOREGROUND in finalizers else "Background"
        try:
            await self.client.delete(res, meta["name"], meta.get("namespace"), propagation_policy=policy,
                                     preconditions={"uid": meta["uid"]})
        except ApiError as exc:
            if not (is_not_found(exc) or is_conflict(exc)):
                raise
        return None

    async def _owner_state(self, dep: Obj, ref: Obj) -> str:
        """SOLID, DANGLING (gone, or same name with another uid), WAITING (foreground) or UNKNOWN kind."""
        res = self._owner_resource(ref)
        if res is None:
            return UNKNOWN
        namespace = dep["metadata"].get("namespace")
        if res.namespaced and not namespace:
            return DANGLING  # a cluster-scoped dependent cannot have a namespaced owner
        cached = self._cached_owner(dep, ref)
        if cached is not None:
            owner = cached[1]
        else:
            try:
                owner = await self.client.get(res, ref["name"], namespace if res.namespaced else None)
            except ApiError as exc:
                if is_not_found(exc):
                    return DANGLING
                raise
            if owner["metadata"].get("uid") != ref.get("uid"):
                return DANGLING
        return WAITING if _deleting_with(owner, FOREGROUND) else SOLID

    async def _remove_finalizer(self, res: Resource, obj: Obj, finalizer: str) -> None:
        """Drop one finalizer; the server removes the object when none is left."""
        remaining = [f for f in obj["metadata"].get("finalizers") or [] if f != finalizer]
        await self._patch_meta(res, obj, finalizers=remaining or None)

    async def _patch_meta(self, res: Resource, obj: Obj, **fields: Any) -> None:
        """Merge-patch metadata fields, guarded by the cached resourceVersion (a conflict retries the key)."""
        meta = obj["metadata"]
        patch = {"metadata": {"resourceVersion": meta["resourceVersion"], **fields}}
        try:
            await self.client.patch(res, meta["name"], patch, meta.get("namespace"))
        except ApiError as exc:
            if not is_not_found(exc):
                raise
