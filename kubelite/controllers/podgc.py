"""Pod garbage collector: deletes terminated pods over a threshold, orphaned pods, unscheduled terminating pods."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from kubelite.client.controller import Controller, Requeue
from kubelite.client.errors import ApiError, is_conflict, is_not_found
from kubelite.client.resources import NODES, PODS
from kubelite.client.store import NODE_NAME_INDEX
from kubelite.client.timestamps import now_time

Obj = dict[str, Any]
GC_KEY = "podgc"
TERMINAL = ("Succeeded", "Failed")
NODE_GONE = {"type": "DisruptionTarget", "status": "True", "reason": "DeletionByPodGC",
             "message": "PodGC: node no longer exists"}


class PodGC(Controller):
    """One key, reconciled every gc_period over the pod and node caches (upstream's periodic gc loop)."""

    name = "podgc"
    workers = 1
    terminated_pod_threshold: ClassVar[int] = 12500
    """--terminated-pod-gc-threshold: terminated pods kept before the oldest go (0 or less: never)."""
    gc_period: ClassVar[float] = 20.0
    quarantine: ClassVar[float] = 40.0
    """Seconds a node must be missing before its pods count as orphaned."""

    def setup(self) -> None:
        """Cached pods and nodes; the single key is queued now and requeued after every pass."""
        self.pods = self.informer(PODS)
        self.nodes = self.informer(NODES)
        self._missing_since: dict[str, float] = {}
        self.enqueue([GC_KEY])

    async def reconcile(self, key: str) -> Requeue:
        """One pass over all three kinds of garbage."""
        pods = self.pods.store.list()
        await self._gc_terminated([p for p in pods if (p.get("status") or {}).get("phase") in TERMINAL])
        await self._gc_orphaned(pods)
        await asyncio.gather(*(self._mark_failed_and_delete(p) for p in pods
                               if p["metadata"].get("deletionTimestamp") and not p["spec"].get("nodeName")))
        return Requeue(after=self.gc_period)

    async def _gc_terminated(self, terminated: list[Obj]) -> None:
        """Delete the oldest terminated pods beyond the threshold."""
        excess = len(terminated) - self.terminated_pod_threshold
        if self.terminated_pod_threshold <= 0 or excess <= 0:
            return
        terminated.sort(key=lambda p: (p["metadata"].get("creationTimestamp") or "", p["metadata"]["name"]))
        await asyncio.gather(*(self._delete(p) for p in terminated[:excess]))

    async def _gc_orphaned(self, pods: list[Obj]) -> None:
        """Delete the pods of nodes missing from the cache for `quarantine` seconds and confirmed gone by a GET."""
        now = asyncio.get_running_loop().time()
        missing = {p["spec"]["nodeName"] for p in pods if p["spec"].get("nodeName")} - set(self.nodes.store.keys())
        self._missing_since = {node: self._missing_since.get(node, now) for node in missing}
        for node, since in self._missing_since.items():
            if now - since < self.quarantine:
                continue
            try:
                await self.client.get(NODES, node)
                continue
            except ApiError as exc:
                if not is_not_found(exc):
                    raise
            await asyncio.gather(*(self._mark_failed_and_delete(p, NODE_GONE)
                                   for p in self.pods.store.by_index(NODE_NAME_INDEX, node)))

    async def _mark_failed_and_delete(self, pod: Obj, condition: Obj | None = None) -> None:
        """Set phase Failed (and a condition) on a pod not yet terminal, then force-delete it."""
        meta = pod["metadata"]
        if (pod.get("status") or {}).get("phase") not in TERMINAL:
            status: Obj = {"phase": "Failed"}
            if condition is not None:
                status["conditions"] = [{**condition, "lastTransitionTime": now_time()}]
            try:
                await self.client.patch(PODS, meta["name"], {"status": status}, meta["namespace"], type="strategic",
                                        subresource="status")
            except ApiError as exc:
                if is_not_found(exc):
                    return
                raise
        await self._delete(pod)

    async def _delete(self, pod: Obj) -> None:
        """Delete at once (grace 0), only this very pod (uid precondition)."""
        meta = pod["metadata"]
        try:
            await self.client.delete(PODS, meta["name"], meta["namespace"], grace_period_seconds=0,
                                     preconditions={"uid": meta["uid"]})
        except ApiError as exc:
            if not (is_not_found(exc) or is_conflict(exc)):
                raise
