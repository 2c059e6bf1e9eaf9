"""PVC protection controller: a claim being deleted keeps its kubernetes.io/pvc-protection finalizer until no pod
that has not finished uses it, so a running pod's volume (and the data behind it) is never taken away."""

from __future__ import annotations

import copy
from typing import Any

from kubelite.client.controller import Controller, Requeue
from kubelite.client.resources import PERSISTENTVOLUMECLAIMS, PODS
from kubelite.client.store import split_key
from kubelite.scheduler.volumes import PVC_PROTECTION, pod_claims

Obj = dict[str, Any]
FINISHED = ("Succeeded", "Failed")


def claims_of(pod: Obj) -> list[str]:
    """Keys of the claims a pod's volumes use."""
    return [f"{pod['metadata']['namespace']}/{name}" for name, _ in pod_claims(pod)]


def uses(pod: Obj, key: str) -> bool:
    """Whether a pod that has not finished uses the claim."""
    return (pod.get("status") or {}).get("phase") not in FINISHED and key in claims_of(pod)


class PVCProtectionController(Controller):
    """Keys are claim keys; a pod's changes queue the claims it uses."""

    name = "pvc-protection"

    def setup(self) -> None:
        """Claims, and pods (a pod that finishes or goes may free a claim)."""
        self.claims = self.watch(PERSISTENTVOLUMECLAIMS)
        self.pods = self.watch(PODS, claims_of)

    async def reconcile(self, key: str) -> Requeue | None:
        """Take the finalizer off a deleted claim no pod uses: first by the cache, then confirmed by a live list
        (the cache may not have seen a pod created a moment ago)."""
        claim = self.claims.store.get(key)
        if claim is None or not claim["metadata"].get("deletionTimestamp"):
            return None
        if PVC_PROTECTION not in (claim["metadata"].get("finalizers") or []):
            return None
        namespace, _ = split_key(key)
        if any(uses(pod, key) for pod in self.pods.store.by_index("namespace", namespace or "")):
            return None
        live = (await self.client.list(PODS, namespace))["items"]
        if any(uses(pod, key) for pod in live):
            return None
        claim = copy.deepcopy(claim)
        claim["metadata"]["finalizers"] = [f for f in claim["metadata"]["finalizers"] if f != PVC_PROTECTION]
        await self.client.update(PERSISTENTVOLUMECLAIMS, claim)
        return None
