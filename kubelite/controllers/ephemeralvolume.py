"""Ephemeral volume controller: each generic ephemeral volume of a pod gets its PersistentVolumeClaim, named
<pod>-<volume>, made from the volume's claim template and owned by the pod (so it is deleted with the pod)."""

from __future__ import annotations

import copy
from typing import Any

from kubelite.client.controller import Controller, Requeue, owner_keys
from kubelite.client.errors import ApiError, is_already_exists
from kubelite.client.resources import PERSISTENTVOLUMECLAIMS, PODS
from kubelite.client.store import key_of

Obj = dict[str, Any]


def ephemeral_volumes(pod: Obj) -> list[Obj]:
    return [v for v in (pod.get("spec") or {}).get("volumes") or [] if v.get("ephemeral") is not None]


def pods_with_ephemeral_volumes(pod: Obj) -> list[str]:
    return [key_of(pod)] if ephemeral_volumes(pod) else []


def claim_for(pod: Obj, volume: Obj) -> Obj:
    """The claim of one ephemeral volume: the template's metadata and spec, named and owned as upstream's."""
    meta = pod["metadata"]
    template = volume["ephemeral"].get("volumeClaimTemplate") or {}
    template_meta = template.get("metadata") or {}
    owner = {"apiVersion": "v1", "kind": "Pod", "name": meta["name"], "uid": meta["uid"], "controller": True,
             "blockOwnerDeletion": True}
    claim_meta: Obj = {"name": f"{meta['name']}-{volume['name']}", "ownerReferences": [owner]}
    for field in ("labels", "annotations"):
        if template_meta.get(field):
            claim_meta[field] = dict(template_meta[field])
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": claim_meta,
            "spec": copy.deepcopy(template.get("spec") or {})}


class EphemeralVolumeController(Controller):
    """Keys are pod keys (pods with ephemeral volumes, and the owners of claims that change or go)."""

    name = "ephemeral-volume"

    def setup(self) -> None:
        """Pods with ephemeral volumes; claims owned by pods (a claim deleted too early is made again)."""
        self.pods = self.watch(PODS, pods_with_ephemeral_volumes)
        self.claims = self.watch(PERSISTENTVOLUMECLAIMS, owner_keys("Pod"))

    async def reconcile(self, key: str) -> Requeue | None:
        """Create the claims the pod's ephemeral volumes still lack (one of that name not owned by the pod is
        left alone: the scheduler and the kubelet refuse to use it)."""
        pod = self.pods.store.get(key)
        if pod is None or pod["metadata"].get("deletionTimestamp"):
            return None
        namespace = pod["metadata"]["namespace"]
        for volume in ephemeral_volumes(pod):
            claim = claim_for(pod, volume)
            if self.claims.store.get(f"{namespace}/{claim['metadata']['name']}") is not None:
                continue
            try:
                await self.client.create(PERSISTENTVOLUMECLAIMS, claim, namespace)
            except ApiError as exc:
                if not is_already_exists(exc):
                    raise
        return None
