"""PV protection controller: a volume being deleted keeps its kubernetes.io/pv-protection finalizer while it is
Bound to a claim."""

from __future__ import annotations

import copy

from kubelite.client.controller import Controller, Requeue
from kubelite.client.resources import PERSISTENTVOLUMES
from kubelite.scheduler.volumes import PV_PROTECTION


class PVProtectionController(Controller):
    """Keys are volume names."""

    name = "pv-protection"

    def setup(self) -> None:
        """Volumes."""
        self.volumes = self.watch(PERSISTENTVOLUMES)

    async def reconcile(self, key: str) -> Requeue | None:
        """Take the finalizer off a deleted volume that is no longer Bound."""
        volume = self.volumes.store.get(key)
        if volume is None or not volume["metadata"].get("deletionTimestamp"):
            return None
        if PV_PROTECTION not in (volume["metadata"].get("finalizers") or []):
            return None
        if (volume.get("status") or {}).get("phase") == "Bound":
            return None
        volume = copy.deepcopy(volume)
        volume["metadata"]["finalizers"] = [f for f in volume["metadata"]["finalizers"] if f != PV_PROTECTION]
        await self.client.update(PERSISTENTVOLUMES, volume)
        return None
