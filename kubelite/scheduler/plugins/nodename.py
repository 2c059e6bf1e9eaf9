"""NodeName: a pod naming spec.nodeName fits only that node."""

from __future__ import annotations

from typing import Any

from kubelite.scheduler.framework import (
    NODE,
    SKIP,
    ActionType,
    ClusterEvent,
    CycleState,
    EventRegistration,
    FilterPlugin,
    PreFilterPlugin,
    Status,
    unresolvable,
)
from kubelite.scheduler.nodeinfo import NodeInfo
from kubelite.scheduler.podinfo import PodInfo

ERR_REASON = "node(s) didn't match the requested node name"


class NodeName(PreFilterPlugin, FilterPlugin):
    """Filter on spec.nodeName (PreFilter skips the Filter for the usual pod that names no node)."""

    name = "NodeName"

    def pre_filter(self, state: CycleState, pod: PodInfo,
                   nodes: list[NodeInfo]) -> tuple[set[str] | None, Status | None]:
        return None, (None if pod.node_name else SKIP)

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        if pod.node_name and pod.node_name != node.name:
            return unresolvable(ERR_REASON)
        return None

    def events_to_register(self) -> list[EventRegistration]:
        def named_node_added(pod: PodInfo, old: dict[str, Any] | None, new: dict[str, Any] | None) -> bool:
            return new is not None and (not pod.node_name or new["metadata"]["name"] == pod.node_name)
        return [(ClusterEvent(NODE, ActionType.ADD), named_node_added)]
