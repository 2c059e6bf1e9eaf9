"""scheduling.k8s.io/v1: PriorityClasses."""

from __future__ import annotations

from typing import Any

from kubelite.api.kinds.common import columns, immutable, since
from kubelite.api.resource import ResourceType
from kubelite.api.strategy import AGE_COLUMN, Cause, Column, Obj, Strategy, forbidden, unsupported

HIGHEST_USER_PRIORITY = 1000000000
SYSTEM_CLASSES = {"system-node-critical": 2000001000, "system-cluster-critical": 2000000000}
PREEMPTION_POLICIES = ["Never", "PreemptLowerPriority"]


def priorityclass_defaults(obj: Obj) -> None:
    """SetDefaults_PriorityClass: preemptionPolicy PreemptLowerPriority."""
    obj.setdefault("preemptionPolicy", "PreemptLowerPriority")


def priorityclass_validate(obj: Obj) -> list[Cause]:
    """ValidatePriorityClass: reserved system- names; user values at most one billion."""
    name, value = (obj.get("metadata") or {}).get("name", ""), obj.get("value", 0)
    causes: list[Cause] = []
    if name.startswith("system-"):
        if name not in SYSTEM_CLASSES:
            error = f"{name} is not a known system priority class"
        elif value != SYSTEM_CLASSES[name]:
            error = f"value of {name} PriorityClass must be {SYSTEM_CLASSES[name]}"
        else:
            error = ""
        if error:
            causes.append(
                forbidden(
                    "metadata.name",
                    "priority class names with 'system-' prefix are reserved for system use only. error: "
                    f"{error}",
                )
            )
    elif value > HIGHEST_USER_PRIORITY:
        causes.append(
            forbidden("value", f"maximum allowed value of a user defined priority is {HIGHEST_USER_PRIORITY}")
        )
    policy = obj.get("preemptionPolicy")
    if policy is not None and policy not in PREEMPTION_POLICIES:
        causes.append(unsupported("preemptionPolicy", policy, PREEMPTION_POLICIES))
    return causes


def priorityclass_validate_update(new: Obj, old: Obj) -> list[Cause]:
    """A PriorityClass's value and preemption policy are fixed."""
    causes = (
        []
        if new.get("value") == old.get("value")
        else [forbidden("value", "may not be changed in an update.")]
    )
    return causes + immutable(new.get("preemptionPolicy"), old.get("preemptionPolicy"), "preemptionPolicy")


def priorityclass_row(obj: Obj) -> list[Any]:
    """NAME VALUE GLOBAL-DEFAULT AGE PREEMPTIONPOLICY."""
    meta = obj.get("metadata") or {}
    return [
        meta.get("name", ""),
        obj.get("value", 0),
        bool(obj.get("globalDefault")),
        since(meta.get("creationTimestamp")),
        obj.get("preemptionPolicy") or "",
    ]


RESOURCES = [
    ResourceType(
        "scheduling.k8s.io",
        "v1",
        "PriorityClass",
        "priorityclasses",
        False,
        Strategy(
            has_status=False,
            row=priorityclass_row,
            validate=priorityclass_validate,
            validate_update=priorityclass_validate_update,
            defaults=priorityclass_defaults,
            columns=columns(
                Column(
                    "Value",
                    type="integer",
                    description="value represents the integer value of this priority class.",
                ),
                Column(
                    "Global-Default",
                    type="boolean",
                    description="globalDefault specifies whether this "
                    "PriorityClass should be considered as the default priority for pods that do not have "
                    "any "
                    "priority class.",
                ),
                AGE_COLUMN,
                Column(
                    "PreemptionPolicy",
                    description="preemptionPolicy is the Policy for preempting pods with lower priority.",
                ),
            ),
        ),
        short_names=("pc",),
        schema="io.k8s.api.scheduling.v1.PriorityClass",
    )
]
