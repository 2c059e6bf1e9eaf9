"""EndpointSlice controller: for each Service with a selector, EndpointSlices of its pods' endpoints."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, ClassVar

from kubelite.client.controller import Controller
from kubelite.client.errors import ApiError, is_not_found
from kubelite.client.resources import ENDPOINTSLICES, NODES, SERVICES
from kubelite.client.store import NAMESPACE_INDEX, split_key
from kubelite.controllers.endpoints import (
    endpoint_port,
    hostname,
    in_endpoints,
    pod_ready,
    selected_pods,
    selects,
    service_labels,
    target_port,
    target_ref,
    watch_pods,
)

Obj = dict[str, Any]
SERVICE_NAME = "kubernetes.io/service-name"
MANAGED_BY = "endpointslice.kubernetes.io/managed-by"
CONTROLLER = "endpointslice-controller.k8s.io"
ZONE = "topology.kubernetes.io/zone"
GroupKey = tuple[str, tuple[tuple[str, int, str, str], ...]]


def _family(ip: str) -> str:
    """The addressType of an IP."""
    return "IPv6" if ":" in ip else "IPv4"


def _ports_key(ports: list[Obj]) -> tuple[tuple[str, int, str, str], ...]:
    """Ports as a comparable value, whatever their order and key order."""
    return tuple(sorted((p.get("name") or "", p.get("port") or 0, p.get("protocol") or "TCP",
                         p.get("appProtocol") or "") for p in ports))


def _service_key(endpoint_slice: Obj) -> list[str]:
    """The key of the Service a slice belongs to (its service-name label)."""
    name = (endpoint_slice["metadata"].get("labels") or {}).get(SERVICE_NAME)
    return [f"{endpoint_slice['metadata']['namespace']}/{name}"] if name else []


class EndpointSliceController(Controller):
    """Keys are Service keys; pods map to the Services selecting them, slices to their Service."""

    name = "endpointslice"
    max_endpoints_per_slice: ClassVar[int] = 100

    def setup(self) -> None:
        """Services, pods, nodes (for zones) and the slices this controller manages."""
        self.services = self.watch(SERVICES)
        self.pods = watch_pods(self, self.services)
        self.nodes = self.informer(NODES)
        self.slices = self.watch(ENDPOINTSLICES, keys=_service_key, label_selector=f"{MANAGED_BY}={CONTROLLER}")
        self._written: dict[str, int] = {}
        """Per Service, the resourceVersion of our last slice write: the cache is stale until it saw that."""

    def _endpoint(self, service: Obj, pod: Obj, ip: str) -> Obj:
        """A slice endpoint: serving when Ready, ready when also not terminating (unless publishing all)."""
        publish = bool((service.get("spec") or {}).get("publishNotReadyAddresses"))
        serving, terminating = publish or pod_ready(pod), bool(pod["metadata"].get("deletionTimestamp"))
        endpoint: Obj = {"addresses": [ip], "conditions": {
            "ready": publish or (serving and not terminating), "serving": serving, "terminating": terminating},
            "targetRef": target_ref(pod)}
        if name := hostname(pod, service):
            endpoint["hostname"] = name
        if node := pod["spec"].get("nodeName"):
            endpoint["nodeName"] = node
            zone = ((self.nodes.store.get(node) or {}).get("metadata", {}).get("labels") or {}).get(ZONE)
            if zone:
                endpoint["zone"] = zone
        return endpoint

    def _desired(self, service: Obj) -> dict[GroupKey, tuple[list[Obj], list[Obj]]]:
        """(ports, endpoints) by address type and ports; one empty placeholder group when there are none."""
        spec = service.get("spec") or {}
        families = spec.get("ipFamilies") or ["IPv4"]
        groups: dict[GroupKey, tuple[list[Obj], list[Obj]]] = {}
        for pod in selected_pods(self.pods, service):
            if not in_endpoints(pod, include_terminating=True):
                continue
            ports = [{"name": "", **endpoint_port(sp, number)} for sp in spec.get("ports") or []
                     if (number := target_port(sp, pod)) is not None]
            status = pod["status"]
            ips = [i["ip"] for i in status.get("podIPs") or [] if i.get("ip")] or [status["podIP"]]
            for family in families:
                ip = next((i for i in ips if _family(i) == family), None)
                if ip is not None:
                    group = groups.setdefault((family, _ports_key(ports)), (ports, []))
                    group[1].append(self._endpoint(service, pod, ip))
        return groups or {(families[0], ()): ([], [])}

    async def reconcile(self, key: str) -> None:
        """Make the Service's slices hold its endpoints: reuse slices of the same ports, create, delete the rest."""
        namespace, name = split_key(key)
        service = self.services.store.get(key)
        if service is None:
            self._written.pop(key, None)
            return  # its slices go with it: they name it as owner
        if selects(service) is None:
            return  # the user manages the slices of a Service without selector
        if int(self.slices.resource_version or 0) < self._written.get(key, 0):
            return  # our last write is not in the cache yet; its event queues the Service again
        uid = service["metadata"]["uid"]
        existing: dict[GroupKey, list[Obj]] = {}
        stale: list[Obj] = []
        for item in sorted(self.slices.store.by_index(NAMESPACE_INDEX, namespace), key=lambda s: s["metadata"]["name"]):
            if (item["metadata"].get("labels") or {}).get(SERVICE_NAME) != name:
                continue
            if any(ref.get("uid") == uid for ref in item["metadata"].get("ownerReferences") or []):
                existing.setdefault((item["addressType"], _ports_key(item.get("ports") or [])), []).append(item)
            else:
                stale.append(item)
        labels = {**service_labels(service), SERVICE_NAME: name, MANAGED_BY: CONTROLLER}
        size = self.max_endpoints_per_slice
        for group, (ports, endpoints) in self._desired(service).items():
            endpoints.sort(key=lambda e: (e["targetRef"]["name"], e["addresses"][0]))
            chunks = [endpoints[i:i + size] for i in range(0, len(endpoints), size)] or [[]]
            reusable = existing.pop(group, [])
            for chunk, current in zip(chunks, reusable, strict=False):
                if current.get("endpoints") != chunk or current["metadata"].get("labels") != labels:
                    await self._write(key, self.client.update(ENDPOINTSLICES, {
                        **current, "metadata": {**current["metadata"], "labels": labels}, "endpoints": chunk}))
            for chunk in chunks[len(reusable):]:
                await self._write(key, self.client.create(ENDPOINTSLICES, {
                    "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                    "metadata": {"generateName": f"{name}-", "namespace": namespace, "labels": labels,
                                 "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": name, "uid": uid,
                                                      "controller": True, "blockOwnerDeletion": True}]},
                    "addressType": group[0], "endpoints": chunk, "ports": ports}))
            stale += reusable[len(chunks):]
        for item in stale + [s for slices in existing.values() for s in slices]:
            await self._write(key, self.client.delete(ENDPOINTSLICES, item["metadata"]["name"], namespace))

    async def _write(self, key: str, request: Awaitable[Obj]) -> None:
        """Await a slice write and remember its resourceVersion (a slice already gone is fine)."""
        try:
            written = await request
        except ApiError as exc:
            if not is_not_found(exc):
                raise
            return
        self._written[key] = max(self._written.get(key, 0), int(written["metadata"]["resourceVersion"]))
