"""Host-local IPAM on a temporary directory: allocation order, persistence, idempotence, exhaustion, release."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path

import pytest

from kubelite.kubelet.network.ipam import HostLocalIPAM, IPAMExhaustedError, check_sandbox_id, parse_subnet


def test_allocates_from_dot_two_and_files_name_the_sandbox(tmp_path: Path) -> None:
    ipam = HostLocalIPAM(tmp_path, "10.42.0.0/24")
    assert ipam.gateway == IPv4Interface("10.42.0.1/24")
    assert ipam.allocate("a") == IPv4Address("10.42.0.2")
    assert ipam.allocate("b") == IPv4Address("10.42.0.3")
    assert (tmp_path / "10.42.0.2").read_text() == "a"
    assert (tmp_path / "10.42.0.3").read_text() == "b"
    assert ipam.reservations() == {"a": IPv4Address("10.42.0.2"), "b": IPv4Address("10.42.0.3")}


def test_same_sandbox_gets_the_same_ip(tmp_path: Path) -> None:
    ipam = HostLocalIPAM(tmp_path, "10.42.0.0/24")
    first = ipam.allocate("a")
    assert ipam.allocate("a") == first
    assert len(list(tmp_path.glob("10.*"))) == 1


def test_reservations_survive_a_new_instance(tmp_path: Path) -> None:
    ipam = HostLocalIPAM(tmp_path, "10.42.0.0/24")
    a, b = ipam.allocate("a"), ipam.allocate("b")
    again = HostLocalIPAM(tmp_path, "10.42.0.0/24")
    assert again.lookup("a") == a and again.lookup("b") == b
    assert again.allocate("a") == a
    assert again.allocate("c") not in (a, b)


def test_release_frees_the_ip_and_is_idempotent(tmp_path: Path) -> None:
    ipam = HostLocalIPAM(tmp_path, "10.42.0.0/24")
    ip = ipam.allocate("a")
    assert ipam.release("a") == ip
    assert not (tmp_path / str(ip)).exists()
    assert ipam.release("a") is None
    assert ipam.lookup("a") is None
    assert HostLocalIPAM(tmp_path, "10.42.0.0/24").lookup("a") is None


def test_round_robin_does_not_reuse_a_freed_ip_at_once(tmp_path: Path) -> None:
    ipam = HostLocalIPAM(tmp_path, "10.42.0.0/24")
    a = ipam.allocate("a")
    ipam.release("a")
    assert ipam.allocate("b") == IPv4Address("10.42.0.3") != a
    assert HostLocalIPAM(tmp_path, "10.42.0.0/24").allocate("c") == IPv4Address("10.42.0.4")


def test_exhaustion_is_a_clear_error_and_wraps_around(tmp_path: Path) -> None:
    ipam = HostLocalIPAM(tmp_path, "10.42.0.0/29")
    ips = [ipam.allocate(f"s{i}") for i in range(5)]
    assert ips == [IPv4Address(f"10.42.0.{n}") for n in range(2, 7)], "never the network, gateway or broadcast"
    with pytest.raises(IPAMExhaustedError, match=r"10\.42\.0\.0/29.*all 5"):
        ipam.allocate("s5")
    ipam.release("s1")
    assert ipam.allocate("s5") == IPv4Address("10.42.0.3")


def test_foreign_reservation_files_are_respected(tmp_path: Path) -> None:
    (tmp_path / "10.42.0.2").write_text("someone-else")
    (tmp_path / "not-an-ip").write_text("x")
    ipam = HostLocalIPAM(tmp_path, "10.42.0.0/24")
    assert ipam.lookup("someone-else") == IPv4Address("10.42.0.2")
    assert ipam.allocate("a") == IPv4Address("10.42.0.3")


def test_subnet_change_keeps_old_reservations(tmp_path: Path) -> None:
    ipam = HostLocalIPAM(tmp_path, "10.42.0.0/24")
    old = ipam.allocate("a")
    ipam.set_subnet("10.42.5.0/24")
    assert ipam.gateway == IPv4Interface("10.42.5.1/24")
    assert ipam.allocate("a") == old
    assert ipam.allocate("b") == IPv4Address("10.42.5.2")
    assert ipam.release("a") == old


def test_invalid_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        parse_subnet("fd00::/64")
    with pytest.raises(ValueError):
        parse_subnet("10.0.0.0/31")
    with pytest.raises(ValueError):
        HostLocalIPAM(tmp_path, "not-a-cidr")
    for bad in ("", "../etc", "a/b", ".hidden"):
        with pytest.raises(ValueError):
            check_sandbox_id(bad)
    assert check_sandbox_id("0123abcdef") == "0123abcdef"
