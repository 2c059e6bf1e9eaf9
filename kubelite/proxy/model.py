"""What the proxy programs, as plain values: Service ports with their endpoints, built from Services and slices."""

from __future__ import annotations

import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

Obj = dict[str, Any]
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
PROXY_NAME_LABEL = "service.kubernetes.io/service-proxy-name"
"""Services with this label belong to another proxy (upstream kube-proxy skips them too)."""
DEFAULT_AFFINITY_TIMEOUT = 10800
PROTOCOLS = {"TCP": "tcp", "UDP": "udp", "SCTP": "sctp"}


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One backend of a Service port: where to send traffic, its slice conditions, and whether it is on this node."""

    ip: str
    port: int
    ready: bool = True
    serving: bool = True
    terminating: bool = False
    local: bool = False


@dataclass(frozen=True, slots=True)
class ServicePort:
    """One port of a Service with everything that decides its rules; equal values render equal rules."""

    namespace: str
    name: str
    port_name: str
    protocol: str
    """Lower case, as nft spells it: tcp, udp or sctp."""
    port: int
    cluster_ips: tuple[str, ...] = ()
    node_port: int = 0
    external_ips: tuple[str, ...] = ()
    load_balancer_ips: tuple[str, ...] = ()
    affinity_timeout: int = 0
    """Seconds a client IP sticks to its endpoint (sessionAffinity ClientIP); 0 means no affinity."""
    internal_local: bool = False
    """internalTrafficPolicy Local: ClusterIP traffic goes to endpoints on this node only."""
    external_local: bool = False
    """externalTrafficPolicy Local: NodePort, external and load-balancer traffic goes to local endpoints only."""
    endpoints: tuple[Endpoint, ...] = ()

    @property
    def key(self) -> str:
        """namespace/name/protocol/port-name: unique per Service port, the base of its chain names."""
        return f"{self.namespace}/{self.name}/{self.protocol}/{self.port_name}"

    @property
    def external(self) -> bool:
        """Reachable from outside the cluster: by a NodePort, an external IP or a load-balancer IP."""
        return bool(self.node_port or self.external_ips or self.load_balancer_ips)


def _ipv4(values: Iterable[Any]) -> tuple[str, ...]:
    """The IPv4 addresses among values, normalised, in order, without duplicates (IPv6 is not handled yet)."""
    found: dict[str, None] = {}
    for value in values:
        try:
            found[socket.inet_ntop(socket.AF_INET, socket.inet_pton(socket.AF_INET, str(value)))] = None
        except OSError:
            continue
    return tuple(found)


def proxied(service: Obj) -> bool:
    """A Service this proxy programs: it has a ClusterIP (not headless, not ExternalName) and no other proxy."""
    spec = service.get("spec") or {}
    if spec.get("type") == "ExternalName" or (service["metadata"].get("labels") or {}).get(PROXY_NAME_LABEL):
        return False
    return bool(_ipv4(spec.get("clusterIPs") or [spec.get("clusterIP")]))


def _condition(conditions: Obj, name: str, default: bool) -> bool:
    value = conditions.get(name)
    return default if value is None else bool(value)


def _endpoints(slices: Iterable[Obj], port_name: str, protocol: str, node_name: str) -> tuple[Endpoint, ...]:
    """The IPv4 endpoints of a Service port across its slices (ready and serving default to true when unset)."""
    found: dict[tuple[str, int], Endpoint] = {}
    for item in slices:
        if item.get("addressType", "IPv4") != "IPv4":
            continue
        number = next((p.get("port") for p in item.get("ports") or []
                       if (p.get("name") or "") == port_name and (p.get("protocol") or "TCP") == protocol), None)
        if not number:
            continue
        for endpoint in item.get("endpoints") or []:
            conditions = endpoint.get("conditions") or {}
            ready = _condition(conditions, "ready", True)
            for ip in _ipv4(endpoint.get("addresses") or ()):
                found.setdefault((ip, int(number)), Endpoint(
                    ip, int(number), ready=ready, serving=_condition(conditions, "serving", ready),
                    terminating=_condition(conditions, "terminating", False),
                    local=bool(node_name) and endpoint.get("nodeName") == node_name))
    return tuple(sorted(found.values(), key=lambda e: (socket.inet_aton(e.ip), e.port)))


def service_ports(service: Obj, slices: Iterable[Obj], node_name: str) -> list[ServicePort]:
    """The ports of one Service as this node's proxy sees them, with endpoints from the Service's slices."""
    if not proxied(service):
        return []
    spec = service.get("spec") or {}
    meta = service["metadata"]
    slices = list(slices)
    kind = spec.get("type") or "ClusterIP"
    affinity = 0
    if spec.get("sessionAffinity") == "ClientIP":
        config = ((spec.get("sessionAffinityConfig") or {}).get("clientIP") or {})
        affinity = int(config.get("timeoutSeconds") or DEFAULT_AFFINITY_TIMEOUT)
    ingress = ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    lb_ips = _ipv4(i.get("ip") for i in ingress if i.get("ipMode", "VIP") == "VIP") if kind == "LoadBalancer" else ()
    ports = []
    for port in spec.get("ports") or []:
        protocol = port.get("protocol") or "TCP"
        if protocol not in PROTOCOLS or not port.get("port"):
            continue
        name = port.get("name") or ""
        ports.append(ServicePort(
            namespace=meta["namespace"], name=meta["name"], port_name=name, protocol=PROTOCOLS[protocol],
            port=int(port["port"]), cluster_ips=_ipv4(spec.get("clusterIPs") or [spec.get("clusterIP")]),
            node_port=int(port.get("nodePort") or 0) if kind in ("NodePort", "LoadBalancer") else 0,
            external_ips=_ipv4(spec.get("externalIPs") or ()), load_balancer_ips=lb_ips, affinity_timeout=affinity,
            internal_local=spec.get("internalTrafficPolicy") == "Local",
            external_local=spec.get("externalTrafficPolicy") == "Local",
            endpoints=_endpoints(slices, name, protocol, node_name)))
    return ports


def build(services: Iterable[Obj], slices: Iterable[Obj], node_name: str) -> list[ServicePort]:
    """Every proxied Service port, sorted by key, each with the endpoints of the slices labelled for its Service."""
    by_service: dict[tuple[str, str], list[Obj]] = {}
    for item in slices:
        owner = (item["metadata"].get("labels") or {}).get(SERVICE_NAME_LABEL)
        if owner:
            by_service.setdefault((item["metadata"]["namespace"], owner), []).append(item)
    ports = [port for service in services for port in service_ports(
        service, by_service.get((service["metadata"]["namespace"], service["metadata"]["name"]), ()), node_name)]
    return sorted(ports, key=lambda p: p.key)
