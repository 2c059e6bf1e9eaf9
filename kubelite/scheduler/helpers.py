"""Matching helpers shared by plugins: taints and tolerations, node selectors and node affinity."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from kubelite.api.selectors import LabelSelector, SelectorError, from_label_selector

Obj = dict[str, Any]
NO_SCHEDULE, NO_EXECUTE, PREFER_NO_SCHEDULE = "NoSchedule", "NoExecute", "PreferNoSchedule"
TAINT_NODE_UNSCHEDULABLE = "node.kubernetes.io/unschedulable"
LABEL_HOSTNAME = "kubernetes.io/hostname"
LABEL_ZONE = "topology.kubernetes.io/zone"
LABEL_REGION = "topology.kubernetes.io/region"
NodeMatcher = Callable[[Mapping[str, str], str], bool]
"""A predicate over (node labels, node name)."""


def tolerates(toleration: Obj, key: str, value: str, effect: str) -> bool:
    """Toleration.ToleratesTaint: effect and key match (empty means any), then Equal or Exists."""
    t_effect = toleration.get("effect") or ""
    if t_effect and t_effect != effect:
        return False
    t_key = toleration.get("key") or ""
    if t_key and t_key != key:
        return False
    operator = toleration.get("operator") or "Equal"
    if operator == "Exists":
        return True
    return operator == "Equal" and (toleration.get("value") or "") == value


def tolerated(tolerations: Iterable[Obj], key: str, value: str, effect: str) -> bool:
    """True when any toleration tolerates the taint."""
    return any(tolerates(t, key, value, effect) for t in tolerations)


def taint_tuple(taint: Obj) -> tuple[str, str, str]:
    """(key, value, effect) of a taint."""
    return taint.get("key") or "", taint.get("value") or "", taint.get("effect") or ""


def first_untolerated(taints: Iterable[tuple[str, str, str]], tolerations: list[Obj]) -> tuple[str, str, str] | None:
    """The first taint no toleration tolerates (FindMatchingUntoleratedTaint), or None."""
    for taint in taints:
        if not tolerated(tolerations, *taint):
            return taint
    return None


def _requirement(expression: Obj, field: bool) -> Callable[[Mapping[str, str], str], bool]:
    """One NodeSelectorRequirement as a predicate over (labels, node name)."""
    key = expression.get("key") or ""
    operator = expression.get("operator") or ""
    values = list(expression.get("values") or [])
    if field:
        if key != "metadata.name" or operator not in ("In", "NotIn") or len(values) != 1:
            raise SelectorError(f"invalid node field selector requirement {key} {operator} {values}")
        name = values[0]
        if operator == "In":
            return lambda labels, node_name: node_name == name
        return lambda labels, node_name: node_name != name
    value_set = frozenset(values)
    if operator == "In":
        return lambda labels, node_name: labels.get(key) in value_set
    if operator == "NotIn":
        return lambda labels, node_name: labels.get(key) not in value_set
    if operator == "Exists":
        return lambda labels, node_name: key in labels
    if operator == "DoesNotExist":
        return lambda labels, node_name: key not in labels
    if operator in ("Gt", "Lt"):
        if len(values) != 1:
            raise SelectorError(f"{operator} needs exactly one value")
        bound = int(values[0])
        greater = operator == "Gt"

        def compare(labels: Mapping[str, str], node_name: str) -> bool:
            raw = labels.get(key)
            try:
                number = int(raw) if raw is not None else None
            except ValueError:
                return False
            return number is not None and (number > bound if greater else number < bound)
        return compare
    raise SelectorError(f"{operator!r} is not a valid node selector operator")


def node_selector_term(term: Obj) -> NodeMatcher | None:
    """A NodeSelectorTerm as a predicate; None when the term is empty or invalid (it matches nothing)."""
    tests = [_requirement(e, False) for e in term.get("matchExpressions") or []]
    tests += [_requirement(e, True) for e in term.get("matchFields") or []]
    if not tests:
        return None
    return lambda labels, node_name: all(test(labels, node_name) for test in tests)


def node_selector(selector: Obj) -> NodeMatcher:
    """A NodeSelector (terms ORed); invalid or empty terms match nothing."""
    matchers: list[NodeMatcher] = []
    for term in selector.get("nodeSelectorTerms") or []:
        try:
            matcher = node_selector_term(term)
        except (SelectorError, ValueError):
            continue
        if matcher is not None:
            matchers.append(matcher)
    return lambda labels, node_name: any(m(labels, node_name) for m in matchers)


class RequiredNodeAffinity:
    """A pod's spec.nodeSelector AND its required node affinity (GetRequiredNodeAffinity)."""

    __slots__ = ("selector", "affinity", "empty")

    def __init__(self, spec: Obj, added: Obj | None = None):
        selector = spec.get("nodeSelector") or {}
        self.selector = frozenset(selector.items()) if selector else None
        required = (((spec.get("affinity") or {}).get("nodeAffinity") or {})
                    .get("requiredDuringSchedulingIgnoredDuringExecution"))
        matchers = [node_selector(required)] if required is not None else []
        if added is not None:
            matchers.append(node_selector(added))
        self.affinity = matchers
        self.empty = self.selector is None and not matchers

    def matches(self, labels: Mapping[str, str], node_name: str) -> bool:
        """True when the node's labels (and name) satisfy the selector and every required affinity."""
        if self.selector is not None and not labels.items() >= self.selector:
            return False
        for matcher in self.affinity:
            if not matcher(labels, node_name):
                return False
        return True


def label_selector(selector: Obj | None, labels: Mapping[str, str] | None = None,
                   match_label_keys: Iterable[str] = (), mismatch_label_keys: Iterable[str] = ()) -> LabelSelector:
    """A metav1.LabelSelector matcher (None matches nothing; invalid ones too), plus matchLabelKeys from labels."""
    if selector is None:
        return from_label_selector(None)
    extra = []
    for key in match_label_keys:
        if labels and key in labels:
            extra.append({"key": key, "operator": "In", "values": [labels[key]]})
    for key in mismatch_label_keys:
        if labels and key in labels:
            extra.append({"key": key, "operator": "NotIn", "values": [labels[key]]})
    if extra:
        selector = {**selector, "matchExpressions": [*(selector.get("matchExpressions") or []), *extra]}
    try:
        return from_label_selector(selector)
    except SelectorError:
        return from_label_selector(None)
