"""Storage admission, as kube-apiserver's plugins of the same names: DefaultStorageClass gives a new claim without a
class the default StorageClass; PersistentVolumeClaimResize lets a claim grow only if its class allows expansion;
StorageObjectInUseProtection puts the protection finalizers on new claims and volumes, so that neither goes away
while a pod or a claim still uses it (the pvc- and pv-protection controllers take them off)."""

from __future__ import annotations

from kubelite.api.registry import Registry
from kubelite.api.resource import ResourceType
from kubelite.api.strategy import Obj
from kubelite.apiserver import errors
from kubelite.apiserver.objects import ListOptions, ObjectStore
from kubelite.scheduler.volumes import PV_PROTECTION, PVC_PROTECTION, claim_class, default_class, requested_bytes


class DefaultStorageClassAdmission:
    """A claim created with no storageClassName (not even "") gets the default class's name, if there is one."""

    def __init__(self, store: ObjectStore, registry: Registry):
        self.store = store
        self.classes = registry.get("storage.k8s.io", "v1", "storageclasses")

    async def admit(self, rt: ResourceType, obj: Obj, old: Obj | None) -> None:
        if old is not None or rt.group or rt.plural != "persistentvolumeclaims" or self.classes is None:
            return
        if claim_class(obj) is not None:
            return
        chosen = default_class((await self.store.list(self.classes, None, ListOptions()))["items"])
        if chosen is not None:
            obj.setdefault("spec", {})["storageClassName"] = chosen["metadata"]["name"]


class ClaimResizeAdmission:
    """A claim's storage request may grow only when its StorageClass exists and has allowVolumeExpansion."""

    def __init__(self, store: ObjectStore, registry: Registry):
        self.store = store
        self.classes = registry.get("storage.k8s.io", "v1", "storageclasses")

    async def admit(self, rt: ResourceType, obj: Obj, old: Obj | None) -> None:
        if old is None or rt.group or rt.plural != "persistentvolumeclaims" or self.classes is None:
            return
        if requested_bytes(obj) <= requested_bytes(old):
            return
        name = claim_class(obj) or ""
        try:
            storage_class = await self.store.get(self.classes, None, name) if name else None
        except errors.StatusError:
            storage_class = None
        if storage_class is None or not storage_class.get("allowVolumeExpansion"):
            raise errors.forbidden("persistentvolumeclaims", "", obj["metadata"].get("name", ""),
                                   "only dynamically provisioned pvc can be resized and the storageclass that "
                                   "provisions the pvc must support resize")


async def protect_storage_objects(rt: ResourceType, obj: Obj, old: Obj | None) -> None:
    """StorageObjectInUseProtection: the protection finalizer on every new claim and volume."""
    if old is not None or rt.group:
        return
    finalizer = {"persistentvolumeclaims": PVC_PROTECTION, "persistentvolumes": PV_PROTECTION}.get(rt.plural)
    if finalizer is None:
        return
    finalizers = obj["metadata"].setdefault("finalizers", [])
    if finalizer not in finalizers:
        finalizers.append(finalizer)
