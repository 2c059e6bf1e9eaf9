"""The CNI network config the agent writes for a CRI runtime, and which bridge gateways it keeps."""

from __future__ import annotations

import json
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path

import pytest

from kubelite.kubelet.network.cni import (
    CONFLIST,
    CniNetwork,
    conflist,
    first_config,
    reservations,
    stale_gateways,
    write_conflist,
)
from kubelite.kubelet.network.plugin import BRIDGE


def test_the_bridge_plugin_plugs_pods_into_the_node_bridge_with_hairpin_and_the_agents_mtu() -> None:
    document = conflist("10.42.3.0/24", 1450, "/var/lib/kubelite/agent/network/host-local")
    assert document["cniVersion"] == "1.0.0" and document["name"] == "kubelite"
    bridge = document["plugins"][0]
    assert bridge["type"] == "bridge"
    assert bridge["bridge"] == BRIDGE == "kubelite0", "the NAT table's rules match the bridge by name"
    assert bridge["hairpinMode"] is True, "a pod calling its own Service needs its packets back"
    assert bridge["mtu"] == 1450
    assert bridge["isGateway"] is False and bridge["ipMasq"] is False, "gateways and masquerade are the agent's"


def test_pod_addresses_come_from_the_pod_cidr_by_host_local_with_a_default_route_via_the_gateway() -> None:
    ipam = conflist("10.42.3.0/24", 1500, "/data/host-local")["plugins"][0]["ipam"]
    assert ipam == {"type": "host-local", "ranges": [[{"subnet": "10.42.3.0/24", "gateway": "10.42.3.1"}]],
                    "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "/data/host-local"}


def test_host_ports_are_the_portmap_plugins_by_the_port_mappings_capability() -> None:
    plugins = conflist("10.42.0.0/24", 1500, "/ipam")["plugins"]
    assert [p["type"] for p in plugins] == ["bridge", "portmap"]
    assert plugins[1]["capabilities"] == {"portMappings": True}


def test_a_pod_cidr_with_host_bits_is_taken_as_its_network() -> None:
    ranges = conflist("10.42.7.9/24", 1500, "/ipam")["plugins"][0]["ipam"]["ranges"]
    assert ranges == [[{"subnet": "10.42.7.0/24", "gateway": "10.42.7.1"}]]


@pytest.mark.parametrize("cidr", ["fd00::/64", "10.42.0.0/31", "not-a-cidr"])
def test_a_pod_cidr_without_room_for_ipv4_pods_is_refused(cidr: str) -> None:
    with pytest.raises(ValueError):
        conflist(cidr, 1500, "/ipam")


def test_a_pod_cidr_outside_the_cluster_cidr_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not inside the cluster CIDR"):
        CniNetwork(tmp_path / "net.d", tmp_path / "state", pod_cidr="10.99.0.0/24", cluster_cidr="10.42.0.0/16")
    network = CniNetwork(tmp_path / "net.d", tmp_path / "state")
    with pytest.raises(ValueError, match="not inside the cluster CIDR"):
        network.set_pod_cidr("192.168.0.0/24")
    assert network.pod_cidr == "10.42.0.0/24"


def test_the_conflist_is_written_whole_and_only_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "net.d" / CONFLIST
    first = conflist("10.42.0.0/24", 1500, "/ipam")
    assert write_conflist(path, first) is True
    assert json.loads(path.read_text()) == first
    assert write_conflist(path, first) is False
    assert write_conflist(path, conflist("10.42.1.0/24", 1500, "/ipam")) is True
    assert json.loads(path.read_text())["plugins"][0]["ipam"]["ranges"][0][0]["subnet"] == "10.42.1.0/24"
    assert sorted(p.name for p in path.parent.iterdir()) == [CONFLIST], "no temporary file is left behind"


def test_reservations_are_the_address_files_of_host_local(tmp_path: Path) -> None:
    network = tmp_path / "kubelite"
    network.mkdir()
    for name in ("10.42.0.2", "10.42.0.9", "last_reserved_ip.0", "lock"):
        (network / name).write_text("sandbox\neth0")
    assert sorted(reservations(tmp_path)) == [IPv4Address("10.42.0.2"), IPv4Address("10.42.0.9")]
    assert reservations(tmp_path / "missing") == []


def test_gateways_of_earlier_pod_cidrs_go_once_no_pod_uses_them() -> None:
    current = IPv4Interface("10.42.1.1/24")
    old = IPv4Interface("10.42.0.1/24")
    assert stale_gateways([old, current], current, [IPv4Address("10.42.1.5")]) == [old]
    assert stale_gateways([old, current], current, [IPv4Address("10.42.0.7")]) == []
    assert stale_gateways([current], current, []) == [], "the current gateway stays even without pods"


def test_the_runtime_takes_the_first_config_by_name(tmp_path: Path) -> None:
    assert first_config(tmp_path / "missing") is None
    assert first_config(tmp_path) is None
    (tmp_path / CONFLIST).write_text("{}")
    (tmp_path / ".10-kubelite.conflist.tmp").write_text("{}")
    (tmp_path / "99-loopback.conf").write_text("{}")
    (tmp_path / "00-readme.txt").write_text("not a config")
    assert first_config(tmp_path) == tmp_path / CONFLIST
    (tmp_path / "10-containerd-net.conflist").write_text("{}")
    assert first_config(tmp_path) == tmp_path / "10-containerd-net.conflist", "'-' sorts before '.'"
