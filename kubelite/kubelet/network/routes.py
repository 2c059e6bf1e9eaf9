"""Routes from this node to the other nodes' pod CIDRs, kept in line with the Nodes informer.

- host-gw (nodes share a link): `<podCIDR> via <node IP>` per remote node.
- vxlan (flannel's layout): a VXLAN device holding this node's podCIDR network address /32, and per remote node a
  route `<podCIDR> via <its podCIDR .0> dev kubelite.1 onlink`, a permanent neighbour entry .0 → its VTEP MAC and an
  FDB entry VTEP MAC → its node IP. Each node publishes its VTEP MAC as a Node annotation.

Our routes carry their own rtnetlink protocol number, so routes of nodes that went away are found without state.
Netlink work is blocking rtnetlink (rtnl.py) and runs in worker threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from typing import Any

from kubelite.client.errors import CONNECTION_ERRORS, ApiError
from kubelite.client.informer import SharedInformerFactory
from kubelite.client.resources import NODES
from kubelite.client.rest import ApiClient
from kubelite.kubelet.network import bridge as links
from kubelite.kubelet.network import rtnl
from kubelite.kubelet.network.netlink import NetlinkError
from kubelite.kubelet.network.rtnl import Neighbour, Rtnl

log = logging.getLogger(__name__)
Obj = dict[str, Any]

HOST_GW = "host-gw"
VXLAN = "vxlan"
BACKENDS = (HOST_GW, VXLAN)
DEFAULT_BACKEND = HOST_GW
VXLAN_DEVICE = "kubelite.1"
VXLAN_VNI = 1
VXLAN_PORT = 8472
VXLAN_OVERHEAD = 50
"""Outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14): the VXLAN device's MTU is the uplink's less this."""
VTEP_MAC_ANNOTATION = "kubelite.io/vtep-mac"
ROUTE_PROTOCOL = 44
"""rtnetlink protocol number of the routes we own (unassigned in iproute2's rt_protos)."""
RTNH_F_ONLINK = 4
RESYNC = 30.0
"""Routes are re-asserted at least this often, even without Node changes."""
RETRY = 5.0


@dataclass(frozen=True, slots=True)
class Peer:
    """Another node as the pod network sees it: its pod CIDR, its InternalIP and (vxlan) its VTEP MAC."""

    name: str
    pod_cidr: IPv4Network
    node_ip: IPv4Address
    vtep_mac: str = ""

    @property
    def vtep_gateway(self) -> IPv4Address:
        """The remote VTEP's address in the overlay: the network address of its pod CIDR."""
        return self.pod_cidr.network_address


@dataclass(frozen=True, slots=True)
class Route:
    """One route to a peer's pods: via its node IP (host-gw), or onlink via its VTEP address on the VXLAN device."""

    dst: IPv4Network
    gateway: IPv4Address
    onlink: bool = False


def vtep_mac(node_ip: str) -> str:
    """The VTEP MAC of a node, derived from its IP (locally administered, unicast) so it survives re-creation."""
    return "0e:6b:" + ":".join(f"{octet:02x}" for octet in IPv4Address(node_ip).packed)


def vxlan_mtu(uplink_mtu: int) -> int:
    """The MTU that leaves room for the VXLAN encapsulation on the uplink."""
    return uplink_mtu - VXLAN_OVERHEAD


def node_pod_cidr(node: Obj) -> IPv4Network | None:
    """The node's IPv4 podCIDR (spec.podCIDR, else the first IPv4 one of spec.podCIDRs), None without one."""
    spec = node.get("spec") or {}
    for text in [spec.get("podCIDR") or "", *(spec.get("podCIDRs") or [])]:
        with contextlib.suppress(ValueError):
            network = ipaddress.ip_network(text, strict=False)
            if isinstance(network, IPv4Network):
                return network
    return None


def node_internal_ip(node: Obj) -> IPv4Address | None:
    """The node's first IPv4 InternalIP, None without one."""
    for address in (node.get("status") or {}).get("addresses") or []:
        if address.get("type") == "InternalIP":
            with contextlib.suppress(ValueError):
                ip = ipaddress.ip_address(address.get("address") or "")
                if isinstance(ip, IPv4Address):
                    return ip
    return None


def node_peer(node: Obj) -> Peer | None:
    """The node as a Peer, None without an IPv4 podCIDR and InternalIP."""
    cidr, ip = node_pod_cidr(node), node_internal_ip(node)
    if cidr is None or ip is None:
        return None
    mac = ((node.get("metadata") or {}).get("annotations") or {}).get(VTEP_MAC_ANNOTATION, "")
    return Peer(node["metadata"]["name"], cidr, ip, str(mac).lower())


def remote_peers(nodes: Iterable[Obj], own_name: str, own_ip: str, backend: str) -> list[Peer]:
    """The peers to route to, by name: other nodes with a podCIDR and InternalIP (for vxlan also a VTEP MAC), less
    any on our own IP or whose podCIDR overlaps ours or an earlier peer's."""
    candidates = []
    own_cidr = None
    for node in nodes:
        peer = node_peer(node)
        if node["metadata"]["name"] == own_name:
            own_cidr = peer.pod_cidr if peer else node_pod_cidr(node)
        elif peer is not None and str(peer.node_ip) != own_ip and (backend != VXLAN or peer.vtep_mac):
            candidates.append(peer)
    taken = [own_cidr] if own_cidr is not None else []
    chosen = []
    for peer in sorted(candidates, key=lambda p: p.name):
        if any(peer.pod_cidr.overlaps(cidr) for cidr in taken):
            log.warning("not routing to node %s: its podCIDR %s overlaps another node's", peer.name, peer.pod_cidr)
            continue
        taken.append(peer.pod_cidr)
        chosen.append(peer)
    return chosen


def routes_for(peers: Iterable[Peer], backend: str) -> dict[IPv4Network, Route]:
    """The routes the peers call for, by destination."""
    if backend == VXLAN:
        return {p.pod_cidr: Route(p.pod_cidr, p.vtep_gateway, onlink=True) for p in peers}
    return {p.pod_cidr: Route(p.pod_cidr, p.node_ip) for p in peers}


def uplink(ipr: Rtnl, node_ip: str) -> tuple[int | None, int]:
    """(ifindex, MTU) of the interface holding the node IP (not loopback), else of the default route's; (None, 1500)
    without either."""
    ip = IPv4Address(node_ip)
    if not ip.is_loopback:
        for index, address in ipr.addresses():
            link = ipr.link(index=index) if address.ip == ip else None
            if link is not None:
                return index, link.mtu or links.DEFAULT_MTU
    return None, links.uplink_mtu(ipr)


def _pod_mtu(backend: str, node_ip: str) -> int:
    with Rtnl() as ipr:
        mtu = uplink(ipr, node_ip)[1]
    return vxlan_mtu(mtu) if backend == VXLAN else mtu


async def pod_mtu(backend: str, node_ip: str) -> int:
    """The pods' MTU under a backend: the uplink's, less the encapsulation with vxlan."""
    return await asyncio.to_thread(_pod_mtu, backend, node_ip)


def ensure_vtep(ipr: Rtnl, node_ip: str, own_cidr: IPv4Network | None) -> tuple[int, str]:
    """Create (or re-create, when its settings differ) the VXLAN device, with its MTU, the podCIDR network address
    as its only address, up; returns (ifindex, MAC)."""
    mac = vtep_mac(node_ip)
    parent, mtu = uplink(ipr, node_ip)
    link = ipr.link(VXLAN_DEVICE)
    if link is not None:
        wanted = ("vxlan", (VXLAN_VNI, node_ip, VXLAN_PORT, 0), mac)
        have = (link.kind, link.vxlan, link.mac)
        if have != wanted:
            log.info("re-creating %s: it has %s, wanted %s", VXLAN_DEVICE, have, wanted)
            ipr.delete_link(link.index)
            link = None
    if link is None:
        ipr.add_vxlan(VXLAN_DEVICE, VXLAN_VNI, node_ip, VXLAN_PORT, mac, vxlan_mtu(mtu), parent)
        link = ipr.link(VXLAN_DEVICE)
        if link is None:
            raise RuntimeError(f"{VXLAN_DEVICE} vanished right after creation")
        log.info("created %s (VNI %d, local %s, MAC %s)", VXLAN_DEVICE, VXLAN_VNI, node_ip, mac)
    index = link.index
    ipr.set_up(index, vxlan_mtu(mtu))
    wanted_address = IPv4Interface(f"{own_cidr.network_address}/32") if own_cidr is not None else None
    have_addresses = [address for _, address in ipr.addresses(index)]
    for address in have_addresses:
        if address != wanted_address:
            ipr.delete_address(index, address)
    if wanted_address is not None and wanted_address not in have_addresses:
        ipr.add_address(index, wanted_address)
    return index, mac


def remove_vtep(ipr: Rtnl) -> None:
    """Delete the VXLAN device (and with it its neighbours and FDB entries) if present."""
    link = ipr.link(VXLAN_DEVICE)
    if link is not None:
        with contextlib.suppress(NetlinkError):
            ipr.delete_link(link.index)


def _installed_routes(ipr: Rtnl) -> dict[IPv4Network, rtnl.Route]:
    return {r.dst: r for r in ipr.routes()
            if r.protocol == ROUTE_PROTOCOL and r.table == rtnl.MAIN_TABLE and r.gateway is not None}


def sync_routes(ipr: Rtnl, wanted: dict[IPv4Network, Route], vtep_index: int | None) -> list[str]:
    """Make our routes exactly `wanted` (onlink ones through the VXLAN device); returns what could not be set."""
    problems = []
    installed = _installed_routes(ipr)
    for dst in installed.keys() - wanted.keys():
        with contextlib.suppress(NetlinkError):
            ipr.delete_route(installed[dst])
        log.info("removed the route to %s", dst)
    for dst, route in wanted.items():
        have = installed.get(dst)
        if have is not None and Route(dst, have.gateway, bool(have.flags & RTNH_F_ONLINK)) == route:
            continue
        oif, flags = (vtep_index or 0, RTNH_F_ONLINK) if route.onlink else (0, 0)
        try:
            ipr.replace_route(rtnl.Route(dst, route.gateway, oif, flags, ROUTE_PROTOCOL, rtnl.MAIN_TABLE))
        except NetlinkError as exc:
            problems.append(f"route {dst} via {route.gateway}: {exc}")
            continue
        log.info("route to %s via %s%s", dst, route.gateway, f" dev {VXLAN_DEVICE} onlink" if route.onlink else "")
    return problems


def sync_vxlan_peers(ipr: Rtnl, index: int, peers: Iterable[Peer]) -> None:
    """Make the VXLAN device's neighbour (overlay .0 → VTEP MAC) and FDB (VTEP MAC → node IP) entries exactly
    the peers'."""
    peers = list(peers)
    neighbours = {str(p.vtep_gateway): p.vtep_mac for p in peers}
    forwarding = {p.vtep_mac: str(p.node_ip) for p in peers}
    for entry in ipr.neighbours(index):
        if neighbours.get(entry.dst) != entry.mac:
            with contextlib.suppress(NetlinkError):
                ipr.delete_neighbour(entry)
    for entry in ipr.fdb(index):
        if entry.dst and forwarding.get(entry.mac) != entry.dst:
            with contextlib.suppress(NetlinkError):
                ipr.delete_fdb(entry)
    for dst, mac in neighbours.items():
        ipr.replace_neighbour(Neighbour(index, dst, mac))
    for mac, dst in forwarding.items():
        ipr.replace_fdb(Neighbour(index, dst, mac))


def program(backend: str, node_ip: str, own_cidr: IPv4Network | None, peers: list[Peer]) -> tuple[str, list[str]]:
    """Bring this network namespace's routes (and, for vxlan, its VTEP) in line with the peers; returns (our VTEP
    MAC or "", problems)."""
    with Rtnl() as ipr:
        if backend != VXLAN:
            remove_vtep(ipr)
            return "", sync_routes(ipr, routes_for(peers, backend), None)
        index, mac = ensure_vtep(ipr, node_ip, own_cidr)
        sync_vxlan_peers(ipr, index, peers)
        return mac, sync_routes(ipr, routes_for(peers, backend), index)


class RouteManager:
    """Keeps this node's routes to the other nodes' pods in line with the Nodes informer, until cancelled; tells
    on_pod_cidr this node's podCIDR as soon as the informer sees it. Its Nodes informer comes from `informers`,
    whose owner stops it."""

    def __init__(self, client: ApiClient, node_name: str, node_ip: str, backend: str = DEFAULT_BACKEND,
                 resync: float = RESYNC, on_pod_cidr: Callable[[str], None] | None = None, *,
                 informers: SharedInformerFactory):
        if backend not in BACKENDS:
            raise ValueError(f"unknown pod network backend {backend!r} (one of {', '.join(BACKENDS)})")
        self.client = client
        self.node_name = node_name
        self.node_ip = node_ip
        self.backend = backend
        self.resync = resync
        self.on_pod_cidr = on_pod_cidr
        self.pod_cidr = ""
        self.informers = informers
        self.nodes = informers.informer(NODES)
        self._wake = asyncio.Event()
        self._problems: list[str] = []

    def _changed(self, old: Obj | None, new: Obj | None) -> None:
        if new is not None and new["metadata"]["name"] == self.node_name:
            cidr = (new.get("spec") or {}).get("podCIDR") or ""
            if cidr and cidr != self.pod_cidr:
                self.pod_cidr = cidr
                if self.on_pod_cidr is not None:
                    self.on_pod_cidr(cidr)
        if old is None or new is None or node_peer(old) != node_peer(new):
            self._wake.set()

    async def run(self) -> None:
        """Watch the Nodes and sync on every relevant change (and every `resync` seconds), retrying failures."""
        self.nodes.add_handlers(on_add=lambda node: self._changed(None, node),
                                on_update=self._changed, on_delete=lambda node: self._changed(node, None))
        self.informers.start()
        await self.nodes.wait_synced()
        while True:
            self._wake.clear()
            wait = self.resync
            try:
                await self.sync()
            except Exception as exc:
                expected = isinstance(exc, (ApiError, NetlinkError, *CONNECTION_ERRORS))
                log.warning("syncing the %s routes of node %s failed: %s", self.backend, self.node_name, exc,
                            exc_info=not expected)
                wait = RETRY
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()

    async def sync(self) -> None:
        """One pass: program routes (and VTEP) for the cached Nodes, then publish our VTEP MAC if it changed."""
        nodes = self.nodes.store.list()
        own = next((n for n in nodes if n["metadata"]["name"] == self.node_name), None)
        own_cidr = node_pod_cidr(own) if own is not None else None
        peers = remote_peers(nodes, self.node_name, self.node_ip, self.backend)
        mac, problems = await asyncio.to_thread(program, self.backend, self.node_ip, own_cidr, peers)
        if problems != self._problems:
            for problem in problems:
                log.warning("pod network: cannot set %s", problem)
            self._problems = problems
        published = ((own or {}).get("metadata", {}).get("annotations") or {}).get(VTEP_MAC_ANNOTATION)
        if own is not None and (published or None) != (mac or None):
            await self.client.patch(NODES, self.node_name,
                                    {"metadata": {"annotations": {VTEP_MAC_ANNOTATION: mac or None}}})
            log.info("node %s: %s=%s", self.node_name, VTEP_MAC_ANNOTATION, mac or "(removed)")

