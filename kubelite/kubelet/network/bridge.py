"""Netlink plumbing of the pod network, like the bridge CNI plugin: the node bridge and one veth pair per pod.

Everything here is blocking rtnetlink work; callers run it in a worker thread. A pod's namespace is reached by
creating its sockets after setns() on the calling thread only, then switching the thread straight back.
A pod is wired with few requests: an interface's index and flags go through ioctls on a datagram socket of its
namespace, its bridge port's hairpin flag through sysfs, and a pod is wired first and checked only when something
is in the way.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import logging
import os
import secrets
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path

from kubelite.kubelet.network import rtnl
from kubelite.kubelet.network.netlink import NetlinkError
from kubelite.kubelet.network.rtnl import Route, Rtnl
from kubelite.kubelet.runtime import syscalls

log = logging.getLogger(__name__)

CLONE_NEWNET = 0x40000000
POD_IFNAME = "eth0"
DEFAULT_MTU = 1500
RTPROT_BOOT = 3
"""The protocol `ip route add` gives a route: the pod's default route looks as if made by hand."""
DEFAULT_ROUTE = IPv4Network("0.0.0.0/0")
_libc = ctypes.CDLL(None, use_errno=True)
_SYSCTL = Path("/proc/sys")
_SYS_NET = Path("/sys/class/net")


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@dataclass(frozen=True, slots=True)
class PodNetns:
    """Sockets living in a pod's network namespace: rtnetlink for addresses and routes, a datagram socket for
    interface ioctls."""

    ipr: Rtnl
    sock: socket.socket

    def ifindex(self, ifname: str) -> int | None:
        """The interface's index in this namespace, None if it does not exist."""
        return syscalls.interface_index(self.sock, ifname)

    def set_up(self, ifname: str) -> None:
        """Bring the interface up."""
        syscalls.set_interface_up(self.sock, ifname)


def host_ifindex(ifname: str) -> int | None:
    """An interface's index in this thread's network namespace, None if it does not exist."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        return syscalls.interface_index(sock, ifname)


@contextlib.contextmanager
def netns_sockets(netns_path: str) -> Iterator[PodNetns]:
    """Sockets in the network namespace at netns_path; this thread's namespace is kept."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(netns_path, os.O_RDONLY)
        try:
            _setns(target)
            try:
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                try:
                    ipr = Rtnl()
                except BaseException:
                    sock.close()
                    raise
            finally:
                _setns(own)
        finally:
            os.close(target)
    finally:
        os.close(own)
    try:
        yield PodNetns(ipr, sock)
    finally:
        sock.close()
        ipr.close()


def host_ifname(bridge: str, sandbox_id: str) -> str:
    """The host-side veth name of a sandbox: stable (teardown and GC find it without the netns), 12 characters."""
    return "veth" + hashlib.sha256(f"{bridge}/{sandbox_id}".encode()).hexdigest()[:8]


def pod_mac(ip: IPv4Address) -> str:
    """The pod's eth0 MAC, derived from its IP (0a:58 + the address, as the bridge plugin did): a pod rewired or
    an IP reused keeps one MAC, so neighbours' ARP caches stay right without gratuitous ARP."""
    return "0a:58:" + ":".join(f"{octet:02x}" for octet in ip.packed)


def random_mac() -> str:
    """A random locally administered unicast MAC."""
    raw = bytearray(secrets.token_bytes(6))
    raw[0] = (raw[0] & 0xFE) | 0x02
    return ":".join(f"{octet:02x}" for octet in raw)


def _unicast(mac: str) -> bool:
    octets = bytes.fromhex(mac.replace(":", ""))
    return len(octets) == 6 and any(octets) and not octets[0] & 1


def write_sysctl(name: str, value: str) -> bool:
    """Set a sysctl (dotted name) if it differs; False when the key is missing on this kernel or not writable."""
    path = _SYSCTL / name.replace(".", "/")
    try:
        if path.read_text().strip() != value:
            path.write_text(value)
    except OSError as exc:
        log.debug("sysctl %s=%s: %s", name, value, exc)
        return False
    return True


def enable_host_forwarding() -> list[str]:
    """Turn on IPv4 forwarding and bridge netfilter (loading br_netfilter if needed); returns what could not be set."""
    problems = []
    if not write_sysctl("net.ipv4.ip_forward", "1"):
        problems.append("cannot set net.ipv4.ip_forward=1: pods cannot reach anything beyond this node")
    if not write_sysctl("net.bridge.bridge-nf-call-iptables", "1"):
        try:
            result = subprocess.run(["modprobe", "br_netfilter"], capture_output=True, text=True, check=False)
            outcome = result.stderr.strip() or f"exit {result.returncode}"
        except OSError as exc:
            outcome = str(exc)
        if not write_sysctl("net.bridge.bridge-nf-call-iptables", "1"):
            problems.append(
                f"cannot set net.bridge.bridge-nf-call-iptables=1 (modprobe br_netfilter: {outcome}): "
                "replies between pods on the bridge bypass NAT, so pod-to-hostPort traffic may break"
            )
    for problem in problems:
        log.warning("%s", problem)
    return problems


def _lookup(ipr: Rtnl, ifname: str) -> int | None:
    link = ipr.link(ifname)
    return None if link is None else link.index


def _has_address(ipr: Rtnl, index: int, address: IPv4Interface) -> bool:
    return any(have == address for _, have in ipr.addresses(index))


def uplink_mtu(ipr: Rtnl) -> int:
    """The MTU of the interface carrying the default route (pods must not send bigger frames out), else 1500."""
    for route in ipr.routes():
        if route.dst.prefixlen == 0 and route.oif and route.table == rtnl.MAIN_TABLE:
            link = ipr.link(index=route.oif)
            if link is not None:
                return link.mtu or DEFAULT_MTU
    return DEFAULT_MTU


def ensure_bridge(ipr: Rtnl, name: str, gateway: IPv4Interface, mtu: int) -> int:
    """Create the bridge if missing, pin its MAC, give it the gateway address, bring it up; returns its ifindex.

    A bridge whose MAC was never set takes the lowest MAC of its ports (all zeros without ports), so it changes when
    pods come and go, and the pods' ARP entries for their gateway go stale until they probe again (seconds without
    the gateway). Setting it (to the one it has, if it is a unicast address) makes the kernel keep it.
    """
    if _lookup(ipr, name) is None:
        try:
            ipr.add_bridge(name, mtu)
        except NetlinkError as exc:
            if exc.code != errno.EEXIST:
                raise
    link = ipr.link(name)
    if link is None:
        raise RuntimeError(f"bridge {name} vanished right after creation")
    index = link.index
    ipr.set_mac(index, link.mac if _unicast(link.mac) else random_mac())
    if not _has_address(ipr, index, gateway):
        try:
            ipr.add_address(index, gateway)
        except NetlinkError as exc:
            if exc.code != errno.EEXIST:
                raise
    ipr.set_up(index)
    if not write_sysctl(f"net.ipv4.conf.{name}.route_localnet", "1"):
        log.warning("cannot set net.ipv4.conf.%s.route_localnet=1: hostPorts on 127.0.0.1 will not work", name)
    return index


def bridge_addresses(ipr: Rtnl, name: str) -> list[IPv4Interface]:
    """The IPv4 addresses of the bridge (its gateway addresses), empty if the bridge does not exist."""
    index = _lookup(ipr, name)
    if index is None:
        return []
    return [address for _, address in ipr.addresses(index)]


def remove_bridge_address(ipr: Rtnl, name: str, address: IPv4Interface) -> None:
    """Drop one gateway address from the bridge (a podCIDR no pod uses any more)."""
    index = _lookup(ipr, name)
    if index is not None:
        try:
            ipr.delete_address(index, address)
        except NetlinkError as exc:
            if exc.code != errno.EADDRNOTAVAIL:
                raise


def attach_pod(
    ipr: Rtnl,
    bridge_ifindex: int,
    veth: str,
    netns_path: str,
    address: IPv4Interface,
    gateway: IPv4Address,
    mtu: int,
) -> None:
    """Wire a pod: veth pair, host end on the bridge (hairpin on), eth0 in the pod with address and default route.

    Idempotent: an already wired pod is left alone; leftovers of a half-done attempt are replaced. The veth pair is
    created straight away, and only when a link of that name is in the way (EEXIST) is the pod checked.
    """
    with netns_sockets(netns_path) as pod:
        try:
            _add_veth(ipr, bridge_ifindex, veth, netns_path, address, mtu)
        except NetlinkError as exc:
            if exc.code != errno.EEXIST:
                raise
            if _wired(ipr, pod, bridge_ifindex, veth, address):
                return
            _add_veth(ipr, bridge_ifindex, veth, netns_path, address, mtu)
        _set_hairpin(veth)
        pod.set_up("lo")
        eth0 = pod.ifindex(POD_IFNAME)
        if eth0 is None:
            raise RuntimeError(f"{POD_IFNAME} did not appear in {netns_path}")
        pod.ipr.add_address(eth0, address)
        pod.set_up(POD_IFNAME)
        pod.ipr.add_route(Route(DEFAULT_ROUTE, gateway, eth0, 0, RTPROT_BOOT, rtnl.MAIN_TABLE))


def _add_veth(ipr: Rtnl, bridge_ifindex: int, veth: str, netns_path: str, address: IPv4Interface,
              mtu: int) -> None:
    """The veth pair: the host end up on the bridge, eth0 (with the pod's MAC) in the pod's namespace."""
    fd = os.open(netns_path, os.O_RDONLY)
    try:
        ipr.add_veth(veth, mtu, bridge_ifindex, POD_IFNAME, fd, pod_mac(address.ip))
    finally:
        os.close(fd)


def _wired(ipr: Rtnl, pod: PodNetns, bridge_ifindex: int, veth: str, address: IPv4Interface) -> bool:
    """Whether the pod is wired already; if not, remove what is in the way of wiring it again."""
    host = ipr.link(veth)
    pod_index = pod.ifindex(POD_IFNAME)
    if host is not None and pod_index is not None:
        if host.master == bridge_ifindex and _has_address(pod.ipr, pod_index, address):
            return True
    if host is not None:
        ipr.delete_link(host.index)
    if pod_index is not None:
        with contextlib.suppress(NetlinkError):
            pod.ipr.delete_link(pod_index)
    return False


def _set_hairpin(veth: str) -> None:
    """Hairpin mode on the bridge port, so that a pod reaching itself through a Service gets its packets back."""
    try:
        (_SYS_NET / veth / "brport" / "hairpin_mode").write_text("1")
    except FileNotFoundError:
        raise RuntimeError(f"veth {veth} vanished right after creation, or is no bridge port") from None


def detach_pod(ipr: Rtnl, veth: str) -> bool:
    """Delete a pod's veth pair by its host end; False if it was already gone."""
    index = host_ifindex(veth)
    if index is None:
        return False
    try:
        ipr.delete_link(index)
    except NetlinkError as exc:
        if exc.code != errno.ENODEV:
            raise
        return False
    return True


def bridge_ports(ipr: Rtnl, name: str) -> list[str]:
    """Names of the interfaces enslaved to the bridge."""
    index = _lookup(ipr, name)
    if index is None:
        return []
    return [link.name for link in ipr.links() if link.master == index]


def delete_bridge(ipr: Rtnl, name: str) -> None:
    """Remove the bridge, if present."""
    index = _lookup(ipr, name)
    if index is not None:
        try:
            ipr.delete_link(index)
        except NetlinkError as exc:
            if exc.code != errno.ENODEV:
                raise
