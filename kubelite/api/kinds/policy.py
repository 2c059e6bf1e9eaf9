"""policy/v1: PodDisruptionBudgets."""

from __future__ import annotations

from typing import Any

from kubelite.api.kinds.common import columns, since, validate_int_or_percent, validate_label_selector
from kubelite.api.names import invalid_shown
from kubelite.api.resource import ResourceType
from kubelite.api.strategy import AGE_COLUMN, Cause, Column, Obj, Strategy, unsupported

EVICTION_POLICIES = ["AlwaysAllow", "IfHealthyBudget"]


def pdb_validate(pdb: Obj) -> list[Cause]:
    """ValidatePodDisruptionBudgetSpec: one of minAvailable/maxUnavailable, valid values, selector."""
    spec = pdb.get("spec") or {}
    causes: list[Cause] = []
    if spec.get("minAvailable") is not None and spec.get("maxUnavailable") is not None:
        causes.append(
            invalid_shown(
                "spec",
                "policy.PodDisruptionBudgetSpec{...}",
                "minAvailable and maxUnavailable cannot be both set",
            )
        )
    for key in ("minAvailable", "maxUnavailable"):
        if spec.get(key) is not None:
            causes += validate_int_or_percent(spec[key], f"spec.{key}", at_most_100=True)
    if isinstance(spec.get("selector"), dict):
        causes += validate_label_selector(spec["selector"], "spec.selector")
    policy = spec.get("unhealthyPodEvictionPolicy")
    if policy is not None and policy not in EVICTION_POLICIES:
        causes.append(unsupported("spec.unhealthyPodEvictionPolicy", policy, EVICTION_POLICIES))
    return causes


def pdb_row(pdb: Obj) -> list[Any]:
    """NAME MIN AVAILABLE MAX UNAVAILABLE ALLOWED DISRUPTIONS AGE ('N/A' when unset)."""
    spec, meta = pdb.get("spec") or {}, pdb.get("metadata") or {}
    shown = [
        str(spec[key]) if spec.get(key) is not None else "N/A" for key in ("minAvailable", "maxUnavailable")
    ]
    return [
        meta.get("name", ""),
        *shown,
        (pdb.get("status") or {}).get("disruptionsAllowed", 0),
        since(meta.get("creationTimestamp")),
    ]


RESOURCES = [
    ResourceType(
        "policy",
        "v1",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
        True,
        Strategy(
            columns=columns(
                Column("Min Available", description="The minimum number of pods that must be available."),
                Column("Max Unavailable", description="The maximum number of pods that may be unavailable."),
                Column(
                    "Allowed Disruptions",
                    type="integer",
                    description="Calculated number of pods that may be disrupted at this time.",
                ),
                AGE_COLUMN,
            ),
            row=pdb_row,
            validate=pdb_validate,
        ),
        short_names=("pdb",),
        subresources=("status",),
        schema="io.k8s.api.policy.v1.PodDisruptionBudget",
    )
]
