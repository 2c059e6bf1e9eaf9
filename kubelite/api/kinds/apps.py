"""apps/v1: Deployments, ReplicaSets, StatefulSets, DaemonSets, ControllerRevisions."""

from __future__ import annotations

import copy
from typing import Any

from kubelite.api.kinds.common import (
    child,
    columns,
    dig,
    format_label_selector,
    format_labels,
    format_selector,
    non_negative,
    since,
    validate_int_or_percent,
)
from kubelite.api.kinds.podspec import default_template
from kubelite.api.kinds.volumes import default_claim
from kubelite.api.kinds.workloads import (
    SCALE,
    replicated_fields,
    selector_immutable,
    template_cells,
    validate_replicated,
)
from kubelite.api.names import invalid_shown, invalid_value
from kubelite.api.resource import ResourceType
from kubelite.api.strategy import AGE_COLUMN, Cause, Column, Obj, Strategy, forbidden, required, unsupported

CONTAINERS_COLUMN = Column("Containers", priority=1, description="Names of each container in the template.")
IMAGES_COLUMN = Column(
    "Images", priority=1, description="Images referenced by each container in the template."
)
SELECTOR_COLUMN = Column(
    "Selector", priority=1, description="Label query over pods that should match the replica count."
)


def deployment_defaults(obj: Obj) -> None:
    """SetDefaults_Deployment: 1 replica, RollingUpdate 25%/25%, history 10, deadline 600s."""
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    strategy = child(spec, "strategy")
    strategy.setdefault("type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        rolling = child(strategy, "rollingUpdate")
        rolling.setdefault("maxUnavailable", "25%")
        rolling.setdefault("maxSurge", "25%")
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    default_template(spec)


def _validate_strategy(strategy: Obj) -> list[Cause]:
    kind = strategy.get("type", "")
    if kind == "Recreate":
        if strategy.get("rollingUpdate") is not None:
            return [
                forbidden(
                    "spec.strategy.rollingUpdate", "may not be specified when strategy `type` is 'Recreate'"
                )
            ]
        return []
    if kind != "RollingUpdate":
        return [unsupported("spec.strategy.type", kind, ["Recreate", "RollingUpdate"])]
    rolling = strategy.get("rollingUpdate") or {}
    path = "spec.strategy.rollingUpdate"
    unavailable, surge = rolling.get("maxUnavailable"), rolling.get("maxSurge")
    causes = validate_int_or_percent(unavailable, f"{path}.maxUnavailable", at_most_100=True)
    causes += validate_int_or_percent(surge, f"{path}.maxSurge")
    if str(unavailable).rstrip("%") == "0" and str(surge).rstrip("%") == "0":
        causes.append(
            invalid_shown(f"{path}.maxUnavailable", str(unavailable), "may not be 0 when `maxSurge` is 0")
        )
    return causes


def deployment_validate(obj: Obj) -> list[Cause]:
    """ValidateDeploymentSpec: selector and template, strategy, progress deadline."""
    spec = obj.get("spec") or {}
    causes = validate_replicated(spec, "deployment", "ReplicaSet")
    causes += _validate_strategy(spec.get("strategy") or {})
    deadline = spec.get("progressDeadlineSeconds")
    if isinstance(deadline, int) and deadline <= (spec.get("minReadySeconds") or 0):
        causes.append(
            invalid_shown(
                "spec.progressDeadlineSeconds", str(deadline), "must be greater than minReadySeconds"
            )
        )
    return causes


DEPLOYMENT_COLUMNS = columns(
    Column("Ready", description="Number of the pod with ready state"),
    Column(
        "Up-to-date",
        description="Total number of non-terminated pods targeted by this deployment that have "
        "the desired template spec.",
    ),
    Column(
        "Available",
        description="Total number of available pods (ready for at least minReadySeconds) targeted by this "
        "deployment.",
    ),
    AGE_COLUMN,
    CONTAINERS_COLUMN,
    IMAGES_COLUMN,
    SELECTOR_COLUMN,
)


def deployment_row(obj: Obj) -> list[Any]:
    """NAME READY UP-TO-DATE AVAILABLE AGE CONTAINERS IMAGES SELECTOR, as upstream printDeployment."""
    spec, status, meta = obj.get("spec") or {}, obj.get("status") or {}, obj.get("metadata") or {}
    return [
        meta.get("name", ""),
        f"{status.get('readyReplicas', 0)}/{spec.get('replicas', 0)}",
        status.get("updatedReplicas", 0),
        status.get("availableReplicas", 0),
        since(meta.get("creationTimestamp")),
        *template_cells(spec),
        format_selector(spec.get("selector")),
    ]


def replicaset_defaults(obj: Obj) -> None:
    """SetDefaults_ReplicaSet: 1 replica, pod template defaults."""
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    default_template(spec)


REPLICASET_COLUMNS = columns(
    Column("Desired", type="integer", description="Replicas is the number of desired pods."),
    Column(
        "Current", type="integer", description="Replicas is the most recently observed number of replicas."
    ),
    Column("Ready", type="integer", description="The number of ready replicas for this replica set."),
    AGE_COLUMN,
    CONTAINERS_COLUMN,
    IMAGES_COLUMN,
    SELECTOR_COLUMN,
)


def replicaset_row(obj: Obj) -> list[Any]:
    """NAME DESIRED CURRENT READY AGE CONTAINERS IMAGES SELECTOR, as upstream printReplicaSet."""
    spec, status, meta = obj.get("spec") or {}, obj.get("status") or {}, obj.get("metadata") or {}
    return [
        meta.get("name", ""),
        spec.get("replicas", 0),
        status.get("replicas", 0),
        status.get("readyReplicas", 0),
        since(meta.get("creationTimestamp")),
        *template_cells(spec),
        format_label_selector(spec.get("selector")),
    ]


def statefulset_defaults(obj: Obj) -> None:
    """SetDefaults_StatefulSet: OrderedReady, RollingUpdate partition 0, Retain/Retain, claim defaults."""
    spec = obj.setdefault("spec", {})
    spec.setdefault("podManagementPolicy", "OrderedReady")
    update = child(spec, "updateStrategy")
    if not update.get("type"):
        update["type"] = "RollingUpdate"
        update.setdefault("rollingUpdate", {})
    if update["type"] == "RollingUpdate" and isinstance(update.get("rollingUpdate"), dict):
        update["rollingUpdate"].setdefault("partition", 0)
    retention = child(spec, "persistentVolumeClaimRetentionPolicy")
    retention.setdefault("whenDeleted", "Retain")
    retention.setdefault("whenScaled", "Retain")
    spec.setdefault("replicas", 1)
    spec.setdefault("revisionHistoryLimit", 10)
    for claim in spec.get("volumeClaimTemplates") or []:
        default_claim(claim)
    default_template(spec)


def statefulset_validate(obj: Obj) -> list[Cause]:
    """ValidateStatefulSetSpec: pod management and update strategy, selector and template."""
    spec = obj.get("spec") or {}
    causes: list[Cause] = []
    policy = spec.get("podManagementPolicy", "")
    if not policy:
        causes.append(required("spec.podManagementPolicy"))
    elif policy not in ("OrderedReady", "Parallel"):
        causes.append(
            invalid_value("spec.podManagementPolicy", policy, "must be 'OrderedReady' or 'Parallel'")
        )
    update = spec.get("updateStrategy") or {}
    if update.get("type") == "OnDelete" and update.get("rollingUpdate") is not None:
        causes.append(
            invalid_shown(
                "spec.updateStrategy.rollingUpdate",
                "apps.RollingUpdateStatefulSetStrategy{...}",
                "only allowed for updateStrategy 'RollingUpdate'",
            )
        )
    elif update.get("type") not in ("OnDelete", "RollingUpdate"):
        causes.append(
            invalid_shown(
                "spec.updateStrategy",
                "apps.StatefulSetUpdateStrategy{...}",
                "must be 'RollingUpdate' or 'OnDelete'",
            )
        )
    else:
        causes += non_negative(
            dig(update, "rollingUpdate", "partition"), "spec.updateStrategy.rollingUpdate.partition"
        )
    return causes + validate_replicated(spec, "statefulset", "StatefulSet")


_STATEFULSET_MUTABLE = (
    "replicas",
    "ordinals",
    "template",
    "updateStrategy",
    "revisionHistoryLimit",
    "persistentVolumeClaimRetentionPolicy",
    "minReadySeconds",
)


def statefulset_validate_update(new: Obj, old: Obj) -> list[Cause]:
    """Upstream lets only a few StatefulSet spec fields change (replicas, template, strategies, ...)."""
    spec, before = copy.deepcopy(new.get("spec") or {}), old.get("spec") or {}
    for key in _STATEFULSET_MUTABLE:
        spec.pop(key, None)
        if key in before:
            spec[key] = before[key]
    if spec == before:
        return []
    return [
        forbidden(
            "spec",
            "updates to statefulset spec for fields other than 'replicas', 'ordinals', "
            "'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' "
            "and 'minReadySeconds' are forbidden",
        )
    ]


STATEFULSET_COLUMNS = columns(
    Column("Ready", description="Number of the pod with ready state"),
    AGE_COLUMN,
    CONTAINERS_COLUMN,
    IMAGES_COLUMN,
)


def statefulset_row(obj: Obj) -> list[Any]:
    """NAME READY AGE CONTAINERS IMAGES, as upstream printStatefulSet."""
    spec, status, meta = obj.get("spec") or {}, obj.get("status") or {}, obj.get("metadata") or {}
    return [
        meta.get("name", ""),
        f"{status.get('readyReplicas', 0)}/{spec.get('replicas', 0)}",
        since(meta.get("creationTimestamp")),
        *template_cells(spec),
    ]


def daemonset_defaults(obj: Obj) -> None:
    """SetDefaults_DaemonSet: RollingUpdate maxUnavailable 1 maxSurge 0, history 10."""
    spec = obj.setdefault("spec", {})
    update = child(spec, "updateStrategy")
    update.setdefault("type", "RollingUpdate")
    if update["type"] == "RollingUpdate":
        rolling = child(update, "rollingUpdate")
        rolling.setdefault("maxUnavailable", 1)
        rolling.setdefault("maxSurge", 0)
    spec.setdefault("revisionHistoryLimit", 10)
    default_template(spec)


DAEMONSET_COLUMNS = columns(
    Column(
        "Desired",
        type="integer",
        description="The total number of nodes that should be running the daemon pod.",
    ),
    Column(
        "Current",
        type="integer",
        description="The number of nodes that are running at least 1 daemon pod and "
        "are supposed to run the daemon pod.",
    ),
    Column(
        "Ready",
        type="integer",
        description="The number of nodes that should be running the daemon pod and "
        "have one or more of the daemon pod running and ready.",
    ),
    Column(
        "Up-to-date",
        type="integer",
        description="The total number of nodes that are running updated daemon pod.",
    ),
    Column(
        "Available",
        type="integer",
        description="The number of nodes that should be running the daemon pod "
        "and have one or more of the daemon pod running and available.",
    ),
    Column(
        "Node Selector",
        description="NodeSelector is a selector which must be true for the pod to fit on a node.",
    ),
    AGE_COLUMN,
    CONTAINERS_COLUMN,
    IMAGES_COLUMN,
    SELECTOR_COLUMN,
)


def daemonset_row(obj: Obj) -> list[Any]:
    """NAME DESIRED CURRENT READY UP-TO-DATE AVAILABLE NODE SELECTOR AGE ..., as upstream printDaemonSet."""
    spec, status, meta = obj.get("spec") or {}, obj.get("status") or {}, obj.get("metadata") or {}
    counts = [
        status.get(k, 0)
        for k in (
            "desiredNumberScheduled",
            "currentNumberScheduled",
            "numberReady",
            "updatedNumberScheduled",
            "numberAvailable",
        )
    ]
    return [
        meta.get("name", ""),
        *counts,
        format_labels(dig(spec, "template", "spec", "nodeSelector")),
        since(meta.get("creationTimestamp")),
        *template_cells(spec),
        format_label_selector(spec.get("selector")),
    ]


def revision_validate(obj: Obj) -> list[Cause]:
    """ValidateControllerRevision: a non-negative revision and some data."""
    causes = non_negative(obj.get("revision"), "revision")
    if obj.get("data") is None:
        causes.append(Cause("data", "FieldValueRequired", "data: Required value: data is mandatory"))
    return causes


def revision_validate_update(new: Obj, old: Obj) -> list[Cause]:
    """A ControllerRevision's data never changes."""
    if new.get("data") == old.get("data"):
        return []
    return [invalid_shown("data", "runtime.RawExtension{...}", "field is immutable")]


REVISION_COLUMNS = columns(
    Column("Controller", description="Controller of the object"),
    Column("Revision", description="Revision indicates the revision of the state represented by Data."),
    AGE_COLUMN,
)


def revision_row(obj: Obj) -> list[Any]:
    """NAME CONTROLLER REVISION AGE, the controller as kind.group/name."""
    meta = obj.get("metadata") or {}
    owner = next((r for r in meta.get("ownerReferences") or [] if r.get("controller")), None)
    controller = "<none>"
    if owner:
        group = owner.get("apiVersion", "").rpartition("/")[0]
        kind = f"{owner.get('kind', '')}.{group}" if group else owner.get("kind", "")
        controller = f"{kind.lower()}/{owner.get('name', '')}" if kind else owner.get("name", "")
    return [meta.get("name", ""), controller, obj.get("revision", 0), since(meta.get("creationTimestamp"))]


def _apps(kind: str, plural: str, strategy: Strategy, **extra: Any) -> ResourceType:
    return ResourceType(
        "apps", "v1", kind, plural, True, strategy, schema=f"io.k8s.api.apps.v1.{kind}", **extra
    )


RESOURCES = [
    _apps(
        "Deployment",
        "deployments",
        Strategy(
            columns=DEPLOYMENT_COLUMNS,
            row=deployment_row,
            defaults=deployment_defaults,
            validate=deployment_validate,
            validate_update=selector_immutable,
        ),
        short_names=("deploy",),
        categories=("all",),
        subresources=("status", "scale"),
        scale=SCALE,
    ),
    _apps(
        "ReplicaSet",
        "replicasets",
        Strategy(
            columns=REPLICASET_COLUMNS,
            row=replicaset_row,
            selectable_fields=replicated_fields,
            defaults=replicaset_defaults,
            validate=lambda o: validate_replicated(o.get("spec") or {}, "deployment", "ReplicaSet"),
            validate_update=selector_immutable,
        ),
        short_names=("rs",),
        categories=("all",),
        subresources=("status", "scale"),
        scale=SCALE,
    ),
    _apps(
        "StatefulSet",
        "statefulsets",
        Strategy(
            columns=STATEFULSET_COLUMNS,
            row=statefulset_row,
            defaults=statefulset_defaults,
            validate=statefulset_validate,
            validate_update=statefulset_validate_update,
        ),
        short_names=("sts",),
        categories=("all",),
        subresources=("status", "scale"),
        scale=SCALE,
    ),
    _apps(
        "DaemonSet",
        "daemonsets",
        Strategy(
            columns=DAEMONSET_COLUMNS,
            row=daemonset_row,
            defaults=daemonset_defaults,
            validate=lambda o: validate_replicated(o.get("spec") or {}, "daemonset", "DaemonSet"),
            validate_update=selector_immutable,
        ),
        short_names=("ds",),
        categories=("all",),
        subresources=("status",),
    ),
    _apps(
        "ControllerRevision",
        "controllerrevisions",
        Strategy(
            has_status=False,
            columns=REVISION_COLUMNS,
            row=revision_row,
            validate=revision_validate,
            validate_update=revision_validate_update,
        ),
    ),
]
