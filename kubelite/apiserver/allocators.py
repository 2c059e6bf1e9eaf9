"""Service ClusterIP and NodePort allocation, without duplicates, released when a Service goes."""

from __future__ import annotations

import ipaddress
import random

from kubelite.api.resource import ResourceType
from kubelite.api.strategy import Cause, Obj
from kubelite.apiserver import errors

NODE_PORTS = range(30000, 32768)


class ServiceAllocator:
    """Hands out addresses from the service CIDR and ports from 30000-32767 (one apiserver owns them)."""

    def __init__(self, cidr: str = "10.43.0.0/16"):
        self.network = ipaddress.ip_network(cidr)
        self.ips: set[str] = set()
        self.ports: set[int] = set()

    def load(self, services: list[Obj]) -> None:
        """Mark what existing Services hold (at start-up, from the store)."""
        for svc in services:
            ips, ports = self._held(svc)
            self.ips |= ips
            self.ports |= ports

    @staticmethod
    def _held(svc: Obj) -> tuple[set[str], set[int]]:
        spec = svc.get("spec") or {}
        ips = {ip for ip in (spec.get("clusterIPs") or [spec.get("clusterIP")]) if ip and ip != "None"}
        ports = {p["nodePort"] for p in spec.get("ports") or [] if p.get("nodePort")}
        return ips, ports

    @property
    def kubernetes_ip(self) -> str:
        return str(self.network.network_address + 1)

    @property
    def static_band(self) -> int:
        """How many low addresses dynamic allocation leaves for fixed ones such as the DNS Service's 10.43.0.10
        (KEP-3070: min(max(16, size/16), 256)), unless the rest of the range is full."""
        return min(max(16, self.network.num_addresses // 16), 256)

    def _new_ip(self) -> str:
        size = self.network.num_addresses
        low = min(self.static_band, size - 3)
        for _ in range(64):
            candidate = str(self.network.network_address + random.randrange(max(2, low), size - 1))
            if candidate not in self.ips:
                return candidate
        for offset in range(2, size - 1):
            candidate = str(self.network.network_address + offset)
            if candidate not in self.ips:
                return candidate
        raise errors.StatusError(500, "InternalError", "Internal error occurred: failed to allocate a serviceIP: "
                                 "range is full")

    def _new_port(self) -> int:
        free = [p for p in NODE_PORTS if p not in self.ports]
        if not free:
            raise errors.StatusError(500, "InternalError", "Internal error occurred: failed to allocate a nodePort: "
                                     "range is full")
        return random.choice(free)

    async def admit(self, rt: ResourceType, svc: Obj, old: Obj | None) -> None:
        """Fill and reserve the clusterIP and nodePorts a Service needs (admission hook)."""
        if rt.group or rt.plural != "services":
            return
        spec = svc.setdefault("spec", {})
        kind = spec.get("type", "ClusterIP")
        old_ips, old_ports = self._held(old) if old else (set(), set())
        causes: list[Cause] = []
        if kind == "ExternalName":
            spec.pop("clusterIP", None)
            spec.pop("clusterIPs", None)
        else:
            ip = spec.get("clusterIP")
            if not ip:
                ip = self.kubernetes_ip if svc["metadata"].get("name") == "kubernetes" and \
                    svc["metadata"].get("namespace") == "default" and self.kubernetes_ip not in self.ips \
                    else self._new_ip()
            elif ip != "None":
                try:
                    inside = ipaddress.ip_address(ip) in self.network
                except ValueError:
                    inside = False
                if not inside:
                    causes.append(Cause("spec.clusterIPs", "FieldValueInvalid",
                                        f'spec.clusterIPs: Invalid value: ["{ip}"]: failed to allocate IP {ip}: '
                                        f'the provided IP ({ip}) is not in the valid range. The range of valid '
                                        f'IPs is {self.network}'))
                elif ip in self.ips and ip not in old_ips:
                    causes.append(Cause("spec.clusterIPs", "FieldValueInvalid",
                                        f'spec.clusterIPs: Invalid value: ["{ip}"]: failed to allocate IP {ip}: '
                                        f'provided IP is already allocated'))
            spec["clusterIP"] = ip
            spec["clusterIPs"] = [ip]
        wants_ports = kind in ("NodePort", "LoadBalancer")
        taken: set[int] = set()
        for index, port in enumerate(spec.get("ports") or []):
            if not wants_ports:
                port.pop("nodePort", None)
                continue
            node_port = port.get("nodePort")
            if not node_port:
                node_port = port["nodePort"] = self._new_port_excluding(taken)
            elif (node_port in self.ports and node_port not in old_ports) or node_port in taken:
                causes.append(Cause(f"spec.ports[{index}].nodePort", "FieldValueInvalid",
                                    f"spec.ports[{index}].nodePort: Invalid value: {node_port}: provided port is "
                                    f"already allocated"))
            taken.add(node_port)
        if causes:
            raise errors.invalid("Service", "", svc["metadata"].get("name", ""), causes)
        new_ips, new_ports = self._held(svc)
        self.ips |= new_ips
        self.ports |= new_ports
        if old:
            self.ips -= old_ips - new_ips
            self.ports -= old_ports - new_ports

    def _new_port_excluding(self, taken: set[int]) -> int:
        port = self._new_port()
        while port in taken:
            port = self._new_port()
        return port

    async def release(self, rt: ResourceType, svc: Obj) -> None:
        """Free what a deleted Service held."""
        if rt.group or rt.plural != "services":
            return
        ips, ports = self._held(svc)
        self.ips -= ips
        self.ports -= ports
