"""Which PersistentVolume may serve which claim, as the PV controller and the scheduler's VolumeBinding plugin both
decide it (class, access modes, size, volume mode, selector, node affinity), and the annotations and finalizers the
storage parts share (admission, the PV and protection controllers, VolumeBinding, the agent's local-path cleanup)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from kubelite.api.kinds.common import selector_matches
from kubelite.api.kinds.storage import DEFAULT_CLASS_ANNOTATIONS
from kubelite.api.quantity import parse_quantity
from kubelite.scheduler.helpers import node_selector

Obj = dict[str, Any]

SELECTED_NODE = "volume.kubernetes.io/selected-node"
"""On a claim whose class waits for its first consumer: the node the scheduler chose for that consumer."""
BIND_COMPLETED = "pv.kubernetes.io/bind-completed"
BOUND_BY_CONTROLLER = "pv.kubernetes.io/bound-by-controller"
PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"
STORAGE_PROVISIONER = "volume.kubernetes.io/storage-provisioner"
LOCAL_PATH_PROVISIONER = "kubelite.io/local-path"
"""The built-in provisioner: a directory on the consumer's node (k3s's local-path-provisioner, in process)."""
LOCAL_PATH_FINALIZER = "kubelite.io/local-path-cleanup"
"""Held by a provisioned local-path volume until the agent of its node has removed the directory."""
NO_PROVISIONER = "kubernetes.io/no-provisioner"
"""The provisioner of classes whose volumes are only ever created by hand (local static volumes)."""
PVC_PROTECTION = "kubernetes.io/pvc-protection"
"""On every claim until no unfinished pod uses it (admission adds it, the pvc-protection controller removes it)."""
PV_PROTECTION = "kubernetes.io/pv-protection"
"""On every volume until it is no longer Bound (admission adds it, the pv-protection controller removes it)."""
HOSTNAME_LABEL = "kubernetes.io/hostname"
WAIT_FOR_FIRST_CONSUMER = "WaitForFirstConsumer"


def claim_class(claim: Obj) -> str | None:
    """The claim's storage class name: spec.storageClassName, the beta annotation, or None when unset."""
    annotation = ((claim.get("metadata") or {}).get("annotations") or {}).get("volume.beta.kubernetes.io/storage-class")
    if annotation is not None:
        return annotation
    return (claim.get("spec") or {}).get("storageClassName")


def volume_class(volume: Obj) -> str:
    """A volume's storage class name ("" when it has none)."""
    annotation = ((volume.get("metadata") or {}).get("annotations") or {}).get(
        "volume.beta.kubernetes.io/storage-class")
    return annotation if annotation is not None else (volume.get("spec") or {}).get("storageClassName") or ""


def default_class(classes: Iterable[Obj]) -> Obj | None:
    """The default StorageClass: among those annotated default, the newest (then by name), as upstream picks."""
    defaults = [c for c in classes
                if any(((c.get("metadata") or {}).get("annotations") or {}).get(a) == "true"
                       for a in DEFAULT_CLASS_ANNOTATIONS)]
    if not defaults:
        return None
    return max(defaults, key=lambda c: (c["metadata"].get("creationTimestamp") or "", c["metadata"]["name"]))


def waits_for_consumer(storage_class: Obj | None) -> bool:
    """Whether claims of the class are bound only once a pod using them is scheduled."""
    return storage_class is not None and storage_class.get("volumeBindingMode") == WAIT_FOR_FIRST_CONSUMER


def requested_bytes(claim: Obj) -> int:
    """The storage the claim asks for, in bytes (0 when absent or unreadable)."""
    value = parse_quantity((((claim.get("spec") or {}).get("resources") or {}).get("requests") or {}).get("storage"))
    return int(value) if value is not None else 0


def capacity_bytes(volume: Obj) -> int:
    """The volume's capacity in bytes."""
    value = parse_quantity(((volume.get("spec") or {}).get("capacity") or {}).get("storage"))
    return int(value) if value is not None else 0


def node_matches(volume: Obj, labels: Mapping[str, str], node_name: str) -> bool:
    """Whether the volume's required node affinity admits the node (a volume without one is reachable anywhere)."""
    required = (((volume.get("spec") or {}).get("nodeAffinity") or {}).get("required"))
    if not required:
        return True
    return node_selector(required)(labels, node_name)


def claimed_by(volume: Obj, claim: Obj) -> bool:
    """Whether the volume's claimRef names this claim (by namespace and name, and by uid when it has one)."""
    ref = (volume.get("spec") or {}).get("claimRef")
    meta = claim["metadata"]
    if not ref or ref.get("namespace") != meta.get("namespace") or ref.get("name") != meta.get("name"):
        return False
    return not ref.get("uid") or ref["uid"] == meta.get("uid")


def fits(volume: Obj, claim: Obj) -> bool:
    """Whether a volume can serve the claim: same class, every access mode, enough room, same volume mode, and
    the claim's selector (if any) matches the volume's labels."""
    spec, claim_spec = volume.get("spec") or {}, claim.get("spec") or {}
    if volume_class(volume) != (claim_class(claim) or ""):
        return False
    if not set(claim_spec.get("accessModes") or []) <= set(spec.get("accessModes") or []):
        return False
    if capacity_bytes(volume) < requested_bytes(claim):
        return False
    if (spec.get("volumeMode") or "Filesystem") != (claim_spec.get("volumeMode") or "Filesystem"):
        return False
    selector = claim_spec.get("selector")
    return selector is None or selector_matches(selector, (volume.get("metadata") or {}).get("labels"))


def available(volume: Obj, claim: Obj) -> bool:
    """Free for the claim: not being deleted, and unclaimed or pre-bound to exactly this claim."""
    meta, spec = volume.get("metadata") or {}, volume.get("spec") or {}
    if meta.get("deletionTimestamp"):
        return False
    if spec.get("claimRef"):
        return claimed_by(volume, claim)
    return (volume.get("status") or {}).get("phase") in (None, "", "Pending", "Available")


def best_volume(claim: Obj, volumes: Iterable[Obj], node: tuple[Mapping[str, str], str] | None = None) -> Obj | None:
    """The volume to bind the claim to: one pre-bound to it, else the smallest available one that fits (and that
    the node, given as (labels, name), can reach)."""
    candidates = [v for v in volumes if available(v, claim) and fits(v, claim)
                  and (node is None or node_matches(v, *node))]
    pre_bound = [v for v in candidates if (v.get("spec") or {}).get("claimRef")]
    if pre_bound:
        return pre_bound[0]
    return min(candidates, key=lambda v: (capacity_bytes(v), v["metadata"]["name"]), default=None)


def pod_claims(pod: Obj) -> list[tuple[str, bool]]:
    """The claims the pod's volumes use, each with whether it belongs to an ephemeral volume (<pod>-<volume>)."""
    name = pod["metadata"]["name"]
    claims: dict[str, bool] = {}
    for volume in (pod.get("spec") or {}).get("volumes") or []:
        if volume.get("persistentVolumeClaim") is not None:
            claims.setdefault(volume["persistentVolumeClaim"].get("claimName") or "", False)
        elif volume.get("ephemeral") is not None:
            claims.setdefault(f"{name}-{volume.get('name', '')}", True)
    return list(claims.items())
