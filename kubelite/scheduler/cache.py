"""The node cache: a NodeInfo per node from the informers, plus pods assumed onto nodes until their binding shows."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from kubelite.scheduler.helpers import LABEL_REGION, LABEL_ZONE
from kubelite.scheduler.nodeinfo import NodeInfo
from kubelite.scheduler.podinfo import PodInfo

log = logging.getLogger(__name__)

Obj = dict[str, Any]
ASSUMED_POD_TTL = 15 * 60.0
"""How long after its binding finished an assumed pod waits for the informer to confirm it before expiring."""


class _PodState:
    """Where the cache has a pod, and for assumed pods whether and when their binding finished."""

    __slots__ = ("info", "assumed", "deadline")

    def __init__(self, info: PodInfo, assumed: bool):
        self.info = info
        self.assumed = assumed
        self.deadline: float | None = None


class Cache:
    """NodeInfos by name, the zone-interleaved node list the scheduler walks, and the pods it accounts for."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, assumed_ttl: float = ASSUMED_POD_TTL):
        self.clock = clock
        self.assumed_ttl = assumed_ttl
        self.nodes: dict[str, NodeInfo] = {}
        self.pods: dict[str, _PodState] = {}
        self.image_nodes: dict[str, set[str]] = {}
        """Image name -> the nodes that have it (ImageStateSummary.NumNodes is its size)."""
        self._node_list: list[NodeInfo] | None = None
        self.pods_with_affinity = 0
        self.pods_with_required_anti_affinity = 0

    # Nodes.

    def add_node(self, node: Obj) -> NodeInfo:
        """A Node from the informer (add or update)."""
        name = node["metadata"]["name"]
        info = self.nodes.get(name)
        if info is None:
            info = self.nodes[name] = NodeInfo(name=name)
            self._node_list = None
        elif info.node is None:
            self._node_list = None
        else:
            self._forget_images(info)
            if _zone(info.labels) != _zone(node["metadata"].get("labels") or {}):
                self._node_list = None
        info.set_node(node)
        for image in info.images:
            self.image_nodes.setdefault(image, set()).add(name)
        return info

    def remove_node(self, node: Obj) -> None:
        """A deleted Node; its NodeInfo stays (without a node) while pods still point at it."""
        info = self.nodes.get(node["metadata"]["name"])
        if info is None:
            return
        self._forget_images(info)
        self._node_list = None
        if info.pods:
            info.node = None
            info.generation += 1
        else:
            del self.nodes[info.name]

    def _forget_images(self, info: NodeInfo) -> None:
        for image in info.images:
            nodes = self.image_nodes.get(image)
            if nodes is not None:
                nodes.discard(info.name)
                if not nodes:
                    del self.image_nodes[image]

    def node_list(self) -> list[NodeInfo]:
        """Nodes with a Node object, interleaved across zones as upstream's nodeTree lists them."""
        if self._node_list is None:
            zones: dict[str, list[NodeInfo]] = {}
            for info in self.nodes.values():
                if info.node is not None:
                    zones.setdefault(_zone(info.labels), []).append(info)
            interleaved: list[NodeInfo] = []
            columns = list(zones.values())
            for i in range(max((len(c) for c in columns), default=0)):
                interleaved.extend(c[i] for c in columns if i < len(c))
            self._node_list = interleaved
        return self._node_list

    def num_nodes(self) -> int:
        return len(self.node_list())

    def get(self, name: str) -> NodeInfo | None:
        """The NodeInfo of a node that exists (None for unknown or deleted nodes)."""
        info = self.nodes.get(name)
        return info if info is not None and info.node is not None else None

    def image_num_nodes(self, image: str) -> int:
        """How many nodes have an image."""
        nodes = self.image_nodes.get(image)
        return len(nodes) if nodes else 0

    # Pods.

    def _node_for(self, name: str) -> NodeInfo:
        info = self.nodes.get(name)
        if info is None:
            info = self.nodes[name] = NodeInfo(name=name)
        return info

    def _place(self, info: PodInfo) -> None:
        self._node_for(info.node_name).add_pod(info)
        if info.has_affinity:
            self.pods_with_affinity += 1
        if info.required_anti_affinity:
            self.pods_with_required_anti_affinity += 1

    def _unplace(self, info: PodInfo) -> None:
        node = self.nodes.get(info.node_name)
        if node is None or not node.remove_pod(info):
            return
        if info.has_affinity:
            self.pods_with_affinity -= 1
        if info.required_anti_affinity:
            self.pods_with_required_anti_affinity -= 1
        if node.node is None and not node.pods:
            del self.nodes[node.name]

    def assume_pod(self, info: PodInfo) -> None:
        """Account for a pod on info.node_name before its binding is confirmed (Reserve)."""
        if info.uid in self.pods:
            raise ValueError(f"pod {info.key} is already in the cache, cannot be assumed")
        self.pods[info.uid] = _PodState(info, assumed=True)
        self._place(info)

    def finish_binding(self, info: PodInfo) -> None:
        """The binding call returned: start the clock after which an unconfirmed assumption expires."""
        state = self.pods.get(info.uid)
        if state is not None and state.assumed:
            state.deadline = self.clock() + self.assumed_ttl

    def forget_pod(self, info: PodInfo) -> None:
        """Drop an assumed pod (binding failed or was rejected)."""
        state = self.pods.get(info.uid)
        if state is not None and state.assumed:
            del self.pods[info.uid]
            self._unplace(state.info)

    def is_assumed(self, uid: str) -> bool:
        state = self.pods.get(uid)
        return state is not None and state.assumed

    def get_pod(self, uid: str) -> PodInfo | None:
        state = self.pods.get(uid)
        return state.info if state is not None else None

    def add_pod(self, pod: Obj) -> PodInfo:
        """An assigned pod seen by the informer: confirms an assumed pod, else accounts for a new one."""
        uid = pod["metadata"].get("uid") or ""
        state = self.pods.get(uid)
        node_name = pod["spec"]["nodeName"]
        if state is not None and state.assumed:
            assumed = state.info
            info = assumed.with_pod(pod)
            self._unplace(assumed)
            if assumed.node_name != node_name:
                log.warning("pod %s assumed on %s was bound to %s", info.key, assumed.node_name, node_name)
            state.info = info
            state.assumed = False
            state.deadline = None
            self._place(info)
            return info
        if state is not None:
            return self.update_pod(pod)
        info = PodInfo(pod)
        self.pods[info.uid] = _PodState(info, assumed=False)
        self._place(info)
        return info

    def update_pod(self, pod: Obj) -> PodInfo:
        """A newer version of an assigned pod."""
        uid = pod["metadata"].get("uid") or ""
        state = self.pods.get(uid)
        if state is None or state.assumed:
            return self.add_pod(pod)
        old = state.info
        self._unplace(old)
        info = PodInfo(pod)
        state.info = info
        self._place(info)
        return info

    def remove_pod(self, pod: Obj) -> PodInfo | None:
        """An assigned pod that was deleted (or finished)."""
        uid = pod["metadata"].get("uid") or ""
        state = self.pods.pop(uid, None)
        if state is None:
            return None
        self._unplace(state.info)
        return state.info

    def cleanup_expired(self) -> list[PodInfo]:
        """Expire assumed pods whose binding finished long ago without the informer confirming them."""
        now = self.clock()
        expired = [s.info for s in self.pods.values() if s.assumed and s.deadline is not None and s.deadline <= now]
        for info in expired:
            log.warning("assumed pod %s on %s expired before its binding was observed", info.key, info.node_name)
            del self.pods[info.uid]
            self._unplace(info)
        return expired


def _zone(labels: dict[str, str]) -> str:
    """utilnode.GetZoneKey: region and zone, "" when the node has neither."""
    region, zone = labels.get(LABEL_REGION, ""), labels.get(LABEL_ZONE, "")
    return f"{region}:\x00:{zone}" if region or zone else ""
