"""Stale UDP conntrack entries: when a UDP Service port's endpoints change, flows pinned elsewhere are forgotten.

UDP has no connection to end, so conntrack keeps sending a client's datagrams to the endpoint it first picked
(or nowhere, if they arrived before the Service had endpoints) for as long as the client keeps talking.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address

from kubelite.kubelet.network import netlink as nl
from kubelite.proxy.model import ServicePort
from kubelite.proxy.rules import usable_endpoints

log = logging.getLogger(__name__)

IPCTNL_MSG_CT_GET = (1 << 8) | 1
IPCTNL_MSG_CT_DELETE = (1 << 8) | 2
"""ctnetlink (netfilter subsystem 1) message types."""
CTA_TUPLE_ORIG, CTA_TUPLE_REPLY = 1, 2
CTA_TUPLE_IP, CTA_TUPLE_PROTO = 1, 2
CTA_IP_V4_SRC, CTA_IP_V4_DST = 1, 2
CTA_PROTO_NUM, CTA_PROTO_SRC_PORT, CTA_PROTO_DST_PORT = 1, 2, 3
_NFGEN = struct.Struct("=BBH")


@dataclass(frozen=True, slots=True)
class FlowTuple:
    """One direction of a conntrack entry."""

    saddr: str
    daddr: str
    proto: int
    sport: int
    dport: int


def _tuple(raw: bytes) -> FlowTuple:
    attrs = nl.parse_attrs(raw)
    ip = nl.parse_attrs(attrs.get(CTA_TUPLE_IP, b""))
    proto = nl.parse_attrs(attrs.get(CTA_TUPLE_PROTO, b""))
    src, dst = ip.get(CTA_IP_V4_SRC, bytes(4)), ip.get(CTA_IP_V4_DST, bytes(4))
    return FlowTuple(str(IPv4Address(src)), str(IPv4Address(dst)), proto.get(CTA_PROTO_NUM, b"\0")[0],
                     nl.read_be16(proto.get(CTA_PROTO_SRC_PORT, bytes(2))),
                     nl.read_be16(proto.get(CTA_PROTO_DST_PORT, bytes(2))))


def _tuple_attr(kind: int, flow: FlowTuple) -> bytes:
    return nl.nested(kind,
                     nl.nested(CTA_TUPLE_IP, nl.attr(CTA_IP_V4_SRC, IPv4Address(flow.saddr).packed),
                               nl.attr(CTA_IP_V4_DST, IPv4Address(flow.daddr).packed)),
                     nl.nested(CTA_TUPLE_PROTO, nl.u8(CTA_PROTO_NUM, flow.proto),
                               nl.be16(CTA_PROTO_SRC_PORT, flow.sport), nl.be16(CTA_PROTO_DST_PORT, flow.dport)))


def udp_flows(sock: nl.NetlinkSocket) -> list[tuple[FlowTuple, FlowTuple]]:
    """(original, reply) tuples of the IPv4 UDP conntrack entries."""
    flows = []
    for message in sock.dump(IPCTNL_MSG_CT_GET, _NFGEN.pack(socket.AF_INET, 0, 0)):
        attrs = nl.parse_attrs(message.payload, _NFGEN.size)
        if CTA_TUPLE_ORIG in attrs and CTA_TUPLE_REPLY in attrs:
            orig = _tuple(attrs[CTA_TUPLE_ORIG])
            if orig.proto == socket.IPPROTO_UDP:
                flows.append((orig, _tuple(attrs[CTA_TUPLE_REPLY])))
    return flows


def delete_flow(sock: nl.NetlinkSocket, orig: FlowTuple) -> None:
    """Delete the conntrack entry with this original tuple (a tuple is always given: without one, all would go)."""
    sock.request(IPCTNL_MSG_CT_DELETE, _NFGEN.pack(socket.AF_INET, 0, 0) + _tuple_attr(CTA_TUPLE_ORIG, orig))


@dataclass(frozen=True, slots=True)
class StaleFlows:
    """UDP flows of one Service port to forget: those to its addresses (or NATed ones to its NodePort) whose
    reply does not come from one of the endpoints it keeps."""

    addresses: frozenset[tuple[str, int]]
    node_port: int
    keep: frozenset[tuple[str, int]]

    def matches(self, orig: FlowTuple, reply: FlowTuple) -> bool:
        """Whether a flow (its original and reply tuples) belongs to this port and goes to no kept endpoint."""
        if (reply.saddr, reply.sport) in self.keep:
            return False
        if (orig.daddr, orig.dport) in self.addresses:
            return True
        return bool(self.node_port) and orig.dport == self.node_port and reply.saddr != orig.daddr


def _targets(port: ServicePort | None) -> frozenset[tuple[str, int]]:
    if port is None:
        return frozenset()
    cluster, local = usable_endpoints(port)
    return frozenset((e.ip, e.port) for e in cluster + local)


def _addresses(port: ServicePort | None) -> frozenset[tuple[str, int]]:
    if port is None:
        return frozenset()
    return frozenset((ip, port.port) for ip in (*port.cluster_ips, *port.external_ips, *port.load_balancer_ips))


def stale_flows(old: Iterable[ServicePort], new: Iterable[ServicePort]) -> list[StaleFlows]:
    """What to forget after moving from `old` to `new`: for each UDP port that came, went or changed its usable
    endpoints, the flows not going to an endpoint it still has."""
    before = {p.key: p for p in old if p.protocol == "udp"}
    after = {p.key: p for p in new if p.protocol == "udp"}
    stale = []
    for key in sorted(before.keys() | after.keys()):
        was, now = before.get(key), after.get(key)
        keep = _targets(now)
        if was is not None and now is not None and keep == _targets(was):
            continue
        node_port = max(p.node_port for p in (was, now) if p is not None)
        stale.append(StaleFlows(_addresses(was) | _addresses(now), node_port, keep))
    return stale


def _clear(stale: list[StaleFlows]) -> int:
    deleted = 0
    with nl.NetlinkSocket(nl.NETLINK_NETFILTER) as sock:
        for orig, reply in udp_flows(sock):
            if any(s.matches(orig, reply) for s in stale):
                try:
                    delete_flow(sock, orig)
                except nl.NetlinkError as exc:
                    if exc.code != errno.ENOENT:  # an entry may expire between the dump and its deletion
                        raise
                    continue
                deleted += 1
    return deleted


async def clear_stale_flows(stale: list[StaleFlows]) -> int:
    """Delete the conntrack entries of these stale flows (in a worker thread); returns how many went."""
    if not stale:
        return 0
    try:
        return await asyncio.to_thread(_clear, stale)
    except OSError as exc:
        log.warning("cannot clear stale UDP conntrack entries: %s", exc)
        return 0
