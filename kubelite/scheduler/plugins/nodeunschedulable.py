"""NodeUnschedulable: nodes with spec.unschedulable take only pods tolerating the unschedulable taint."""

from __future__ import annotations

from typing import Any

from kubelite.scheduler.framework import (
    NODE,
    UNSCHEDULED_POD,
    ActionType,
    ClusterEvent,
    CycleState,
    EventRegistration,
    FilterPlugin,
    Status,
    unresolvable,
)
from kubelite.scheduler.helpers import NO_SCHEDULE, TAINT_NODE_UNSCHEDULABLE, tolerated
from kubelite.scheduler.nodeinfo import NodeInfo
from kubelite.scheduler.podinfo import PodInfo

ERR_REASON_UNSCHEDULABLE = "node(s) were unschedulable"


def _tolerates_unschedulable(pod: PodInfo) -> bool:
    return tolerated(pod.tolerations, TAINT_NODE_UNSCHEDULABLE, "", NO_SCHEDULE)


class NodeUnschedulable(FilterPlugin):
    """Filter out cordoned nodes unless the pod tolerates node.kubernetes.io/unschedulable:NoSchedule."""

    name = "NodeUnschedulable"

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        if node.unschedulable and not _tolerates_unschedulable(pod):
            return unresolvable(ERR_REASON_UNSCHEDULABLE)
        return None

    def filter_nodes(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]) -> list[Status | None] | None:
        if _tolerates_unschedulable(pod):
            return None
        results = [unresolvable(ERR_REASON_UNSCHEDULABLE) if node.unschedulable else None for node in nodes]
        return None if results.count(None) == len(results) else results

    def events_to_register(self) -> list[EventRegistration]:
        def schedulable_now(pod: PodInfo, old: dict[str, Any] | None, new: dict[str, Any] | None) -> bool:
            was = bool(((old or {}).get("spec") or {}).get("unschedulable")) if old is not None else True
            now = bool(((new or {}).get("spec") or {}).get("unschedulable"))
            return was and not now
        return [(ClusterEvent(NODE, ActionType.ADD | ActionType.UPDATE_NODE_TAINT), schedulable_now),
                (ClusterEvent(UNSCHEDULED_POD, ActionType.UPDATE_POD_TOLERATIONS), None)]
