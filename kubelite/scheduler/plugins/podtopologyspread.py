"""PodTopologySpread: keep matching pods spread across topology domains (hard filter and soft score)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from kubelite.api.selectors import LabelSelector
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
from kubelite.scheduler.helpers import (
    LABEL_HOSTNAME,
    LABEL_ZONE,
    RequiredNodeAffinity,
    first_untolerated,
    label_selector,
)
from kubelite.scheduler.nodeinfo import NodeInfo
from kubelite.scheduler.podinfo import PodInfo

Obj = dict[str, Any]
DO_NOT_SCHEDULE, SCHEDULE_ANYWAY = "DoNotSchedule", "ScheduleAnyway"
ERR_REASON_CONSTRAINTS_NOT_MATCH = "node(s) didn't match pod topology spread constraints"
ERR_REASON_NODE_LABEL_NOT_MATCH = ERR_REASON_CONSTRAINTS_NOT_MATCH + " (missing required label)"
SYSTEM_DEFAULT_CONSTRAINTS: list[Obj] = [
    {"topologyKey": LABEL_HOSTNAME, "whenUnsatisfiable": SCHEDULE_ANYWAY, "maxSkew": 3},
    {"topologyKey": LABEL_ZONE, "whenUnsatisfiable": SCHEDULE_ANYWAY, "maxSkew": 5},
]
PRE_FILTER_KEY = "PreFilterPodTopologySpread"
PRE_SCORE_KEY = "PreScorePodTopologySpread"
_MAX_INT32 = 2**31 - 1
Pair = tuple[str, str]


class Constraint:
    """A parsed topology spread constraint."""

    __slots__ = ("max_skew", "topology_key", "selector", "min_domains", "honor_affinity", "honor_taints")

    def __init__(self, raw: Obj, selector: LabelSelector):
        self.max_skew = int(raw.get("maxSkew") or 1)
        self.topology_key: str = raw.get("topologyKey") or ""
        self.selector = selector
        self.min_domains = int(raw.get("minDomains") or 1)
        self.honor_affinity = (raw.get("nodeAffinityPolicy") or "Honor") == "Honor"
        self.honor_taints = (raw.get("nodeTaintsPolicy") or "Ignore") == "Honor"

    def includes(self, pod: PodInfo, node: NodeInfo, required: RequiredNodeAffinity) -> bool:
        """matchNodeInclusionPolicies: the node counts for this constraint under its affinity/taint policies."""
        if self.honor_affinity and not required.matches(node.labels, node.name):
            return False
        return not (self.honor_taints and first_untolerated(node.hard_taints, pod.tolerations) is not None)


def count_matching(pods: Iterable[PodInfo], selector: LabelSelector, namespace: str) -> int:
    """Pods in the namespace, not terminating, whose labels match (an empty selector matches none)."""
    if selector.empty:
        return 0
    return sum(1 for p in pods if not p.deleting and p.namespace == namespace and selector.matches(p.labels))


def _has_keys(labels: dict[str, str], constraints: list[Constraint]) -> bool:
    return all(c.topology_key in labels for c in constraints)


class _CriticalPaths:
    """The two topology values with the fewest matching pods of one key (index 0 is the minimum)."""

    __slots__ = ("paths",)

    def __init__(self) -> None:
        self.paths: list[list[Any]] = [["", _MAX_INT32], ["", _MAX_INT32]]

    def clone(self) -> _CriticalPaths:
        clone = _CriticalPaths()
        clone.paths = [list(p) for p in self.paths]
        return clone

    def update(self, value: str, num: int) -> None:
        p = self.paths
        index = 0 if value == p[0][0] else 1 if value == p[1][0] else -1
        if index >= 0:
            p[index][1] = num
            if p[0][1] > p[1][1]:
                p[0], p[1] = p[1], p[0]
        elif num < p[0][1]:
            p[1] = p[0]
            p[0] = [value, num]
        elif num < p[1][1]:
            p[1] = [value, num]


class _FilterState:
    """Matching pod counts per topology pair over the eligible nodes, and per key the domain count and minima."""

    __slots__ = ("constraints", "pair_counts", "domains", "critical", "required")

    def __init__(self, constraints: list[Constraint], required: RequiredNodeAffinity):
        self.constraints = constraints
        self.required = required
        self.pair_counts: dict[Pair, int] = {}
        self.domains: dict[str, int] = {}
        self.critical: dict[str, _CriticalPaths] = {}

    def clone(self) -> _FilterState:
        clone = _FilterState(self.constraints, self.required)
        clone.pair_counts = dict(self.pair_counts)
        clone.domains = dict(self.domains)
        clone.critical = {k: v.clone() for k, v in self.critical.items()}
        return clone

    def min_match(self, key: str, min_domains: int) -> int:
        if self.domains.get(key, 0) < min_domains:
            return 0
        return self.critical[key].paths[0][1]

    def update_with_pod(self, updated: PodInfo, pod: PodInfo, node: NodeInfo, delta: int) -> None:
        if updated.namespace != pod.namespace or node.node is None or not _has_keys(node.labels, self.constraints):
            return
        for c in self.constraints:
            if not c.selector.matches(updated.labels) or not c.includes(pod, node, self.required):
                continue
            pair = (c.topology_key, node.labels[c.topology_key])
            self.pair_counts[pair] = self.pair_counts.get(pair, 0) + delta
            self.critical[c.topology_key].update(pair[1], self.pair_counts[pair])


class _ScoreState:
    """Soft constraints, nodes ignored for lacking topology labels, pod counts per pair and normalizing weights."""

    __slots__ = ("constraints", "ignored", "pair_counts", "weights")

    def __init__(self, constraints: list[Constraint]):
        self.constraints = constraints
        self.ignored: set[str] = set()
        self.pair_counts: dict[Pair, int] = {}
        self.weights: list[float] = []


class PodTopologySpread(PreFilterPlugin, FilterPlugin, PreScorePlugin, ScorePlugin):
    """Filter by DoNotSchedule constraints, score by ScheduleAnyway ones (or the cluster default constraints)."""

    name = "PodTopologySpread"
    normalizes = True

    def __init__(self, args: Obj, handle: Handle):
        super().__init__(args, handle)
        defaulting = args.get("defaultingType") or "System"
        if defaulting not in ("System", "List"):
            raise ValueError(f"PodTopologySpread: defaultingType {defaulting!r} must be System or List")
        self.system_defaulted = defaulting == "System"
        self.default_constraints: list[Obj] = (SYSTEM_DEFAULT_CONSTRAINTS if self.system_defaulted
                                               else list(args.get("defaultConstraints") or []))
        for c in self.default_constraints:
            if c.get("labelSelector") is not None:
                raise ValueError("PodTopologySpread: default constraints must not have a labelSelector")

    def constraints(self, pod: PodInfo, action: str) -> list[Constraint]:
        """The pod's constraints of one kind, or the default constraints for pods that declare none."""
        spec = pod.pod.get("spec") or {}
        declared = spec.get("topologySpreadConstraints") or []
        if declared:
            return [Constraint(c, label_selector(c.get("labelSelector"), pod.labels, c.get("matchLabelKeys") or ()))
                    for c in declared if c.get("whenUnsatisfiable") == action]
        wanted = [c for c in self.default_constraints if (c.get("whenUnsatisfiable") or DO_NOT_SCHEDULE) == action]
        if not wanted:
            return []
        selector = self.default_selector(pod)
        if selector.empty:
            return []
        return [Constraint(c, selector) for c in wanted]

    def default_selector(self, pod: PodInfo) -> LabelSelector:
        """helper.DefaultSelector: labels selected by the pod's Services and its RC, or its RS/StatefulSet selector."""
        listers = self.handle.listers
        match_labels: dict[str, str] = {}
        expressions: list[Obj] = []
        for service in listers.list("services", pod.namespace):
            selector = (service.get("spec") or {}).get("selector") or {}
            if selector and pod.labels.items() >= selector.items():
                match_labels.update(selector)
        owner = next((r for r in pod.pod["metadata"].get("ownerReferences") or [] if r.get("controller")), None)
        if owner is not None:
            kinds = {("v1", "ReplicationController"): "replicationcontrollers",
                     ("apps/v1", "ReplicaSet"): "replicasets", ("apps/v1", "StatefulSet"): "statefulsets"}
            kind = kinds.get((owner.get("apiVersion", ""), owner.get("kind", "")))
            controller = listers.get(kind, pod.namespace, owner.get("name", "")) if kind else None
            if controller is not None:
                selector = (controller.get("spec") or {}).get("selector") or {}
                if kind == "replicationcontrollers":
                    match_labels.update(selector)
                else:
                    expressions += [{"key": k, "operator": "In", "values": [v]}
                                    for k, v in (selector.get("matchLabels") or {}).items()]
                    expressions += selector.get("matchExpressions") or []
        return label_selector({"matchLabels": match_labels, "matchExpressions": expressions})

    # Filter.

    def pre_filter(self, state: CycleState, pod: PodInfo,
                   nodes: list[NodeInfo]) -> tuple[set[str] | None, Status | None]:
        constraints = self.constraints(pod, DO_NOT_SCHEDULE)
        if not constraints:
            return None, SKIP
        s = _FilterState(constraints, RequiredNodeAffinity(pod.pod.get("spec") or {}))
        for node in nodes:
            if not _has_keys(node.labels, constraints):
                continue
            per_node: dict[Pair, int] = {}
            for c in constraints:
                if c.includes(pod, node, s.required):
                    per_node[(c.topology_key, node.labels[c.topology_key])] = count_matching(
                        node.pods.values(), c.selector, pod.namespace)
            for pair, count in per_node.items():
                s.pair_counts[pair] = s.pair_counts.get(pair, 0) + count
        for c in constraints:
            s.critical[c.topology_key] = _CriticalPaths()
        for (key, value), count in s.pair_counts.items():
            s.domains[key] = s.domains.get(key, 0) + 1
            s.critical[key].update(value, count)
        state.data[PRE_FILTER_KEY] = s
        return None, None

    def add_pod(self, state: CycleState, pod: PodInfo, added: PodInfo, node: NodeInfo) -> None:
        s = state.data.get(PRE_FILTER_KEY)
        if s is not None:
            s.update_with_pod(added, pod, node, 1)

    def remove_pod(self, state: CycleState, pod: PodInfo, removed: PodInfo, node: NodeInfo) -> None:
        s = state.data.get(PRE_FILTER_KEY)
        if s is not None:
            s.update_with_pod(removed, pod, node, -1)

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        s: _FilterState = state.data[PRE_FILTER_KEY]
        for c in s.constraints:
            value = node.labels.get(c.topology_key)
            if value is None:
                return unresolvable(ERR_REASON_NODE_LABEL_NOT_MATCH)
            self_match = 1 if c.selector.matches(pod.labels) else 0
            skew = s.pair_counts.get((c.topology_key, value), 0) + self_match - s.min_match(c.topology_key,
                                                                                            c.min_domains)
            if skew > c.max_skew:
                return unschedulable(ERR_REASON_CONSTRAINTS_NOT_MATCH)
        return None

    # Score.

    def pre_score(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]) -> Status | None:
        all_nodes = self.handle.snapshot.node_list()
        if not nodes or not all_nodes:
            return SKIP
        constraints = self.constraints(pod, SCHEDULE_ANYWAY)
        if not constraints:
            return SKIP
        spec = pod.pod.get("spec") or {}
        require_all = bool(spec.get("topologySpreadConstraints")) or not self.system_defaulted
        s = _ScoreState(constraints)
        sizes = [0] * len(constraints)
        for node in nodes:
            if require_all and not _has_keys(node.labels, constraints):
                s.ignored.add(node.name)
                continue
            for i, c in enumerate(constraints):
                if c.topology_key == LABEL_HOSTNAME:
                    continue
                pair = (c.topology_key, node.labels.get(c.topology_key, ""))
                if pair not in s.pair_counts:
                    s.pair_counts[pair] = 0
                    sizes[i] += 1
        for i, c in enumerate(constraints):
            size = len(nodes) - len(s.ignored) if c.topology_key == LABEL_HOSTNAME else sizes[i]
            s.weights.append(math.log(size + 2))
        required = RequiredNodeAffinity(spec)
        if s.pair_counts:
            for node in all_nodes:
                if require_all and not _has_keys(node.labels, constraints):
                    continue
                for c in constraints:
                    if c.topology_key == LABEL_HOSTNAME or not c.includes(pod, node, required):
                        continue
                    pair = (c.topology_key, node.labels.get(c.topology_key, ""))
                    if pair in s.pair_counts:
                        s.pair_counts[pair] += count_matching(node.pods.values(), c.selector, pod.namespace)
        state.data[PRE_SCORE_KEY] = s
        return None

    def score(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> int:
        s: _ScoreState = state.data[PRE_SCORE_KEY]
        if node.name in s.ignored:
            return 0
        score = 0.0
        for c, weight in zip(s.constraints, s.weights, strict=True):
            value = node.labels.get(c.topology_key)
            if value is None:
                continue
            if c.topology_key == LABEL_HOSTNAME:
                count = count_matching(node.pods.values(), c.selector, pod.namespace)
            else:
                count = s.pair_counts.get((c.topology_key, value), 0)
            score += count * weight + (c.max_skew - 1)
        return math.floor(score + 0.5)

    def normalize_score(self, state: CycleState, pod: PodInfo, scores: list[int], nodes: list[NodeInfo]) -> None:
        s: _ScoreState = state.data[PRE_SCORE_KEY]
        valid = [score for score, node in zip(scores, nodes, strict=True) if node.name not in s.ignored]
        if not valid:
            scores[:] = [0] * len(scores)
            return
        lowest, highest = min(valid), max(valid)
        for i, node in enumerate(nodes):
            if node.name in s.ignored:
                scores[i] = 0
            elif highest == 0:
                scores[i] = MAX_NODE_SCORE
            else:
                scores[i] = MAX_NODE_SCORE * (highest + lowest - scores[i]) // highest

    def events_to_register(self) -> list[EventRegistration]:
        def matching_pod(pod: PodInfo, old: Obj | None, new: Obj | None) -> bool:
            constraints = self.constraints(pod, DO_NOT_SCHEDULE) + self.constraints(pod, SCHEDULE_ANYWAY)
            for obj in (old, new):
                if obj is None or obj["metadata"].get("namespace") != pod.namespace:
                    continue
                labels = obj["metadata"].get("labels") or {}
                if any(c.selector.matches(labels) for c in constraints):
                    return True
            return False
        return [(ClusterEvent(POD, ActionType.ADD | ActionType.UPDATE_POD_LABEL | ActionType.DELETE), matching_pod),
                (ClusterEvent(NODE, ActionType.ADD | ActionType.DELETE | ActionType.UPDATE_NODE_LABEL
                              | ActionType.UPDATE_NODE_TAINT), None)]
