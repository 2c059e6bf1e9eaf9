"""The pod network of a CRI runtime on real namespaces (root): CniNetwork writes the config and keeps the bridge,
and the real CNI plugins (Debian's, in /usr/lib/cni) wire pods from it, run here as a runtime runs them. Every
test uses its own bridge, CIDRs and nft table and removes them."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path
from typing import Any

import pytest

from kubelite.kubelet.network.cni import CONFLIST, CniNetwork
from tests.integration.test_network import (
    OUTSIDE_HOST_IP,
    OUTSIDE_IP,
    OUTSIDE_VETH,
    PeerServer,
    ip_cmd,
    link_outside,
    ping,
    seen,
)
from tests.netns import Namespaces

CNI_BIN_DIR = Path("/usr/lib/cni")
pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not (CNI_BIN_DIR / "bridge").exists(),
                                reason="needs root and the CNI plugins (containernetworking-plugins)")

SUFFIX = f"{os.getpid() % 10000}"
BRIDGE = f"klcni{SUFFIX}"
TABLE = f"klcni-net-{SUFFIX}"
CLUSTER_CIDR = "10.97.0.0/16"
FIRST, SECOND = "10.97.0.0/24", "10.97.1.0/24"


class Plugins:
    """Runs a conflist's plugins as a CRI runtime does (libcni): ADD in order, each result the next plugin's
    prevResult; DEL in reverse order with the ADD result."""

    def __init__(self, conflist: Path) -> None:
        self.conflist = conflist
        self.results: dict[str, dict[str, Any]] = {}

    def _run(self, command: str, container_id: str, netns: str, plugin: dict[str, Any], network: dict[str, Any],
             prev: dict[str, Any] | None) -> dict[str, Any]:
        config = {"cniVersion": network["cniVersion"], "name": network["name"], **plugin}
        if prev is not None:
            config["prevResult"] = prev
        env = {**os.environ, "CNI_COMMAND": command, "CNI_CONTAINERID": container_id, "CNI_NETNS": netns,
               "CNI_IFNAME": "eth0", "CNI_PATH": str(CNI_BIN_DIR)}
        done = subprocess.run([str(CNI_BIN_DIR / plugin["type"])], input=json.dumps(config), env=env,
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise AssertionError(f"CNI {command} by {plugin['type']} failed: {done.stdout} {done.stderr}")
        return json.loads(done.stdout) if done.stdout.strip() else {}

    def add(self, container_id: str, netns: str) -> str:
        """Wire the namespace; the pod IP."""
        network = json.loads(self.conflist.read_text())
        result = None
        for plugin in network["plugins"]:
            result = self._run("ADD", container_id, netns, plugin, network, result)
        assert result is not None
        self.results[container_id] = result
        return str(IPv4Interface(result["ips"][0]["address"]).ip)

    def delete(self, container_id: str, netns: str) -> None:
        """Unwire the namespace and release its address."""
        network = json.loads(self.conflist.read_text())
        for plugin in reversed(network["plugins"]):
            self._run("DEL", container_id, netns, plugin, network, self.results[container_id])
        del self.results[container_id]


@pytest.fixture
def outside(namespaces: Namespaces) -> Iterator[str]:
    """A host outside the cluster (test_network's), routed via the node."""
    path = namespaces.make("outside")
    link_outside(path)
    yield path
    ip_cmd(None, "link", "del", OUTSIDE_VETH, check=False)


@pytest.fixture
async def network(tmp_path: Path) -> AsyncIterator[CniNetwork]:
    made = CniNetwork(tmp_path / "net.d", tmp_path / "state", FIRST, CLUSTER_CIDR, bridge=BRIDGE, table=TABLE)
    yield made
    remove_host_side()


def remove_host_side() -> None:
    """The bridge and the NAT table (pods' veths go with their namespaces)."""
    ip_cmd(None, "link", "del", BRIDGE, check=False)
    subprocess.run(["nft", "delete", "table", "ip", TABLE], capture_output=True, check=False)


def nft_tables() -> str:
    return subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=True).stdout


def bridge_mac() -> str:
    shown = ip_cmd(None, "-o", "link", "show", BRIDGE).stdout.split()
    return shown[shown.index("link/ether") + 1]


def mac_assign_type() -> str:
    return Path(f"/sys/class/net/{BRIDGE}/addr_assign_type").read_text().strip()


def gateways() -> set[str]:
    shown = ip_cmd(None, "-4", "-o", "addr", "show", "dev", BRIDGE).stdout.split()
    return {shown[i + 1] for i, word in enumerate(shown) if word == "inet"}


async def test_pods_wired_from_the_config_reach_each_other_and_leave_masqueraded(
        network: CniNetwork, namespaces: Namespaces, outside: str) -> None:
    await network.start()
    assert gateways() == {"10.97.0.1/24"}, "the bridge has its gateway before any pod"
    assert f"table ip {TABLE}" in nft_tables(), "the NAT table is in place"
    plugins = Plugins(network.path)
    a, b = namespaces.make("a"), namespaces.make("b")
    ip_a, ip_b = plugins.add("sandbox-a", a), plugins.add("sandbox-b", b)
    assert ip_a != ip_b and {IPv4Address(ip_a), IPv4Address(ip_b)} <= set(IPv4Network(FIRST).hosts())
    assert ping(a, ip_b) and ping(b, ip_a) and ping(a, "10.97.0.1")
    assert "default via 10.97.0.1 dev eth0" in ip_cmd(a, "route").stdout
    host_veth = next(port for port in ip_cmd(None, "-o", "link", "show", "master", BRIDGE).stdout.split()
                     if port.startswith("veth")).split("@")[0]
    assert "hairpin on" in ip_cmd(None, "-d", "link", "show", host_veth).stdout
    assert f"mtu {network.mtu}" in ip_cmd(a, "link", "show", "eth0").stdout

    server = PeerServer(outside, 8080)
    try:
        assert await seen(a, OUTSIDE_IP, 8080) == OUTSIDE_HOST_IP, "leaving the cluster, a pod is masqueraded"
    finally:
        server.close()
    plugins.delete("sandbox-a", a)
    plugins.delete("sandbox-b", b)
    assert not list((network.ipam_dir / "kubelite").glob("10.97.*")), "DEL released the addresses"


async def test_a_new_pod_cidr_serves_new_pods_while_old_ones_keep_their_gateway(
        network: CniNetwork, namespaces: Namespaces) -> None:
    await network.start()
    mac = bridge_mac()
    plugins = Plugins(network.path)
    old = namespaces.make("old")
    ip_old = plugins.add("sandbox-old", old)
    assert IPv4Address(ip_old) in IPv4Network(FIRST)

    network.set_pod_cidr(SECOND)
    conflist = json.loads((network.path.parent / CONFLIST).read_text())
    assert conflist["plugins"][0]["ipam"]["ranges"] == [[{"subnet": SECOND, "gateway": "10.97.1.1"}]]
    assert gateways() == {"10.97.0.1/24", "10.97.1.1/24"}
    new = namespaces.make("new")
    ip_new = plugins.add("sandbox-new", new)
    assert IPv4Address(ip_new) in IPv4Network(SECOND), "new pods get addresses from the new podCIDR"
    assert ping(old, "10.97.0.1") and ping(new, "10.97.1.1")
    assert ping(old, ip_new) and ping(new, ip_old), "pods of both ranges reach each other through the node"

    await network.resync()
    assert gateways() == {"10.97.0.1/24", "10.97.1.1/24"}, "a gateway stays while a pod of its range runs"
    plugins.delete("sandbox-old", old)
    await network.resync()
    assert gateways() == {"10.97.1.1/24"}, "then it goes"
    assert bridge_mac() == mac, "the bridge keeps its MAC as pods come and go (the pods' ARP entries stay right)"
    assert ping(new, "10.97.1.1")
    plugins.delete("sandbox-new", new)


async def test_resync_puts_back_a_removed_bridge_and_config(network: CniNetwork) -> None:
    await network.start()
    ip_cmd(None, "link", "del", BRIDGE)
    network.path.unlink()
    await network.resync()
    assert gateways() == {"10.97.0.1/24"}
    assert json.loads(network.path.read_text())["plugins"][0]["bridge"] == BRIDGE


async def test_a_bridge_left_without_ports_gets_a_mac_of_its_own(network: CniNetwork) -> None:
    """A bridge whose last port went (as one left by an earlier agent) has no MAC at all; the agent gives it one
    and pins it."""
    ip_cmd(None, "link", "add", BRIDGE, "type", "bridge")
    ip_cmd(None, "link", "add", f"{BRIDGE}p", "type", "veth", "peer", "name", f"{BRIDGE}q")
    ip_cmd(None, "link", "set", f"{BRIDGE}p", "master", BRIDGE)
    ip_cmd(None, "link", "del", f"{BRIDGE}p")
    assert bridge_mac() == "00:00:00:00:00:00"
    await network.start()
    mac = bridge_mac()
    assert mac != "00:00:00:00:00:00" and not int(mac.split(":")[0], 16) & 1
    assert mac_assign_type() == "3", "set by us (NET_ADDR_SET), so the kernel keeps it"
    assert gateways() == {"10.97.0.1/24"}


async def test_a_config_that_sorts_first_is_reported_once(network: CniNetwork,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    await network.start()
    other = network.path.parent / "05-other.conflist"
    other.write_text("{}")
    await network.resync()
    await network.resync()
    assert caplog.text.count(f"{other} comes before {network.path}") == 1
