"""ReplicaSets and ReplicationControllers: keep spec.replicas pods of the template running (upstream replicaset)."""

from __future__ import annotations

import asyncio
import copy
from collections import Counter
from typing import ClassVar

from kubelite.api.selectors import LabelSelector, from_label_selector
from kubelite.client.controller import Requeue
from kubelite.client.resources import PODS, REPLICASETS, REPLICATIONCONTROLLERS, Resource
from kubelite.client.store import NAMESPACE_INDEX, OWNER_UID_INDEX, key_of
from kubelite.client.timestamps import format_time
from kubelite.controllers.podcontrol import (
    BURST_REPLICAS,
    Obj,
    WorkloadController,
    controller_of,
    deletion_rank,
    describe,
    is_active,
    is_available,
    is_ready,
    labels_of,
    pod_from_template,
    slow_start_batch,
    utcnow,
)


class ReplicaSetController(WorkloadController):
    """Creates and deletes pods so that each ReplicaSet has spec.replicas active pods matching its selector."""

    name = "replicaset"
    component = "replicaset-controller"
    kind = "ReplicaSet"
    resource: ClassVar[Resource] = REPLICASETS

    def setup(self) -> None:
        """Watch the sets and their pods."""
        super().setup()
        self.sets = self.watch(self.resource)
        self.pods = self.watch_pods(self.sets)

    async def reconcile(self, key: str) -> Requeue | None:
        """Claim the pods, create or delete the difference once expectations are met, then write status."""
        owner = self.sets.store.get(key)
        if owner is None:
            self.expectations.forget(key)
            return None
        needs_sync = self.expectations.satisfied(key)
        selector = self.selector(owner)
        active = [p for p in self.pods.store.by_index(NAMESPACE_INDEX, owner["metadata"]["namespace"]) if is_active(p)]
        pods = await self.claim(PODS, owner, active, lambda p: selector.matches(labels_of(p)))
        error = None
        if needs_sync and not owner["metadata"].get("deletionTimestamp"):
            error = await self.manage(key, owner, pods)
        status = self.status_of(owner, pods, error)
        await self.write_status(self.resource, owner, status)
        if error is not None:
            raise error
        replicas = owner["spec"].get("replicas", 1)
        min_ready = owner["spec"].get("minReadySeconds") or 0
        if min_ready and status["readyReplicas"] == replicas and status["availableReplicas"] != replicas:
            return Requeue(after=min_ready)
        return None

    async def manage(self, key: str, owner: Obj, pods: list[Obj]) -> Exception | None:
        """Create or delete pods (at most a burst per sync, creations in slow-start batches)."""
        diff = len(pods) - owner["spec"].get("replicas", 1)
        meta = owner["metadata"]
        if diff < 0:
            count = min(-diff, BURST_REPLICAS)
            self.expectations.expect(key, creations=count)
            template = owner["spec"].get("template") or {}

            async def create(_: int) -> None:
                """Create one pod of the template."""
                await self.create_pod(owner, pod_from_template(template, owner, generateName=f"{meta['name']}-"))

            successes, error = await slow_start_batch(count, create)
            self.expectations.lower(key, creations=count - successes)
            return error
        if diff > 0:
            doomed = self.pods_to_delete(owner, pods, min(diff, BURST_REPLICAS))
            self.expectations.expect(key, deletions=[key_of(p) for p in doomed])

            async def delete(pod: Obj) -> Exception | None:
                """Delete one pod; a failure is returned and no longer expected."""
                try:
                    if not await self.delete_pod(owner, pod):
                        self.expectations.deletion_observed(key, key_of(pod))
                except Exception as exc:
                    self.expectations.deletion_observed(key, key_of(pod))
                    return exc
                return None

            errors = [e for e in await asyncio.gather(*(delete(p) for p in doomed)) if e is not None]
            return errors[0] if errors else None
        return None

    def pods_to_delete(self, owner: Obj, pods: list[Obj], count: int) -> list[Obj]:
        """The `count` pods to delete first, pods doubled up on a node with their siblings ranking higher."""
        ref = controller_of(owner)
        siblings = self.sets.store.by_index(OWNER_UID_INDEX, ref["uid"]) if ref else [owner]
        related = [p for s in siblings for p in self.pods.store.by_index(OWNER_UID_INDEX, s["metadata"]["uid"])
                   if is_active(p)]
        on_node = Counter((p.get("spec") or {}).get("nodeName", "") for p in related)
        return sorted(pods, key=lambda p: deletion_rank(p, on_node[(p.get("spec") or {}).get("nodeName", "")]))[:count]

    def status_of(self, owner: Obj, pods: list[Obj], error: Exception | None) -> Obj:
        """Replica counts from the claimed pods, and the ReplicaFailure condition after a failed create or delete."""
        now = utcnow()
        template_labels = ((owner["spec"].get("template") or {}).get("metadata") or {}).get("labels") or {}
        min_ready = owner["spec"].get("minReadySeconds") or 0
        status = copy.deepcopy(owner.get("status") or {})
        status.update(
            replicas=len(pods),
            fullyLabeledReplicas=sum(labels_of(p).items() >= template_labels.items() for p in pods),
            readyReplicas=sum(is_ready(p) for p in pods),
            availableReplicas=sum(is_available(p, min_ready, now) for p in pods),
            observedGeneration=owner["metadata"].get("generation", 0))
        conditions = status.get("conditions") or []
        failing = any(c.get("type") == "ReplicaFailure" for c in conditions)
        if error is not None and not failing:
            reason = "FailedCreate" if len(pods) < owner["spec"].get("replicas", 1) else "FailedDelete"
            conditions.append({"type": "ReplicaFailure", "status": "True", "lastTransitionTime": format_time(now),
                               "reason": reason, "message": describe(error)})
        elif error is None and failing:
            conditions = [c for c in conditions if c.get("type") != "ReplicaFailure"]
        if conditions:
            status["conditions"] = conditions
        else:
            status.pop("conditions", None)
        return status


class ReplicationManager(ReplicaSetController):
    """The same for ReplicationControllers, whose selector is a plain label map."""

    name = "replicationcontroller"
    component = "replication-controller"
    kind = "ReplicationController"
    resource = REPLICATIONCONTROLLERS

    def selector(self, owner: Obj) -> LabelSelector:
        """spec.selector as equality requirements."""
        return from_label_selector({"matchLabels": owner["spec"].get("selector") or {}})
