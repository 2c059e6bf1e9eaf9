"""rbac.authorization.k8s.io/v1: Roles, ClusterRoles and their bindings."""

from __future__ import annotations

from typing import Any

from kubelite.api.kinds.common import CREATED_AT_COLUMNS, columns, created_at_row, since
from kubelite.api.names import invalid_shown, invalid_value, required_because
from kubelite.api.resource import ResourceType
from kubelite.api.strategy import AGE_COLUMN, Cause, Column, Obj, Strategy, required, unsupported

GROUP = "rbac.authorization.k8s.io"
SUBJECT_KINDS = ["ServiceAccount", "User", "Group"]


def _validate_rules(role: Obj, namespaced: bool) -> list[Cause]:
    """Each rule needs verbs; resource rules need API groups and resources; URL rules only cluster-wide."""
    causes: list[Cause] = []
    for i, rule in enumerate(role.get("rules") or []):
        at = f"rules[{i}]"
        if not rule.get("verbs"):
            causes.append(required_because(f"{at}.verbs", "verbs must contain at least one value"))
        urls = rule.get("nonResourceURLs")
        if urls and namespaced:
            causes.append(
                invalid_value(
                    f"{at}.nonResourceURLs", urls, "namespaced rules cannot apply to non-resource URLs"
                )
            )
        if urls and (rule.get("apiGroups") or rule.get("resources") or rule.get("resourceNames")):
            causes.append(
                invalid_value(
                    f"{at}.nonResourceURLs",
                    urls,
                    "rules cannot apply to both regular resources and non-resource URLs",
                )
            )
        if urls:
            continue
        if not rule.get("apiGroups"):
            causes.append(
                required_because(f"{at}.apiGroups", "resource rules must supply at least one api group")
            )
        if not rule.get("resources"):
            causes.append(
                required_because(f"{at}.resources", "resource rules must supply at least one resource")
            )
    return causes


def binding_defaults(binding: Obj) -> None:
    """roleRef and User/Group subjects default to the RBAC API group."""
    role_ref = binding.setdefault("roleRef", {})
    if not role_ref.get("apiGroup"):
        role_ref["apiGroup"] = GROUP
    for subject in binding.get("subjects") or []:
        if not subject.get("apiGroup"):
            subject["apiGroup"] = "" if subject.get("kind") == "ServiceAccount" else GROUP


def _validate_binding(binding: Obj, cluster: bool) -> list[Cause]:
    role_ref = binding.get("roleRef") or {}
    causes: list[Cause] = []
    if role_ref.get("apiGroup") != GROUP:
        causes.append(unsupported("roleRef.apiGroup", role_ref.get("apiGroup", ""), [GROUP]))
    kinds = ["ClusterRole"] if cluster else ["Role", "ClusterRole"]
    if role_ref.get("kind") not in kinds:
        causes.append(unsupported("roleRef.kind", role_ref.get("kind", ""), kinds))
    if not role_ref.get("name"):
        causes.append(required("roleRef.name"))
    for i, subject in enumerate(binding.get("subjects") or []):
        at = f"subjects[{i}]"
        if not subject.get("name"):
            causes.append(required(f"{at}.name"))
        kind = subject.get("kind", "")
        if kind not in SUBJECT_KINDS:
            causes.append(unsupported(f"{at}.kind", kind, SUBJECT_KINDS))
        elif kind == "ServiceAccount" and subject.get("apiGroup"):
            causes.append(unsupported(f"{at}.apiGroup", subject["apiGroup"], [""]))
        elif kind == "ServiceAccount" and cluster and not subject.get("namespace"):
            causes.append(required(f"{at}.namespace"))
        elif kind != "ServiceAccount" and subject.get("apiGroup") != GROUP:
            causes.append(unsupported(f"{at}.apiGroup", subject.get("apiGroup", ""), [GROUP]))
    return causes


def _role_ref_repr(role_ref: Obj) -> str:
    return (
        f'rbac.RoleRef{{APIGroup:"{role_ref.get("apiGroup", "")}", Kind:"{role_ref.get("kind", "")}", '
        f'Name:"{role_ref.get("name", "")}"}}'
    )


def binding_validate_update(new: Obj, old: Obj) -> list[Cause]:
    """A binding's roleRef is fixed: kubectl apply users meet this as 'cannot change roleRef'."""
    if (new.get("roleRef") or {}) == (old.get("roleRef") or {}):
        return []
    return [invalid_shown("roleRef", _role_ref_repr(new.get("roleRef") or {}), "cannot change roleRef")]


def _subjects(binding: Obj, kind: str) -> str:
    subjects = [s for s in binding.get("subjects") or [] if s.get("kind") == kind]
    if kind == "ServiceAccount":
        return ", ".join(f"{s.get('namespace', '')}/{s.get('name', '')}" for s in subjects)
    return ", ".join(s.get("name", "") for s in subjects)


def binding_row(binding: Obj) -> list[Any]:
    """NAME ROLE AGE USERS GROUPS SERVICEACCOUNTS, as upstream printRoleBinding."""
    meta, role_ref = binding.get("metadata") or {}, binding.get("roleRef") or {}
    return [
        meta.get("name", ""),
        f"{role_ref.get('kind', '')}/{role_ref.get('name', '')}",
        since(meta.get("creationTimestamp")),
        *(_subjects(binding, kind) for kind in ("User", "Group", "ServiceAccount")),
    ]


def _binding_strategy(cluster: bool) -> Strategy:
    word = "clusterRoleBinding" if cluster else "roleBinding"
    return Strategy(
        has_status=False,
        columns=columns(
            Column(
                "Role",
                description="RoleRef can reference a Role in the current namespace or a "
                "ClusterRole in the global namespace.",
            ),
            AGE_COLUMN,
            Column("Users", priority=1, description=f"Users in the {word}"),
            Column("Groups", priority=1, description=f"Groups in the {word}"),
            Column("ServiceAccounts", priority=1, description=f"ServiceAccounts in the {word}"),
        ),
        row=binding_row,
        defaults=binding_defaults,
        validate=lambda b: _validate_binding(b, cluster),
        validate_update=binding_validate_update,
    )


def _role_strategy(namespaced: bool) -> Strategy:
    return Strategy(
        has_status=False,
        columns=CREATED_AT_COLUMNS,
        row=created_at_row,
        validate=lambda role: _validate_rules(role, namespaced),
    )


def _rbac(kind: str, plural: str, namespaced: bool, strategy: Strategy) -> ResourceType:
    return ResourceType(GROUP, "v1", kind, plural, namespaced, strategy, schema=f"io.k8s.api.rbac.v1.{kind}")


RESOURCES = [
    _rbac("Role", "roles", True, _role_strategy(True)),
    _rbac("RoleBinding", "rolebindings", True, _binding_strategy(False)),
    _rbac("ClusterRole", "clusterroles", False, _role_strategy(False)),
    _rbac("ClusterRoleBinding", "clusterrolebindings", False, _binding_strategy(True)),
]
