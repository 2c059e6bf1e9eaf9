"""PersistentVolume controller: binds claims to volumes, provisions local-path volumes, releases and reclaims.

As kube-controller-manager's persistentvolume-binder: a claim without a class gets the default one; a claim is
bound to the smallest available volume that fits it (or the one pre-bound to it); a claim whose class waits for
its first consumer is bound once the scheduler has annotated the node it chose (volume.kubernetes.io/selected-node),
to a volume that node reaches or to a new directory on it (provisioner kubelite.io/local-path, as k3s's
local-path-provisioner). A volume whose claim is gone is Released, then kept (Retain) or deleted (Delete).
"""

from __future__ import annotations

import copy
from pathlib import PurePosixPath
from typing import Any

from kubelite.client.controller import Controller, Requeue
from kubelite.client.errors import ApiError, is_already_exists, is_not_found
from kubelite.client.resources import NODES, PERSISTENTVOLUMECLAIMS, PERSISTENTVOLUMES, STORAGECLASSES
from kubelite.client.store import key_of
from kubelite.scheduler.volumes import (
    BIND_COMPLETED,
    BOUND_BY_CONTROLLER,
    HOSTNAME_LABEL,
    LOCAL_PATH_FINALIZER,
    LOCAL_PATH_PROVISIONER,
    PROVISIONED_BY,
    SELECTED_NODE,
    STORAGE_PROVISIONER,
    best_volume,
    claim_class,
    claimed_by,
    default_class,
    waits_for_consumer,
)

Obj = dict[str, Any]
CLAIM, VOLUME = "claim:", "volume:"
DEFAULT_STORAGE_PATH = "/var/lib/kubelite/storage"
"""Where local-path volumes go when their class names no `path` parameter."""
NO_PROVISIONER = "kubernetes.io/no-provisioner"


def claim_keys(claim: Obj) -> list[str]:
    """The claim, and the volume it names (a deleted claim releases its volume)."""
    volume_name = (claim.get("spec") or {}).get("volumeName")
    return [CLAIM + key_of(claim), *([VOLUME + volume_name] if volume_name else [])]


def volume_keys(volume: Obj) -> list[str]:
    """The volume, and the claim it names (its binding may be waiting for the volume)."""
    keys = [VOLUME + volume["metadata"]["name"]]
    ref = (volume.get("spec") or {}).get("claimRef")
    if ref and ref.get("name"):
        keys.append(f"{CLAIM}{ref.get('namespace', '')}/{ref['name']}")
    return keys


def claim_ref(claim: Obj) -> Obj:
    meta = claim["metadata"]
    return {"kind": "PersistentVolumeClaim", "apiVersion": "v1", "namespace": meta["namespace"],
            "name": meta["name"], "uid": meta["uid"], "resourceVersion": meta.get("resourceVersion", "")}


def local_path_volume(claim: Obj, storage_class: Obj, node: str) -> Obj:
    """The PersistentVolume the local-path provisioner makes for a claim: a directory on the node, created by the
    agent on first mount and removed by it (the finalizer) when the volume is deleted."""
    meta = claim["metadata"]
    name = f"pvc-{meta['uid']}"
    base = (storage_class.get("parameters") or {}).get("path") or DEFAULT_STORAGE_PATH
    spec = claim.get("spec") or {}
    return {
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": name, "annotations": {PROVISIONED_BY: LOCAL_PATH_PROVISIONER},
                     "finalizers": [LOCAL_PATH_FINALIZER]},
        "spec": {
            "capacity": {"storage": (((spec.get("resources") or {}).get("requests") or {}).get("storage"))},
            "accessModes": list(spec.get("accessModes") or ["ReadWriteOnce"]),
            "persistentVolumeReclaimPolicy": storage_class.get("reclaimPolicy") or "Delete",
            "storageClassName": storage_class["metadata"]["name"],
            "volumeMode": spec.get("volumeMode") or "Filesystem",
            "hostPath": {"path": str(PurePosixPath(base) / f"{name}_{meta['namespace']}_{meta['name']}"),
                         "type": "DirectoryOrCreate"},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": HOSTNAME_LABEL, "operator": "In", "values": [node]}]}]}},
            "claimRef": claim_ref(claim),
        },
    }


class PersistentVolumeController(Controller):
    """Keys are "claim:<namespace>/<name>" and "volume:<name>"."""

    name = "persistentvolume-binder"
    component = "persistentvolume-controller"

    def setup(self) -> None:
        """Claims and volumes (each change queues what it touches); classes and nodes are read from caches. A new
        or changed class, or an unclaimed volume, queues every pending claim (it may now bind or be provisioned)."""
        self.claims = self.watch(PERSISTENTVOLUMECLAIMS, claim_keys)
        self.volumes = self.watch(PERSISTENTVOLUMES, volume_keys)
        self.classes = self.informer(STORAGECLASSES)
        self.nodes = self.informer(NODES)
        self.classes.add_handlers(on_add=lambda _: self._pending_claims(),
                                  on_update=lambda _old, _new: self._pending_claims())
        self.volumes.add_handlers(on_add=self._volume_freed, on_update=lambda _old, new: self._volume_freed(new))

    def _volume_freed(self, volume: Obj) -> None:
        """An unclaimed volume may be what a pending claim waits for."""
        if not (volume.get("spec") or {}).get("claimRef"):
            self._pending_claims()

    def _pending_claims(self) -> None:
        self.enqueue(CLAIM + key_of(c) for c in self.claims.store.list()
                     if (c.get("status") or {}).get("phase") != "Bound")

    async def reconcile(self, key: str) -> Requeue | None:
        if key.startswith(CLAIM):
            claim = self.claims.store.get(key.removeprefix(CLAIM))
            if claim is not None and not claim["metadata"].get("deletionTimestamp"):
                await self._sync_claim(claim)
        else:
            volume = self.volumes.store.get(key.removeprefix(VOLUME))
            if volume is not None:
                await self._sync_volume(volume)
        return None

    # ---- claims

    async def _sync_claim(self, claim: Obj) -> None:
        class_name = claim_class(claim)
        if class_name is None:
            default = default_class(self.classes.store.list())
            if default is not None:
                patched = copy.deepcopy(claim)
                patched["spec"]["storageClassName"] = default["metadata"]["name"]
                await self.client.update(PERSISTENTVOLUMECLAIMS, patched)
                return
        volume_name = (claim.get("spec") or {}).get("volumeName")
        if volume_name:
            await self._sync_bound_claim(claim, volume_name)
        else:
            await self._find_volume(claim, class_name or "")

    async def _find_volume(self, claim: Obj, class_name: str) -> None:
        """Bind an unbound claim to a fitting volume, provision one, or say why it waits."""
        storage_class = self.classes.store.get(class_name) if class_name else None
        node_name = ((claim["metadata"].get("annotations") or {}).get(SELECTED_NODE))
        if waits_for_consumer(storage_class) and not node_name:
            self._event(claim, "Normal", "WaitForFirstConsumer",
                        "waiting for first consumer to be created before binding")
            return
        node = None
        if node_name:
            labels = ((self.nodes.store.get(node_name) or {}).get("metadata") or {}).get("labels") or {}
            node = ({HOSTNAME_LABEL: node_name, **labels}, node_name)
        volume = best_volume(claim, self.volumes.store.list(), node)
        if volume is not None:
            await self._bind(claim, volume)
            return
        provisioner = (storage_class or {}).get("provisioner", "")
        if storage_class is None:
            if class_name:
                self._event(claim, "Warning", "ProvisioningFailed",
                            f'storageclass.storage.k8s.io "{class_name}" not found')
            else:
                self._event(claim, "Normal", "FailedBinding",
                            "no persistent volumes available for this claim and no storage class is set")
        elif provisioner == LOCAL_PATH_PROVISIONER:
            if node_name:
                await self._provision(claim, storage_class, node_name)
            else:
                self._event(claim, "Warning", "ProvisioningFailed", "the local-path provisioner needs a node: give "
                            "the class volumeBindingMode WaitForFirstConsumer")
        elif provisioner == NO_PROVISIONER:
            self._event(claim, "Normal", "FailedBinding", "no persistent volumes available for this claim")
        else:
            await self._annotate(claim, STORAGE_PROVISIONER, provisioner)
            self._event(claim, "Normal", "ExternalProvisioning",
                        f"Waiting for a volume to be created either by the external provisioner '{provisioner}' "
                        "or manually by the system administrator. If volume creation is delayed, please verify "
                        "that the provisioner is running and correctly registered.")

    async def _provision(self, claim: Obj, storage_class: Obj, node_name: str) -> None:
        volume = local_path_volume(claim, storage_class, node_name)
        await self._annotate(claim, STORAGE_PROVISIONER, LOCAL_PATH_PROVISIONER)
        try:
            created = await self.client.create(PERSISTENTVOLUMES, volume)
        except ApiError as exc:
            if not is_already_exists(exc):
                self._event(claim, "Warning", "ProvisioningFailed", f"failed to provision volume: {exc}")
                raise
            created = await self.client.get(PERSISTENTVOLUMES, volume["metadata"]["name"])
        else:
            self._event(claim, "Normal", "ProvisioningSucceeded",
                        f"Successfully provisioned volume {created['metadata']['name']} on node {node_name}")
        if claimed_by(created, claim):
            await self._bind(claim, created)

    async def _sync_bound_claim(self, claim: Obj, volume_name: str) -> None:
        """A claim naming its volume: finish the binding, or report the volume taken or lost."""
        volume = self.volumes.store.get(volume_name)
        status = claim.get("status") or {}
        if volume is None:
            if status.get("phase") == "Bound":
                self._event(claim, "Warning", "ClaimLost", "Bound claim has lost its PersistentVolume. Data on the "
                                                           "volume is lost!")
                await self._claim_status(claim, {"phase": "Lost"})
            return
        ref = (volume.get("spec") or {}).get("claimRef")
        if ref and not claimed_by(volume, claim):
            self._event(claim, "Warning", "FailedBinding", f'volume "{volume_name}" already bound to a different '
                                                           'claim.')
            return
        await self._bind(claim, volume)

    async def _bind(self, claim: Obj, volume: Obj) -> None:
        """Both halves of a binding, each write only if needed: the volume's claimRef and phase, then the
        claim's volumeName, annotations and phase with the volume's capacity and access modes."""
        name = volume["metadata"]["name"]
        ref = (volume.get("spec") or {}).get("claimRef") or {}
        if ref.get("uid") != claim["metadata"]["uid"]:
            volume = copy.deepcopy(volume)
            volume["spec"]["claimRef"] = claim_ref(claim)
            volume["metadata"].setdefault("annotations", {})[BOUND_BY_CONTROLLER] = "yes"
            volume = await self.client.update(PERSISTENTVOLUMES, volume)
        if (volume.get("status") or {}).get("phase") != "Bound":
            volume = await self._volume_status(volume, {"phase": "Bound"})
        spec, annotations = claim.get("spec") or {}, claim["metadata"].get("annotations") or {}
        if spec.get("volumeName") != name or annotations.get(BIND_COMPLETED) != "yes":
            claim = copy.deepcopy(claim)
            wanted = {BIND_COMPLETED: "yes"}
            if spec.get("volumeName") != name:
                wanted[BOUND_BY_CONTROLLER] = "yes"
            claim["metadata"]["annotations"] = {**annotations, **wanted}
            claim["spec"]["volumeName"] = name
            claim = await self.client.update(PERSISTENTVOLUMECLAIMS, claim)
        vspec = volume.get("spec") or {}
        bound = {"phase": "Bound", "accessModes": vspec.get("accessModes") or [],
                 "capacity": dict(vspec.get("capacity") or {})}
        if any((claim.get("status") or {}).get(k) != v for k, v in bound.items()):
            await self._claim_status(claim, bound)

    # ---- volumes

    async def _sync_volume(self, volume: Obj) -> None:
        """A volume's phase from its claimRef: Available, Bound, or Released (and reclaimed) once its claim is gone."""
        ref = (volume.get("spec") or {}).get("claimRef")
        phase = (volume.get("status") or {}).get("phase")
        if not ref or not ref.get("uid"):
            if phase != "Available":
                await self._volume_status(volume, {"phase": "Available"})
            return
        claim = await self._live_claim(ref)
        if claim is not None and claim["metadata"]["uid"] == ref["uid"]:
            volume_name = (claim.get("spec") or {}).get("volumeName")
            if volume_name == volume["metadata"]["name"] and phase != "Bound":
                await self._volume_status(volume, {"phase": "Bound"})
            elif volume_name and volume_name != volume["metadata"]["name"]:
                await self._unbind(volume)
            return
        if phase not in ("Released", "Failed"):
            volume = await self._volume_status(volume, {"phase": "Released"})
        await self._reclaim(volume)

    async def _live_claim(self, ref: Obj) -> Obj | None:
        """The claim a volume names, from the cache or, when the cache lacks it, from the API server (the cache
        may not have seen a new claim yet: a volume must not be released on a stale read)."""
        namespace, name = ref.get("namespace", ""), ref.get("name", "")
        cached = self.claims.store.get(f"{namespace}/{name}")
        if cached is not None:
            return cached
        try:
            return await self.client.get(PERSISTENTVOLUMECLAIMS, name, namespace)
        except ApiError as exc:
            if is_not_found(exc):
                return None
            raise

    async def _unbind(self, volume: Obj) -> None:
        """A volume this controller bound to a claim that ended up elsewhere: free it again."""
        if ((volume["metadata"].get("annotations") or {}).get(BOUND_BY_CONTROLLER)) != "yes":
            return
        volume = copy.deepcopy(volume)
        volume["spec"].pop("claimRef", None)
        volume["metadata"]["annotations"].pop(BOUND_BY_CONTROLLER, None)
        volume = await self.client.update(PERSISTENTVOLUMES, volume)
        await self._volume_status(volume, {"phase": "Available"})

    async def _reclaim(self, volume: Obj) -> None:
        """Apply the reclaim policy of a released volume: keep it, or delete the volumes this controller made."""
        policy = (volume.get("spec") or {}).get("persistentVolumeReclaimPolicy") or "Retain"
        name = volume["metadata"]["name"]
        if policy == "Retain" or volume["metadata"].get("deletionTimestamp"):
            return
        provisioned = (volume["metadata"].get("annotations") or {}).get(PROVISIONED_BY) == LOCAL_PATH_PROVISIONER
        if policy == "Delete" and provisioned:
            try:
                await self.client.delete(PERSISTENTVOLUMES, name,
                                         preconditions={"uid": volume["metadata"]["uid"]})
            except ApiError as exc:
                if not is_not_found(exc):
                    raise
            return
        message = (f'error getting deleter volume plugin for volume "{name}": no deletable volume plugin matched'
                   if policy == "Delete" else f"recycling volume {name} is not supported")
        if (volume.get("status") or {}).get("phase") != "Failed":
            self._event(volume, "Warning", "VolumeFailedDelete" if policy == "Delete" else "VolumeFailedRecycle",
                        message)
            await self._volume_status(volume, {"phase": "Failed", "message": message})

    # ---- writes

    async def _annotate(self, claim: Obj, key: str, value: str) -> None:
        if ((claim["metadata"].get("annotations") or {}).get(key)) != value:
            await self.client.patch(PERSISTENTVOLUMECLAIMS, claim["metadata"]["name"],
                                    {"metadata": {"annotations": {key: value}}}, claim["metadata"]["namespace"])

    async def _claim_status(self, claim: Obj, status: Obj) -> Obj:
        claim = copy.deepcopy(claim)
        claim["status"] = {**(claim.get("status") or {}), **status}
        return await self.client.update_status(PERSISTENTVOLUMECLAIMS, claim)

    async def _volume_status(self, volume: Obj, status: Obj) -> Obj:
        volume = copy.deepcopy(volume)
        volume["status"] = {k: v for k, v in (volume.get("status") or {}).items() if k not in ("message", "reason")}
        volume["status"].update(status)
        return await self.client.update_status(PERSISTENTVOLUMES, volume)

    def _event(self, obj: Obj, type_: str, reason: str, message: str) -> None:
        kind = "PersistentVolumeClaim" if obj["metadata"].get("namespace") else "PersistentVolume"
        self.recorder.event({"kind": kind, "apiVersion": "v1", "metadata": obj["metadata"]}, type_, reason, message)

