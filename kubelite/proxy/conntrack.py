"""Stale UDP conntrack entries: when a UDP Service port's endpoints change, flows pinned elsewhere are forgotten.

UDP has no connection to end, so conntrack keeps sending a client's datagrams to the endpoint it first picked
(or nowhere, if they arrived before the Service had endpoints) for as long as the client keeps talking.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Iterable
from dataclasses import dataclass

from pyroute2.conntrack import AsyncConntrack
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.nfnetlink.nfctsocket import NFCTAttrTuple

from kubelite.proxy.model import ServicePort
from kubelite.proxy.rules import usable_endpoints

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StaleFlows:
    """UDP flows of one Service port to forget: those to its addresses (or NATed ones to its NodePort) whose
    reply does not come from one of the endpoints it keeps."""

    addresses: frozenset[tuple[str, int]]
    node_port: int
    keep: frozenset[tuple[str, int]]

    def matches(self, orig: NFCTAttrTuple, reply: NFCTAttrTuple) -> bool:
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


async def _clear_in(stale: list[StaleFlows]) -> int:
    deleted = 0
    async with AsyncConntrack() as conntrack:
        flows = [flow async for flow in await conntrack.dump_entries(
            tuple_orig=NFCTAttrTuple(proto=socket.IPPROTO_UDP))]
        for flow in flows:
            if any(s.matches(flow.tuple_orig, flow.tuple_reply) for s in stale):
                try:
                    await conntrack.delete(flow)
                except NetlinkError as exc:
                    if exc.code != errno.ENOENT:  # an entry may expire between the dump and its deletion
                        raise
                    continue
                deleted += 1
    return deleted


def _clear(stale: list[StaleFlows]) -> int:
    # A private plain selector loop in a worker thread: uvloop, if it runs the caller, cannot carry netlink.
    loop = asyncio.SelectorEventLoop()
    try:
        return loop.run_until_complete(_clear_in(stale))
    finally:
        loop.close()


async def clear_stale_flows(stale: list[StaleFlows]) -> int:
    """Delete the conntrack entries of these stale flows (in a worker thread); returns how many went."""
    if not stale:
        return 0
    try:
        return await asyncio.to_thread(_clear, stale)
    except (OSError, NetlinkError) as exc:
        log.warning("cannot clear stale UDP conntrack entries: %s", exc)
        return 0
