"""Service IP allocation keeps the low band of the range for fixed addresses, as Kubernetes does."""

from __future__ import annotations

import ipaddress

from kubelite.apiserver.allocators import ServiceAllocator


def test_dynamic_ips_avoid_the_static_band() -> None:
    allocator = ServiceAllocator("10.43.0.0/16")
    assert allocator.static_band == 256
    picked = [ipaddress.ip_address(allocator._new_ip()) for _ in range(500)]
    assert all(ip >= ipaddress.ip_address("10.43.1.0") for ip in picked)


def test_a_full_upper_range_falls_back_to_the_band() -> None:
    allocator = ServiceAllocator("10.96.0.0/28")
    network = allocator.network
    allocator.ips = {str(network.network_address + i) for i in range(2, 15) if i != 5}
    assert allocator._new_ip() == "10.96.0.5"
