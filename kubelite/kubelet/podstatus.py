"""The pod status a kubelet posts, computed from what the runtime reports: phase (upstream's getPhase),
conditions, and each container's state, last state, restart count, readiness and start."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from kubelite.client.timestamps import now_time, time_at
from kubelite.kubelet.runtime.base import ContainerState, ContainerStatus

Obj = dict[str, Any]
TERMINAL = ("Succeeded", "Failed")


def condition(old: list[Obj], type_: str, ok: bool, now: str, reason: str = "", message: str = "") -> Obj:
    """A pod condition; lastTransitionTime is kept from the old one when the status did not change."""
    status = "True" if ok else "False"
    previous = next((c for c in old if c.get("type") == type_), {})
    since = previous.get("lastTransitionTime") if previous.get("status") == status else None
    result = {"type": type_, "status": status, "lastTransitionTime": since or now}
    return {**result, **({"reason": reason} if reason else {}), **({"message": message} if message else {})}


@dataclass
class ContainerView:
    """What the kubelet knows of one container of the spec: its latest and previous runtime containers, why it
    waits (if the kubelet could not start it), and its probe results."""

    spec: Obj
    latest: ContainerStatus | None = None
    previous: ContainerStatus | None = None
    waiting: tuple[str, str] | None = None
    ready: bool = False
    started: bool = False
    live: bool = True
    image_id: str = ""
    sidecar: bool = False

    @property
    def name(self) -> str:
        return self.spec["name"]

    @property
    def exited(self) -> bool:
        return self.latest is not None and self.latest.state == ContainerState.EXITED

    @property
    def running(self) -> bool:
        return self.latest is not None and self.latest.state == ContainerState.RUNNING

    @property
    def succeeded(self) -> bool:
        return self.exited and self.latest is not None and self.latest.exit_code == 0


def terminated(c: ContainerStatus, runtime: str) -> Obj:
    """A ContainerStateTerminated."""
    state = {"exitCode": c.exit_code, "reason": c.reason or ("Completed" if c.exit_code == 0 else "Error"),
             "startedAt": time_at(c.started_at / 1e9) if c.started_at else None,
             "finishedAt": time_at(c.finished_at / 1e9) if c.finished_at else None,
             "containerID": f"{runtime}://{c.id}"}
    if c.message:
        state["message"] = c.message
    return state


def container_status(view: ContainerView, runtime: str, default_waiting: str = "ContainerCreating") -> Obj:
    """One ContainerStatus as `kubectl get/describe` shows it."""
    c = view.latest
    status: Obj = {"name": view.name, "image": view.spec.get("image", ""), "imageID": view.image_id,
                   "ready": view.ready and view.running, "started": view.started and view.running,
                   "restartCount": c.attempt if c else 0, "lastState": {}}
    if c is not None:
        status["containerID"] = f"{runtime}://{c.id}"
    if view.previous is not None and view.previous.state == ContainerState.EXITED:
        status["lastState"] = {"terminated": terminated(view.previous, runtime)}
    if view.waiting is not None:
        reason, message = view.waiting
        status["state"] = {"waiting": {"reason": reason, **({"message": message} if message else {})}}
        if view.exited and c is not None:
            status["lastState"] = {"terminated": terminated(c, runtime)}
    elif c is None or c.state == ContainerState.CREATED:
        status["state"] = {"waiting": {"reason": default_waiting}}
    elif c.state == ContainerState.RUNNING:
        status["state"] = {"running": {"startedAt": time_at(c.started_at / 1e9)}}
    else:
        status["state"] = {"terminated": terminated(c, runtime)}
    return status


def _counts(statuses: list[Obj]) -> dict[str, int]:
    """getPhase's tallies: a waiting container that ran before counts as stopped, not waiting."""
    counts = {"running": 0, "waiting": 0, "stopped": 0, "succeeded": 0}
    for s in statuses:
        state = s["state"]
        if "running" in state:
            counts["running"] += 1
        elif "terminated" in state:
            counts["stopped"] += 1
            counts["succeeded"] += state["terminated"]["exitCode"] == 0
        elif s["lastState"].get("terminated"):
            counts["stopped"] += 1
        else:
            counts["waiting"] += 1
    return counts


def phase(restart_policy: str, statuses: list[Obj], initializing: bool, init_failed: bool) -> str:
    """upstream getPhase for the regular containers (init containers decide Pending and Failed first)."""
    if init_failed:
        return "Failed"
    if initializing:
        return "Pending"
    counts = _counts(statuses)
    if counts["waiting"]:
        return "Pending"
    if counts["running"]:
        return "Running"
    if counts["stopped"]:
        if restart_policy == "Always":
            return "Running"
        if counts["stopped"] == counts["succeeded"]:
            return "Succeeded"
        return "Failed" if restart_policy == "Never" else "Running"
    return "Pending"


class Views(NamedTuple):
    """A pod's containers by kind, each with what the runtime and the prober know of it."""

    inits: list[ContainerView]
    mains: list[ContainerView]
    ephemerals: list[ContainerView]


def pod_status(pod: Obj, views: Views, *, runtime: str, host_ip: str, pod_ip: str, sandbox_ready: bool,
               initializing: bool, init_failed: bool) -> Obj:
    """The status to post: phase, conditions, IPs, start time and container statuses (ephemeral ones apart: they
    count for neither phase nor readiness)."""
    spec, old = pod.get("spec") or {}, pod.get("status") or {}
    inits, mains = views.inits, views.mains
    restart_policy = spec.get("restartPolicy", "Always")
    init_statuses = [container_status(v, runtime) for v in inits]
    waiting_reason = "PodInitializing" if initializing else "ContainerCreating"
    statuses = [container_status(v, runtime, waiting_reason) for v in mains]
    current = phase(restart_policy, statuses, initializing, init_failed)
    if old.get("phase") in TERMINAL:
        current = old["phase"]
    now, conditions = now_time(), old.get("conditions") or []
    incomplete = [v.name for v in inits if not (v.succeeded or (v.sidecar and v.started))]
    unready = [v.name for v in [*[i for i in inits if i.sidecar], *mains] if not (v.ready and v.running)]
    terminal = current in TERMINAL
    ready_reason, ready_message = ("PodCompleted", "") if terminal else (
        ("ContainersNotReady", f"containers with unready status: [{' '.join(unready)}]") if unready else ("", ""))
    init_reason, init_message = ("PodCompleted", "") if terminal and not incomplete else (
        ("ContainersNotInitialized", f"containers with incomplete status: [{' '.join(incomplete)}]")
        if incomplete else ("", ""))
    ours = [
        condition(conditions, "PodReadyToStartContainers", sandbox_ready and not terminal, now),
        condition(conditions, "Initialized", not incomplete, now, init_reason, init_message),
        condition(conditions, "Ready", not unready and not terminal, now, ready_reason, ready_message),
        condition(conditions, "ContainersReady", not unready and not terminal, now, ready_reason, ready_message),
    ]
    owned = {c["type"] for c in ours}
    status: Obj = {
        "phase": current, "conditions": ours + [c for c in conditions if c.get("type") not in owned],
        "hostIP": host_ip, "hostIPs": [{"ip": host_ip}], "startTime": old.get("startTime") or now,
        "containerStatuses": statuses,
    }
    if pod_ip:
        status["podIP"], status["podIPs"] = pod_ip, [{"ip": pod_ip}]
    if init_statuses:
        status["initContainerStatuses"] = init_statuses
    if views.ephemerals:
        status["ephemeralContainerStatuses"] = [container_status(v, runtime) for v in views.ephemerals]
    if old.get("qosClass"):
        status["qosClass"] = old["qosClass"]
    return status
