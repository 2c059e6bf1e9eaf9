"""What the pod-owning kinds share: selector-versus-template checks and template cells."""

from __future__ import annotations

from typing import Any

from kubelite.api.kinds.common import (
    container_cells,
    dig,
    go_selector_repr,
    non_negative,
    selector_matches,
    validate_label_selector,
)
from kubelite.api.kinds.podspec import validate_template
from kubelite.api.names import invalid_shown, invalid_value
from kubelite.api.resource import ScalePaths
from kubelite.api.strategy import Cause, Obj, forbidden, required, unsupported

SELECTOR_MISMATCH = "`selector` does not match template `labels`"
SCALE = ScalePaths(".spec.replicas", ".status.replicas", ".spec.selector")
"""Where the scale subresource of RCs, ReplicaSets, Deployments and StatefulSets reads and writes."""


def template_labels_match(spec: Obj, path: str) -> list[Cause]:
    """A non-empty selector must select the template's labels."""
    selector, labels = spec.get("selector"), dig(spec, "template", "metadata", "labels")
    if not isinstance(selector, dict) or not (
        selector.get("matchLabels") or selector.get("matchExpressions")
    ):
        return []
    if selector_matches(selector, labels):
        return []
    return [invalid_value(f"{path}.template.metadata.labels", labels or {}, SELECTOR_MISMATCH)]


def validate_selector(spec: Obj, kind_word: str, path: str = "spec") -> list[Cause]:
    """Selector present, well formed and not empty, as apps/v1 kinds require."""
    selector = spec.get("selector")
    if not isinstance(selector, dict):
        return [required(f"{path}.selector")]
    causes = validate_label_selector(selector, f"{path}.selector")
    if not (selector.get("matchLabels") or selector.get("matchExpressions")):
        causes.append(
            invalid_shown(
                f"{path}.selector", go_selector_repr(selector), f"empty selector is invalid for {kind_word}"
            )
        )
    return causes


def validate_long_running(spec: Obj, owner: str, path: str = "spec") -> list[Cause]:
    """Template rules of controllers whose pods run forever: restartPolicy Always, no deadline."""
    pod_spec = dig(spec, "template", "spec", default={})
    causes: list[Cause] = []
    policy = pod_spec.get("restartPolicy", "")
    if policy != "Always":
        causes.append(unsupported(f"{path}.template.spec.restartPolicy", policy, ["Always"]))
    if pod_spec.get("activeDeadlineSeconds") is not None:
        causes.append(
            forbidden(
                f"{path}.template.spec.activeDeadlineSeconds",
                f"activeDeadlineSeconds in {owner} is not Supported",
            )
        )
    return causes


def validate_replicated(spec: Obj, kind_word: str, owner: str) -> list[Cause]:
    """The checks Deployments, ReplicaSets, StatefulSets and DaemonSets share."""
    causes = non_negative(spec.get("replicas"), "spec.replicas")
    causes += non_negative(spec.get("minReadySeconds"), "spec.minReadySeconds")
    causes += non_negative(spec.get("revisionHistoryLimit"), "spec.revisionHistoryLimit")
    causes += validate_selector(spec, kind_word)
    causes += template_labels_match(spec, "spec")
    causes += validate_template(with_claim_volumes(spec), "spec.template")
    return causes + validate_long_running(spec, owner)


def with_claim_volumes(spec: Obj) -> Any:
    """The template as its pods get it: a StatefulSet's volumeClaimTemplates become volumes of those names (so
    volumeMounts may name them)."""
    template, claims = spec.get("template"), spec.get("volumeClaimTemplates") or []
    if not claims or not isinstance(template, dict):
        return template
    pod_spec = dict(template.get("spec") or {})
    names = {(c.get("metadata") or {}).get("name") for c in claims}
    pod_spec["volumes"] = [v for v in pod_spec.get("volumes") or [] if v.get("name") not in names] + [
        {"name": name, "persistentVolumeClaim": {"claimName": name}} for name in sorted(n for n in names if n)]
    return {**template, "spec": pod_spec}


def selector_immutable(new: Obj, old: Obj) -> list[Cause]:
    """apps/v1 and batch/v1: spec.selector may not change."""
    selector, before = dig(new, "spec", "selector"), dig(old, "spec", "selector")
    if selector == before:
        return []
    return [invalid_shown("spec.selector", go_selector_repr(selector), "field is immutable")]


def replicated_fields(obj: Obj) -> dict[str, str]:
    """ReplicaSets and ReplicationControllers may be selected by status.replicas."""
    return {"status.replicas": str(dig(obj, "status", "replicas", default=0))}


def template_cells(spec: Any) -> list[str]:
    """The wide CONTAINERS and IMAGES cells of a pod template."""
    return list(container_cells(dig(spec, "template", "spec", "containers")))
