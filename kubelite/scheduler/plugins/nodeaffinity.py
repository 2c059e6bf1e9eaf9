"""NodeAffinity: spec.nodeSelector and required node affinity filter nodes; preferred terms score them."""

from __future__ import annotations

from typing import Any

from kubelite.scheduler.framework import (
    MAX_NODE_SCORE,
    NODE,
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
    default_normalize_score,
    unresolvable,
)
from kubelite.scheduler.helpers import NodeMatcher, RequiredNodeAffinity, node_selector_term
from kubelite.scheduler.nodeinfo import NodeInfo
from kubelite.scheduler.podinfo import PodInfo

Obj = dict[str, Any]
ERR_REASON_POD = "node(s) didn't match Pod's node affinity/selector"
ERR_REASON_CONFLICT = "pod affinity terms conflict"
PRE_FILTER_KEY = "PreFilterNodeAffinity"
PRE_SCORE_KEY = "PreScoreNodeAffinity"


def _required_terms(spec: Obj) -> list[Obj] | None:
    required = (((spec.get("affinity") or {}).get("nodeAffinity") or {})
                .get("requiredDuringSchedulingIgnoredDuringExecution"))
    return None if required is None else list(required.get("nodeSelectorTerms") or [])


def preferred_terms(terms: list[Obj]) -> list[tuple[NodeMatcher, int]]:
    """Weighted PreferredSchedulingTerms; zero weights and empty or invalid terms are dropped."""
    result = []
    for term in terms:
        weight = int(term.get("weight") or 0)
        try:
            matcher = node_selector_term(term.get("preference") or {})
        except ValueError:
            continue
        if weight and matcher is not None:
            result.append((matcher, weight))
    return result


class NodeAffinity(PreFilterPlugin, FilterPlugin, PreScorePlugin, ScorePlugin):
    """Filter by the pod's node selector and required terms (plus args.addedAffinity); score preferred terms."""

    name = "NodeAffinity"
    normalizes = True

    def __init__(self, args: Obj, handle: Handle):
        super().__init__(args, handle)
        added = args.get("addedAffinity") or {}
        self.added_required: Obj | None = added.get("requiredDuringSchedulingIgnoredDuringExecution")
        self.added_preferred = preferred_terms(added.get("preferredDuringSchedulingIgnoredDuringExecution") or [])

    def required(self, pod: PodInfo) -> RequiredNodeAffinity:
        """The pod's required node affinity including the profile's added affinity."""
        return RequiredNodeAffinity(pod.pod.get("spec") or {}, self.added_required)

    def pre_filter(self, state: CycleState, pod: PodInfo,
                   nodes: list[NodeInfo]) -> tuple[set[str] | None, Status | None]:
        required = self.required(pod)
        if required.empty:
            return None, SKIP
        state.data[PRE_FILTER_KEY] = required
        terms = _required_terms(pod.pod.get("spec") or {})
        if not terms:
            return None, None
        names: set[str] = set()
        for term in terms:
            term_names: set[str] | None = None
            for field in term.get("matchFields") or []:
                if field.get("key") == "metadata.name" and field.get("operator") == "In":
                    values = set(field.get("values") or [])
                    term_names = values if term_names is None else term_names & values
            if term_names is None:
                return None, None  # a term without a node name: every node may match
            names |= term_names
        if not names:
            return None, unresolvable(ERR_REASON_CONFLICT)
        return names, None

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        required: RequiredNodeAffinity = state.data[PRE_FILTER_KEY]
        if not required.matches(node.labels, node.name):
            return unresolvable(ERR_REASON_POD)
        return None

    def pre_score(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]) -> Status | None:
        spec = pod.pod.get("spec") or {}
        preferred = (((spec.get("affinity") or {}).get("nodeAffinity") or {})
                     .get("preferredDuringSchedulingIgnoredDuringExecution") or [])
        terms = preferred_terms(preferred) + self.added_preferred
        if not terms:
            return SKIP
        state.data[PRE_SCORE_KEY] = terms
        return None

    def score(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> int:
        return sum(weight for matcher, weight in state.data[PRE_SCORE_KEY] if matcher(node.labels, node.name))

    def normalize_score(self, state: CycleState, pod: PodInfo, scores: list[int], nodes: list[NodeInfo]) -> None:
        default_normalize_score(MAX_NODE_SCORE, False, scores)

    def events_to_register(self) -> list[EventRegistration]:
        def now_matches(pod: PodInfo, old: Obj | None, new: Obj | None) -> bool:
            if new is None:
                return False
            required = self.required(pod)

            def match(node: Obj) -> bool:
                return required.matches(node["metadata"].get("labels") or {}, node["metadata"]["name"])
            return match(new) and (old is None or not match(old))
        return [(ClusterEvent(NODE, ActionType.ADD | ActionType.UPDATE_NODE_LABEL), now_matches)]
