"""The pod network on real namespaces (root): addresses, pod-to-pod, host-to-pod, masquerade, hostPort, hairpin,
teardown, restart and garbage collection. Every test uses its own bridge, CIDRs and nft table and removes them."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import socket
import subprocess
import threading
from collections.abc import AsyncIterator, Iterator
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest
import uvloop

from kubelite.kubelet.network import plugin
from kubelite.kubelet.network.bridge import host_ifname, pod_mac
from kubelite.kubelet.network.nat import HostPort, NatEntry, host_ports, render
from kubelite.kubelet.network.plugin import BridgeNetwork
from kubelite.kubelet.runtime.base import PortMapping, SandboxConfig
from tests.netns import Namespaces

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces and nftables need root")

SUFFIX = f"{os.getpid() % 10000}"
BRIDGE = f"kltest{SUFFIX}"
TABLE = f"kltest-net-{SUFFIX}"
POD_CIDR = "10.99.0.0/24"
CLUSTER_CIDR = "10.99.0.0/16"
GATEWAY = "10.99.0.1"
OUTSIDE_HOST_IP = "10.98.0.1"
"""The node's address on the link to the "outside" namespace: an address of the node that is not loopback."""
OUTSIDE_IP = "10.98.0.2"
OUTSIDE_VETH = f"kltout{SUFFIX}"
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def hostport(protocol: str, container_port: int, host_port: int, host_ip: str = "") -> PortMapping:
    """A port mapping as the kubelet makes it from a container port."""
    return PortMapping(container_port, host_port, protocol, host_ip)


def pod_config(name: str, port_mappings: list[PortMapping] | None = None) -> SandboxConfig:
    """The sandbox config of a test pod in the default namespace."""
    return SandboxConfig(name, "default", f"uid-{name}", port_mappings=port_mappings or [])


def _setns(fd: int) -> None:
    assert _libc.setns(fd, CLONE_NEWNET) == 0, os.strerror(ctypes.get_errno())


def ns_socket(path: str | None, kind: int = socket.SOCK_STREAM) -> socket.socket:
    """A socket created inside the namespace at path (None: the host's), made on a throwaway thread."""
    if path is None:
        return socket.socket(socket.AF_INET, kind)
    made: list[socket.socket] = []

    def make() -> None:
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = os.open(path, os.O_RDONLY)
        try:
            _setns(target)
            made.append(socket.socket(socket.AF_INET, kind))
        finally:
            _setns(own)
            os.close(own)
            os.close(target)

    thread = threading.Thread(target=make)
    thread.start()
    thread.join()
    return made[0]


class PeerServer:
    """Listens inside a namespace and answers every connection with the peer address it sees."""

    def __init__(self, path: str, port: int) -> None:
        self.sock = ns_socket(path)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("0.0.0.0", port))
        self.sock.listen(16)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, peer = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.sendall(peer[0].encode())

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(timeout=5)


def udp_peer_seen(server_ns: str, client_ns: str | None, ip: str, host_port: int, container_port: int) -> str:
    """Send one datagram from client_ns to ip:host_port; return the source the pod's UDP socket saw."""
    with ns_socket(server_ns, socket.SOCK_DGRAM) as server, ns_socket(client_ns, socket.SOCK_DGRAM) as client:
        server.bind(("0.0.0.0", container_port))
        server.settimeout(3)
        client.sendto(b"ping", (ip, host_port))
        return server.recvfrom(64)[1][0]


def peer_seen(path: str | None, ip: str, port: int) -> str:
    """Connect from the namespace at path to ip:port and return the source address the server saw."""
    with ns_socket(path) as sock:
        sock.settimeout(3)
        sock.connect((ip, port))
        return sock.recv(64).decode()


async def seen(path: str | None, ip: str, port: int) -> str:
    return await asyncio.to_thread(peer_seen, path, ip, port)


def ping(path: str | None, ip: str) -> bool:
    prefix = ["nsenter", f"--net={path}"] if path else []
    done = subprocess.run([*prefix, "busybox", "ping", "-c", "1", "-W", "2", ip], capture_output=True, check=False)
    return done.returncode == 0


def ip_cmd(path: str | None, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `ip ARGS` on the host or inside the namespace at path."""
    prefix = ["nsenter", f"--net={path}"] if path else []
    return subprocess.run([*prefix, "ip", *args], capture_output=True, text=True, check=check)


def link_exists(name: str, path: str | None = None) -> bool:
    return ip_cmd(path, "link", "show", name, check=False).returncode == 0


def default_route_mtu() -> str:
    route = ip_cmd(None, "-4", "route", "show", "default").stdout.split()
    if "dev" not in route:
        return "1500"
    return ip_cmd(None, "link", "show", route[route.index("dev") + 1]).stdout.split(" mtu ")[1].split()[0]


def nft_table() -> str:
    done = subprocess.run(["nft", "list", "table", "ip", TABLE], capture_output=True, text=True, check=False)
    return done.stdout


@pytest.fixture
async def net(tmp_path: Path) -> AsyncIterator[BridgeNetwork]:
    network = BridgeNetwork(tmp_path / "net", POD_CIDR, CLUSTER_CIDR, bridge=BRIDGE, table=TABLE)
    yield network
    await network.destroy()


def link_outside(path: str, host_ip: str = OUTSIDE_HOST_IP, outside_ip: str = OUTSIDE_IP,
                 veth: str = OUTSIDE_VETH) -> None:
    """Make the namespace at path a host outside the cluster: its own veth link to the node (host_ip, /24) and a
    default route through the node."""
    ip_cmd(None, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", Path(path).name)
    ip_cmd(None, "addr", "add", f"{host_ip}/24", "dev", veth)
    ip_cmd(None, "link", "set", veth, "up")
    ip_cmd(path, "addr", "add", f"{outside_ip}/24", "dev", "eth0")
    ip_cmd(path, "link", "set", "eth0", "up")
    ip_cmd(path, "link", "set", "lo", "up")
    ip_cmd(path, "route", "add", "default", "via", host_ip)


@pytest.fixture
def outside(namespaces: Namespaces) -> Iterator[str]:
    """A namespace standing for a host outside the cluster, on its own link and subnet, routed via the node."""
    path = namespaces.make("outside")
    link_outside(path)
    yield path
    ip_cmd(None, "link", "del", OUTSIDE_VETH, check=False)


async def test_two_pods_get_distinct_ips_and_reach_each_other(net: BridgeNetwork, namespaces: Namespaces) -> None:
    a, b = namespaces.make("a"), namespaces.make("b")
    ip_a = await net.setup("sandbox-a", a, pod_config("a"))
    ip_b = await net.setup("sandbox-b", b, pod_config("b"))
    assert ip_a != ip_b
    assert {IPv4Address(ip_a), IPv4Address(ip_b)} <= set(IPv4Network(POD_CIDR).hosts())
    assert GATEWAY not in (ip_a, ip_b)
    assert ping(a, ip_b) and ping(b, ip_a)
    assert ping(None, ip_a), "the host reaches a pod IP"
    assert ping(a, GATEWAY)
    assert f"default via {GATEWAY} dev eth0" in ip_cmd(a, "route").stdout
    details = ip_cmd(None, "-d", "link", "show", host_ifname(BRIDGE, "sandbox-a")).stdout
    assert f"master {BRIDGE}" in details and "hairpin on" in details
    uplink_mtu = default_route_mtu()
    assert net.mtu == int(uplink_mtu), "the MTU defaults to the default-route interface's"
    assert f"mtu {uplink_mtu}" in details and f"mtu {uplink_mtu}" in ip_cmd(a, "link", "show", "eth0").stdout
    assert f"link/ether {pod_mac(IPv4Address(ip_a))}" in ip_cmd(a, "link", "show", "eth0").stdout


async def test_pod_to_pod_keeps_source_ip_and_host_reaches_pod(net: BridgeNetwork, namespaces: Namespaces) -> None:
    a, b = namespaces.make("a"), namespaces.make("b")
    ip_a = await net.setup("sandbox-a", a, pod_config("a"))
    ip_b = await net.setup("sandbox-b", b, pod_config("b"))
    server = PeerServer(b, 8080)
    try:
        assert await seen(a, ip_b, 8080) == ip_a
        assert await seen(None, ip_b, 8080) == GATEWAY
    finally:
        server.close()


async def test_outbound_traffic_is_masqueraded(net: BridgeNetwork, namespaces: Namespaces, outside: str) -> None:
    a = namespaces.make("a")
    await net.setup("sandbox-a", a, pod_config("a"))
    assert f"ip saddr {CLUSTER_CIDR} ip daddr != {{ {CLUSTER_CIDR}, 224.0.0.0/4 }} masquerade" in nft_table()
    server = PeerServer(outside, 9000)
    try:
        assert await seen(a, OUTSIDE_IP, 9000) == OUTSIDE_HOST_IP
    finally:
        server.close()


async def test_host_port_from_loopback_node_address_outside_and_hairpin(
    net: BridgeNetwork, namespaces: Namespaces, outside: str
) -> None:
    a, b = namespaces.make("a"), namespaces.make("b")
    ip_a = await net.setup("sandbox-a", a, pod_config("a", port_mappings=[hostport("TCP", 8080, 18080)]))
    ip_b = await net.setup("sandbox-b", b, pod_config("b"))
    server = PeerServer(a, 8080)
    try:
        assert await seen(None, "127.0.0.1", 18080) == GATEWAY, "localhost hostPort is masqueraded to the bridge"
        assert await seen(None, OUTSIDE_HOST_IP, 18080) == OUTSIDE_HOST_IP
        assert await seen(outside, OUTSIDE_HOST_IP, 18080) == OUTSIDE_IP, "external clients keep their source"
        assert await seen(a, OUTSIDE_HOST_IP, 18080) == GATEWAY, "hairpin: the pod reaches its own hostPort"
        assert await seen(b, OUTSIDE_HOST_IP, 18080) == ip_b, "another pod reaches the hostPort with its own IP"
        assert await seen(a, GATEWAY, 18080) == GATEWAY
    finally:
        server.close()
    assert ip_a != ip_b


async def test_host_port_bound_to_one_host_ip_and_udp(
    net: BridgeNetwork, namespaces: Namespaces, outside: str
) -> None:
    a = namespaces.make("a")
    await net.setup("sandbox-a", a, pod_config("a", port_mappings=[
        hostport("TCP", 8080, 18081, OUTSIDE_HOST_IP), hostport("UDP", 5353, 15353), hostport("TCP", 53, 0)]))
    server = PeerServer(a, 8080)
    try:
        assert await seen(outside, OUTSIDE_HOST_IP, 18081) == OUTSIDE_IP
        with pytest.raises(OSError):
            await seen(None, "127.0.0.1", 18081)
    finally:
        server.close()
    assert await asyncio.to_thread(udp_peer_seen, a, outside, OUTSIDE_HOST_IP, 15353, 5353) == OUTSIDE_IP
    assert "dport 0" not in nft_table()


async def test_conflicting_host_ports_first_pod_wins_until_it_goes(net: BridgeNetwork, namespaces: Namespaces) -> None:
    a, b = namespaces.make("a"), namespaces.make("b")
    config_a = pod_config("a", port_mappings=[hostport("TCP", 8080, 18084)])
    ip_a = await net.setup("sandbox-a", a, config_a)
    ip_b = await net.setup("sandbox-b", b, pod_config("b", port_mappings=[hostport("TCP", 8080, 18084)]))
    servers = [PeerServer(a, 8080), PeerServer(b, 8080)]
    try:
        assert await seen(b, GATEWAY, 18084) == ip_b, "sandbox-a answers (the source is b's, unmasqueraded)"
        assert f"dnat to {ip_a}:8080" in nft_table() and f"dnat to {ip_b}:8080" not in nft_table()
        await net.teardown("sandbox-a", a, config_a)
        assert f"dnat to {ip_b}:8080" in nft_table()
        assert await seen(None, "127.0.0.1", 18084) == GATEWAY
    finally:
        for server in servers:
            server.close()


def test_host_port_mappings_and_rendering() -> None:
    mappings = [hostport("TCP", 80, 8080), hostport("udp", 53, 5353, "0.0.0.0"), hostport("TCP", 1, 0),
                hostport("TCP", 443, 8443, "fd00::1"), hostport("SCTP", 9, 9009, "192.0.2.2")]
    assert host_ports(mappings) == (HostPort("tcp", 8080, 80), HostPort("udp", 5353, 53),
                                    HostPort("sctp", 9009, 9, "192.0.2.2"))
    with pytest.raises(ValueError):
        host_ports([hostport("ICMP", 1, 1)])
    with pytest.raises(ValueError):
        host_ports([hostport("TCP", 70000, 1)])
    script = render("t", "br0", "10.42.0.0/16", {
        "s1": NatEntry("10.42.0.2", (HostPort("tcp", 8080, 80),)),
        "s2": NatEntry("10.42.0.3", (HostPort("tcp", 8080, 81), HostPort("tcp", 9090, 90, "192.0.2.2"))),
    })
    assert script.startswith("table ip t\ndelete table ip t\ntable ip t {")
    assert "elements = { 10.42.0.2 . 10.42.0.2, 10.42.0.3 . 10.42.0.3 }" in script
    rules = [line.strip() for line in script.splitlines() if "dnat to" in line]
    assert rules == ["ip daddr 192.0.2.2 meta l4proto tcp th dport 9090 dnat to 10.42.0.3:90",
                     "meta l4proto tcp th dport 8080 dnat to 10.42.0.2:80"]
    assert "type nat hook output priority -100;" in script
    assert "set hairpin" in render("t", "br0", "10.42.0.0/16", {}) and "elements" not in render(
        "t", "br0", "10.42.0.0/16", {})


async def test_teardown_removes_veth_frees_ip_and_is_idempotent(net: BridgeNetwork, namespaces: Namespaces) -> None:
    a = namespaces.make("a")
    config = pod_config("a", port_mappings=[hostport("TCP", 8080, 18082)])
    ip_a = await net.setup("sandbox-a", a, config)
    veth = host_ifname(BRIDGE, "sandbox-a")
    assert link_exists(veth) and link_exists("eth0", a)
    assert (net.state_dir / "ipam" / ip_a).read_text() == "sandbox-a"
    assert "dport 18082" in nft_table() and f"{ip_a} . {ip_a}" in nft_table()
    await net.teardown("sandbox-a", a, config)
    assert not link_exists(veth) and not link_exists("eth0", a)
    assert not (net.state_dir / "ipam" / ip_a).exists()
    assert net.ipam.lookup("sandbox-a") is None and net.pod_ip("sandbox-a") is None
    assert "dport 18082" not in nft_table() and ip_a not in nft_table()
    await net.teardown("sandbox-a", a, config)
    namespaces.remove(a)
    await net.teardown("sandbox-a", a, config)


async def test_setup_is_idempotent(net: BridgeNetwork, namespaces: Namespaces) -> None:
    a, b = namespaces.make("a"), namespaces.make("b")
    ip_a = await net.setup("sandbox-a", a, pod_config("a"))
    ip_b = await net.setup("sandbox-b", b, pod_config("b"))
    assert await net.setup("sandbox-a", a, pod_config("a")) == ip_a
    assert ping(b, ip_a)
    ip_cmd(a, "link", "del", "eth0")
    assert await net.setup("sandbox-a", a, pod_config("a")) == ip_a, "a half-gone pod is rewired with its IP"
    assert ping(b, ip_a) and ping(a, ip_b)


async def test_restart_keeps_allocations_and_host_ports(tmp_path: Path, namespaces: Namespaces) -> None:
    a, b, c = namespaces.make("a"), namespaces.make("b"), namespaces.make("c")
    first = BridgeNetwork(tmp_path / "net", POD_CIDR, CLUSTER_CIDR, bridge=BRIDGE, table=TABLE)
    second = first
    server = None
    try:
        config_a = pod_config("a", port_mappings=[hostport("TCP", 8080, 18083)])
        ip_a = await first.setup("sandbox-a", a, config_a)
        ip_b = await first.setup("sandbox-b", b, pod_config("b"))
        second = BridgeNetwork(tmp_path / "net", POD_CIDR, CLUSTER_CIDR, bridge=BRIDGE, table=TABLE)
        assert second.pod_ip("sandbox-a") == ip_a and second.pod_ip("sandbox-b") == ip_b
        ip_c = await second.setup("sandbox-c", c, pod_config("c"))
        assert ip_c not in (ip_a, ip_b)
        assert await second.setup("sandbox-a", a, config_a) == ip_a
        server = PeerServer(a, 8080)
        assert await seen(None, "127.0.0.1", 18083) == GATEWAY, "hostPorts survive the restart"

        collected = await second.sync(["sandbox-a", "sandbox-c"])
        assert collected == ["sandbox-b"]
        assert not link_exists(host_ifname(BRIDGE, "sandbox-b")) and not link_exists("eth0", b)
        assert second.ipam.lookup("sandbox-b") is None and not (tmp_path / "net" / "ipam" / ip_b).exists()
        assert ping(c, ip_a)
    finally:
        if server:
            server.close()
        await second.destroy()
    assert not link_exists(BRIDGE) and nft_table() == ""


async def test_sync_removes_unknown_veths_on_the_bridge(net: BridgeNetwork, namespaces: Namespaces) -> None:
    a = namespaces.make("a")
    await net.setup("sandbox-a", a, pod_config("a"))
    stray = "veth0123abcd"
    ip_cmd(None, "link", "add", stray, "type", "veth", "peer", "name", f"klstray{SUFFIX}")
    ip_cmd(None, "link", "set", stray, "master", BRIDGE)
    try:
        assert await net.sync(["sandbox-a"]) == []
        assert not link_exists(stray) and link_exists(host_ifname(BRIDGE, "sandbox-a"))
    finally:
        ip_cmd(None, "link", "del", stray, check=False)


async def test_run_mends_a_flushed_nat_table_and_stray_veths(net: BridgeNetwork, namespaces: Namespaces,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plugin, "RESYNC", 0.1)
    a = namespaces.make("a")
    await net.start([])
    await net.setup("sandbox-a", a, pod_config("a", [hostport("TCP", 8080, 18084)]))
    stray = "veth0123abce"
    ip_cmd(None, "link", "add", stray, "type", "veth", "peer", "name", f"klstrax{SUFFIX}")
    ip_cmd(None, "link", "set", stray, "master", BRIDGE)
    await asyncio.to_thread(subprocess.run, ["nft", "delete", "table", "ip", TABLE], check=True)
    running = asyncio.create_task(net.run())
    try:
        for _ in range(50):
            if "18084" in nft_table() and not link_exists(stray):
                break
            await asyncio.sleep(0.1)
        assert "18084" in nft_table() and not link_exists(stray)
        assert link_exists(host_ifname(BRIDGE, "sandbox-a"))
    finally:
        running.cancel()
        ip_cmd(None, "link", "del", stray, check=False)


async def test_pod_cidr_change_keeps_old_pods_routable(net: BridgeNetwork, namespaces: Namespaces) -> None:
    a, b = namespaces.make("a"), namespaces.make("b")
    ip_a = await net.setup("sandbox-a", a, pod_config("a"))
    net.set_pod_cidr("10.99.1.0/24")
    ip_b = await net.setup("sandbox-b", b, pod_config("b"))
    assert IPv4Address(ip_b) in IPv4Network("10.99.1.0/24")
    server = PeerServer(b, 8080)
    try:
        assert await seen(a, ip_b, 8080) == ip_a
    finally:
        server.close()
    await net.teardown("sandbox-a", a, pod_config("a"))
    await net.sync(["sandbox-b"])
    addresses = ip_cmd(None, "-4", "-o", "addr", "show", BRIDGE).stdout
    assert "10.99.1.1/24" in addresses and "10.99.0.1/24" not in addresses
    with pytest.raises(ValueError):
        net.set_pod_cidr("10.100.0.0/24")


def test_works_when_uvloop_is_the_event_loop_policy(tmp_path: Path, namespaces: Namespaces) -> None:
    """The agent runs on uvloop; its blocking netlink work in worker threads must not depend on the loop."""
    a = namespaces.make("a")

    async def scenario() -> tuple[str, str]:
        network = BridgeNetwork(tmp_path / "net", POD_CIDR, CLUSTER_CIDR, bridge=BRIDGE, mtu=1300, table=TABLE)
        try:
            ip = await network.setup("sandbox-a", a, pod_config("a"))
            return ip, ip_cmd(a, "link", "show", "eth0").stdout
        finally:
            await network.destroy()

    previous = asyncio.get_event_loop_policy()
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    try:
        ip, eth0 = asyncio.run(scenario())
    finally:
        asyncio.set_event_loop_policy(previous)
    assert IPv4Address(ip) in IPv4Network(POD_CIDR) and "mtu 1300" in eth0
