"""PersistentVolumes and PersistentVolumeClaims (core/v1)."""

from __future__ import annotations

import copy
from typing import Any

from kubelite.api.kinds.common import columns, dig, since
from kubelite.api.names import required_because
from kubelite.api.quantity import parse_quantity
from kubelite.api.strategy import AGE_COLUMN, Cause, Column, Obj, Strategy, forbidden, required, unsupported

ACCESS_MODES = {
    "ReadWriteOnce": "RWO",
    "ReadOnlyMany": "ROX",
    "ReadWriteMany": "RWX",
    "ReadWriteOncePod": "RWOP",
}
RECLAIM_POLICIES = ["Delete", "Recycle", "Retain"]
_STORAGE_CLASS_ANNOTATION = "volume.beta.kubernetes.io/storage-class"
_PV_SPEC_FIELDS = {
    "accessModes",
    "capacity",
    "claimRef",
    "mountOptions",
    "nodeAffinity",
    "persistentVolumeReclaimPolicy",
    "storageClassName",
    "volumeAttributesClassName",
    "volumeMode",
}


def default_claim(claim: Obj) -> None:
    """SetDefaults_PersistentVolumeClaim(Spec): Filesystem volumes, Pending phase."""
    claim.setdefault("spec", {}).setdefault("volumeMode", "Filesystem")
    claim.setdefault("status", {}).setdefault("phase", "Pending")


def pv_defaults(pv: Obj) -> None:
    """SetDefaults_PersistentVolume: Retain, Filesystem, phase Pending."""
    spec = pv.setdefault("spec", {})
    spec.setdefault("persistentVolumeReclaimPolicy", "Retain")
    spec.setdefault("volumeMode", "Filesystem")
    if isinstance(spec.get("hostPath"), dict):
        spec["hostPath"].setdefault("type", "")
    pv.setdefault("status", {}).setdefault("phase", "Pending")


def pv_validate(pv: Obj) -> list[Cause]:
    """ValidatePersistentVolume: access modes, capacity, exactly one volume source."""
    spec = pv.get("spec") or {}
    causes: list[Cause] = []
    if not spec.get("accessModes"):
        causes.append(required("spec.accessModes"))
    if not dig(spec, "capacity", "storage"):
        causes.append(required("spec.capacity"))
    sources = [key for key in spec if key not in _PV_SPEC_FIELDS]
    if not sources:
        causes.append(required_because("spec", "must specify a volume type"))
    causes += [forbidden(f"spec.{key}", "may not specify more than 1 volume type") for key in sources[1:]]
    policy = spec.get("persistentVolumeReclaimPolicy") or ""
    if policy and policy not in RECLAIM_POLICIES:
        causes.append(unsupported("spec.persistentVolumeReclaimPolicy", policy, RECLAIM_POLICIES))
    return causes


def access_modes(modes: Any) -> str:
    """GetAccessModesAsString: RWO,ROX,RWX,RWOP in that order."""
    return ",".join(short for mode, short in ACCESS_MODES.items() if mode in (modes or []))


def _class(obj: Obj) -> str:
    annotation = dig(obj, "metadata", "annotations", _STORAGE_CLASS_ANNOTATION)
    return annotation if annotation is not None else dig(obj, "spec", "storageClassName", default="")


PV_COLUMNS = columns(
    Column(
        "Capacity",
        description="capacity is the description of the persistent volume's resources and capacity.",
    ),
    Column("Access Modes", description="accessModes contains all ways the volume can be mounted."),
    Column(
        "Reclaim Policy",
        description="persistentVolumeReclaimPolicy defines what happens to a persistent "
        "volume when released from its claim.",
    ),
    Column(
        "Status",
        description="phase indicates if a volume is available, bound to a claim, or released by a claim.",
    ),
    Column(
        "Claim",
        description="claimRef is part of a bi-directional binding between PersistentVolume and "
        "PersistentVolumeClaim.",
    ),
    Column("StorageClass", description="StorageClass of the pv"),
    Column("VolumeAttributesClass", description="VolumeAttributesClass of the pv"),
    Column("Reason", description="reason is a brief CamelCase string that describes any failure."),
    AGE_COLUMN,
    Column(
        "VolumeMode",
        priority=1,
        description="volumeMode defines if a volume is intended to be used with a "
        "formatted filesystem or to remain in raw block state.",
    ),
)


def pv_row(pv: Obj) -> list[Any]:
    """NAME CAPACITY ACCESS MODES RECLAIM POLICY STATUS CLAIM STORAGECLASS ..., as upstream prints PVs."""
    spec, status, meta = pv.get("spec") or {}, pv.get("status") or {}, pv.get("metadata") or {}
    ref = spec.get("claimRef")
    claim = f"{ref.get('namespace', '')}/{ref.get('name', '')}" if ref else ""
    phase = "Terminating" if meta.get("deletionTimestamp") else status.get("phase", "")
    return [
        meta.get("name", ""),
        str(dig(spec, "capacity", "storage", default="0")),
        access_modes(spec.get("accessModes")),
        spec.get("persistentVolumeReclaimPolicy", ""),
        phase,
        claim,
        _class(pv),
        spec.get("volumeAttributesClassName") or "<unset>",
        status.get("reason", ""),
        since(meta.get("creationTimestamp")),
        spec.get("volumeMode") or "<unset>",
    ]


def validate_claim_spec(spec: Obj, path: str) -> list[Cause]:
    """ValidatePersistentVolumeClaimSpec: access modes and a storage request (of a claim, or of an ephemeral
    volume's claim template)."""
    causes: list[Cause] = []
    if not spec.get("accessModes"):
        causes.append(required_because(f"{path}.accessModes", "at least 1 access mode is required"))
    for i, mode in enumerate(spec.get("accessModes") or []):
        if mode not in ACCESS_MODES:
            causes.append(unsupported(f"{path}.accessModes[{i}]", mode, list(ACCESS_MODES)))
    if not dig(spec, "resources", "requests", "storage") and not spec.get("dataSourceRef"):
        causes.append(required(f"{path}.resources[storage]"))
    return causes


def pvc_validate(pvc: Obj) -> list[Cause]:
    """ValidatePersistentVolumeClaim."""
    return validate_claim_spec(pvc.get("spec") or {}, "spec")


def pvc_validate_update(new: Obj, old: Obj) -> list[Cause]:
    """A claim's spec is fixed, except binding volumeName once, giving an unbound claim without a class one (the
    default class, set afterwards) and growing a bound claim's storage."""
    spec, before = copy.deepcopy(new.get("spec") or {}), copy.deepcopy(old.get("spec") or {})
    if not before.get("volumeName"):
        before["volumeName"] = spec.get("volumeName")
        if before.get("storageClassName") is None:
            before["storageClassName"] = spec.get("storageClassName")
    bound = dig(new, "status", "phase") == "Bound"
    if bound and "storage" in (dig(spec, "resources", "requests") or {}):
        spec["resources"]["requests"]["storage"] = dig(before, "resources", "requests", "storage")
    spec.pop("volumeAttributesClassName", None)
    before.pop("volumeAttributesClassName", None)
    causes: list[Cause] = []
    if {k: v for k, v in spec.items() if v is not None} != {k: v for k, v in before.items() if v is not None}:
        causes.append(
            forbidden(
                "spec",
                "spec is immutable after creation except resources.requests and "
                "volumeAttributesClassName for bound claims",
            )
        )
    grown = parse_quantity(dig(new, "spec", "resources", "requests", "storage", default=0))
    previous = parse_quantity(dig(old, "spec", "resources", "requests", "storage", default=0))
    if grown is not None and previous is not None and grown < previous:
        causes.append(
            forbidden("spec.resources.requests.storage", "field can not be less than previous value")
        )
    return causes


PVC_COLUMNS = columns(
    Column("Status", description="phase represents the current phase of PersistentVolumeClaim."),
    Column(
        "Volume",
        description="volumeName is the binding reference to the PersistentVolume backing this claim.",
    ),
    Column("Capacity", description="capacity represents the actual resources of the underlying volume."),
    Column(
        "Access Modes",
        description="accessModes contains the actual access modes the volume backing the PVC has.",
    ),
    Column("StorageClass", description="StorageClass of the pvc"),
    Column("VolumeAttributesClass", description="VolumeAttributesClass of the pvc"),
    AGE_COLUMN,
    Column(
        "VolumeMode",
        priority=1,
        description="volumeMode defines what type of volume is required by the claim.",
    ),
)


def pvc_row(pvc: Obj) -> list[Any]:
    """NAME STATUS VOLUME CAPACITY ACCESS MODES STORAGECLASS ... as upstream printPersistentVolumeClaim."""
    spec, status, meta = pvc.get("spec") or {}, pvc.get("status") or {}, pvc.get("metadata") or {}
    phase = "Terminating" if meta.get("deletionTimestamp") else status.get("phase", "")
    volume = spec.get("volumeName", "")
    capacity = str(dig(status, "capacity", "storage", default="0")) if volume else ""
    modes = access_modes(status.get("accessModes")) if volume else ""
    return [
        meta.get("name", ""),
        phase,
        volume,
        capacity,
        modes,
        _class(pvc),
        spec.get("volumeAttributesClassName") or "<unset>",
        since(meta.get("creationTimestamp")),
        spec.get("volumeMode") or "<unset>",
    ]


PV_STRATEGY = Strategy(columns=PV_COLUMNS, row=pv_row, defaults=pv_defaults, validate=pv_validate)
PVC_STRATEGY = Strategy(
    columns=PVC_COLUMNS,
    row=pvc_row,
    defaults=default_claim,
    validate=pvc_validate,
    validate_update=pvc_validate_update,
)
