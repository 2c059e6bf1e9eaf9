"""rtnetlink requests the pod network and the node routes make: links (bridge, veth, vxlan), IPv4 addresses,
routes, neighbours and bridge FDB entries (rtnetlink(7)). Blocking; callers run it in worker threads."""

from __future__ import annotations

import errno
import socket
import struct
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

from kubelite.kubelet.network import netlink as nl

RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
RTM_NEWNEIGH, RTM_DELNEIGH, RTM_GETNEIGH = 28, 29, 30
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_MASTER, IFLA_LINKINFO, IFLA_NET_NS_FD = 1, 3, 4, 10, 18, 28
IFLA_INFO_KIND, IFLA_INFO_DATA = 1, 2
VETH_INFO_PEER = 1
IFLA_VXLAN_ID, IFLA_VXLAN_LINK, IFLA_VXLAN_LOCAL, IFLA_VXLAN_LEARNING, IFLA_VXLAN_PORT = 1, 3, 4, 7, 15
IFA_ADDRESS, IFA_LOCAL = 1, 2
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_TABLE = 1, 4, 5, 15
NDA_DST, NDA_LLADDR = 1, 2
IFF_UP = 0x1
RTN_UNICAST = 1
RT_SCOPE_UNIVERSE = 0
NUD_NOARP, NUD_PERMANENT = 0x40, 0x80
NTF_SELF = 0x2
MAIN_TABLE = 254
_IFINFO = struct.Struct("=BxHiII")
_IFADDR = struct.Struct("=BBBBI")
_RTMSG = struct.Struct("=BBBBBBBBI")
_NDMSG = struct.Struct("=BxxxiHBB")
_CREATE = nl.NLM_F_CREATE | nl.NLM_F_EXCL
_REPLACE = nl.NLM_F_CREATE | nl.NLM_F_REPLACE


@dataclass(frozen=True, slots=True)
class Link:
    """An interface: what the pod network and the VXLAN backend look at."""

    index: int
    name: str
    master: int
    mtu: int
    mac: str
    kind: str
    vxlan: tuple[int, str, int, int] | None
    """(VNI, local address, UDP port, learning) of a vxlan device."""


@dataclass(frozen=True, slots=True)
class Route:
    """An IPv4 route: destination, gateway, output interface, flags (RTNH_F_ONLINK), protocol and table."""

    dst: IPv4Network
    gateway: IPv4Address | None
    oif: int
    flags: int
    protocol: int
    table: int


@dataclass(frozen=True, slots=True)
class Neighbour:
    """A neighbour or FDB entry: interface, destination IP ('' if none) and link-layer address."""

    index: int
    dst: str
    mac: str


def _mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def _mac_text(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def _ifinfo(index: int = 0, flags: int = 0, change: int = 0) -> bytes:
    return _IFINFO.pack(socket.AF_UNSPEC, 0, index, flags, change)


def _link(message: nl.Message) -> Link:
    _, _, index, _, _ = _IFINFO.unpack_from(message.payload)
    attrs = nl.parse_attrs(message.payload, _IFINFO.size)
    info = nl.parse_attrs(attrs.get(IFLA_LINKINFO, b""))
    kind = nl.read_string(info.get(IFLA_INFO_KIND, b""))
    vxlan = None
    if kind == "vxlan":
        data = nl.parse_attrs(info.get(IFLA_INFO_DATA, b""))
        local = data.get(IFLA_VXLAN_LOCAL, b"")
        vxlan = (nl.read_u32(data.get(IFLA_VXLAN_ID, bytes(4))), str(IPv4Address(local)) if len(local) == 4 else "",
                 nl.read_be16(data.get(IFLA_VXLAN_PORT, bytes(2))), data.get(IFLA_VXLAN_LEARNING, b"\0")[0])
    return Link(index, nl.read_string(attrs.get(IFLA_IFNAME, b"")), nl.read_u32(attrs.get(IFLA_MASTER, bytes(4))),
                nl.read_u32(attrs.get(IFLA_MTU, bytes(4))), _mac_text(attrs.get(IFLA_ADDRESS, b"")), kind, vxlan)


class Rtnl(nl.NetlinkSocket):
    """An rtnetlink socket in the calling thread's network namespace."""

    def __init__(self) -> None:
        super().__init__(nl.NETLINK_ROUTE)

    # ---- links

    def link(self, name: str = "", index: int = 0) -> Link | None:
        """The link of that name or index, None if there is none."""
        try:
            found = self.request(RTM_GETLINK, _ifinfo(index) + (nl.string(IFLA_IFNAME, name) if name else b""))
        except nl.NetlinkError as exc:
            if exc.code == errno.ENODEV:
                return None
            raise
        return _link(found[0]) if found else None

    def links(self) -> list[Link]:
        """Every link of this namespace."""
        return [_link(m) for m in self.dump(RTM_GETLINK, _ifinfo()) if m.kind == RTM_NEWLINK]

    def add_bridge(self, name: str, mtu: int) -> None:
        self.request(RTM_NEWLINK, _ifinfo() + nl.string(IFLA_IFNAME, name) + nl.u32(IFLA_MTU, mtu)
                     + nl.nested(IFLA_LINKINFO, nl.string(IFLA_INFO_KIND, "bridge")), _CREATE)

    def add_veth(self, name: str, mtu: int, master: int, peer: str, peer_netns_fd: int, peer_mac: str) -> None:
        """A veth pair: `name` up on bridge `master` here, `peer` (with its MAC) in the namespace of the fd."""
        peer_info = (_ifinfo() + nl.string(IFLA_IFNAME, peer) + nl.u32(IFLA_NET_NS_FD, peer_netns_fd)
                     + nl.u32(IFLA_MTU, mtu) + nl.attr(IFLA_ADDRESS, _mac_bytes(peer_mac)))
        self.request(RTM_NEWLINK, _ifinfo(flags=IFF_UP, change=IFF_UP) + nl.string(IFLA_IFNAME, name)
                     + nl.u32(IFLA_MTU, mtu) + nl.u32(IFLA_MASTER, master)
                     + nl.nested(IFLA_LINKINFO, nl.string(IFLA_INFO_KIND, "veth"),
                                 nl.nested(IFLA_INFO_DATA, nl.attr(VETH_INFO_PEER, peer_info))), _CREATE)

    def add_vxlan(self, name: str, vni: int, local: str, port: int, mac: str, mtu: int, parent: int | None) -> None:
        """A vxlan device without learning (peers are programmed as neighbour and FDB entries)."""
        data = [nl.u32(IFLA_VXLAN_ID, vni), nl.attr(IFLA_VXLAN_LOCAL, IPv4Address(local).packed),
                nl.be16(IFLA_VXLAN_PORT, port), nl.u8(IFLA_VXLAN_LEARNING, 0)]
        if parent is not None:
            data.append(nl.u32(IFLA_VXLAN_LINK, parent))
        self.request(RTM_NEWLINK, _ifinfo() + nl.string(IFLA_IFNAME, name) + nl.u32(IFLA_MTU, mtu)
                     + nl.attr(IFLA_ADDRESS, _mac_bytes(mac))
                     + nl.nested(IFLA_LINKINFO, nl.string(IFLA_INFO_KIND, "vxlan"), nl.nested(IFLA_INFO_DATA, *data)),
                     _CREATE)

    def set_up(self, index: int, mtu: int = 0) -> None:
        """Bring a link up (and set its MTU, if given)."""
        self.request(RTM_NEWLINK, _ifinfo(index, IFF_UP, IFF_UP) + (nl.u32(IFLA_MTU, mtu) if mtu else b""))

    def set_mac(self, index: int, mac: str) -> None:
        """Set a link's MAC address; the kernel then counts it as set by the user (a bridge keeps it for good)."""
        self.request(RTM_NEWLINK, _ifinfo(index) + nl.attr(IFLA_ADDRESS, _mac_bytes(mac)))

    def delete_link(self, index: int) -> None:
        self.request(RTM_DELLINK, _ifinfo(index))

    # ---- addresses

    def addresses(self, index: int = 0) -> list[tuple[int, IPv4Interface]]:
        """(ifindex, address) of the IPv4 addresses, of one link if index is given."""
        found = []
        for message in self.dump(RTM_GETADDR, _IFADDR.pack(socket.AF_INET, 0, 0, 0, 0)):
            _, prefix, _, _, link = _IFADDR.unpack_from(message.payload)
            attrs = nl.parse_attrs(message.payload, _IFADDR.size)
            raw = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)
            if message.kind == RTM_NEWADDR and raw and (not index or link == index):
                found.append((link, IPv4Interface((IPv4Address(raw), prefix))))
        return found

    def _address(self, kind: int, index: int, address: IPv4Interface, flags: int = 0) -> None:
        packed = address.ip.packed
        self.request(kind, _IFADDR.pack(socket.AF_INET, address.network.prefixlen, 0, RT_SCOPE_UNIVERSE, index)
                     + nl.attr(IFA_LOCAL, packed) + nl.attr(IFA_ADDRESS, packed), flags)

    def add_address(self, index: int, address: IPv4Interface) -> None:
        self._address(RTM_NEWADDR, index, address, _CREATE)

    def delete_address(self, index: int, address: IPv4Interface) -> None:
        self._address(RTM_DELADDR, index, address)

    # ---- routes

    def routes(self) -> list[Route]:
        """Every IPv4 route of every table."""
        found = []
        for message in self.dump(RTM_GETROUTE, _RTMSG.pack(socket.AF_INET, 0, 0, 0, 0, 0, 0, 0, 0)):
            if message.kind != RTM_NEWROUTE:
                continue
            _, dst_len, _, _, table, protocol, _, _, flags = _RTMSG.unpack_from(message.payload)
            attrs = nl.parse_attrs(message.payload, _RTMSG.size)
            dst = IPv4Network((IPv4Address(attrs.get(RTA_DST, bytes(4))), dst_len))
            gateway = IPv4Address(attrs[RTA_GATEWAY]) if RTA_GATEWAY in attrs else None
            table = nl.read_u32(attrs[RTA_TABLE]) if RTA_TABLE in attrs else table
            found.append(Route(dst, gateway, nl.read_u32(attrs.get(RTA_OIF, bytes(4))), flags, protocol, table))
        return found

    def _route(self, kind: int, route: Route, flags: int) -> None:
        body = _RTMSG.pack(socket.AF_INET, route.dst.prefixlen, 0, 0, route.table if route.table < 256 else 0,
                           route.protocol,
                           RT_SCOPE_UNIVERSE, RTN_UNICAST, route.flags) + nl.u32(RTA_TABLE, route.table)
        if route.dst.prefixlen:
            body += nl.attr(RTA_DST, route.dst.network_address.packed)
        if route.gateway is not None:
            body += nl.attr(RTA_GATEWAY, route.gateway.packed)
        if route.oif:
            body += nl.u32(RTA_OIF, route.oif)
        self.request(kind, body, flags)

    def add_route(self, route: Route) -> None:
        self._route(RTM_NEWROUTE, route, _CREATE)

    def replace_route(self, route: Route) -> None:
        self._route(RTM_NEWROUTE, route, _REPLACE)

    def delete_route(self, route: Route) -> None:
        self._route(RTM_DELROUTE, route, 0)

    # ---- neighbours and bridge FDB entries

    def _neighbours(self, family: int, index: int) -> list[Neighbour]:
        found = []
        for message in self.dump(RTM_GETNEIGH, _NDMSG.pack(family, 0, 0, 0, 0)):
            _, link, _, _, _ = _NDMSG.unpack_from(message.payload)
            if message.kind != RTM_NEWNEIGH or link != index:
                continue
            attrs = nl.parse_attrs(message.payload, _NDMSG.size)
            dst = attrs.get(NDA_DST, b"")
            found.append(Neighbour(link, str(IPv4Address(dst)) if len(dst) == 4 else "",
                                   _mac_text(attrs.get(NDA_LLADDR, b""))))
        return found

    def _neighbour(self, kind: int, family: int, entry: Neighbour, state: int, ntf: int, flags: int) -> None:
        body = _NDMSG.pack(family, entry.index, state, ntf, 0) + nl.attr(NDA_LLADDR, _mac_bytes(entry.mac))
        if entry.dst:
            body += nl.attr(NDA_DST, IPv4Address(entry.dst).packed)
        self.request(kind, body, flags)

    def neighbours(self, index: int) -> list[Neighbour]:
        """The IPv4 neighbour entries of a link."""
        return self._neighbours(socket.AF_INET, index)

    def replace_neighbour(self, entry: Neighbour) -> None:
        """A permanent neighbour entry."""
        self._neighbour(RTM_NEWNEIGH, socket.AF_INET, entry, NUD_PERMANENT, 0, _REPLACE)

    def delete_neighbour(self, entry: Neighbour) -> None:
        self._neighbour(RTM_DELNEIGH, socket.AF_INET, entry, 0, 0, 0)

    def fdb(self, index: int) -> list[Neighbour]:
        """The forwarding database entries of a link (MAC → remote IP for a vxlan device)."""
        return self._neighbours(socket.AF_BRIDGE, index)

    def replace_fdb(self, entry: Neighbour) -> None:
        """A permanent FDB entry on the device itself (NTF_SELF), as `bridge fdb replace … self permanent`."""
        self._neighbour(RTM_NEWNEIGH, socket.AF_BRIDGE, entry, NUD_PERMANENT | NUD_NOARP, NTF_SELF, _REPLACE)

    def delete_fdb(self, entry: Neighbour) -> None:
        self._neighbour(RTM_DELNEIGH, socket.AF_BRIDGE, entry, 0, NTF_SELF, 0)
