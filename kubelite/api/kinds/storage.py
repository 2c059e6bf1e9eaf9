"""storage.k8s.io/v1: StorageClasses."""

from __future__ import annotations

from typing import Any

from kubelite.api.kinds.common import columns, dig, immutable, since
from kubelite.api.names import invalid_value, is_qualified_name
from kubelite.api.resource import ResourceType
from kubelite.api.strategy import AGE_COLUMN, Cause, Column, Obj, Strategy, forbidden, required, unsupported

DEFAULT_CLASS_ANNOTATIONS = (
    "storageclass.kubernetes.io/is-default-class",
    "storageclass.beta.kubernetes.io/is-default-class",
)
RECLAIM_POLICIES = ["Delete", "Retain"]
BINDING_MODES = ["Immediate", "WaitForFirstConsumer"]


def storageclass_defaults(obj: Obj) -> None:
    """SetDefaults_StorageClass: reclaimPolicy Delete, volumeBindingMode Immediate."""
    obj.setdefault("reclaimPolicy", "Delete")
    obj.setdefault("volumeBindingMode", "Immediate")


def storageclass_validate(obj: Obj) -> list[Cause]:
    """ValidateStorageClass: a qualified provisioner, known reclaim policy and binding mode."""
    provisioner = obj.get("provisioner") or ""
    causes = (
        [required("provisioner")]
        if not provisioner
        else [invalid_value("provisioner", provisioner, m) for m in is_qualified_name(provisioner.lower())]
    )
    if obj.get("reclaimPolicy") not in RECLAIM_POLICIES:
        causes.append(unsupported("reclaimPolicy", obj.get("reclaimPolicy", ""), RECLAIM_POLICIES))
    if obj.get("volumeBindingMode") not in BINDING_MODES:
        causes.append(unsupported("volumeBindingMode", obj.get("volumeBindingMode", ""), BINDING_MODES))
    return causes


def storageclass_validate_update(new: Obj, old: Obj) -> list[Cause]:
    """Parameters, provisioner, reclaim policy and binding mode are fixed once created."""
    causes = [
        forbidden(key, f"updates to {key} are forbidden.")
        for key in ("parameters", "provisioner", "reclaimPolicy")
        if (new.get(key) or None) != (old.get(key) or None)
    ]
    return causes + immutable(new.get("volumeBindingMode"), old.get("volumeBindingMode"), "volumeBindingMode")


def storageclass_row(obj: Obj) -> list[Any]:
    """NAME PROVISIONER RECLAIMPOLICY VOLUMEBINDINGMODE ALLOWVOLUMEEXPANSION AGE; marks the default."""
    meta = obj.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    default = any(annotations.get(key) == "true" for key in DEFAULT_CLASS_ANNOTATIONS)
    return [
        meta.get("name", "") + (" (default)" if default else ""),
        obj.get("provisioner", ""),
        obj.get("reclaimPolicy") or "Delete",
        obj.get("volumeBindingMode") or "Immediate",
        bool(obj.get("allowVolumeExpansion")),
        since(dig(obj, "metadata", "creationTimestamp")),
    ]


RESOURCES = [
    ResourceType(
        "storage.k8s.io",
        "v1",
        "StorageClass",
        "storageclasses",
        False,
        Strategy(
            has_status=False,
            row=storageclass_row,
            defaults=storageclass_defaults,
            validate=storageclass_validate,
            validate_update=storageclass_validate_update,
            columns=columns(
                Column("Provisioner", description="provisioner indicates the type of the provisioner."),
                Column(
                    "ReclaimPolicy",
                    description="reclaimPolicy controls the reclaimPolicy for dynamically "
                    "provisioned PersistentVolumes of this storage class.",
                ),
                Column(
                    "VolumeBindingMode",
                    description="volumeBindingMode indicates how PersistentVolumeClaims "
                    "should be provisioned and bound.",
                ),
                Column(
                    "AllowVolumeExpansion",
                    description="allowVolumeExpansion shows whether the storage class allow volume expand.",
                ),
                AGE_COLUMN,
            ),
        ),
        short_names=("sc",),
        schema="io.k8s.api.storage.v1.StorageClass",
    )
]
