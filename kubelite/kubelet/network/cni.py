"""The pod network under a CRI runtime: the runtime runs the CNI plugins, and the agent is the network add-on (as
flannel is for k3s). It writes the conflist for this node's podCIDR into the runtime's CNI config directory, and keeps
the node's side of the network as with runc (bridge.py, nat.py): the bridge and its gateway addresses, the forwarding
sysctls and the NAT table for traffic leaving the cluster. Routes to other nodes stay with routes.py, Services with
the proxy.

The bridge plugin runs with isGateway false and the agent gives the bridge its gateways, one per podCIDR still in use,
as BridgeNetwork does: the plugin refuses a bridge holding a second IPv4 address, so with isGateway a podCIDR change
would break either the pods started before it or those started after.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import threading
from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path
from typing import Any

from kubelite.kubelet.network import bridge as links
from kubelite.kubelet.network.ipam import parse_subnet
from kubelite.kubelet.network.nat import NatTable
from kubelite.kubelet.network.netlink import NetlinkError
from kubelite.kubelet.network.plugin import BRIDGE, DEFAULT_CLUSTER_CIDR, DEFAULT_POD_CIDR, NAT_TABLE, RESYNC
from kubelite.kubelet.network.rtnl import Rtnl

log = logging.getLogger(__name__)

DEFAULT_CONF_DIR = Path("/etc/cni/net.d")
CONFLIST = "10-kubelite.conflist"
NETWORK = "kubelite"
CNI_VERSION = "1.0.0"
CONFIG_SUFFIXES = (".conf", ".conflist", ".json")
"""The files libcni takes for network configs."""


def gateway(subnet: IPv4Network) -> IPv4Interface:
    """The bridge's address in a pod subnet: its first host address, with the subnet's prefix."""
    return IPv4Interface(f"{subnet.network_address + 1}/{subnet.prefixlen}")


def conflist(pod_cidr: str, mtu: int, ipam_dir: str | os.PathLike[str], bridge: str = BRIDGE) -> dict[str, Any]:
    """The network config for pods of this podCIDR: a veth on the bridge (hairpin on, so a pod reaches itself through
    a Service) with an address from host-local and a default route via the gateway, then hostPorts by portmap.
    Masquerade is the NAT table's (one rule for the cluster CIDR), the gateway address the agent's."""
    subnet = parse_subnet(pod_cidr)
    ipam = {"type": "host-local", "ranges": [[{"subnet": str(subnet), "gateway": str(gateway(subnet).ip)}]],
            "routes": [{"dst": "0.0.0.0/0"}], "dataDir": str(ipam_dir)}
    return {
        "cniVersion": CNI_VERSION,
        "name": NETWORK,
        "plugins": [
            {"type": "bridge", "bridge": bridge, "isGateway": False, "ipMasq": False, "hairpinMode": True,
             "mtu": mtu, "ipam": ipam},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def write_conflist(path: Path, document: dict[str, Any]) -> bool:
    """Write the config atomically (a runtime watching the directory never reads half a file); False if it was
    there already as it is."""
    text = json.dumps(document, indent=2) + "\n"
    with contextlib.suppress(OSError):
        if path.read_text() == text:
            return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return True


def first_config(conf_dir: Path) -> Path | None:
    """The network config a runtime that loads one network (containerd's default) uses: the first by file name."""
    with contextlib.suppress(FileNotFoundError):
        found = sorted(entry for entry in conf_dir.iterdir() if entry.suffix in CONFIG_SUFFIXES and entry.is_file())
        return found[0] if found else None
    return None


def reservations(ipam_dir: Path, network: str = NETWORK) -> list[IPv4Address]:
    """The addresses host-local has handed out for the network (one file per address in its data dir)."""
    found = []
    with contextlib.suppress(FileNotFoundError):
        for entry in (ipam_dir / network).iterdir():
            with contextlib.suppress(ValueError):
                found.append(IPv4Address(entry.name))
    return found


def stale_gateways(addresses: Iterable[IPv4Interface], current: IPv4Interface,
                   used: Iterable[IPv4Address]) -> list[IPv4Interface]:
    """The bridge addresses to drop: gateways of earlier podCIDRs none of whose addresses is still reserved."""
    used = list(used)
    return [address for address in addresses
            if address != current and not any(ip in address.network for ip in used)]


class CniNetwork:
    """The node's pod network for a CRI runtime: the conflist for the current podCIDR and the bridge, gateways,
    sysctls and NAT table the CNI plugins rely on. Containers keep their network when the agent stops."""

    def __init__(self, conf_dir: str | os.PathLike[str], state_dir: str | os.PathLike[str],
                 pod_cidr: str = DEFAULT_POD_CIDR, cluster_cidr: str = DEFAULT_CLUSTER_CIDR, bridge: str = BRIDGE,
                 table: str = NAT_TABLE) -> None:
        self.path = Path(conf_dir) / CONFLIST
        self.ipam_dir = Path(state_dir) / "host-local"
        self.bridge = bridge
        self.cluster_cidr = ipaddress.ip_network(cluster_cidr, strict=False)
        self.subnet = self._checked(pod_cidr)
        self.mtu = links.DEFAULT_MTU
        """The pods' MTU; the agent sets it (from the uplink and the backend) before start()."""
        self.nat = NatTable(table, bridge, str(self.cluster_cidr))
        self._lock = threading.Lock()
        self._shadowed_by: Path | None = None

    @property
    def pod_cidr(self) -> str:
        """The subnet new pod IPs come from."""
        return str(self.subnet)

    def _checked(self, cidr: str) -> IPv4Network:
        subnet = parse_subnet(cidr)
        if not (isinstance(self.cluster_cidr, IPv4Network) and subnet.subnet_of(self.cluster_cidr)):
            raise ValueError(f"pod CIDR {subnet} is not inside the cluster CIDR {self.cluster_cidr}")
        return subnet

    def set_pod_cidr(self, cidr: str) -> None:
        """Take the podCIDR node IPAM assigned. Pods set up from now on get addresses from it: the gateway and the
        conflist are written before this returns (a few netlink requests and a small file), so no sandbox started
        later sees the old range; pods set up earlier keep their addresses and gateway."""
        subnet = self._checked(cidr)
        if subnet != self.subnet:
            log.info("pod CIDR of %s is now %s (was %s)", self.bridge, subnet, self.subnet)
            self.subnet = subnet
            self._apply()

    async def start(self, live_sandbox_ids: Iterable[str] = ()) -> None:
        """Sysctls, the bridge with its gateway and the NAT table first, the conflist last: once the runtime sees a
        config, what its pods need is in place. The runtime's plugins own the sandboxes' addresses and veths, so
        there is nothing per sandbox to collect here."""
        await asyncio.to_thread(links.enable_host_forwarding)
        await self.nat.replace({})
        await asyncio.to_thread(self._apply)

    async def resync(self) -> None:
        """Re-assert the bridge, its gateway and the conflist (something may have removed them), and drop gateways
        of earlier podCIDRs that no pod uses any more."""
        await asyncio.to_thread(self._apply, True)

    async def run(self) -> None:
        """resync() every RESYNC seconds, until cancelled."""
        while True:
            await asyncio.sleep(RESYNC)
            try:
                await self.resync()
            except (OSError, NetlinkError) as exc:
                log.warning("re-asserting the pod network on %s failed: %s", self.bridge, exc)

    def _apply(self, collect: bool = False) -> None:
        with self._lock, Rtnl() as ipr:
            current = gateway(self.subnet)
            links.ensure_bridge(ipr, self.bridge, current, self.mtu)
            if collect:
                used = reservations(self.ipam_dir)
                for address in stale_gateways(links.bridge_addresses(ipr, self.bridge), current, used):
                    links.remove_bridge_address(ipr, self.bridge, address)
                    log.info("removed gateway %s from %s: no pod uses its podCIDR any more", address, self.bridge)
            if write_conflist(self.path, conflist(str(self.subnet), self.mtu, self.ipam_dir, self.bridge)):
                log.info("wrote %s for pod CIDR %s", self.path, self.subnet)
            self._check_first()

    def _check_first(self) -> None:
        """Warn (once per culprit) when another config sorts before ours: the runtime would use that one."""
        first = first_config(self.path.parent)
        shadowed_by = first if first is not None and first != self.path else None
        if shadowed_by is not None and shadowed_by != self._shadowed_by:
            log.warning("the CNI config %s comes before %s, so a runtime loading one network uses it and pods do "
                        "not get this node's pod network: remove it", shadowed_by, self.path)
        self._shadowed_by = shadowed_by
