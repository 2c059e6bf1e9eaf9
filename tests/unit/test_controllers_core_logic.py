"""Pure logic of the core controllers: quantities and quota scopes, endpoint subsets, budgets, TTL expiry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import Any

import pytest

from kubelite.api.quantity import format_quantity
from kubelite.controllers.disruption import scaled
from kubelite.controllers.endpoints import in_endpoints, subsets, target_port
from kubelite.controllers.resourcequota import Amount, in_scope, pod_quantities
from kubelite.controllers.ttlafterfinished import seconds_left

Obj = dict[str, Any]


@pytest.mark.parametrize(("value", "binary", "text"), [
    (Fraction(0), False, "0"),
    (Fraction(13, 10), False, "1300m"),
    (Fraction(2000), False, "2k"),
    (Fraction(1500), True, "1500"),
    (Fraction(192 * 2**20), True, "192Mi"),
    (Fraction(2**30), True, "1Gi"),
    (Fraction(2**30), False, "1073741824"),
    (Fraction(1, 3 * 10**9), False, "1n"),
])
def test_format_quantity(value: Fraction, binary: bool, text: str) -> None:
    assert format_quantity(value, binary) == text


def test_amount_keeps_binary_suffixes() -> None:
    amount = Amount()
    for quantity in ("64Mi", "128Mi", "not a quantity"):
        amount.add(quantity)
    assert str(amount) == "192Mi"
    cpu = Amount()
    for quantity in ("100m", "1", 0.5):
        cpu.add(quantity)
    assert str(cpu) == "1600m"


def _pod(*containers: Obj, init: tuple[Obj, ...] = (), **spec: Any) -> Obj:
    return {"metadata": {"name": "p"}, "spec": {"containers": list(containers), "initContainers": list(init),
                                                **spec}}


def test_pod_quantities_take_the_larger_of_containers_and_init_containers_plus_overhead() -> None:
    small = {"resources": {"requests": {"cpu": "100m"}}}
    big_init = {"resources": {"requests": {"cpu": "1"}}}
    assert pod_quantities(_pod(small, small), "requests", "cpu") == ["100m", "100m"]
    assert pod_quantities(_pod(small, init=(big_init,)), "requests", "cpu") == ["1"]
    assert pod_quantities(_pod(small, overhead={"cpu": "10m"}), "requests", "cpu") == ["100m", "10m"]
    assert pod_quantities(_pod(small), "limits", "cpu") == []


def test_quota_scopes() -> None:
    best_effort = _pod({"name": "c"})
    burstable = _pod({"resources": {"limits": {"memory": "1Gi"}}}, activeDeadlineSeconds=10,
                     priorityClassName="high")
    assert in_scope(best_effort, "BestEffort") and not in_scope(burstable, "BestEffort")
    assert in_scope(burstable, "NotBestEffort") and in_scope(burstable, "Terminating")
    assert in_scope(best_effort, "NotTerminating") and in_scope(best_effort, "Terminating", "DoesNotExist")
    assert in_scope(burstable, "PriorityClass", "In", ["high", "low"])
    assert not in_scope(best_effort, "PriorityClass", "Exists")
    assert not in_scope(best_effort, "CrossNamespacePodAffinity")


def test_scaled_int_or_percent_rounds_up() -> None:
    assert scaled("50%", 5) == 3
    assert scaled("0%", 5) == 0
    assert scaled(2, 5) == 2


def _web_pod(name: str, ip: str, ready: bool, **meta: Any) -> Obj:
    return {"metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}", **meta},
            "spec": {"containers": [{"name": "c", "ports": [{"name": "web", "containerPort": 8080}]}]},
            "status": {"podIP": ip, "phase": "Running",
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def test_target_port_by_number_or_container_port_name() -> None:
    pod = _web_pod("a", "10.0.0.1", True)
    assert target_port({"port": 80, "targetPort": 9090}, pod) == 9090
    assert target_port({"port": 80, "targetPort": "web"}, pod) == 8080
    assert target_port({"port": 80, "targetPort": "web", "protocol": "UDP"}, pod) is None
    assert target_port({"port": 80, "targetPort": "nope"}, pod) is None


def test_subsets_group_addresses_by_ports_and_readiness() -> None:
    service = {"metadata": {"name": "svc", "namespace": "ns"},
               "spec": {"selector": {"a": "b"}, "ports": [{"name": "http", "port": 80, "targetPort": "web"}]}}
    no_named_port = _web_pod("d", "10.0.0.4", True)
    no_named_port["spec"]["containers"][0]["ports"] = []
    pods = [_web_pod("b", "10.0.0.2", False), _web_pod("a", "10.0.0.1", True),
            _web_pod("c", "10.0.0.3", True, deletionTimestamp="2030-01-01T00:00:00Z"), no_named_port]
    [subset] = subsets(service, pods)
    assert [a["ip"] for a in subset["addresses"]] == ["10.0.0.1"]
    assert [a["ip"] for a in subset["notReadyAddresses"]] == ["10.0.0.2"]
    assert subset["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP"}]
    service["spec"]["publishNotReadyAddresses"] = True
    [subset] = subsets(service, pods)
    assert [a["ip"] for a in subset["addresses"]] == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    headless = {"metadata": {"name": "h", "namespace": "ns"}, "spec": {"selector": {"a": "b"}, "clusterIP": "None"}}
    assert subsets(headless, pods[:1]) == [{"notReadyAddresses": [{"ip": "10.0.0.2", "targetRef": {
        "kind": "Pod", "namespace": "ns", "name": "b", "uid": "uid-b"}}]}]


def test_finished_pods_leave_endpoints_by_restart_policy() -> None:
    pod = _web_pod("a", "10.0.0.1", True)
    pod["status"]["phase"] = "Succeeded"
    assert in_endpoints(pod, False)
    pod["spec"]["restartPolicy"] = "OnFailure"
    assert not in_endpoints(pod, False)
    pod["status"]["phase"] = "Failed"
    assert in_endpoints(pod, False)
    pod["spec"]["restartPolicy"] = "Never"
    assert not in_endpoints(pod, False)


def test_ttl_counts_from_the_finished_condition() -> None:
    def job(ttl: int | None, finished: datetime | None) -> Obj:
        conditions = [{"type": "Complete", "status": "True",
                       "lastTransitionTime": finished.strftime("%Y-%m-%dT%H:%M:%SZ")}] if finished else []
        return {"metadata": {}, "spec": {"ttlSecondsAfterFinished": ttl}, "status": {"conditions": conditions}}
    now = datetime.now(UTC)
    assert seconds_left(job(None, now)) is None
    assert seconds_left(job(10, None)) is None
    assert 50 < (seconds_left(job(60, now)) or 0) <= 60
    assert (seconds_left(job(10, now - timedelta(seconds=30))) or 0) < 0
