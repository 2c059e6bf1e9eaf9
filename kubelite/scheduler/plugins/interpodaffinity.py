"""InterPodAffinity: required pod affinity/anti-affinity (the pod's and existing pods') and preferred-term scoring."""

from __future__ import annotations

from typing import Any

from kubelite.scheduler.framework import (
    MAX_NODE_SCORE,
    NODE,
    POD,
    SKIP,
    ActionType,
    ClusterEvent,
    CycleState,
    EventRegistration,
    FilterPlugin,
    Handle,
    PreFilterPlugin,
    PreScorePlugin,
    ScorePlugin,
    Status,
    unresolvable,
    unschedulable,
)
from kubelite.scheduler.nodeinfo import NodeInfo
from kubelite.scheduler.podinfo import AffinityTerm, NamespaceLabels, PodInfo

Obj = dict[str, Any]
Pair = tuple[str, str]
ERR_REASON_EXISTING_ANTI_AFFINITY = "node(s) didn't satisfy existing pods anti-affinity rules"
ERR_REASON_AFFINITY = "node(s) didn't match pod affinity rules"
ERR_REASON_ANTI_AFFINITY = "node(s) didn't match pod anti-affinity rules"
PRE_FILTER_KEY = "PreFilterInterPodAffinity"
PRE_SCORE_KEY = "PreScoreInterPodAffinity"


def matches_all(terms: list[AffinityTerm], pod: PodInfo, ns_labels: NamespaceLabels) -> bool:
    """podMatchesAllAffinityTerms: at least one term, and the pod matches every one."""
    return bool(terms) and all(t.matches(pod, ns_labels) for t in terms)


def _bump(counts: dict[Pair, int], node: NodeInfo, key: str, value: int) -> None:
    """topologyToMatchedTermCount.update: add to the node's pair for the key (dropping zeros)."""
    tv = node.labels.get(key)
    if tv is None:
        return
    pair = (key, tv)
    counts[pair] = counts.get(pair, 0) + value
    if counts[pair] == 0:
        del counts[pair]


class _FilterState:
    """Counts per topology pair: existing pods' anti-affinity to the pod, and pods matching the pod's terms."""

    __slots__ = ("pod", "ns_labels", "existing_anti", "affinity", "anti_affinity")

    def __init__(self, pod: PodInfo, ns_labels: NamespaceLabels):
        self.pod = pod
        self.ns_labels = ns_labels
        self.existing_anti: dict[Pair, int] = {}
        self.affinity: dict[Pair, int] = {}
        self.anti_affinity: dict[Pair, int] = {}

    def clone(self) -> _FilterState:
        clone = _FilterState(self.pod, self.ns_labels)
        clone.existing_anti = dict(self.existing_anti)
        clone.affinity = dict(self.affinity)
        clone.anti_affinity = dict(self.anti_affinity)
        return clone

    def count_existing(self, existing: PodInfo, node: NodeInfo, value: int) -> None:
        """Account for one existing pod: its anti-affinity to the pod, and whether it matches the pod's terms."""
        for term in existing.required_anti_affinity:
            if term.matches(self.pod, self.ns_labels):
                _bump(self.existing_anti, node, term.topology_key, value)
        if self.pod.required_affinity and matches_all(self.pod.required_affinity, existing, self.ns_labels):
            for term in self.pod.required_affinity:
                _bump(self.affinity, node, term.topology_key, value)
        for term in self.pod.required_anti_affinity:
            if term.matches(existing, self.ns_labels):
                _bump(self.anti_affinity, node, term.topology_key, value)


class InterPodAffinity(PreFilterPlugin, FilterPlugin, PreScorePlugin, ScorePlugin):
    """Filter on required (anti-)affinity both ways; score preferred terms both ways (and existing hard affinity)."""

    name = "InterPodAffinity"
    normalizes = True

    def __init__(self, args: Obj, handle: Handle):
        super().__init__(args, handle)
        self.hard_pod_affinity_weight = int(args.get("hardPodAffinityWeight", 1))
        if not 0 <= self.hard_pod_affinity_weight <= 100:
            raise ValueError("InterPodAffinity: hardPodAffinityWeight must be in [0, 100]")
        self.ignore_preferred_of_existing = bool(args.get("ignorePreferredTermsOfExistingPods"))

    def pre_filter(self, state: CycleState, pod: PodInfo,
                   nodes: list[NodeInfo]) -> tuple[set[str] | None, Status | None]:
        has_terms = bool(pod.required_affinity or pod.required_anti_affinity)
        if not has_terms and not self.handle.snapshot.pods_with_required_anti_affinity:
            return None, SKIP
        s = _FilterState(pod, self.handle.listers.namespace_labels)
        for node in nodes:
            if has_terms:
                for existing in node.pods.values():
                    s.count_existing(existing, node, 1)
            else:
                for existing in node.pods_with_required_anti_affinity.values():
                    s.count_existing(existing, node, 1)
        if not s.existing_anti and not has_terms:
            return None, SKIP
        state.data[PRE_FILTER_KEY] = s
        return None, None

    def add_pod(self, state: CycleState, pod: PodInfo, added: PodInfo, node: NodeInfo) -> None:
        s = state.data.get(PRE_FILTER_KEY)
        if s is not None:
            s.count_existing(added, node, 1)

    def remove_pod(self, state: CycleState, pod: PodInfo, removed: PodInfo, node: NodeInfo) -> None:
        s = state.data.get(PRE_FILTER_KEY)
        if s is not None:
            s.count_existing(removed, node, -1)

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        s: _FilterState = state.data[PRE_FILTER_KEY]
        labels = node.labels
        if pod.required_affinity:
            pods_exist = True
            for term in pod.required_affinity:
                value = labels.get(term.topology_key)
                if value is None:
                    return unresolvable(ERR_REASON_AFFINITY)
                if s.affinity.get((term.topology_key, value), 0) <= 0:
                    pods_exist = False
            # The first pod of a group with affinity to itself may go anywhere with the topology labels.
            if not pods_exist and not (not s.affinity and matches_all(pod.required_affinity, pod, s.ns_labels)):
                return unresolvable(ERR_REASON_AFFINITY)
        if s.anti_affinity:
            for term in pod.required_anti_affinity:
                value = labels.get(term.topology_key)
                if value is not None and s.anti_affinity.get((term.topology_key, value), 0) > 0:
                    return unschedulable(ERR_REASON_ANTI_AFFINITY)
        if s.existing_anti:
            for pair in labels.items():
                if s.existing_anti.get(pair, 0) > 0:
                    return unschedulable(ERR_REASON_EXISTING_ANTI_AFFINITY)
        return None

    def pre_score(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]) -> Status | None:
        has_constraints = bool(pod.preferred_affinity or pod.preferred_anti_affinity)
        if not has_constraints and (self.ignore_preferred_of_existing
                                    or not self.handle.snapshot.pods_with_affinity):
            return SKIP
        ns_labels = self.handle.listers.namespace_labels
        scores: dict[str, dict[str, int]] = {}

        def add(term: AffinityTerm, weight: int, target: PodInfo, node: NodeInfo) -> None:
            if term.matches(target, ns_labels):
                value = node.labels.get(term.topology_key)
                if value is not None:
                    by_value = scores.setdefault(term.topology_key, {})
                    by_value[value] = by_value.get(value, 0) + weight

        for node in self.handle.snapshot.node_list():
            if not node.labels:
                continue
            existing_pods = node.pods if has_constraints else node.pods_with_affinity
            for existing in existing_pods.values():
                for term in pod.preferred_affinity:
                    add(term, term.weight, existing, node)
                for term in pod.preferred_anti_affinity:
                    add(term, -term.weight, existing, node)
                if self.hard_pod_affinity_weight > 0:
                    for term in existing.required_affinity:
                        add(term, self.hard_pod_affinity_weight, pod, node)
                for term in existing.preferred_affinity:
                    add(term, term.weight, pod, node)
                for term in existing.preferred_anti_affinity:
                    add(term, -term.weight, pod, node)
        if not scores:
            return SKIP
        state.data[PRE_SCORE_KEY] = scores
        return None

    def score(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> int:
        scores: dict[str, dict[str, int]] = state.data[PRE_SCORE_KEY]
        total = 0
        for key, by_value in scores.items():
            value = node.labels.get(key)
            if value is not None:
                total += by_value.get(value, 0)
        return total

    def normalize_score(self, state: CycleState, pod: PodInfo, scores: list[int], nodes: list[NodeInfo]) -> None:
        if not scores:
            return
        lowest, highest = min(scores), max(scores)
        spread = highest - lowest
        scores[:] = [int(MAX_NODE_SCORE * ((s - lowest) / spread)) if spread > 0 else 0 for s in scores]

    def events_to_register(self) -> list[EventRegistration]:
        return [(ClusterEvent(POD, ActionType.ADD | ActionType.UPDATE_POD_LABEL | ActionType.DELETE), None),
                (ClusterEvent(NODE, ActionType.ADD | ActionType.UPDATE_NODE_LABEL), None)]
