"""Priority admission: a pod's priorityClassName becomes its spec.priority (and preemptionPolicy)."""

from __future__ import annotations

from kubelite.api.registry import Registry
from kubelite.api.resource import ResourceType
from kubelite.api.strategy import Obj
from kubelite.apiserver import errors
from kubelite.apiserver.objects import ListOptions, ObjectStore

SYSTEM_CLASSES = {"system-cluster-critical": 2000000000, "system-node-critical": 2000001000}


class PriorityAdmission:
    """Resolves PriorityClasses at pod creation, as kube-apiserver's Priority admission plugin does."""

    def __init__(self, store: ObjectStore, registry: Registry):
        self.store = store
        self.classes = registry.get("scheduling.k8s.io", "v1", "priorityclasses")

    async def admit(self, rt: ResourceType, pod: Obj, old: Obj | None) -> None:
        if old is not None or rt.group or rt.plural != "pods" or self.classes is None:
            return
        spec = pod.setdefault("spec", {})
        name = spec.get("priorityClassName")
        if name in SYSTEM_CLASSES:
            return
        if name:
            try:
                chosen = await self.store.get(self.classes, None, name)
            except errors.StatusError:
                raise errors.forbidden("pods", "", pod["metadata"].get("name", ""),
                                       f"no PriorityClass with name {name} was found") from None
        else:
            listed = await self.store.list(self.classes, None, ListOptions())
            defaults = [c for c in listed["items"] if c.get("globalDefault")]
            if not defaults:
                return
            chosen = min(defaults, key=lambda c: c.get("value", 0))
            spec["priorityClassName"] = chosen["metadata"]["name"]
        spec["priority"] = chosen.get("value", 0)
        spec["preemptionPolicy"] = chosen.get("preemptionPolicy", "PreemptLowerPriority")
