"""NodeResourcesFit: the pod's requests must fit the node's free allocatable; LeastAllocated/MostAllocated scoring."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kubelite.scheduler.framework import (
    MAX_NODE_SCORE,
    NODE,
    POD,
    ActionType,
    ClusterEvent,
    Code,
    CycleState,
    EventRegistration,
    FilterPlugin,
    Handle,
    PreScorePlugin,
    ScorePlugin,
    Status,
)
from kubelite.scheduler.nodeinfo import NodeInfo
from kubelite.scheduler.podinfo import PodInfo
from kubelite.scheduler.resources import CPU, EPHEMERAL_STORAGE, MEMORY, Resource

Obj = dict[str, Any]
LEAST_ALLOCATED, MOST_ALLOCATED = "LeastAllocated", "MostAllocated"
DEFAULT_RESOURCES: list[tuple[str, int]] = [(CPU, 1), (MEMORY, 1)]
PRE_SCORE_KEY = "PreScoreNodeResourcesFit"


def scoring_resources(raw: Any) -> list[tuple[str, int]]:
    """ResourceSpec list (name, weight) from args, defaulting to cpu and memory with weight 1."""
    if not raw:
        return list(DEFAULT_RESOURCES)
    return [(str(r["name"]), int(r.get("weight") or 1)) for r in raw]


def pod_request_list(pod: PodInfo, resources: list[tuple[str, int]], use_requested: bool) -> list[int]:
    """The pod's request per scored resource: actual requests, or with the non-zero cpu/memory defaults."""
    if use_requested:
        return [pod.requests.get(name) for name, _ in resources]
    return [pod.non_zero_cpu if name == CPU else pod.non_zero_memory if name == MEMORY else pod.requests.get(name)
            for name, _ in resources]


def allocatable_and_requested(node: NodeInfo, name: str, pod_request: int, use_requested: bool) -> tuple[int, int]:
    """calculateResourceAllocatableRequest: (allocatable, requested incl. the pod), (0, 0) to skip the resource."""
    if name == CPU:
        return node.allocatable.milli_cpu, (node.requested.milli_cpu if use_requested else node.non_zero_cpu) + \
            pod_request
    if name == MEMORY:
        return node.allocatable.memory, (node.requested.memory if use_requested else node.non_zero_memory) + \
            pod_request
    if name == EPHEMERAL_STORAGE:
        return node.allocatable.ephemeral_storage, node.requested.ephemeral_storage + pod_request
    if pod_request == 0 or name not in node.allocatable.scalar:
        return 0, 0
    return node.allocatable.scalar[name], node.requested.scalar.get(name, 0) + pod_request


def least_requested_score(requested: int, capacity: int) -> int:
    if capacity == 0 or requested > capacity:
        return 0
    return (capacity - requested) * MAX_NODE_SCORE // capacity


def most_requested_score(requested: int, capacity: int) -> int:
    if capacity == 0:
        return 0
    return min(requested, capacity) * MAX_NODE_SCORE // capacity


def _insufficient(pod: Resource, node: NodeInfo, ignored: set[str], ignored_groups: set[str]) -> list[tuple[str,
                                                                                                            bool]]:
    """fitsRequest: (reason, unresolvable) per resource the node lacks."""
    found: list[tuple[str, bool]] = []
    alloc, used = node.allocatable, node.requested
    if len(node.pods) + 1 > alloc.pods:
        found.append(("Too many pods", False))
    if pod.is_zero():
        return found
    if pod.milli_cpu > 0 and pod.milli_cpu > alloc.milli_cpu - used.milli_cpu:
        found.append(("Insufficient cpu", pod.milli_cpu > alloc.milli_cpu))
    if pod.memory > 0 and pod.memory > alloc.memory - used.memory:
        found.append(("Insufficient memory", pod.memory > alloc.memory))
    if pod.ephemeral_storage > 0 and pod.ephemeral_storage > alloc.ephemeral_storage - used.ephemeral_storage:
        found.append(("Insufficient ephemeral-storage", pod.ephemeral_storage > alloc.ephemeral_storage))
    for name, quantity in pod.scalar.items():
        if quantity == 0 or name in ignored or (ignored_groups and name.split("/")[0] in ignored_groups):
            continue
        capacity = alloc.scalar.get(name, 0)
        if quantity > capacity - used.scalar.get(name, 0):
            found.append((f"Insufficient {name}", quantity > capacity))
    return found


def fits(pod: PodInfo, node: NodeInfo) -> bool:
    """True when the pod's requests fit the node's free allocatable."""
    return not _insufficient(pod.requests, node, set(), set())


class NodeResourcesFit(FilterPlugin, PreScorePlugin, ScorePlugin):
    """Filter on cpu, memory, ephemeral storage, pod count and extended resources; score by the scoring strategy."""

    name = "NodeResourcesFit"

    def __init__(self, args: Obj, handle: Handle):
        super().__init__(args, handle)
        strategy = args.get("scoringStrategy") or {}
        kind = strategy.get("type") or LEAST_ALLOCATED
        scorers: dict[str, Callable[[int, int], int]] = {LEAST_ALLOCATED: least_requested_score,
                                                        MOST_ALLOCATED: most_requested_score}
        if kind not in scorers:
            raise ValueError(f"NodeResourcesFit: scoring strategy {kind!r} is not supported")
        self.strategy = kind
        self.resource_score = scorers[kind]
        self.resources = scoring_resources(strategy.get("resources"))
        self.ignored = set(args.get("ignoredResources") or ())
        self.ignored_groups = set(args.get("ignoredResourceGroups") or ())

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        found = _insufficient(pod.requests, node, self.ignored, self.ignored_groups)
        if not found:
            return None
        code = Code.UNSCHEDULABLE_AND_UNRESOLVABLE if any(u for _, u in found) else Code.UNSCHEDULABLE
        return Status(code, *(reason for reason, _ in found))

    def filter_nodes(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]) -> list[Status | None] | None:
        request = pod.requests
        if request.scalar:
            return super().filter_nodes(state, pod, nodes)
        # The common case (no extended resources) inlined: a cheap test per node, the details only on failure.
        cpu, memory, storage = request.milli_cpu, request.memory, request.ephemeral_storage
        results: list[Status | None] | None = None
        for index, node in enumerate(nodes):
            alloc, used = node.allocatable, node.requested
            if (len(node.pods) < alloc.pods and cpu + used.milli_cpu <= alloc.milli_cpu
                    and memory + used.memory <= alloc.memory
                    and storage + used.ephemeral_storage <= alloc.ephemeral_storage):
                continue
            status = self.filter(state, pod, node)
            if status is not None:
                if results is None:
                    results = [None] * len(nodes)
                results[index] = status
        return results

    def pre_score(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]) -> Status | None:
        state.data[PRE_SCORE_KEY] = pod_request_list(pod, self.resources, use_requested=False)
        return None

    def score_nodes(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]) -> list[int]:
        if self.strategy != LEAST_ALLOCATED or [n for n, _ in self.resources] != [CPU, MEMORY]:
            return super().score_nodes(state, pod, nodes)
        # The default (LeastAllocated over cpu and memory) inlined: this runs for every sampled node.
        cpu_request, memory_request = state.data[PRE_SCORE_KEY]
        (_, cpu_weight), (_, memory_weight) = self.resources
        scores = []
        for node in nodes:
            allocatable = node.allocatable
            cpu, memory = allocatable.milli_cpu, allocatable.memory
            total = weights = 0
            if cpu:
                requested = node.non_zero_cpu + cpu_request
                if requested <= cpu:
                    total += (cpu - requested) * MAX_NODE_SCORE // cpu * cpu_weight
                weights += cpu_weight
            if memory:
                requested = node.non_zero_memory + memory_request
                if requested <= memory:
                    total += (memory - requested) * MAX_NODE_SCORE // memory * memory_weight
                weights += memory_weight
            scores.append(total // weights if weights else 0)
        return scores

    def score(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> int:
        total = weights = 0
        resource_score = self.resource_score
        for (name, weight), request in zip(self.resources, state.data[PRE_SCORE_KEY], strict=True):
            allocatable, requested = allocatable_and_requested(node, name, request, False)
            if allocatable == 0:
                continue
            total += resource_score(requested, allocatable) * weight
            weights += weight
        return total // weights if weights else 0

    def events_to_register(self) -> list[EventRegistration]:
        def pod_deleted(pod: PodInfo, old: Obj | None, new: Obj | None) -> bool:
            return old is not None and bool((old.get("spec") or {}).get("nodeName"))

        def node_fits(pod: PodInfo, old: Obj | None, new: Obj | None) -> bool:
            if new is None or not fits(pod, NodeInfo(new)):
                return False
            if old is None:
                return True
            before, after = NodeInfo(old).allocatable, NodeInfo(new).allocatable
            request = pod.requests
            return (after.pods > before.pods
                    or any(request.get(n) > 0 and after.get(n) > before.get(n)
                           for n in (CPU, MEMORY, EPHEMERAL_STORAGE, *request.scalar)))
        return [(ClusterEvent(POD, ActionType.DELETE), pod_deleted),
                (ClusterEvent(NODE, ActionType.ADD | ActionType.UPDATE_NODE_ALLOCATABLE), node_fits)]
