"""BridgeNetwork: the runtime's pod network (setup/teardown per sandbox) from IPAM, bridge and NAT together.

Each pod's record (address, veth, hostPorts) is kept on disk beside the IPAM reservations so that a restarted
agent re-creates the same NAT table, and `sync` garbage-collects what belongs to sandboxes that are gone. The agent
drives either network class through the same lifecycle: `start` with the sandboxes the runtime has, then `run`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path
from typing import Any

from kubelite.kubelet.network import bridge as links
from kubelite.kubelet.network.ipam import HostLocalIPAM, check_sandbox_id, parse_subnet
from kubelite.kubelet.network.nat import HostPort, NatEntry, NatTable, host_ports
from kubelite.kubelet.network.netlink import NetlinkError
from kubelite.kubelet.network.rtnl import Rtnl

log = logging.getLogger(__name__)

DEFAULT_POD_CIDR = "10.42.0.0/24"
DEFAULT_CLUSTER_CIDR = "10.42.0.0/16"
BRIDGE = "kubelite0"
"""The node's pod bridge, whichever runtime plugs pods into it (the NAT table's rules match it by name)."""
NAT_TABLE = "kubelite-net"
RESYNC = 30.0
"""A network re-asserts its bridge, gateways and NAT this often (someone may have removed them)."""
_OUR_VETH = re.compile(r"^veth[0-9a-f]{8}$")


@dataclass(frozen=True, slots=True)
class PodRecord:
    """What the network knows about one sandbox, persisted as pods/<sandbox id>.json."""

    sandbox_id: str
    address: IPv4Interface
    gateway: IPv4Address
    veth: str
    name: str = ""
    namespace: str = ""
    uid: str = ""
    hostports: tuple[HostPort, ...] = ()
    created: float = 0.0

    @property
    def ip(self) -> str:
        """The pod IP without prefix."""
        return str(self.address.ip)

    def nat_entry(self) -> NatEntry:
        """The pod as the NAT table sees it."""
        return NatEntry(self.ip, self.hostports)

    def to_json(self) -> dict[str, Any]:
        """A plain dict for the file on disk."""
        return {
            "sandboxId": self.sandbox_id, "address": str(self.address), "gateway": str(self.gateway),
            "veth": self.veth, "name": self.name, "namespace": self.namespace, "uid": self.uid,
            "hostPorts": [hp.to_json() for hp in self.hostports], "created": self.created,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PodRecord:
        """The inverse of to_json."""
        return cls(
            data["sandboxId"], IPv4Interface(data["address"]), IPv4Address(data["gateway"]), data["veth"],
            data.get("name", ""), data.get("namespace", ""), data.get("uid", ""),
            tuple(HostPort.from_json(hp) for hp in data.get("hostPorts", ())), float(data.get("created", 0.0)),
        )


class BridgeNetwork:
    """A bridge-CNI-like pod network, in-process: setup returns the pod IP, teardown frees everything.

    Netlink and file work run in worker threads (asyncio.to_thread); nftables changes run `nft` asynchronously.
    mtu None means the MTU of the node's default-route interface (1500 without one), found at the first setup.
    """

    def __init__(
        self,
        state_dir: str | os.PathLike[str],
        pod_cidr: str = DEFAULT_POD_CIDR,
        cluster_cidr: str = DEFAULT_CLUSTER_CIDR,
        bridge: str = BRIDGE,
        mtu: int | None = None,
        table: str = NAT_TABLE,
    ) -> None:
        if not 0 < len(bridge) <= 15:
            raise ValueError(f"bridge name {bridge!r} must have 1 to 15 characters")
        self.state_dir = Path(state_dir)
        self.bridge = bridge
        self.mtu = mtu
        self.cluster_cidr = ipaddress.ip_network(cluster_cidr, strict=False)
        self._check_in_cluster(parse_subnet(pod_cidr))
        self.ipam = HostLocalIPAM(self.state_dir / "ipam", pod_cidr)
        self._records = self.state_dir / "pods"
        self._records.mkdir(parents=True, exist_ok=True)
        self.pods: dict[str, PodRecord] = self._load_records()
        self.nat = NatTable(table, bridge, str(self.cluster_cidr))
        self.nat.entries = {sid: record.nat_entry() for sid, record in self.pods.items()}
        self.problems: list[str] = []
        self._host_lock = threading.Lock()
        self._forwarding_checked = False
        self._bridge_index: int | None = None
        self._gateways: set[IPv4Interface] = set()
        self._inflight: set[str] = set()

    @property
    def pod_cidr(self) -> str:
        """The subnet new pod IPs come from."""
        return str(self.ipam.subnet)

    def set_pod_cidr(self, cidr: str) -> None:
        """Take the node's podCIDR from the API (node IPAM); pods set up earlier keep their addresses."""
        subnet = parse_subnet(cidr)
        self._check_in_cluster(subnet)
        if subnet != self.ipam.subnet:
            log.info("pod CIDR of %s is now %s (was %s)", self.bridge, subnet, self.ipam.subnet)
            self.ipam.set_subnet(str(subnet))

    def _check_in_cluster(self, subnet: IPv4Network) -> None:
        if not (isinstance(self.cluster_cidr, IPv4Network) and subnet.subnet_of(self.cluster_cidr)):
            raise ValueError(f"pod CIDR {subnet} is not inside the cluster CIDR {self.cluster_cidr}")

    def pod_ip(self, sandbox_id: str) -> str | None:
        """The IP of a sandbox set up by this network, if any."""
        record = self.pods.get(sandbox_id)
        return record.ip if record else None

    async def setup(self, sandbox_id: str, netns_path: str, config: Any) -> str:
        """Give the sandbox's namespace an eth0 on the bridge, an IP and its hostPorts; returns the pod IP.

        Calling it again for the same sandbox returns the same IP.
        """
        check_sandbox_id(sandbox_id)
        hostports = host_ports(getattr(config, "port_mappings", None))
        self._inflight.add(sandbox_id)
        try:
            previous = self.pods.get(sandbox_id)
            record = await asyncio.to_thread(self._setup_links, sandbox_id, netns_path, config, hostports, previous)
            self.pods[sandbox_id] = record
            try:
                await self.nat.add(sandbox_id, record.nat_entry())
            except Exception:
                await self.teardown(sandbox_id, netns_path, config)
                raise
        finally:
            self._inflight.discard(sandbox_id)
        return record.ip

    async def teardown(self, sandbox_id: str, netns_path: str, config: Any) -> None:
        """Delete the sandbox's veth pair, release its IP and drop its NAT; pieces already gone are fine."""
        check_sandbox_id(sandbox_id)
        await asyncio.to_thread(self._teardown_links, sandbox_id)
        self.pods.pop(sandbox_id, None)
        await self.nat.remove(sandbox_id)

    async def start(self, live_sandbox_ids: Iterable[str]) -> None:
        """At agent start, once the runtime adopted its sandboxes: collect what belongs to the others (sync)."""
        await self.sync(live_sandbox_ids)

    async def run(self) -> None:
        """sync() against this network's own records every RESYNC seconds, until cancelled: veths nobody owns,
        gateways of old podCIDRs and a flushed NAT table are mended."""
        while True:
            await asyncio.sleep(RESYNC)
            try:
                await self.sync(list(self.pods))
            except (OSError, NetlinkError) as exc:
                log.warning("re-asserting the pod network on %s failed: %s", self.bridge, exc)

    async def sync(self, live_sandbox_ids: Iterable[str]) -> list[str]:
        """After a restart: release IPs, veths and NAT of every sandbox not in live_sandbox_ids, re-assert the
        table for the rest; returns the sandbox ids that were collected."""
        live = set(live_sandbox_ids) | self._inflight
        stale = await asyncio.to_thread(self._collect, live, set(self.pods))
        for sandbox_id in stale:
            self.pods.pop(sandbox_id, None)
        await self.nat.replace({sid: record.nat_entry() for sid, record in self.pods.items()})
        return stale

    async def destroy(self) -> None:
        """Remove the bridge, every pod veth on it and the nft table (node reset, tests); state files stay."""
        await asyncio.to_thread(self._destroy_links, [record.veth for record in self.pods.values()])
        await self.nat.delete()

    def _setup_links(
        self, sandbox_id: str, netns_path: str, config: Any, hostports: tuple[HostPort, ...], previous: PodRecord | None
    ) -> PodRecord:
        had_ip = self.ipam.lookup(sandbox_id) is not None
        ip = self.ipam.allocate(sandbox_id)
        if previous is not None and previous.address.ip == ip:
            address = previous.address
        else:
            address = IPv4Interface(f"{ip}/{self.ipam.subnet.prefixlen}")
        gateway = address.network.network_address + 1
        veth = links.host_ifname(self.bridge, sandbox_id)
        try:
            with Rtnl() as ipr:
                bridge_index, mtu = self._ensure_host(ipr, IPv4Interface(f"{gateway}/{address.network.prefixlen}"))
                links.attach_pod(ipr, bridge_index, veth, netns_path, address, gateway, mtu)
        except BaseException:
            if not had_ip:
                self.ipam.release(sandbox_id)
            raise
        record = PodRecord(
            sandbox_id, address, gateway, veth, str(getattr(config, "name", "")),
            str(getattr(config, "namespace", "")), str(getattr(config, "uid", "")), hostports,
            previous.created if previous else time.time(),
        )
        self._write_record(record)
        return record

    def _ensure_host(self, ipr: Rtnl, gateway: IPv4Interface) -> tuple[int, int]:
        """Sysctls once, then the bridge with this gateway; a known bridge costs one ioctl (its index now)."""
        with self._host_lock:
            if not self._forwarding_checked:
                self.problems = links.enable_host_forwarding()
                self._forwarding_checked = True
            mtu = self.mtu = self.mtu or links.uplink_mtu(ipr)
            index = links.host_ifindex(self.bridge)
            if index is None or index != self._bridge_index or gateway not in self._gateways:
                index = links.ensure_bridge(ipr, self.bridge, gateway, mtu)
                if index != self._bridge_index:
                    self._gateways.clear()
                self._bridge_index = index
                self._gateways.add(gateway)
            return index, mtu

    def _teardown_links(self, sandbox_id: str) -> None:
        with Rtnl() as ipr:
            links.detach_pod(ipr, links.host_ifname(self.bridge, sandbox_id))
        (self._records / f"{sandbox_id}.json").unlink(missing_ok=True)
        self.ipam.release(sandbox_id)

    def _collect(self, live: set[str], known: set[str]) -> list[str]:
        stale = sorted((known | set(self.ipam.reservations())) - live)
        for sandbox_id in stale:
            self._teardown_links(sandbox_id)
        keep = {links.host_ifname(self.bridge, sid) for sid in live}
        used = list(self.ipam.reservations().values())
        with Rtnl() as ipr:
            for port in links.bridge_ports(ipr, self.bridge):
                if _OUR_VETH.match(port) and port not in keep:
                    links.detach_pod(ipr, port)
            current = self.ipam.gateway
            for address in links.bridge_addresses(ipr, self.bridge):
                if address != current and not any(ip in address.network for ip in used):
                    links.remove_bridge_address(ipr, self.bridge, address)
                    with self._host_lock:
                        self._gateways.discard(address)
        if stale:
            log.info("pod network %s: collected %d stale sandboxes", self.bridge, len(stale))
        return stale

    def _destroy_links(self, veths: list[str]) -> None:
        with Rtnl() as ipr:
            for port in links.bridge_ports(ipr, self.bridge):
                if _OUR_VETH.match(port):
                    links.detach_pod(ipr, port)
            for veth in veths:
                links.detach_pod(ipr, veth)
            links.delete_bridge(ipr, self.bridge)
        with self._host_lock:
            self._bridge_index = None
            self._gateways.clear()

    def _write_record(self, record: PodRecord) -> None:
        path = self._records / f"{record.sandbox_id}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record.to_json()))
        os.replace(tmp, path)

    def _load_records(self) -> dict[str, PodRecord]:
        records = []
        for path in self._records.glob("*.json"):
            try:
                records.append(PodRecord.from_json(json.loads(path.read_text())))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("ignoring unreadable pod network record %s: %s", path, exc)
        records.sort(key=lambda r: (r.created, r.sandbox_id))
        return {r.sandbox_id: r for r in records}
