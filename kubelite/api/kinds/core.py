"""core/v1: the resource list and the small kinds; pods, services, volumes, data and events live apart."""

from __future__ import annotations

from typing import Any

from kubelite.api.kinds.common import (
    CREATED_AT_COLUMNS,
    child,
    columns,
    created_at_row,
    dig,
    format_labels,
    non_negative,
    since,
)
from kubelite.api.kinds.configdata import CONFIGMAP_STRATEGY, SECRET_STRATEGY
from kubelite.api.kinds.events import EVENT_STRATEGY
from kubelite.api.kinds.pods import POD_STRATEGY
from kubelite.api.kinds.podspec import default_template, validate_template
from kubelite.api.kinds.services import SERVICE_STRATEGY
from kubelite.api.kinds.volumes import PV_STRATEGY, PVC_STRATEGY
from kubelite.api.kinds.workloads import (
    SCALE,
    SELECTOR_MISMATCH,
    replicated_fields,
    template_cells,
    validate_long_running,
)
from kubelite.api.names import invalid_value, is_qualified_name
from kubelite.api.resource import ResourceType
from kubelite.api.strategy import AGE_COLUMN, Cause, Column, Obj, Strategy, required

STANDARD_FINALIZERS = ("kubernetes", "orphan", "foregroundDeletion")


def namespace_prepare_create(ns: Obj) -> None:
    """A new namespace is Active and carries the 'kubernetes' finalizer."""
    finalizers = child(ns, "spec").setdefault("finalizers", [])
    if "kubernetes" not in finalizers:
        finalizers.append("kubernetes")
    ns["status"] = {"phase": "Active"}


def namespace_defaults(ns: Obj) -> None:
    """SetDefaults_Namespace: the kubernetes.io/metadata.name label; phase Active."""
    meta = ns.setdefault("metadata", {})
    if meta.get("name"):
        meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta["name"]
    child(ns, "status").setdefault("phase", "Active")


def namespace_prepare_update(new: Obj, old: Obj) -> None:
    """spec.finalizers change only when a client sends them (the namespace controller does)."""
    if "finalizers" not in (new.get("spec") or {}) and "finalizers" in (old.get("spec") or {}):
        child(new, "spec")["finalizers"] = old["spec"]["finalizers"]


def namespace_validate(ns: Obj) -> list[Cause]:
    """spec.finalizers must be standard names or fully qualified."""
    causes: list[Cause] = []
    for name in dig(ns, "spec", "finalizers", default=[]):
        errors = is_qualified_name(name)
        causes += [invalid_value("spec.finalizers", name, m) for m in errors]
        if not errors and "/" not in name and name not in STANDARD_FINALIZERS:
            causes.append(
                invalid_value(
                    "spec.finalizers",
                    name,
                    "name is neither a standard finalizer name nor is it fully qualified",
                )
            )
    return causes


NAMESPACE_STRATEGY = Strategy(
    columns=columns(Column("Status", description="The status of the namespace"), AGE_COLUMN),
    row=lambda o: [
        dig(o, "metadata", "name", default=""),
        dig(o, "status", "phase", default=""),
        since(dig(o, "metadata", "creationTimestamp")),
    ],
    selectable_fields=lambda o: {
        "status.phase": dig(o, "status", "phase", default=""),
        "name": dig(o, "metadata", "name", default=""),
    },
    defaults=namespace_defaults,
    validate=namespace_validate,
    prepare_create=namespace_prepare_create,
    prepare_update=namespace_prepare_update,
)


def node_defaults(node: Obj) -> None:
    """Allocatable defaults to capacity."""
    status = node.get("status")
    if isinstance(status, dict) and status.get("capacity") and "allocatable" not in status:
        status["allocatable"] = dict(status["capacity"])


def _node_address(node: Obj, kind: str) -> str:
    return next(
        (a.get("address", "") for a in dig(node, "status", "addresses", default=[]) if a.get("type") == kind),
        "<none>",
    )


def node_row(node: Obj) -> list[Any]:
    """NAME STATUS ROLES AGE VERSION INTERNAL-IP EXTERNAL-IP OS-IMAGE KERNEL CONTAINER-RUNTIME."""
    meta, info = node.get("metadata") or {}, dig(node, "status", "nodeInfo", default={})
    ready = next((c for c in dig(node, "status", "conditions", default=[]) if c.get("type") == "Ready"), None)
    status = ["Unknown"] if ready is None else ["Ready" if ready.get("status") == "True" else "NotReady"]
    if dig(node, "spec", "unschedulable"):
        status.append("SchedulingDisabled")
    labels = meta.get("labels") or {}
    roles = {
        k.removeprefix("node-role.kubernetes.io/")
        for k in labels
        if k.startswith("node-role.kubernetes.io/") and k != "node-role.kubernetes.io/"
    }
    if labels.get("kubernetes.io/role"):
        roles.add(labels["kubernetes.io/role"])
    return [
        meta.get("name", ""),
        ",".join(status),
        ",".join(sorted(roles)) or "<none>",
        since(meta.get("creationTimestamp")),
        info.get("kubeletVersion", ""),
        _node_address(node, "InternalIP"),
        _node_address(node, "ExternalIP"),
        info.get("osImage") or "<unknown>",
        info.get("kernelVersion") or "<unknown>",
        info.get("containerRuntimeVersion") or "<unknown>",
    ]


NODE_STRATEGY = Strategy(
    columns=columns(
        Column("Status", description="The status of the node"),
        Column("Roles", description="The roles of the node"),
        AGE_COLUMN,
        Column("Version", description="Kubelet Version reported by the node."),
        Column("Internal-IP", priority=1, description="List of addresses reachable to the node."),
        Column("External-IP", priority=1, description="List of addresses reachable to the node."),
        Column("OS-Image", priority=1, description="OS Image reported by the node from /etc/os-release."),
        Column("Kernel-Version", priority=1, description="Kernel Version reported by the node."),
        Column("Container-Runtime", priority=1, description="ContainerRuntime Version reported by the node."),
    ),
    row=node_row,
    defaults=node_defaults,
    status_on_create=True,
    selectable_fields=lambda o: {
        "spec.unschedulable": "true" if dig(o, "spec", "unschedulable") else "false"
    },
)


def endpoints_defaults(obj: Obj) -> None:
    """SetDefaults_EndpointPort: protocol TCP."""
    for subset in obj.get("subsets") or []:
        for port in subset.get("ports") or []:
            port.setdefault("protocol", "TCP")


def format_endpoints(obj: Obj) -> str:
    """ENDPOINTS: up to three ip:port pairs, then '+ N more...'; '<none>' without subsets."""
    subsets = obj.get("subsets") or []
    if not subsets:
        return "<none>"
    shown: list[str] = []
    count = 0
    for subset in subsets:
        ips = [a.get("ip", "") for a in subset.get("addresses") or []]
        ports = subset.get("ports") or []
        pairs = (
            ips
            if not ports
            else [
                f"[{ip}]:{p.get('port')}" if ":" in ip else f"{ip}:{p.get('port')}"
                for p in ports
                for ip in ips
            ]
        )
        count += len(pairs)
        shown += pairs[: max(0, 3 - len(shown))]
    return f"{','.join(shown)} + {count - 3} more..." if count > 3 else ",".join(shown)


ENDPOINTS_STRATEGY = Strategy(
    has_status=False,
    defaults=endpoints_defaults,
    columns=columns(
        Column("Endpoints", description="The set of all endpoints is the union of all subsets."), AGE_COLUMN
    ),
    row=lambda o: [
        dig(o, "metadata", "name", default=""),
        format_endpoints(o),
        since(dig(o, "metadata", "creationTimestamp")),
    ],
)

SERVICEACCOUNT_STRATEGY = Strategy(
    has_status=False,
    columns=columns(
        Column(
            "Secrets",
            description="Secrets is a list of the secrets in the same namespace that "
            "pods running using this ServiceAccount are allowed to use.",
        ),
        AGE_COLUMN,
    ),
    row=lambda o: [
        dig(o, "metadata", "name", default=""),
        len(o.get("secrets") or []),
        since(dig(o, "metadata", "creationTimestamp")),
    ],
)


def limitrange_defaults(obj: Obj) -> None:
    """Container limits: default falls back to max, defaultRequest to default, then min."""
    for item in dig(obj, "spec", "limits", default=[]):
        if item.get("type") != "Container":
            continue
        default = item.setdefault("default", {})
        request = item.setdefault("defaultRequest", {})
        for source, target in ((item.get("max"), default), (default, request), (item.get("min"), request)):
            for name, value in (source or {}).items():
                target.setdefault(name, value)


def quota_row(obj: Obj) -> list[Any]:
    """REQUEST and LIMIT: 'resource: used/hard' pairs, limits.* in LIMIT."""
    meta, status = obj.get("metadata") or {}, obj.get("status") or {}
    hard, used = status.get("hard") or {}, status.get("used") or {}
    requests = [
        f"{name}: {used.get(name, '0')}/{hard[name]}"
        for name in sorted(hard)
        if not name.startswith("limits.")
    ]
    limits = [
        f"{name}: {used.get(name, '0')}/{hard[name]}" for name in sorted(hard) if name.startswith("limits.")
    ]
    return [
        meta.get("name", ""),
        ", ".join(requests),
        ", ".join(limits),
        since(meta.get("creationTimestamp")),
    ]


QUOTA_STRATEGY = Strategy(
    columns=columns(
        Column(
            "Request",
            description="Request represents a minimum amount of cpu/memory that a container may consume.",
        ),
        Column(
            "Limit",
            description="Limits control the maximum amount of cpu/memory that a container may use "
            "independent of contention on the node.",
        ),
        AGE_COLUMN,
    ),
    row=quota_row,
)


def rc_defaults(rc: Obj) -> None:
    """Replicas 1; selector and object labels default to the template's labels."""
    spec = rc.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    labels = dig(spec, "template", "metadata", "labels")
    if labels:
        if not spec.get("selector"):
            spec["selector"] = dict(labels)
        meta = rc.setdefault("metadata", {})
        if not meta.get("labels"):
            meta["labels"] = dict(labels)
    if isinstance(spec.get("template"), dict):
        default_template(spec)


def rc_validate(rc: Obj) -> list[Cause]:
    """ValidateReplicationController: a selector matching a valid long-running template."""
    spec = rc.get("spec") or {}
    causes = non_negative(spec.get("replicas"), "spec.replicas")
    causes += non_negative(spec.get("minReadySeconds"), "spec.minReadySeconds")
    selector = spec.get("selector") or {}
    if not selector:
        causes.append(required("spec.selector"))
    template = spec.get("template")
    if not isinstance(template, dict):
        return causes + [required("spec.template")]
    labels = dig(template, "metadata", "labels", default={})
    if selector and any(labels.get(k) != v for k, v in selector.items()):
        causes.append(invalid_value("spec.template.metadata.labels", labels, SELECTOR_MISMATCH))
    causes += validate_template(template, "spec.template")
    return causes + validate_long_running(spec, "ReplicationController")


def rc_row(rc: Obj) -> list[Any]:
    """NAME DESIRED CURRENT READY AGE CONTAINERS IMAGES SELECTOR, as upstream printReplicationController."""
    spec, status, meta = rc.get("spec") or {}, rc.get("status") or {}, rc.get("metadata") or {}
    return [
        meta.get("name", ""),
        spec.get("replicas", 0),
        status.get("replicas", 0),
        status.get("readyReplicas", 0),
        since(meta.get("creationTimestamp")),
        *template_cells(spec),
        format_labels(spec.get("selector")),
    ]


RC_STRATEGY = Strategy(
    columns=columns(
        Column("Desired", type="integer", description="Replicas is the number of desired replicas."),
        Column(
            "Current",
            type="integer",
            description="Replicas is the most recently observed number of replicas.",
        ),
        Column(
            "Ready",
            type="integer",
            description="The number of ready replicas for this replication controller.",
        ),
        AGE_COLUMN,
        Column("Containers", priority=1, description="Names of each container in the template."),
        Column("Images", priority=1, description="Images referenced by each container in the template."),
        Column(
            "Selector",
            priority=1,
            description="Selector is a label query over pods that should match the Replicas count.",
        ),
    ),
    row=rc_row,
    selectable_fields=replicated_fields,
    defaults=rc_defaults,
    validate=rc_validate,
)


def _core(kind: str, plural: str, namespaced: bool, strategy: Strategy, **extra: Any) -> ResourceType:
    return ResourceType(
        "", "v1", kind, plural, namespaced, strategy, schema=f"io.k8s.api.core.v1.{kind}", **extra
    )


RESOURCES = [
    _core(
        "Namespace",
        "namespaces",
        False,
        NAMESPACE_STRATEGY,
        short_names=("ns",),
        subresources=("status",),
        verbs=("create", "delete", "get", "list", "patch", "update", "watch"),
    ),
    _core(
        "Pod",
        "pods",
        True,
        POD_STRATEGY,
        short_names=("po",),
        categories=("all",),
        subresources=("status", "binding", "eviction", "ephemeralcontainers", "log", "exec", "attach", "portforward",
                      "proxy"),
    ),
    _core("Node", "nodes", False, NODE_STRATEGY, short_names=("no",), subresources=("status", "proxy")),
    _core(
        "Service",
        "services",
        True,
        SERVICE_STRATEGY,
        short_names=("svc",),
        categories=("all",),
        subresources=("status", "proxy"),
    ),
    _core("Endpoints", "endpoints", True, ENDPOINTS_STRATEGY, short_names=("ep",)),
    _core("ConfigMap", "configmaps", True, CONFIGMAP_STRATEGY, short_names=("cm",)),
    _core("Secret", "secrets", True, SECRET_STRATEGY),
    _core("ServiceAccount", "serviceaccounts", True, SERVICEACCOUNT_STRATEGY, short_names=("sa",),
          subresources=("token",)),
    _core("Event", "events", True, EVENT_STRATEGY, short_names=("ev",)),
    _core(
        "LimitRange",
        "limitranges",
        True,
        Strategy(
            has_status=False, columns=CREATED_AT_COLUMNS, row=created_at_row, defaults=limitrange_defaults
        ),
        short_names=("limits",),
    ),
    _core(
        "ResourceQuota",
        "resourcequotas",
        True,
        QUOTA_STRATEGY,
        short_names=("quota",),
        subresources=("status",),
    ),
    _core(
        "PersistentVolume",
        "persistentvolumes",
        False,
        PV_STRATEGY,
        short_names=("pv",),
        subresources=("status",),
    ),
    _core(
        "PersistentVolumeClaim",
        "persistentvolumeclaims",
        True,
        PVC_STRATEGY,
        short_names=("pvc",),
        subresources=("status",),
    ),
    _core(
        "ReplicationController",
        "replicationcontrollers",
        True,
        RC_STRATEGY,
        short_names=("rc",),
        categories=("all",),
        subresources=("status", "scale"),
        scale=SCALE,
    ),
]
