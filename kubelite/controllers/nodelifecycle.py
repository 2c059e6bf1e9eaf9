"""Node lifecycle (silent nodes go Unknown, taints follow conditions) and taint-based eviction of pods."""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections.abc import Callable
from typing import Any, ClassVar

from kubelite.client.controller import Controller, Requeue
from kubelite.client.errors import ApiError, is_not_found
from kubelite.client.informer import SharedInformerFactory
from kubelite.client.resources import LEASES, NODES, PODS
from kubelite.client.rest import ApiClient
from kubelite.client.store import NODE_NAME_INDEX, key_of, split_key
from kubelite.client.timestamps import now_time, parse_time

log = logging.getLogger(__name__)

Obj = dict[str, Any]
LEASE_NAMESPACE = "kube-node-lease"
NOT_READY = "node.kubernetes.io/not-ready"
UNREACHABLE = "node.kubernetes.io/unreachable"
UNSCHEDULABLE = "node.kubernetes.io/unschedulable"
MONITORED_CONDITIONS = ("Ready", "MemoryPressure", "DiskPressure", "PIDPressure")
NO_SCHEDULE_TAINTS = {
    ("Ready", "False"): NOT_READY,
    ("Ready", "Unknown"): UNREACHABLE,
    ("MemoryPressure", "True"): "node.kubernetes.io/memory-pressure",
    ("DiskPressure", "True"): "node.kubernetes.io/disk-pressure",
    ("PIDPressure", "True"): "node.kubernetes.io/pid-pressure",
    ("NetworkUnavailable", "True"): "node.kubernetes.io/network-unavailable",
}
"""The NoSchedule taint each (condition, status) calls for (upstream's TaintNodesByCondition)."""
MANAGED = {(key, "NoSchedule") for key in (*NO_SCHEDULE_TAINTS.values(), UNSCHEDULABLE)} | {
    (NOT_READY, "NoExecute"), (UNREACHABLE, "NoExecute")}
MONITOR_KEY = "<monitor>"
"""The queue key of the periodic health pass (no node can have this name)."""


def condition(obj: Obj, type_: str) -> Obj | None:
    """The status condition of a type, or None."""
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == type_), None)


def ready_status(node: Obj) -> str:
    """The node's Ready condition status; "" when it has none (a kubelet that never posted status)."""
    ready = condition(node, "Ready")
    return (ready.get("status") or "Unknown") if ready else ""


def mark_unknown(node: Obj, now: str) -> bool:
    """Set the monitored conditions to Unknown as upstream does for a silent kubelet; True if anything changed."""
    status = node.setdefault("status", {})
    conditions = status.setdefault("conditions", [])
    changed = False
    for type_ in MONITORED_CONDITIONS:
        current = condition(node, type_)
        if current is None:
            conditions.append({"type": type_, "status": "Unknown", "reason": "NodeStatusNeverUpdated",
                               "message": "Kubelet never posted node status.",
                               "lastHeartbeatTime": node["metadata"].get("creationTimestamp"),
                               "lastTransitionTime": now})
            changed = True
        elif current.get("status") != "Unknown":
            current.update(status="Unknown", reason="NodeStatusUnknown",
                           message="Kubelet stopped posting node status.", lastTransitionTime=now)
            changed = True
    return changed


def desired_taints(node: Obj, evictions_enabled: bool, now: str) -> list[Obj]:
    """The node's taints with the managed ones made to match its conditions (existing ones kept as they are)."""
    wanted: set[tuple[str, str]] = set()
    for type_, status in ((c.get("type"), c.get("status")) for c in (node.get("status") or {}).get("conditions") or []):
        if (type_, status) in NO_SCHEDULE_TAINTS:
            wanted.add((NO_SCHEDULE_TAINTS[type_, status], "NoSchedule"))
    if (node.get("spec") or {}).get("unschedulable"):
        wanted.add((UNSCHEDULABLE, "NoSchedule"))
    ready = ready_status(node)
    if evictions_enabled and ready in ("False", "Unknown"):
        wanted.add((UNREACHABLE if ready == "Unknown" else NOT_READY, "NoExecute"))
    taints = [t for t in (node.get("spec") or {}).get("taints") or []
              if (t.get("key"), t.get("effect")) not in MANAGED or (t.get("key"), t.get("effect")) in wanted]
    present = {(t.get("key"), t.get("effect")) for t in taints}
    taints += [{"key": key, "effect": effect, "timeAdded": now} for key, effect in sorted(wanted - present)]
    return taints


def zone_of(node: Obj) -> str:
    """The node's failure zone (region and zone labels), "" when unlabelled."""
    labels = node["metadata"].get("labels") or {}
    return f"{labels.get('topology.kubernetes.io/region', '')}/{labels.get('topology.kubernetes.io/zone', '')}"


def all_zones_fully_disrupted(nodes: list[Obj]) -> bool:
    """True when no zone has a Ready node: upstream then blames the control plane's network and stops evicting."""
    zones: dict[str, bool] = {}
    for node in nodes:
        zone = zone_of(node)
        zones[zone] = zones.get(zone, False) or ready_status(node) == "True"
    return bool(zones) and not any(zones.values())


class NodeHealth:
    """What the controller last saw of a node's heartbeats, and when (its own clock) it last saw one change."""

    __slots__ = ("heartbeat", "renew", "probe")

    def __init__(self, heartbeat: str | None, renew: str | None, probe: float):
        self.heartbeat = heartbeat
        self.renew = renew
        self.probe = probe

    def observe(self, heartbeat: str | None, renew: str | None, now: float) -> None:
        """Move the probe time to now if the Ready heartbeat or the Lease renewal changed."""
        if heartbeat != self.heartbeat or (renew is not None and renew != self.renew):
            self.heartbeat, self.renew, self.probe = heartbeat, renew, now


class NodeLifecycleController(Controller):
    """Monitor node heartbeats every monitor_period; taint nodes by condition; mark pods on bad nodes not ready."""

    name: ClassVar[str] = "node-lifecycle-controller"
    component: ClassVar[str] = "node-controller"
    grace_period: ClassVar[float] = 40.0
    """--node-monitor-grace-period: how long a node may stay silent before it is Unknown."""
    startup_grace_period: ClassVar[float] = 60.0
    """--node-startup-grace-period: the same for a node that never posted a Ready condition."""
    monitor_period: ClassVar[float] = 5.0
    """--node-monitor-period: how often heartbeats are checked."""

    def __init__(self, client: ApiClient, informers: SharedInformerFactory | None = None, *,
                 workers: int | None = None, grace_period: float | None = None,
                 startup_grace_period: float | None = None, monitor_period: float | None = None,
                 clock: Callable[[], float] = time.time):
        self.grace_period = grace_period or type(self).grace_period
        self.startup_grace_period = startup_grace_period or type(self).startup_grace_period
        self.monitor_period = monitor_period or type(self).monitor_period
        self.clock = clock
        self.health: dict[str, NodeHealth] = {}
        self.disrupted = False
        super().__init__(client, informers, workers=workers)

    def setup(self) -> None:
        """Nodes (queued on change), their Leases, and pods by node."""
        self.nodes = self.watch(NODES)
        self.leases = self.informer(LEASES, namespace=LEASE_NAMESPACE)
        self.pods = self.informer(PODS)
        self.queue.add(MONITOR_KEY)

    async def reconcile(self, key: str) -> Requeue | None:
        """The health pass for MONITOR_KEY, else one node's taints and its pods' readiness."""
        if key == MONITOR_KEY:
            await self.monitor()
            return Requeue(after=self.monitor_period)
        node = self.nodes.store.get(key)
        if node is None:
            self.health.pop(key, None)
            return None
        taints = desired_taints(node, not self.disrupted, now_time())
        if taints != ((node.get("spec") or {}).get("taints") or []):
            updated = copy.deepcopy(node)
            updated.setdefault("spec", {})["taints"] = taints
            await self.client.update(NODES, updated)
        if ready_status(node) in ("False", "Unknown"):
            await self.mark_pods_not_ready(node)
        return None

    async def monitor(self) -> None:
        """Mark nodes whose heartbeats stopped Unknown; switch evictions off while every zone is down."""
        now = self.clock()
        silent = []
        for node in self.nodes.store.list():
            name = node["metadata"]["name"]
            ready = condition(node, "Ready")
            heartbeat = ready.get("lastHeartbeatTime") if ready else None
            lease = self.leases.store.get_by_name(LEASE_NAMESPACE, name)
            renew = (lease.get("spec") or {}).get("renewTime") if lease else None
            health = self.health.get(name)
            if health is None:
                created = parse_time(node["metadata"].get("creationTimestamp"))
                probe = created.timestamp() if ready is None and created else now
                health = self.health[name] = NodeHealth(heartbeat, renew, probe)
            else:
                health.observe(heartbeat, renew, now)
            grace = self.startup_grace_period if ready is None else self.grace_period
            if now > health.probe + grace and ready_status(node) != "Unknown":
                silent.append(node)
        results = await asyncio.gather(*(self._mark_unknown(node) for node in silent), return_exceptions=True)
        for node, result in zip(silent, results, strict=True):
            if isinstance(result, Exception):
                log.warning("%s: marking node %s Unknown failed: %s", self.name, node["metadata"]["name"], result)
        self._update_disruption()

    async def _mark_unknown(self, node: Obj) -> None:
        updated = copy.deepcopy(node)
        if mark_unknown(updated, now_time()):
            log.info("%s: node %s stopped posting status; marking it Unknown", self.name, node["metadata"]["name"])
            await self.client.update_status(NODES, updated)
            self.recorder.event(node, "Normal", "NodeNotReady",
                                f"Node {node['metadata']['name']} status is now: NodeNotReady")

    def _update_disruption(self) -> None:
        """Track full disruption; on a change re-taint every node (and, leaving it, restart every grace period)."""
        disrupted = all_zones_fully_disrupted(self.nodes.store.list())
        if disrupted == self.disrupted:
            return
        self.disrupted = disrupted
        if disrupted:
            log.warning("%s: no node is Ready in any zone; suspending taint-based eviction", self.name)
        else:
            log.info("%s: nodes are Ready again; resuming taint-based eviction", self.name)
            now = self.clock()
            for health in self.health.values():
                health.probe = now
        self.enqueue(self.nodes.store.keys())

    async def mark_pods_not_ready(self, node: Obj) -> None:
        """Set the Ready condition of the node's pods to False (upstream MarkPodsNotReady)."""
        name = node["metadata"]["name"]
        for pod in self.pods.store.by_index(NODE_NAME_INDEX, name):
            ready = condition(pod, "Ready")
            if ready is None or ready.get("status") != "True":
                continue
            meta = pod["metadata"]
            patch = {"status": {"conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": now_time()}]}}
            try:
                await self.client.patch(PODS, meta["name"], patch, meta["namespace"], type="strategic",
                                        subresource="status")
            except ApiError as exc:
                if not is_not_found(exc):
                    raise
            self.recorder.event(pod, "Warning", "NodeNotReady", "Node is not ready")


def tolerates(toleration: Obj, taint: Obj) -> bool:
    """Toleration.ToleratesTaint: effect and key match (empty matches all), then Exists or an equal value."""
    if toleration.get("effect") and toleration["effect"] != taint.get("effect"):
        return False
    if toleration.get("key") and toleration["key"] != taint.get("key"):
        return False
    operator = toleration.get("operator") or "Equal"
    if operator == "Exists":
        return True
    return operator == "Equal" and (toleration.get("value") or "") == (taint.get("value") or "")


def matching_tolerations(taints: list[Obj], tolerations: list[Obj]) -> list[Obj] | None:
    """The first toleration of each taint, or None when some taint is not tolerated."""
    used = []
    for taint in taints:
        match = next((t for t in tolerations if tolerates(t, taint)), None)
        if match is None:
            return None
        used.append(match)
    return used


def min_toleration_seconds(tolerations: list[Obj]) -> float | None:
    """How long the pod may stay: the smallest tolerationSeconds (0 if one is <= 0), None for forever."""
    if not tolerations:
        return 0.0
    seconds = [t["tolerationSeconds"] for t in tolerations if t.get("tolerationSeconds") is not None]
    if not seconds:
        return None
    return float(max(0, min(seconds)))


def no_execute_taints(node: Obj | None) -> list[Obj]:
    """The node's NoExecute taints."""
    return [t for t in ((node or {}).get("spec") or {}).get("taints") or [] if t.get("effect") == "NoExecute"]


class TaintEvictionController(Controller):
    """Delete pods from nodes whose NoExecute taints they do not tolerate, or tolerate only for a while."""

    name: ClassVar[str] = "taint-eviction-controller"

    def __init__(self, client: ApiClient, informers: SharedInformerFactory | None = None, *,
                 workers: int | None = None, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.scheduled: dict[str, float] = {}
        """When each pending eviction was first scheduled, by pod key (the tolerationSeconds count from it)."""
        super().__init__(client, informers, workers=workers)

    def setup(self) -> None:
        """Pods (queued on change) and nodes (a change of NoExecute taints queues the node's pods)."""
        self.pods = self.watch(PODS)
        self.nodes = self.informer(NODES)
        self.nodes.add_handlers(on_add=lambda node: self._node_changed(None, node), on_update=self._node_changed,
                                on_delete=lambda node: self._node_changed(node, None))

    def _node_changed(self, old: Obj | None, new: Obj | None) -> None:
        """Queue the node's pods when its NoExecute taints changed (or it came or went with some)."""
        if no_execute_taints(old) != no_execute_taints(new):
            name = (new or old or {})["metadata"]["name"]
            self.enqueue(key_of(pod) for pod in self.pods.store.by_index(NODE_NAME_INDEX, name))

    async def reconcile(self, key: str) -> Requeue | None:
        """Evict the pod now, schedule it for later, or cancel a scheduled eviction."""
        pod = self.pods.store.get(key)
        node_name = ((pod or {}).get("spec") or {}).get("nodeName")
        taints = no_execute_taints(self.nodes.store.get(node_name)) if node_name else []
        if pod is None or pod["metadata"].get("deletionTimestamp") or not taints:
            self._cancel(key, pod)
            return None
        used = matching_tolerations(taints, (pod.get("spec") or {}).get("tolerations") or [])
        seconds = 0.0 if used is None else min_toleration_seconds(used)
        if seconds is None:
            self._cancel(key, pod)
            return None
        now = self.clock()
        start = self.scheduled.setdefault(key, now)
        if now < start + seconds:
            return Requeue(after=start + seconds - now)
        await self._evict(pod)
        self.scheduled.pop(key, None)
        return None

    def _cancel(self, key: str, pod: Obj | None) -> None:
        if self.scheduled.pop(key, None) is not None and pod is not None and not pod["metadata"].get(
                "deletionTimestamp"):
            namespace, name = split_key(key)
            self.recorder.event(pod, "Normal", "TaintManagerEviction", f"Cancelling deletion of Pod {namespace}/{name}")

    async def _evict(self, pod: Obj) -> None:
        """Add the DisruptionTarget condition, then delete the pod (gracefully, bypassing disruption budgets)."""
        meta = pod["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        log.info("%s: evicting pod %s/%s from node %s", self.name, namespace, name, pod["spec"]["nodeName"])
        self.recorder.event(pod, "Normal", "TaintManagerEviction", f"Marking for deletion Pod {namespace}/{name}")
        target = {"type": "DisruptionTarget", "status": "True", "reason": "DeletionByTaintManager",
                  "message": "Taint manager: deleting due to NoExecute taint", "lastTransitionTime": now_time()}
        try:
            await self.client.patch(PODS, name, {"status": {"conditions": [target]}}, namespace, type="strategic",
                                    subresource="status")
            await self.client.delete(PODS, name, namespace, preconditions={"uid": meta["uid"]})
        except ApiError as exc:
            if not is_not_found(exc):
                raise
