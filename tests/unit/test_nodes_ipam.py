"""Node IPAM: cutting the cluster CIDR into node subnets, and the allocator's rebuild and release."""

from __future__ import annotations

import pytest

from kubelite.client.controller import Requeue
from kubelite.controllers.nodeipam import CidrFullError, CidrSet, NodeIpamController, cidr_sets, pod_cidrs
from tests.unit.test_nodes_lifecycle import FakeClient


def test_cidr_set_round_robin_and_reuse() -> None:
    cidrs = CidrSet("10.42.0.0/22", 24)
    assert cidrs.size == 4
    assert [cidrs.allocate() for _ in range(3)] == ["10.42.0.0/24", "10.42.1.0/24", "10.42.2.0/24"]
    cidrs.release("10.42.1.0/24")
    assert cidrs.allocate() == "10.42.3.0/24"
    assert cidrs.allocate() == "10.42.1.0/24"
    with pytest.raises(CidrFullError):
        cidrs.allocate()
    assert len(cidrs) == 4


def test_cidr_set_occupy() -> None:
    cidrs = CidrSet("10.42.0.0/16", 24)
    assert cidrs.occupy("10.42.0.0/24")
    assert not cidrs.occupy("10.43.0.0/24")
    assert not cidrs.occupy("10.42.0.0/25")
    assert not cidrs.occupy("not-a-cidr")
    assert cidrs.allocate() == "10.42.1.0/24"
    assert cidrs.index_of("10.42.255.0/24") == 255


def test_cidr_sets_dual_stack_and_limits() -> None:
    v4, v6 = cidr_sets("10.42.0.0/16, fd00:42::/56", 24, 64)
    assert v4.allocate() == "10.42.0.0/24"
    assert v6.allocate() == "fd00:42::/64"
    with pytest.raises(ValueError):
        cidr_sets("10.42.0.0/16,10.50.0.0/16", 24, 64)
    with pytest.raises(ValueError):
        CidrSet("10.0.0.0/8", 25)
    with pytest.raises(ValueError):
        CidrSet("10.42.0.0/16", 12)


def test_pod_cidrs_of_old_and_new_writers() -> None:
    assert pod_cidrs({"spec": {"podCIDR": "10.42.0.0/24"}}) == ["10.42.0.0/24"]
    assert pod_cidrs({"spec": {"podCIDR": "a", "podCIDRs": ["a", "b"]}}) == ["a", "b"]
    assert pod_cidrs({}) == []


def node(name: str, cidr: str = "") -> dict:
    spec = {"podCIDR": cidr, "podCIDRs": [cidr]} if cidr else {}
    return {"metadata": {"name": name, "resourceVersion": "1"}, "spec": spec}


async def test_allocator_rebuilds_assigns_and_frees() -> None:
    client = FakeClient()
    controller = NodeIpamController(client, cluster_cidr="10.42.0.0/23")  # type: ignore[arg-type]
    controller.nodes.store.put(node("old", "10.42.0.0/24"))
    controller.nodes.store.put(node("new"))
    await controller.reconcile("new")
    assert client.of("update")[0]["spec"] == {"podCIDR": "10.42.1.0/24", "podCIDRs": ["10.42.1.0/24"]}
    await controller.reconcile("old")
    controller.nodes.store.put(node("third"))
    assert isinstance(await controller.reconcile("third"), Requeue)
    assert controller.owned["new"] == ["10.42.1.0/24"] and "third" not in controller.owned
    controller.nodes.store.delete("old")
    await controller.reconcile("old")
    await controller.reconcile("third")
    assert client.of("update")[-1]["spec"]["podCIDR"] == "10.42.0.0/24"
    assert controller.owned == {"new": ["10.42.1.0/24"], "third": ["10.42.0.0/24"]}
    await controller.recorder.close()


async def test_failed_update_gives_the_subnet_back() -> None:
    class Conflicting(FakeClient):
        async def update(self, *args: object, **kwargs: object) -> dict:
            raise RuntimeError("conflict")

    controller = NodeIpamController(Conflicting(), cluster_cidr="10.42.0.0/24")  # type: ignore[arg-type]
    controller.nodes.store.put(node("n"))
    with pytest.raises(RuntimeError):
        await controller.reconcile("n")
    assert controller.owned == {} and len(controller.sets[0]) == 0
