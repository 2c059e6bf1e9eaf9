"""ServiceLB (as in k3s): a LoadBalancer Service's ingress is the addresses of the Ready nodes, whose proxies
then serve its port on those addresses."""

from __future__ import annotations

import ipaddress
from typing import Any

from kubelite.client.controller import Controller
from kubelite.client.errors import ApiError, is_not_found
from kubelite.client.resources import NODES, SERVICES
from kubelite.client.store import key_of

Obj = dict[str, Any]
EXCLUDE_LABEL = "node.kubernetes.io/exclude-from-external-load-balancers"


def node_ingress(node: Obj) -> str | None:
    """The address a node lends to load balancers: its InternalIP, if it is Ready and not excluded."""
    if EXCLUDE_LABEL in (node["metadata"].get("labels") or {}):
        return None
    status = node.get("status") or {}
    if not any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []):
        return None
    return next((a["address"] for a in status.get("addresses") or [] if a.get("type") == "InternalIP"), None)


def managed(service: Obj) -> bool:
    """A LoadBalancer Service without a loadBalancerClass (a class names another implementation)."""
    spec = service.get("spec") or {}
    return spec.get("type") == "LoadBalancer" and not spec.get("loadBalancerClass")


def desired_ingress(service: Obj, nodes: list[Obj]) -> list[Obj]:
    """The status.loadBalancer.ingress the Service should have: node addresses when managed, else none."""
    if not managed(service):
        return []
    addresses = {node_ingress(node) for node in nodes} - {None}
    return [{"ip": ip} for ip in sorted(addresses, key=ipaddress.ip_address)]


class ServiceLBController(Controller):
    """Keys are Service keys; a change in the set of Ready node addresses queues every LoadBalancer Service."""

    name = "servicelb"

    def setup(self) -> None:
        """Services, and nodes (whose relevant changes requeue all LoadBalancer Services)."""
        self.services = self.watch(SERVICES)
        self.nodes = self.informer(NODES)
        self.nodes.add_handlers(on_add=lambda _node: self._nodes_changed(),
                                on_update=lambda old, new: self._nodes_changed()
                                if node_ingress(old) != node_ingress(new) else None,
                                on_delete=lambda _node: self._nodes_changed())

    def _nodes_changed(self) -> None:
        self.enqueue(key_of(s) for s in self.services.store.list() if managed(s))

    async def reconcile(self, key: str) -> None:
        """Write the Service's ingress when it differs: node addresses for LoadBalancer, none for other types;
        a Service with a loadBalancerClass belongs to another implementation and is left alone."""
        service = self.services.store.get(key)
        if service is None or (service.get("spec") or {}).get("loadBalancerClass"):
            return
        status = service.get("status") or {}
        desired = desired_ingress(service, self.nodes.store.list())
        if ((status.get("loadBalancer") or {}).get("ingress") or []) == desired:
            return
        try:
            await self.client.update_status(SERVICES, {**service, "status": {
                **status, "loadBalancer": {"ingress": desired} if desired else {}}})
        except ApiError as exc:
            if not is_not_found(exc):
                raise
