"""Endpoints controller: for each Service with a selector, an Endpoints object listing its pods' addresses."""

from __future__ import annotations

from typing import Any

from kubelite.client.controller import Controller
from kubelite.client.errors import ApiError, is_already_exists, is_not_found
from kubelite.client.informer import Informer
from kubelite.client.resources import ENDPOINTS, PODS, SERVICES
from kubelite.client.store import NAMESPACE_INDEX, key_of, split_key
from kubelite.client.timestamps import now_time

Obj = dict[str, Any]
HEADLESS_LABEL = "service.kubernetes.io/headless"
TRIGGER_TIME = "endpoints.kubernetes.io/last-change-trigger-time"
"""Set on the Endpoints this controller writes; only those are deleted with their Service."""


def selects(service: Obj) -> dict[str, str] | None:
    """The selector of a Service this controller manages endpoints for (None: the user manages them)."""
    spec = service.get("spec") or {}
    if spec.get("type") == "ExternalName":
        return None
    return spec.get("selector") or None


def headless(service: Obj) -> bool:
    """clusterIP None."""
    return (service.get("spec") or {}).get("clusterIP") == "None"


def selected_pods(pods: Informer, service: Obj) -> list[Obj]:
    """The cached pods in the Service's namespace that its selector matches, by name."""
    selector = selects(service) or {}
    found = [p for p in pods.store.by_index(NAMESPACE_INDEX, service["metadata"]["namespace"])
             if selector and (p["metadata"].get("labels") or {}).items() >= selector.items()]
    return sorted(found, key=lambda p: p["metadata"]["name"])


def pod_services(services: Informer, pod: Obj) -> list[str]:
    """Keys of the Services whose selector matches a pod: what a pod change requeues."""
    labels = pod["metadata"].get("labels") or {}
    return [key_of(s) for s in services.store.by_index(NAMESPACE_INDEX, pod["metadata"]["namespace"])
            if (selector := selects(s)) and labels.items() >= selector.items()]


def watch_pods(controller: Controller, services: Informer) -> Informer:
    """The pod informer, each change queueing the Services selecting the pod before and after it."""
    return controller.watch(PODS, keys=lambda pod: pod_services(services, pod))


def pod_ready(pod: Obj) -> bool:
    """The pod's Ready condition is True."""
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def in_endpoints(pod: Obj, include_terminating: bool) -> bool:
    """Upstream's ShouldPodBeInEndpoints: has an IP, not terminating (unless asked), will not run again."""
    status, spec = pod.get("status") or {}, pod.get("spec") or {}
    if not status.get("podIP") or (pod["metadata"].get("deletionTimestamp") and not include_terminating):
        return False
    policy, phase = spec.get("restartPolicy", "Always"), status.get("phase")
    if policy == "Never":
        return phase not in ("Succeeded", "Failed")
    return policy != "OnFailure" or phase != "Succeeded"


def target_port(service_port: Obj, pod: Obj) -> int | None:
    """The container port a Service port reaches on a pod: a number, or a named container port (None if absent)."""
    target = service_port.get("targetPort", service_port.get("port"))
    if isinstance(target, int):
        return target
    protocol = service_port.get("protocol", "TCP")
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == target and port.get("protocol", "TCP") == protocol:
                return port.get("containerPort")
    return None


def endpoint_port(service_port: Obj, number: int) -> Obj:
    """An EndpointPort (core and discovery share its fields) for a Service port resolved to `number`."""
    port = {"port": number, "protocol": service_port.get("protocol", "TCP")}
    if service_port.get("name"):
        port["name"] = service_port["name"]
    if service_port.get("appProtocol"):
        port["appProtocol"] = service_port["appProtocol"]
    return port


def target_ref(pod: Obj) -> Obj:
    """The ObjectReference of a pod, as endpoints carry it."""
    meta = pod["metadata"]
    return {"kind": "Pod", "namespace": meta["namespace"], "name": meta["name"], "uid": meta["uid"]}


def hostname(pod: Obj, service: Obj) -> str:
    """The pod's hostname when its subdomain is this Service (a DNS name of headless services)."""
    spec = pod.get("spec") or {}
    return spec.get("hostname", "") if spec.get("subdomain") == service["metadata"]["name"] else ""


def service_labels(service: Obj) -> dict[str, str]:
    """The Service's labels with the headless marker set or dropped, as endpoints objects carry them."""
    labels = {k: v for k, v in (service["metadata"].get("labels") or {}).items() if k != HEADLESS_LABEL}
    return {**labels, HEADLESS_LABEL: ""} if headless(service) else labels


def subsets(service: Obj, pods: list[Obj]) -> list[Obj]:
    """EndpointSubsets: addresses grouped by the set of ports they serve, ready and not-ready apart."""
    spec = service.get("spec") or {}
    publish = bool(spec.get("publishNotReadyAddresses"))
    ports_of: dict[str, tuple[Obj, bool, list[Obj]]] = {}
    for pod in pods:
        if not in_endpoints(pod, include_terminating=publish):
            continue
        address: Obj = {"ip": pod["status"]["podIP"], "targetRef": target_ref(pod)}
        if pod["spec"].get("nodeName"):
            address["nodeName"] = pod["spec"]["nodeName"]
        if name := hostname(pod, service):
            address["hostname"] = name
        ports = [endpoint_port(sp, number) for sp in spec.get("ports") or []
                 if (number := target_port(sp, pod)) is not None]
        if ports or (headless(service) and not spec.get("ports")):
            ports_of[pod["metadata"]["name"]] = (address, publish or pod_ready(pod), ports)
    groups: dict[str, Obj] = {}
    for address, ready, ports in ports_of.values():
        ports = sorted(ports, key=lambda p: (p.get("name", ""), p["port"], p["protocol"]))
        subset = groups.setdefault(repr(ports), {"addresses": [], "notReadyAddresses": [], "ports": ports})
        subset["addresses" if ready else "notReadyAddresses"].append(address)
    result = []
    for subset in groups.values():
        for field in ("addresses", "notReadyAddresses"):
            subset[field].sort(key=lambda a: (a["ip"], a["targetRef"]["uid"]))
        result.append({k: v for k, v in subset.items() if v})
    return sorted(result, key=lambda s: repr(s.get("ports")))


class EndpointsController(Controller):
    """Keys are Service keys; pods map to the Services selecting them, Endpoints to their Service."""

    name = "endpoint"

    def setup(self) -> None:
        """Services, pods (to the Services selecting them) and Endpoints (to put back what others change)."""
        self.services = self.watch(SERVICES)
        self.pods = watch_pods(self, self.services)
        self.endpoints = self.watch(ENDPOINTS)

    async def reconcile(self, key: str) -> None:
        """Write the Endpoints of a Service from its pods; delete ours when the Service is gone."""
        namespace, name = split_key(key)
        service = self.services.store.get(key)
        current = self.endpoints.store.get(key)
        if service is None:
            if current is not None and TRIGGER_TIME in (current["metadata"].get("annotations") or {}):
                try:
                    await self.client.delete(ENDPOINTS, name, namespace)
                except ApiError as exc:
                    if not is_not_found(exc):
                        raise
            return
        if selects(service) is None:
            return
        addresses = subsets(service, selected_pods(self.pods, service))
        labels = service_labels(service)
        if current is None:
            try:
                await self.client.create(ENDPOINTS, {"apiVersion": "v1", "kind": "Endpoints", "metadata": {
                    "name": name, "namespace": namespace, "labels": labels,
                    "annotations": {TRIGGER_TIME: now_time()}}, "subsets": addresses})
            except ApiError as exc:
                if not is_already_exists(exc):
                    raise  # else the cache lags: the Endpoints' add event queues the Service again
        elif (current.get("subsets") or []) != addresses or (current["metadata"].get("labels") or {}) != labels:
            meta = current["metadata"]
            annotations = {**(meta.get("annotations") or {}), TRIGGER_TIME: now_time()}
            await self.client.update(ENDPOINTS, {**current, "subsets": addresses, "metadata": {
                **meta, "labels": labels, "annotations": annotations}})
