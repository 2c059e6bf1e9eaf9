"""NodePorts: a pod's host ports must be free on the node."""

from __future__ import annotations

from typing import Any

from kubelite.scheduler.framework import (
    NODE,
    POD,
    SKIP,
    ActionType,
    ClusterEvent,
    CycleState,
    EventRegistration,
    FilterPlugin,
    PreFilterPlugin,
    Status,
    unschedulable,
)
from kubelite.scheduler.nodeinfo import NodeInfo
from kubelite.scheduler.podinfo import PodInfo, host_ports

ERR_REASON = "node(s) didn't have free ports for the requested pod ports"


class NodePorts(PreFilterPlugin, FilterPlugin):
    """Filter nodes where a requested (hostIP, protocol, hostPort) is taken; skipped for pods without host ports."""

    name = "NodePorts"

    def pre_filter(self, state: CycleState, pod: PodInfo,
                   nodes: list[NodeInfo]) -> tuple[set[str] | None, Status | None]:
        return None, (None if pod.host_ports else SKIP)

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        for ip, protocol, port in pod.host_ports:
            if node.port_conflict(ip, protocol, port):
                return unschedulable(ERR_REASON)
        return None

    def events_to_register(self) -> list[EventRegistration]:
        def freed_port(pod: PodInfo, old: dict[str, Any] | None, new: dict[str, Any] | None) -> bool:
            if old is None:
                return False
            freed = {(proto, port) for _, proto, port in host_ports(old.get("spec") or {})}
            return any((proto, port) in freed for _, proto, port in pod.host_ports)
        return [(ClusterEvent(POD, ActionType.DELETE), freed_port),
                (ClusterEvent(NODE, ActionType.ADD | ActionType.UPDATE), None)]
