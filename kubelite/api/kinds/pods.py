"""Pods: defaults, create-time admission defaults, validation, update rules, fields, table."""

from __future__ import annotations

import copy
import json
from typing import Any

from kubelite.api.kinds.common import columns, dig, since
from kubelite.api.kinds.podspec import default_pod_spec, validate_pod_spec
from kubelite.api.names import invalid_value
from kubelite.api.quantity import parse_quantity
from kubelite.api.strategy import AGE_COLUMN, Cause, Column, Obj, Strategy, forbidden, parse_time

UPDATABLE_FIELDS = (
    "`spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,"
    "`spec.tolerations` (only additions to existing tolerations),"
    "`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)"
)
SYSTEM_PRIORITIES = {"system-node-critical": 2000001000, "system-cluster-critical": 2000000000}
_NOT_READY, _UNREACHABLE = "node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"


def _all_containers(spec: Obj) -> list[Obj]:
    return [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]


def pod_defaults(pod: Obj) -> None:
    """SetDefaults_PodSpec, what only Pods get (requests from limits, service links), phase and QoS."""
    spec = pod.setdefault("spec", {})
    default_pod_spec(spec)
    for container in _all_containers(spec):
        resources = container.setdefault("resources", {})
        if resources.get("limits"):
            requests = resources.setdefault("requests", {})
            for name, value in resources["limits"].items():
                requests.setdefault(name, value)
        if spec.get("hostNetwork"):
            for port in container.get("ports") or []:
                port.setdefault("hostPort", port.get("containerPort"))
    spec.setdefault("enableServiceLinks", True)
    status = pod.setdefault("status", {})
    status.setdefault("phase", "Pending")
    status.setdefault("qosClass", qos_class(spec))


def qos_class(spec: Obj) -> str:
    """GetPodQOS over cpu and memory: BestEffort, Guaranteed or Burstable."""
    requests: dict[str, Any] = {}
    limits: dict[str, Any] = {}
    guaranteed = True
    for container in _all_containers(spec):
        resources = container.get("resources") or {}
        container_limits = resources.get("limits") or {}
        container_requests = resources.get("requests") or {}
        for total, values in ((requests, container_requests), (limits, container_limits)):
            for name in ("cpu", "memory"):
                amount = parse_quantity(values.get(name, 0)) or 0
                if amount > 0:
                    total[name] = total.get(name, 0) + amount
        if not all((parse_quantity(container_limits.get(n, 0)) or 0) > 0 for n in ("cpu", "memory")):
            guaranteed = False
    if not requests and not limits:
        return "BestEffort"
    if guaranteed and requests == limits:
        return "Guaranteed"
    return "Burstable"


def pod_validate_create(pod: Obj) -> list[Cause]:
    """ValidatePodCreate: ephemeral containers come later, through pods/ephemeralcontainers."""
    if (pod.get("spec") or {}).get("ephemeralContainers"):
        return [forbidden("spec.ephemeralContainers", "cannot be set on create")]
    return []


def pod_prepare_update(new: Obj, old: Obj) -> None:
    """Ephemeral containers are added through pods/ephemeralcontainers only: a write of the pod keeps them."""
    kept = (old.get("spec") or {}).get("ephemeralContainers")
    spec = new.setdefault("spec", {})
    if kept is None:
        spec.pop("ephemeralContainers", None)
    else:
        spec["ephemeralContainers"] = kept


def pod_prepare_create(pod: Obj) -> None:
    """A fresh status, plus what the Priority and DefaultTolerationSeconds admission plugins add."""
    spec = pod.setdefault("spec", {})
    pod["status"] = {}
    class_name = spec.get("priorityClassName") or ""
    if not class_name or class_name in SYSTEM_PRIORITIES:
        spec.setdefault("priority", SYSTEM_PRIORITIES.get(class_name, 0))
        spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    tolerations = spec.get("tolerations") or []
    for key in (_NOT_READY, _UNREACHABLE):
        if not any(
            t.get("key", "") in (key, "") and t.get("effect", "") in ("NoExecute", "") for t in tolerations
        ):
            tolerations.append(
                {"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
            )
    spec["tolerations"] = tolerations


def pod_validate(pod: Obj) -> list[Cause]:
    """ValidatePodSpec on spec."""
    return validate_pod_spec(pod.get("spec") or {}, "spec")


def _diff(old: Any, new: Any, path: str) -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        return [
            line
            for key in sorted(set(old) | set(new))
            for line in _diff(old.get(key), new.get(key), f"{path}.{key}")
        ]
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [
            line
            for i, (a, b) in enumerate(zip(old, new, strict=True))
            for line in _diff(a, b, f"{path}[{i}]")
        ]
    if old == new:
        return []
    return [f"  {path}: {json.dumps(old, sort_keys=True)} -> {json.dumps(new, sort_keys=True)}"]


def _toleration_key(toleration: Obj) -> Obj:
    return {k: v for k, v in toleration.items() if k != "tolerationSeconds"}


def pod_validate_update(new: Obj, old: Obj) -> list[Cause]:
    """ValidatePodUpdate: a pod's spec is fixed except images, deadline, added tolerations, removed gates."""
    new_spec, old_spec = new.get("spec") or {}, old.get("spec") or {}
    causes: list[Cause] = []
    munged = copy.deepcopy(new_spec)
    for key in ("containers", "initContainers"):
        if len(munged.get(key) or []) != len(old_spec.get(key) or []):
            return [forbidden(f"spec.{key}", "pod updates may not add or remove containers")]
        for container, before in zip(munged.get(key) or [], old_spec.get(key) or [], strict=True):
            container["image"] = before.get("image")
    new_deadline, old_deadline = new_spec.get("activeDeadlineSeconds"), old_spec.get("activeDeadlineSeconds")
    if old_deadline is not None and new_deadline is None:
        causes.append(
            invalid_value(
                "spec.activeDeadlineSeconds", None, "must not update from a positive integer to nil value"
            )
        )
    elif old_deadline is not None and new_deadline > old_deadline:
        causes.append(
            invalid_value(
                "spec.activeDeadlineSeconds", new_deadline, "must be less than or equal to previous value"
            )
        )
    new_tolerations = [_toleration_key(t) for t in new_spec.get("tolerations") or []]
    if any(_toleration_key(t) not in new_tolerations for t in old_spec.get("tolerations") or []):
        causes.append(
            forbidden(
                "spec.tolerations", "existing toleration can not be modified except its tolerationSeconds"
            )
        )
    old_gates = [g.get("name") for g in old_spec.get("schedulingGates") or []]
    for gate in new_spec.get("schedulingGates") or []:
        if gate.get("name") not in old_gates:
            causes.append(
                forbidden(
                    "spec.schedulingGates",
                    f"only deletion is allowed, but found new scheduling gate '{gate.get('name')}'",
                )
            )
    grace = old_spec.get("terminationGracePeriodSeconds")
    if isinstance(grace, int) and grace < 0 and munged.get("terminationGracePeriodSeconds") == 1:
        munged["terminationGracePeriodSeconds"] = grace
    causes += _ephemeral_update(new_spec.get("ephemeralContainers") or [], old_spec.get("ephemeralContainers") or [])
    for key in ("activeDeadlineSeconds", "tolerations", "schedulingGates", "ephemeralContainers"):
        munged.pop(key, None)
        if key in old_spec:
            munged[key] = old_spec[key]
    if munged != old_spec:
        detail = "\n".join(_diff(old_spec, munged, "spec"))
        causes.append(
            forbidden("spec", f"pod updates may not change fields other than {UPDATABLE_FIELDS}\n{detail}")
        )
    return causes


def _ephemeral_update(new: list[Obj], old: list[Obj]) -> list[Cause]:
    """ValidatePodEphemeralContainersUpdate: ephemeral containers may be added, never changed or removed."""
    by_name = {c.get("name"): c for c in new}
    for before in old:
        name = before.get("name")
        if name not in by_name:
            return [forbidden("spec.ephemeralContainers", f'existing ephemeral container "{name}" may not be removed')]
        if by_name[name] != before:
            return [forbidden(f"spec.ephemeralContainers[{name}]", "may not be changed")]
    return []


def pod_fields(pod: Obj) -> dict[str, str]:
    """The pod fields a field selector may use (upstream PodToSelectableFields)."""
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    ips = status.get("podIPs") or []
    return {
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.restartPolicy": spec.get("restartPolicy", ""),
        "spec.schedulerName": spec.get("schedulerName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "spec.hostNetwork": "true" if spec.get("hostNetwork") else "false",
        "status.phase": status.get("phase", ""),
        "status.podIP": ips[0].get("ip", "") if ips else status.get("podIP", ""),
        "status.nominatedNodeName": status.get("nominatedNodeName", ""),
    }


POD_COLUMNS = columns(
    Column("Ready", description="The aggregate readiness state of this pod for accepting traffic."),
    Column("Status", description="The aggregate status of the containers in this pod."),
    Column(
        "Restarts",
        description="The number of times the containers in this pod have been restarted and when "
        "the last container in this pod has restarted.",
    ),
    AGE_COLUMN,
    Column("IP", priority=1, description="IP address allocated to the pod."),
    Column(
        "Node", priority=1, description="NodeName is a request to schedule this pod onto a specific node."
    ),
    Column(
        "Nominated Node",
        priority=1,
        description="nominatedNodeName is set only when this pod preempts other pods on the node.",
    ),
    Column(
        "Readiness Gates",
        priority=1,
        description="If specified, all readiness gates will be evaluated for pod readiness.",
    ),
)


def _condition_true(status: Obj, kind: str) -> bool:
    return any(c.get("type") == kind and c.get("status") == "True" for c in status.get("conditions") or [])


def _later(current: str, candidate: str | None) -> str:
    when, best = parse_time(candidate), parse_time(current)
    return candidate if candidate and when and (best is None or when > best) else current


def _init_reason(pod: Obj, restartable: set[str]) -> tuple[str | None, int, str, int, int, str]:
    """Upstream's walk of init statuses: (reason, restarts, last, sidecar restarts, ready, sidecar last)."""
    statuses = dig(pod, "status", "initContainerStatuses", default=[])
    total = len(dig(pod, "spec", "initContainers", default=[]))
    restarts = sidecar_restarts = sidecar_ready = 0
    last = sidecar_last = ""
    for i, cs in enumerate(statuses):
        restarts += cs.get("restartCount", 0)
        finished = dig(cs, "lastState", "terminated", "finishedAt")
        last = _later(last, finished)
        sidecar = cs.get("name") in restartable
        if sidecar:
            sidecar_restarts += cs.get("restartCount", 0)
            sidecar_last = _later(sidecar_last, finished)
        state = cs.get("state") or {}
        terminated, waiting = state.get("terminated"), state.get("waiting")
        if terminated and terminated.get("exitCode", 0) == 0:
            continue
        if sidecar and cs.get("started"):
            sidecar_ready += 1 if cs.get("ready") else 0
            continue
        if terminated:
            reason = terminated.get("reason") or (
                f"Signal:{terminated['signal']}"
                if terminated.get("signal")
                else f"ExitCode:{terminated.get('exitCode', 0)}"
            )
            return "Init:" + reason, restarts, last, sidecar_restarts, sidecar_ready, sidecar_last
        if waiting and waiting.get("reason") and waiting["reason"] != "PodInitializing":
            return "Init:" + waiting["reason"], restarts, last, sidecar_restarts, sidecar_ready, sidecar_last
        return f"Init:{i}/{total}", restarts, last, sidecar_restarts, sidecar_ready, sidecar_last
    return None, restarts, last, sidecar_restarts, sidecar_ready, sidecar_last


def pod_row(pod: Obj) -> list[Any]:
    """The cells of upstream printPod: NAME READY STATUS RESTARTS AGE IP NODE NOMINATED READINESS."""
    spec, status, meta = pod.get("spec") or {}, pod.get("status") or {}, pod.get("metadata") or {}
    restartable = {
        c.get("name") for c in spec.get("initContainers") or [] if c.get("restartPolicy") == "Always"
    }
    total = len(spec.get("containers") or []) + len(restartable)
    phase = status.get("phase", "")
    reason = status.get("reason") or phase
    if any(
        c.get("type") == "PodScheduled" and c.get("reason") == "SchedulingGated"
        for c in status.get("conditions") or []
    ):
        reason = "SchedulingGated"
    init_reason, restarts, last, sidecar_restarts, ready, sidecar_last = _init_reason(pod, restartable)
    if init_reason:
        reason = init_reason
    if not init_reason or _condition_true(status, "Initialized"):
        restarts, last = sidecar_restarts, sidecar_last
        running = False
        for cs in reversed(status.get("containerStatuses") or []):
            restarts += cs.get("restartCount", 0)
            last = _later(last, dig(cs, "lastState", "terminated", "finishedAt"))
            state = cs.get("state") or {}
            waiting, terminated = state.get("waiting") or {}, state.get("terminated")
            if waiting.get("reason"):
                reason = waiting["reason"]
            elif terminated is not None and terminated.get("reason"):
                reason = terminated["reason"]
            elif terminated is not None:
                reason = (
                    f"Signal:{terminated['signal']}"
                    if terminated.get("signal")
                    else f"ExitCode:{terminated.get('exitCode', 0)}"
                )
            elif cs.get("ready") and "running" in state:
                running = True
                ready += 1
        if reason == "Completed" and running:
            reason = "Running" if _condition_true(status, "Ready") else "NotReady"
    if meta.get("deletionTimestamp") and status.get("reason") == "NodeLost":
        reason = "Unknown"
    elif meta.get("deletionTimestamp") and phase not in ("Succeeded", "Failed"):
        reason = "Terminating"
    restarts_cell = f"{restarts} ({since(last)} ago)" if restarts and last else str(restarts)
    ips = status.get("podIPs") or ([{"ip": status["podIP"]}] if status.get("podIP") else [])
    gates = spec.get("readinessGates") or []
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    gates_cell = (
        f"{sum(1 for g in gates if conditions.get(g.get('conditionType')) == 'True')}/{len(gates)}"
        if gates
        else "<none>"
    )
    return [
        meta.get("name", ""),
        f"{ready}/{total}",
        reason,
        restarts_cell,
        since(meta.get("creationTimestamp")),
        (ips[0].get("ip") if ips else "") or "<none>",
        spec.get("nodeName") or "<none>",
        status.get("nominatedNodeName") or "<none>",
        gates_cell,
    ]


POD_STRATEGY = Strategy(
    columns=POD_COLUMNS,
    row=pod_row,
    selectable_fields=pod_fields,
    defaults=pod_defaults,
    validate=pod_validate,
    validate_update=pod_validate_update,
    validate_create=pod_validate_create,
    prepare_create=pod_prepare_create,
    prepare_update=pod_prepare_update,
)
