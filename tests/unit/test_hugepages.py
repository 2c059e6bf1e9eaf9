"""Huge pages as Kubernetes has them: the node's capacity per page size, pod validation, container limits per page
size (0 for sizes not asked for), and the page size of a HugePages emptyDir (the OCI spec's limits are tested with
the bundle)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubelite.api.kinds.podspec import default_pod_spec, validate_pod_spec
from kubelite.kubelet.containers import linux_resources, page_size
from kubelite.kubelet.node import Machine, hugepages
from kubelite.kubelet.volumes import MountError, huge_page_size

SIZES = ("hugepages-1Gi", "hugepages-2Mi")


def fake_sysfs(root: Path, pages: dict[int, int]) -> Path:
    for size_kb, count in pages.items():
        (root / f"hugepages-{size_kb}kB").mkdir(parents=True)
        (root / f"hugepages-{size_kb}kB" / "nr_hugepages").write_text(f"{count}\n")
    return root


def test_capacity_has_each_page_size_and_allocatable_memory_leaves_them_out(tmp_path: Path) -> None:
    sysfs = fake_sysfs(tmp_path / "hugepages", {2048: 4, 1048576: 0})
    assert hugepages(sysfs) == {"hugepages-1Gi": 0, "hugepages-2Mi": 8 << 20}
    machine = Machine(tmp_path / "data", hugepages_sysfs=sysfs)
    plain = Machine(tmp_path / "data", hugepages_sysfs=fake_sysfs(tmp_path / "none", {2048: 0, 1048576: 0}))
    capacity, allocatable = machine.resources()["capacity"], machine.allocatable()
    assert capacity["hugepages-2Mi"] == "8Mi" and capacity["hugepages-1Gi"] == "0"
    assert allocatable["hugepages-2Mi"] == "8Mi"
    memory = int(allocatable["memory"].removesuffix("Ki"))
    assert memory == int(plain.allocatable()["memory"].removesuffix("Ki")) - 8 * 1024
    without = Machine(tmp_path / "data", hugepages_sysfs=tmp_path / "absent")
    assert "hugepages-2Mi" not in without.resources()["capacity"]


def causes(resources: dict) -> list[str]:
    pod_spec = {"containers": [{"name": "c", "image": "busybox", "resources": resources}]}
    default_pod_spec(pod_spec)
    return [c.message for c in validate_pod_spec(pod_spec, "spec")]


def test_pods_ask_for_whole_pages_equal_in_requests_and_limits_with_cpu_or_memory() -> None:
    pages = {"hugepages-2Mi": "4Mi", "memory": "64Mi"}
    assert causes({"limits": pages, "requests": pages}) == []
    assert any("must be equal to hugepages-2Mi limit of 4Mi" in m
               for m in causes({"limits": pages, "requests": {**pages, "hugepages-2Mi": "2Mi"}}))
    assert any("Limit must be set for non overcommitable resources" in m
               for m in causes({"requests": {"hugepages-2Mi": "2Mi", "memory": "1Mi"}}))
    assert any("3Mi is not positive integer multiple of 2Mi" in m
               for m in causes({"limits": {"hugepages-2Mi": "3Mi", "memory": "1Mi"},
                                "requests": {"hugepages-2Mi": "3Mi", "memory": "1Mi"}}))
    assert any("HugePages require cpu or memory" in m
               for m in causes({"limits": {"hugepages-2Mi": "2Mi"}, "requests": {"hugepages-2Mi": "2Mi"}}))
    assert any("must be equal to example.com/gpu limit of 1" in m
               for m in causes({"limits": {"example.com/gpu": "1"}, "requests": {"example.com/gpu": "0"}}))
    assert causes({"limits": {"cpu": "1"}, "requests": {"cpu": "500m"}}) == []


def test_containers_get_a_limit_for_every_page_size_of_the_node() -> None:
    assert page_size("hugepages-2Mi") == "2MB" and page_size("hugepages-1Gi") == "1GB"
    assert page_size("hugepages-64Ki") == "64KB"
    pod = {"status": {"qosClass": "Guaranteed"}}
    asking = {"name": "c", "resources": {"limits": {"hugepages-2Mi": "4Mi", "memory": "8Mi"}}}
    assert linux_resources(pod, asking, 1 << 30, SIZES).hugepage_limits == {"1GB": 0, "2MB": 4 << 20}
    assert linux_resources(pod, {"name": "c"}, 1 << 30, SIZES).hugepage_limits == {"1GB": 0, "2MB": 0}


def pod_asking(*sizes: str) -> dict:
    limits = {f"hugepages-{size}": size for size in sizes}
    return {"spec": {"containers": [{"name": "c", "resources": {"limits": limits, "requests": limits}}]}}


def test_a_huge_pages_empty_dir_takes_its_page_size_from_the_medium_or_the_pod() -> None:
    assert huge_page_size(pod_asking("2Mi"), "HugePages") == "2Mi"
    assert huge_page_size(pod_asking("2Mi", "1Gi"), "HugePages-1Gi") == "1Gi"
    with pytest.raises(MountError, match="multiple page sizes"):
        huge_page_size(pod_asking("2Mi", "1Gi"), "HugePages")
    with pytest.raises(MountError, match="no resource request for huge pages"):
        huge_page_size(pod_asking(), "HugePages")
    with pytest.raises(MountError, match="no resource request for huge pages"):
        huge_page_size(pod_asking("2Mi"), "HugePages-1Gi")
