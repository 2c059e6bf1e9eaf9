"""The pure parts of the cross-node pod routes: which nodes are peers, what routes they call for, VTEP MACs."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from typing import Any

import pytest

from kubelite.client.informer import SharedInformerFactory
from kubelite.kubelet.network.routes import (
    VTEP_MAC_ANNOTATION,
    Peer,
    Route,
    RouteManager,
    node_peer,
    remote_peers,
    routes_for,
    vtep_mac,
    vxlan_mtu,
)


def node(name: str, cidr: str | None = None, ip: str | None = None, mac: str | None = None,
         cidrs: list[str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if cidr:
        spec["podCIDR"] = cidr
    if cidrs:
        spec["podCIDRs"] = cidrs
    addresses = [{"type": "Hostname", "address": name}] + ([{"type": "InternalIP", "address": ip}] if ip else [])
    annotations = {VTEP_MAC_ANNOTATION: mac} if mac else {}
    return {"metadata": {"name": name, "annotations": annotations}, "spec": spec,
            "status": {"addresses": addresses}}


def test_vtep_mac_is_a_locally_administered_unicast_address_derived_from_the_node_ip() -> None:
    assert vtep_mac("172.31.0.2") == "0e:6b:ac:1f:00:02"
    first_octet = int(vtep_mac("10.0.0.1").split(":")[0], 16)
    assert first_octet & 0b10 and not first_octet & 0b1
    assert vtep_mac("10.0.0.1") != vtep_mac("10.0.0.2")


def test_vxlan_mtu_leaves_room_for_the_encapsulation() -> None:
    assert vxlan_mtu(1500) == 1450
    assert vxlan_mtu(9000) == 8950


def test_node_peer_reads_cidr_ip_and_mac() -> None:
    assert node_peer(node("a", "10.42.1.0/24", "172.31.0.2", "0E:6B:AC:1F:00:02")) == Peer(
        "a", IPv4Network("10.42.1.0/24"), IPv4Address("172.31.0.2"), "0e:6b:ac:1f:00:02")
    assert node_peer(node("a", ip="172.31.0.2")) is None
    assert node_peer(node("a", "10.42.1.0/24")) is None
    dual = node("a", ip="172.31.0.2", cidrs=["fd00:42::/64", "10.42.7.0/24"])
    assert node_peer(dual).pod_cidr == IPv4Network("10.42.7.0/24")
    ipv6_only = node("a", "fd00:42::/64", "fd00::2")
    assert node_peer(ipv6_only) is None


def test_remote_peers_are_the_other_nodes_that_can_be_routed_to() -> None:
    nodes = [
        node("node-1", "10.42.0.0/24", "172.31.0.1", "0e:6b:ac:1f:00:01"),
        node("node-3", "10.42.2.0/24", "172.31.0.3"),
        node("node-2", "10.42.1.0/24", "172.31.0.2", "0e:6b:ac:1f:00:02"),
        node("fresh", ip="172.31.0.4"),
        node("no-ip", "10.42.4.0/24"),
        node("same-host", "10.42.5.0/24", "172.31.0.1"),
    ]
    assert [p.name for p in remote_peers(nodes, "node-1", "172.31.0.1", "host-gw")] == ["node-2", "node-3"]
    assert [p.name for p in remote_peers(nodes, "node-1", "172.31.0.1", "vxlan")] == ["node-2"]


def test_remote_peers_skip_pod_cidrs_that_overlap_ours_or_an_earlier_peers() -> None:
    nodes = [node("me", "10.42.0.0/24", "172.31.0.1"), node("a", "10.42.0.0/25", "172.31.0.2"),
             node("b", "10.42.1.0/24", "172.31.0.3"), node("c", "10.42.1.0/24", "172.31.0.4")]
    assert [p.name for p in remote_peers(nodes, "me", "172.31.0.1", "host-gw")] == ["b"]


def test_routes_for_host_gw_go_via_node_ips_and_for_vxlan_onlink_via_the_remote_vtep() -> None:
    peers = [Peer("b", IPv4Network("10.42.1.0/24"), IPv4Address("172.31.0.2"), "0e:6b:ac:1f:00:02")]
    assert routes_for(peers, "host-gw") == {
        IPv4Network("10.42.1.0/24"): Route(IPv4Network("10.42.1.0/24"), IPv4Address("172.31.0.2"))}
    assert routes_for(peers, "vxlan") == {
        IPv4Network("10.42.1.0/24"): Route(IPv4Network("10.42.1.0/24"), IPv4Address("10.42.1.0"), onlink=True)}


def test_unknown_backend_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown pod network backend"):
        RouteManager(object(), "me", "172.31.0.1", "flannel",  # type: ignore[arg-type]
                     informers=SharedInformerFactory(object()))  # type: ignore[arg-type]


def test_own_pod_cidr_is_reported_once_and_only_relevant_changes_wake_the_sync() -> None:
    seen: list[str] = []
    manager = RouteManager(object(), "me", "172.31.0.1", on_pod_cidr=seen.append,  # type: ignore[arg-type]
                           informers=SharedInformerFactory(object()))  # type: ignore[arg-type]
    manager._changed(None, node("me", ip="172.31.0.1"))
    assert seen == []
    manager._changed(node("me", ip="172.31.0.1"), node("me", "10.42.3.0/24", "172.31.0.1"))
    manager._changed(node("me", "10.42.3.0/24", "172.31.0.1"), node("me", "10.42.3.0/24", "172.31.0.1"))
    assert seen == ["10.42.3.0/24"]
    manager._wake.clear()
    other = node("b", "10.42.1.0/24", "172.31.0.2")
    heartbeat = {**other, "status": {**other["status"], "conditions": [{"type": "Ready", "status": "True"}]}}
    manager._changed(other, heartbeat)
    assert not manager._wake.is_set()
    manager._changed(other, node("b", "10.42.1.0/24", "172.31.0.9"))
    assert manager._wake.is_set()
