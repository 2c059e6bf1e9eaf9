"""NodeInfo: one node with the pods on it and what they use (resources, host ports), kept incrementally."""

from __future__ import annotations

from typing import Any

from kubelite.scheduler.helpers import NO_EXECUTE, NO_SCHEDULE, PREFER_NO_SCHEDULE, taint_tuple
from kubelite.scheduler.podinfo import DEFAULT_BIND_ALL_HOST_IP, PodInfo
from kubelite.scheduler.resources import Resource

Obj = dict[str, Any]
Taint = tuple[str, str, str]


class NodeInfo:
    """Aggregated per-node state; `node` is None for a node that is gone but still has pods in the cache."""

    __slots__ = ("node", "name", "labels", "allocatable", "requested", "non_zero_cpu", "non_zero_memory", "pods",
                 "pods_with_affinity", "pods_with_required_anti_affinity", "used_ports", "images", "taints",
                 "hard_taints", "prefer_no_schedule_taints", "unschedulable", "generation")

    def __init__(self, node: Obj | None = None, name: str = ""):
        self.node: Obj | None = None
        self.name = name
        self.labels: dict[str, str] = {}
        self.allocatable = Resource()
        self.requested = Resource()
        self.non_zero_cpu = 0
        self.non_zero_memory = 0
        self.pods: dict[str, PodInfo] = {}
        self.pods_with_affinity: dict[str, PodInfo] = {}
        self.pods_with_required_anti_affinity: dict[str, PodInfo] = {}
        self.used_ports: dict[tuple[str, int], dict[str, int]] = {}
        """(protocol, port) -> host IP -> how many pods use it."""
        self.images: dict[str, int] = {}
        """Image name -> size in bytes, every name of every image the node reports."""
        self.taints: list[Taint] = []
        self.hard_taints: list[Taint] = []
        self.prefer_no_schedule_taints: list[Taint] = []
        self.unschedulable = False
        self.generation = 0
        if node is not None:
            self.set_node(node)

    def set_node(self, node: Obj) -> None:
        """Take a (new version of the) Node object: labels, allocatable, taints, images."""
        meta, spec, status = node["metadata"], node.get("spec") or {}, node.get("status") or {}
        self.node = node
        self.name = meta["name"]
        self.labels = meta.get("labels") or {}
        self.allocatable = Resource.from_list(status.get("allocatable"))
        self.taints = [taint_tuple(t) for t in spec.get("taints") or []]
        self.hard_taints = [t for t in self.taints if t[2] in (NO_SCHEDULE, NO_EXECUTE)]
        self.prefer_no_schedule_taints = [t for t in self.taints if t[2] == PREFER_NO_SCHEDULE]
        self.unschedulable = bool(spec.get("unschedulable"))
        self.images = {}
        for image in status.get("images") or []:
            size = int(image.get("sizeBytes") or 0)
            for name in image.get("names") or []:
                self.images[name] = size
        self.generation += 1

    def add_pod(self, pod: PodInfo) -> None:
        """Account for a pod on this node."""
        self.pods[pod.uid] = pod
        if pod.has_affinity:
            self.pods_with_affinity[pod.uid] = pod
        if pod.required_anti_affinity:
            self.pods_with_required_anti_affinity[pod.uid] = pod
        self._update(pod, 1)

    def remove_pod(self, pod: PodInfo) -> bool:
        """Stop accounting for a pod (by uid); False when it was not here."""
        current = self.pods.pop(pod.uid, None)
        if current is None:
            return False
        self.pods_with_affinity.pop(pod.uid, None)
        self.pods_with_required_anti_affinity.pop(pod.uid, None)
        self._update(current, -1)
        return True

    def _update(self, pod: PodInfo, sign: int) -> None:
        self.requested.add(pod.requests, sign)
        self.non_zero_cpu += sign * pod.non_zero_cpu
        self.non_zero_memory += sign * pod.non_zero_memory
        for ip, protocol, port in pod.host_ports:
            ips = self.used_ports.setdefault((protocol, port), {})
            count = ips.get(ip, 0) + sign
            if count > 0:
                ips[ip] = count
            else:
                ips.pop(ip, None)
                if not ips:
                    del self.used_ports[(protocol, port)]
        self.generation += 1

    def port_conflict(self, ip: str, protocol: str, port: int) -> bool:
        """HostPortInfo.CheckConflict: 0.0.0.0 conflicts with any IP on the same protocol and port."""
        ips = self.used_ports.get((protocol, port))
        if not ips:
            return False
        return ip == DEFAULT_BIND_ALL_HOST_IP or DEFAULT_BIND_ALL_HOST_IP in ips or ip in ips

    def clone(self) -> NodeInfo:
        """A copy whose pod set and usage can change without touching the original (for preemption)."""
        clone = object.__new__(NodeInfo)
        for slot in NodeInfo.__slots__:
            setattr(clone, slot, getattr(self, slot))
        clone.requested = self.requested.clone()
        clone.pods = dict(self.pods)
        clone.pods_with_affinity = dict(self.pods_with_affinity)
        clone.pods_with_required_anti_affinity = dict(self.pods_with_required_anti_affinity)
        clone.used_ports = {k: dict(v) for k, v in self.used_ports.items()}
        return clone

    def __repr__(self) -> str:
        return f"NodeInfo({self.name}, pods={len(self.pods)}, requested={self.requested})"
