"""NodeResourcesBalancedAllocation: prefer nodes whose cpu and memory use stay balanced after placing the pod."""

from __future__ import annotations

import math
from typing import Any

from kubelite.scheduler.framework import (
    MAX_NODE_SCORE,
    SKIP,
    CycleState,
    Handle,
    PreScorePlugin,
    ScorePlugin,
    Status,
)
from kubelite.scheduler.nodeinfo import NodeInfo
from kubelite.scheduler.plugins.noderesourcesfit import (
    allocatable_and_requested,
    pod_request_list,
    scoring_resources,
)
from kubelite.scheduler.podinfo import PodInfo
from kubelite.scheduler.resources import CPU, MEMORY

PRE_SCORE_KEY = "PreScoreNodeResourcesBalancedAllocation"


def balanced_score(fractions: list[float]) -> int:
    """(1 - standard deviation of the requested/allocatable fractions) * MAX_NODE_SCORE."""
    std = 0.0
    if len(fractions) == 2:
        std = abs((fractions[0] - fractions[1]) / 2)
    elif len(fractions) > 2:
        mean = sum(fractions) / len(fractions)
        std = math.sqrt(sum((f - mean) ** 2 for f in fractions) / len(fractions))
    return int((1 - std) * MAX_NODE_SCORE)


class NodeResourcesBalancedAllocation(PreScorePlugin, ScorePlugin):
    """Score by the balance of resource fractions (skipped for best-effort pods, as upstream does)."""

    name = "NodeResourcesBalancedAllocation"

    def __init__(self, args: dict[str, Any], handle: Handle):
        super().__init__(args, handle)
        self.resources = scoring_resources(args.get("resources"))

    def pre_score(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]) -> Status | None:
        requests = pod_request_list(pod, self.resources, use_requested=True)
        if not any(requests):
            return SKIP
        state.data[PRE_SCORE_KEY] = requests
        return None

    def score_nodes(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]) -> list[int]:
        if [n for n, _ in self.resources] != [CPU, MEMORY]:
            return super().score_nodes(state, pod, nodes)
        # The default (cpu and memory) inlined: this runs for every sampled node.
        cpu_request, memory_request = state.data[PRE_SCORE_KEY]
        scores = []
        for node in nodes:
            allocatable, requested = node.allocatable, node.requested
            cpu, memory = allocatable.milli_cpu, allocatable.memory
            if cpu and memory:
                cpu_fraction = (requested.milli_cpu + cpu_request) / cpu
                memory_fraction = (requested.memory + memory_request) / memory
                difference = (cpu_fraction if cpu_fraction < 1.0 else 1.0) - (
                    memory_fraction if memory_fraction < 1.0 else 1.0)
                scores.append(int((1 - (difference if difference >= 0 else -difference) / 2) * MAX_NODE_SCORE))
            else:
                scores.append(MAX_NODE_SCORE)
        return scores

    def score(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> int:
        fractions = []
        for (name, _), request in zip(self.resources, state.data[PRE_SCORE_KEY], strict=True):
            allocatable, requested = allocatable_and_requested(node, name, request, True)
            if allocatable == 0:
                continue
            fractions.append(min(requested / allocatable, 1.0))
        return balanced_score(fractions)
