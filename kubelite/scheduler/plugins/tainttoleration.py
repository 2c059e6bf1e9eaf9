"""TaintToleration: NoSchedule/NoExecute taints must be tolerated; untolerated PreferNoSchedule taints score lower."""

from __future__ import annotations

from typing import Any

from kubelite.scheduler.framework import (
    MAX_NODE_SCORE,
    NODE,
    SKIP,
    UNSCHEDULED_POD,
    ActionType,
    ClusterEvent,
    CycleState,
    EventRegistration,
    FilterPlugin,
    PreScorePlugin,
    ScorePlugin,
    Status,
    default_normalize_score,
    unresolvable,
)
from kubelite.scheduler.helpers import NO_EXECUTE, NO_SCHEDULE, PREFER_NO_SCHEDULE, first_untolerated, taint_tuple
from kubelite.scheduler.nodeinfo import NodeInfo
from kubelite.scheduler.podinfo import PodInfo

STATE_KEY = "PreScoreTaintToleration"


def _untolerated(pod: PodInfo, node: dict[str, Any] | None) -> bool:
    """True when the node has a NoSchedule/NoExecute taint the pod does not tolerate."""
    taints = [taint_tuple(t) for t in ((node or {}).get("spec") or {}).get("taints") or []]
    hard = [t for t in taints if t[2] in (NO_SCHEDULE, NO_EXECUTE)]
    return first_untolerated(hard, pod.tolerations) is not None


class TaintToleration(FilterPlugin, PreScorePlugin, ScorePlugin):
    """Filter on hard taints; score by the count of untolerated PreferNoSchedule taints (fewer is better)."""

    name = "TaintToleration"
    normalizes = True

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        if not node.hard_taints:
            return None
        taint = first_untolerated(node.hard_taints, pod.tolerations)
        if taint is None:
            return None
        return unresolvable(f"node(s) had untolerated taint {{{taint[0]}: {taint[1]}}}")

    def filter_nodes(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]) -> list[Status | None] | None:
        check = self.filter
        results = [check(state, pod, node) if node.hard_taints else None for node in nodes]
        return None if results.count(None) == len(results) else results

    def pre_score(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]) -> Status | None:
        if not any(node.prefer_no_schedule_taints for node in nodes):
            return SKIP  # every node would score the same
        state.data[STATE_KEY] = [t for t in pod.tolerations if (t.get("effect") or "") in ("", PREFER_NO_SCHEDULE)]
        return None

    def score(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> int:
        tolerations = state.data[STATE_KEY]
        return sum(1 for taint in node.prefer_no_schedule_taints if first_untolerated((taint,), tolerations))

    def normalize_score(self, state: CycleState, pod: PodInfo, scores: list[int], nodes: list[NodeInfo]) -> None:
        default_normalize_score(MAX_NODE_SCORE, True, scores)

    def events_to_register(self) -> list[EventRegistration]:
        def now_tolerated(pod: PodInfo, old: dict[str, Any] | None, new: dict[str, Any] | None) -> bool:
            return not _untolerated(pod, new) and (old is None or _untolerated(pod, old))
        return [(ClusterEvent(NODE, ActionType.ADD | ActionType.UPDATE_NODE_TAINT), now_tolerated),
                (ClusterEvent(UNSCHEDULED_POD, ActionType.UPDATE_POD_TOLERATIONS), None)]
