"""Node IPAM (upstream's range allocator): give each Node a pod subnet cut from the cluster CIDR."""

from __future__ import annotations

import copy
import ipaddress
import logging
from typing import ClassVar

from kubelite.client.controller import Controller, Requeue
from kubelite.client.informer import SharedInformerFactory
from kubelite.client.resources import NODES
from kubelite.client.rest import ApiClient

log = logging.getLogger(__name__)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
MAX_MASK_DIFFERENCE = 16
"""A cluster CIDR may be cut into at most 2**16 node subnets (upstream's limit)."""


class CidrFullError(Exception):
    """Every node subnet of the cluster CIDR is taken."""


class CidrSet:
    """One cluster CIDR cut into equal node subnets: which are taken, and where to look for the next free one."""

    def __init__(self, cidr: str, node_mask_size: int):
        self.network: IPNetwork = ipaddress.ip_network(cidr)
        difference = node_mask_size - self.network.prefixlen
        if not 0 <= difference <= MAX_MASK_DIFFERENCE:
            raise ValueError(f"node mask /{node_mask_size} does not fit cluster CIDR {cidr} "
                             f"(at most {MAX_MASK_DIFFERENCE} bits longer than its mask)")
        self.node_mask_size = node_mask_size
        self.size = 1 << difference
        self._step = 1 << (self.network.max_prefixlen - node_mask_size)
        self._used: set[int] = set()
        self._next = 0

    def __len__(self) -> int:
        return len(self._used)

    def subnet(self, index: int) -> str:
        """The index-th node subnet."""
        base = int(self.network.network_address) + index * self._step
        return str(ipaddress.ip_network((base, self.node_mask_size)))

    def index_of(self, cidr: str) -> int | None:
        """The index of a node subnet of this set, or None when cidr is not one."""
        try:
            network = ipaddress.ip_network(cidr)
        except ValueError:
            return None
        if network.version != self.network.version or network.prefixlen != self.node_mask_size or \
                not network.subnet_of(self.network):  # type: ignore[arg-type]
            return None
        return (int(network.network_address) - int(self.network.network_address)) // self._step

    def allocate(self) -> str:
        """The next free subnet after the last one handed out (round-robin, as upstream's cidrset)."""
        for step in range(self.size):
            index = (self._next + step) % self.size
            if index not in self._used:
                self._used.add(index)
                self._next = (index + 1) % self.size
                return self.subnet(index)
        raise CidrFullError(f"no free node subnet left in {self.network}")

    def occupy(self, cidr: str) -> bool:
        """Mark a subnet taken; False when it is not one of this set."""
        index = self.index_of(cidr)
        if index is None:
            return False
        self._used.add(index)
        return True

    def release(self, cidr: str) -> None:
        """Free a subnet (no-op when it is not one of this set)."""
        index = self.index_of(cidr)
        if index is not None:
            self._used.discard(index)


def cidr_sets(cluster_cidr: str, mask_ipv4: int, mask_ipv6: int) -> list[CidrSet]:
    """One CidrSet per comma-separated cluster CIDR (at most one per IP family: dual-stack)."""
    sets = []
    for cidr in (c.strip() for c in cluster_cidr.split(",") if c.strip()):
        version = ipaddress.ip_network(cidr).version
        if any(s.network.version == version for s in sets):
            raise ValueError(f"cluster CIDRs {cluster_cidr!r}: at most one per IP family")
        sets.append(CidrSet(cidr, mask_ipv4 if version == 4 else mask_ipv6))
    if not sets:
        raise ValueError("no cluster CIDR given")
    return sets


class NodeIpamController(Controller):
    """Assign spec.podCIDR(s) to nodes without one; free a node's subnets when it is deleted."""

    name: ClassVar[str] = "node-ipam-controller"
    component: ClassVar[str] = "cidrAllocator"
    cluster_cidr: ClassVar[str] = "10.42.0.0/16"
    """--cluster-cidr (k3s's default); comma-separated for dual-stack."""
    node_cidr_mask_size_ipv4: ClassVar[int] = 24
    node_cidr_mask_size_ipv6: ClassVar[int] = 64

    def __init__(self, client: ApiClient, informers: SharedInformerFactory | None = None, *,
                 workers: int | None = None, cluster_cidr: str | None = None, node_cidr_mask_size_ipv4: int = 0,
                 node_cidr_mask_size_ipv6: int = 0):
        self.sets = cidr_sets(cluster_cidr or type(self).cluster_cidr,
                              node_cidr_mask_size_ipv4 or type(self).node_cidr_mask_size_ipv4,
                              node_cidr_mask_size_ipv6 or type(self).node_cidr_mask_size_ipv6)
        self.owned: dict[str, list[str]] = {}
        """The subnets of each node, as last seen or assigned: what its deletion frees."""
        self._rebuilt = False
        super().__init__(client, informers, workers=workers)

    def setup(self) -> None:
        """Every node, queued on change."""
        self.nodes = self.watch(NODES)

    def _rebuild(self) -> None:
        """Once the cache is synced, before the first allocation: take every subnet existing nodes have."""
        if not self._rebuilt:
            self._rebuilt = True
            for node in self.nodes.store.list():
                self._occupy(node["metadata"]["name"], pod_cidrs(node))
            log.info("%s: %d node subnets in use", self.name, sum(len(s) for s in self.sets))

    def _occupy(self, name: str, cidrs: list[str]) -> None:
        if self.owned.get(name) == cidrs:
            return
        self._release(name)
        for cidr in cidrs:
            if not any(s.occupy(cidr) for s in self.sets):
                log.info("%s: node %s has podCIDR %s outside the cluster CIDR", self.name, name, cidr)
        self.owned[name] = cidrs

    def _release(self, name: str) -> None:
        for cidr in self.owned.pop(name, []):
            for cidr_set in self.sets:
                cidr_set.release(cidr)

    async def reconcile(self, key: str) -> Requeue | None:
        """Record a node's subnets, give it new ones if it has none, or free them once it is gone."""
        self._rebuild()
        node = self.nodes.store.get(key)
        if node is None:
            self._release(key)
            return None
        cidrs = pod_cidrs(node)
        if cidrs:
            self._occupy(key, cidrs)
            return None
        allocated: list[str] = []
        self.owned[key] = allocated
        try:
            for cidr_set in self.sets:
                allocated.append(cidr_set.allocate())
        except CidrFullError as exc:
            self._release(key)
            level = logging.WARNING if self.queue.num_requeues(key) == 0 else logging.DEBUG
            log.log(level, "%s: node %s: %s; retrying with backoff", self.name, key, exc)
            self.recorder.event(node, "Normal", "CIDRNotAvailable", f"Node {key} status is now: CIDRNotAvailable")
            return Requeue()
        updated = copy.deepcopy(node)
        updated.setdefault("spec", {}).update(podCIDR=allocated[0], podCIDRs=allocated)
        try:
            await self.client.update(NODES, updated)
        except BaseException:
            self._release(key)
            raise
        log.info("%s: node %s gets podCIDRs %s", self.name, key, ",".join(allocated))
        return None


def pod_cidrs(node: dict) -> list[str]:
    """spec.podCIDRs, or [spec.podCIDR] from an older writer."""
    spec = node.get("spec") or {}
    return list(spec.get("podCIDRs") or ([spec["podCIDR"]] if spec.get("podCIDR") else []))
