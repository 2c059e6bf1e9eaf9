"""apiextensions.k8s.io/v1: CustomResourceDefinitions (the kind itself; serving CRs is elsewhere)."""

from __future__ import annotations

from kubelite.api.kinds.common import CREATED_AT_COLUMNS, created_at_row, dig, immutable
from kubelite.api.names import (
    invalid_shown,
    invalid_value,
    is_dns1035_label,
    is_dns1123_subdomain,
    required_because,
)
from kubelite.api.resource import ResourceType
from kubelite.api.strategy import Cause, Obj, Strategy, required, unsupported

_VERSIONS_SHOWN = "[]apiextensions.CustomResourceDefinitionVersion{...}"


def crd_defaults(crd: Obj) -> None:
    """Singular and listKind from the kind, conversion None, storedVersions from the storage version."""
    spec = crd.setdefault("spec", {})
    names = spec.setdefault("names", {})
    if names.get("kind"):
        names.setdefault("singular", names["kind"].lower())
        names.setdefault("listKind", names["kind"] + "List")
    spec.setdefault("conversion", {"strategy": "None"})
    status = crd.setdefault("status", {})
    if not status.get("storedVersions"):
        status["storedVersions"] = [v["name"] for v in spec.get("versions") or [] if v.get("storage")][:1]


def _validate_names(names: Obj) -> list[Cause]:
    causes: list[Cause] = []
    for key in ("plural", "singular"):
        value = names.get(key) or ""
        if not value and key == "plural":
            causes.append(required("spec.names.plural"))
        elif value and (errors := is_dns1035_label(value)):
            causes.append(invalid_value(f"spec.names.{key}", value, ",".join(errors)))
    for key in ("kind", "listKind"):
        if not names.get(key):
            causes.append(required(f"spec.names.{key}"))
    return causes


def crd_validate(crd: Obj) -> list[Cause]:
    """ValidateCustomResourceDefinition: name = plural.group, group, names, scope, one storage version."""
    spec = crd.get("spec") or {}
    group, plural = spec.get("group") or "", dig(spec, "names", "plural", default="")
    causes: list[Cause] = []
    name = dig(crd, "metadata", "name", default="")
    if name and name != f"{plural}.{group}":
        causes.append(invalid_value("metadata.name", name, 'must be spec.names.plural+"."+spec.group'))
    if not group:
        causes.append(required("spec.group"))
    elif errors := is_dns1123_subdomain(group):
        causes.append(invalid_value("spec.group", group, ",".join(errors)))
    elif "." not in group:
        causes.append(invalid_value("spec.group", group, "should be a domain with at least one dot"))
    causes += _validate_names(spec.get("names") or {})
    scope = spec.get("scope") or ""
    if scope not in ("Cluster", "Namespaced"):
        causes.append(unsupported("spec.scope", scope, ["Cluster", "Namespaced"]))
    versions = spec.get("versions") or []
    if not versions:
        causes.append(
            required_because("spec.versions", "must have exactly one version marked as storage version")
        )
    names = [v.get("name", "") for v in versions]
    for i, version in enumerate(names):
        if errors := is_dns1035_label(version):
            causes.append(invalid_value(f"spec.versions[{i}].name", version, ",".join(errors)))
    if len(set(names)) != len(names):
        causes.append(invalid_shown("spec.versions", _VERSIONS_SHOWN, "must contain unique version names"))
    if versions and sum(1 for v in versions if v.get("storage")) != 1:
        causes.append(
            invalid_shown(
                "spec.versions", _VERSIONS_SHOWN, "must have exactly one version marked as storage version"
            )
        )
    return causes


def crd_validate_update(new: Obj, old: Obj) -> list[Cause]:
    """Group, plural, kind and scope decide where objects are stored: they are fixed."""
    causes: list[Cause] = []
    for path in (("group",), ("names", "plural"), ("names", "kind"), ("scope",)):
        causes += immutable(dig(new, "spec", *path), dig(old, "spec", *path), "spec." + ".".join(path))
    return causes


RESOURCES = [
    ResourceType(
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        False,
        Strategy(
            columns=CREATED_AT_COLUMNS,
            row=created_at_row,
            defaults=crd_defaults,
            validate=crd_validate,
            validate_update=crd_validate_update,
        ),
        short_names=("crd", "crds"),
        subresources=("status",),
        schema="io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.CustomResourceDefinition",
    )
]
