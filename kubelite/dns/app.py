"""`run_dns`: the cluster DNS fed by informers on Services, EndpointSlices and Namespaces, and reachable
through the kube-system/kube-dns Service (10.43.0.10) by one EndpointSlice per node that runs it."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import Sequence
from typing import Any

from kubelite.client.errors import CONNECTION_ERRORS, ApiError, is_already_exists, is_conflict, is_not_found
from kubelite.client.informer import SharedInformerFactory
from kubelite.client.resources import ENDPOINTSLICES, NAMESPACES, NODES, SERVICES
from kubelite.client.rest import ApiClient
from kubelite.client.store import key_of
from kubelite.dns.records import SERVICE_NAME, ClusterIndex
from kubelite.dns.server import DnsServer, Upstream, read_upstreams

log = logging.getLogger(__name__)

Obj = dict[str, Any]
DNS_NAMESPACE = "kube-system"
DNS_SERVICE = "kube-dns"
DNS_SERVICE_IP = "10.43.0.10"
MANAGED_BY = "endpointslice.kubernetes.io/managed-by"
MANAGER = "kubelite-dns"
SYNC_TIMEOUT = 10.0
"""How long to wait for the first lists before serving anyway (CoreDNS waits 5 s)."""
RECHECK = 60.0
"""How often registration is checked again without any event."""


def _ready(node: Obj) -> bool:
    """Whether a Node's Ready condition is True."""
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (node.get("status") or {}).get("conditions") or [])


def dns_service(cluster_ip: str = DNS_SERVICE_IP) -> Obj:
    """The kube-dns Service as k3s has it (no selector: each DNS server publishes its own endpoint)."""
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": DNS_SERVICE, "namespace": DNS_NAMESPACE, "labels": {
            "k8s-app": "kube-dns", "kubernetes.io/cluster-service": "true", "kubernetes.io/name": "CoreDNS"}},
        "spec": {"clusterIP": cluster_ip, "clusterIPs": [cluster_ip], "ports": [
            {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
            {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53}]},
    }


def dns_endpoint_slice(node_name: str, address: str, port: int) -> Obj:
    """This node's EndpointSlice of kube-dns: the address and port this server listens on."""
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": f"{DNS_SERVICE}-{node_name}", "namespace": DNS_NAMESPACE,
                     "labels": {SERVICE_NAME: DNS_SERVICE, MANAGED_BY: MANAGER}},
        "addressType": "IPv6" if ":" in address else "IPv4",
        "endpoints": [{"addresses": [address], "conditions": {"ready": True, "serving": True, "terminating": False},
                       "nodeName": node_name}],
        "ports": [{"name": "dns", "port": port, "protocol": "UDP"},
                  {"name": "dns-tcp", "port": port, "protocol": "TCP"}],
    }


def _own_upstreams(address: str, advertise: str, port: int, service_ip: str) -> set[Upstream]:
    """Resolvers that would be this server itself: never forward to them."""
    if port != 53:
        return set()
    own = {(ip, 53) for ip in (address, advertise, service_ip) if ip}
    if ipaddress.ip_address(address).is_unspecified:
        own |= {("127.0.0.1", 53), ("::1", 53)}
    return own


class ClusterDns:
    """The index, its informers, the server and the node's registration; start() then stop(). The informers come
    from `informers`, whose owner stops them."""

    def __init__(self, client: ApiClient, address: str = "0.0.0.0", port: int = 53, *, node_name: str = "",
                 zone: str = "cluster.local", advertise_address: str = "", service_ip: str = DNS_SERVICE_IP,
                 upstreams: Sequence[Upstream] | None = None, resolv_conf: str = "/etc/resolv.conf",
                 register: bool = True, informers: SharedInformerFactory):
        self.client = client
        self.address = address
        self.node_name = node_name or socket.gethostname()
        self.advertise_address = advertise_address or ("" if ipaddress.ip_address(address).is_unspecified
                                                       else address)
        self.service_ip = service_ip
        self.register = register
        self.index = ClusterIndex(zone, service_ip)
        if upstreams is None:
            upstreams = read_upstreams(resolv_conf, _own_upstreams(address, self.advertise_address, port, service_ip))
        self.server = DnsServer(self.index, upstreams)
        self._port = port
        self.factory = informers
        self.services = self.factory.informer(SERVICES)
        self.slices = self.factory.informer(ENDPOINTSLICES)
        self.namespaces = self.factory.informer(NAMESPACES)
        self.nodes = self.factory.informer(NODES)
        self._slice_key = f"{DNS_NAMESPACE}/{DNS_SERVICE}-{self.node_name}"
        self._recheck = asyncio.Event()
        self._registration: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        """The port served (the one bound when started with port 0)."""
        return self.server.port or self._port

    async def start(self) -> None:
        """Fill the index from the API (bounded wait), listen, and start registering this server."""
        index = self.index
        self.namespaces.add_handlers(lambda o: index.set_namespace(o["metadata"]["name"]), None,
                                     lambda o: index.remove_namespace(o["metadata"]["name"]))
        self.services.add_handlers(self._service_event, lambda _, o: self._service_event(o),
                                   lambda o: self._service_event(o, deleted=True))
        self.slices.add_handlers(self._slice_event, lambda _, o: self._slice_event(o),
                                 lambda o: self._slice_event(o, deleted=True))
        self.nodes.add_handlers(None, lambda old, new: self._recheck.set() if _ready(old) != _ready(new) else None,
                                lambda _: self._recheck.set())
        self.factory.start()
        try:
            async with asyncio.timeout(SYNC_TIMEOUT):
                await asyncio.gather(*(i.wait_synced() for i in (self.namespaces, self.services, self.slices,
                                                                  self.nodes)))
        except TimeoutError:
            log.warning("cluster DNS: API not listed after %.0f s; serving what is known", SYNC_TIMEOUT)
        await self.server.start(self.address, self._port)
        log.info("cluster DNS serving %s on %s:%d (upstreams: %s)", self.index.zone, self.address, self.port,
                 ", ".join(f"{h}:{p}" for h, p in self.server.upstreams) or "none")
        if self.register:
            if self.advertise_address:
                self._registration = asyncio.create_task(self._register(), name="dns-registration")
            else:
                log.warning("cluster DNS listens on %s: give an advertise address to register it", self.address)

    async def stop(self) -> None:
        """Stop serving; remove this node's EndpointSlice (best effort)."""
        if self._registration is not None:
            self._registration.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._registration
            name = self._slice_key.split("/", 1)[1]
            try:
                async with asyncio.timeout(5):
                    await self.client.delete(ENDPOINTSLICES, name, DNS_NAMESPACE)
            except (ApiError, *CONNECTION_ERRORS) as exc:
                if not is_not_found(exc):
                    log.warning("cluster DNS: could not remove EndpointSlice %s: %s", self._slice_key, exc)
        await self.server.close()

    def _service_event(self, obj: Obj, deleted: bool = False) -> None:
        if deleted:
            self.index.remove_service(obj)
        else:
            self.index.set_service(obj)
        if key_of(obj) == f"{DNS_NAMESPACE}/{DNS_SERVICE}":
            self._recheck.set()

    def _slice_event(self, obj: Obj, deleted: bool = False) -> None:
        if deleted:
            self.index.remove_slice(obj)
        else:
            self.index.set_slice(obj)
        if key_of(obj) == self._slice_key:
            self._recheck.set()

    async def _register(self) -> None:
        """Keep the kube-dns Service and this node's slice in place: on their events, and every minute."""
        while True:
            self._recheck.clear()
            try:
                await self._ensure_service()
                await self._ensure_slice()
                await self._mark_peers()
            except (ApiError, *CONNECTION_ERRORS) as exc:
                log.warning("cluster DNS: registration failed: %s; retrying", exc)
                await asyncio.sleep(1)
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RECHECK):
                    await self._recheck.wait()

    async def _mark_peers(self) -> None:
        """A DNS server whose node is not Ready (its agent died, so it cannot say so itself) is marked not ready in
        its slice, so pods stop asking it; its own server marks it ready again when it comes back."""
        for peer in self.slices.store.list():
            meta = peer["metadata"]
            if meta.get("namespace") != DNS_NAMESPACE or (meta.get("labels") or {}).get(MANAGED_BY) != MANAGER or \
                    key_of(peer) == self._slice_key:
                continue
            endpoints = peer.get("endpoints") or []
            node = self.nodes.store.get(next((e.get("nodeName", "") for e in endpoints), ""))
            ready = node is not None and _ready(node)
            if ready or all(not (e.get("conditions") or {}).get("ready", True) for e in endpoints):
                continue
            marked = [{**e, "conditions": {**(e.get("conditions") or {}), "ready": False, "serving": False}}
                      for e in endpoints]
            try:
                await self.client.update(ENDPOINTSLICES, {**peer, "endpoints": marked})
                log.info("cluster DNS: %s is on a node that is not Ready; marked not ready", key_of(peer))
            except ApiError as exc:
                if not (is_conflict(exc) or is_not_found(exc)):
                    raise

    async def _ensure_service(self) -> None:
        """Create kube-dns unless it exists (an existing one is left as its owner made it)."""
        if self.services.store.get(f"{DNS_NAMESPACE}/{DNS_SERVICE}") is not None:
            return
        try:
            await self.client.create(SERVICES, dns_service(self.service_ip))
            log.info("cluster DNS: created Service %s/%s (%s)", DNS_NAMESPACE, DNS_SERVICE, self.service_ip)
        except ApiError as exc:
            if exc.code == 422:
                log.error("cluster DNS: cannot create Service %s/%s: %s", DNS_NAMESPACE, DNS_SERVICE, exc.message)
            elif not is_already_exists(exc):
                raise

    async def _ensure_slice(self) -> None:
        """Create or correct this node's EndpointSlice of kube-dns."""
        desired = dns_endpoint_slice(self.node_name, self.advertise_address, self.port)
        current = self.slices.store.get(self._slice_key)
        if current is None:
            try:
                await self.client.create(ENDPOINTSLICES, desired)
                return
            except ApiError as exc:
                if not is_already_exists(exc):
                    raise
            current = await self.client.get(ENDPOINTSLICES, desired["metadata"]["name"], DNS_NAMESPACE)
        if all(current.get(k) == desired[k] for k in ("addressType", "endpoints", "ports")) and \
                desired["metadata"]["labels"].items() <= (current["metadata"].get("labels") or {}).items():
            return
        metadata = {**current["metadata"], "labels": {**(current["metadata"].get("labels") or {}),
                                                      **desired["metadata"]["labels"]}}
        try:
            await self.client.update(ENDPOINTSLICES, {**desired, "metadata": metadata})
        except ApiError as exc:
            if not is_conflict(exc):
                raise
            self._recheck.set()


async def run_dns(client: ApiClient, address: str = "0.0.0.0", port: int = 53, *, node_name: str = "",
                  zone: str = "cluster.local", advertise_address: str = "", service_ip: str = DNS_SERVICE_IP,
                  upstreams: Sequence[Upstream] | None = None, resolv_conf: str = "/etc/resolv.conf",
                  register: bool = True, informers: SharedInformerFactory) -> None:
    """Serve the cluster DNS on address:port until cancelled; unregister this node's endpoint on the way out."""
    dns = ClusterDns(client, address, port, node_name=node_name, zone=zone, advertise_address=advertise_address,
                     service_ip=service_ip, upstreams=upstreams, resolv_conf=resolv_conf, register=register,
                     informers=informers)
    try:
        await dns.start()
        await asyncio.Event().wait()
    finally:
        await dns.stop()
