"""Node lifecycle and taint eviction logic: heartbeat grace, Unknown conditions, taints, tolerations."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from kubelite.client.controller import Requeue
from kubelite.client.errors import ApiError
from kubelite.client.store import key_of
from kubelite.controllers.nodelifecycle import (
    LEASE_NAMESPACE,
    MONITOR_KEY,
    NOT_READY,
    UNREACHABLE,
    NodeHealth,
    NodeLifecycleController,
    TaintEvictionController,
    all_zones_fully_disrupted,
    desired_taints,
    mark_unknown,
    matching_tolerations,
    min_toleration_seconds,
    tolerates,
)

Obj = dict[str, Any]
NOW = "2025-01-01T00:00:00Z"


class FakeClient:
    """Records writes; stands in for ApiClient where a controller is driven by hand."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    async def update(self, resource: Any, obj: Obj, namespace: str | None = None, **_: Any) -> Obj:
        self.calls.append(("update", copy.deepcopy(obj)))
        return obj

    async def update_status(self, resource: Any, obj: Obj, namespace: str | None = None) -> Obj:
        self.calls.append(("update_status", copy.deepcopy(obj)))
        return obj

    async def patch(self, resource: Any, name: str, patch: Any, namespace: str | None = None, **_: Any) -> Obj:
        self.calls.append(("patch", (name, patch)))
        return {}

    async def delete(self, resource: Any, name: str, namespace: str | None = None, **_: Any) -> Obj:
        self.calls.append(("delete", name))
        return {}

    async def create(self, resource: Any, obj: Obj, namespace: str | None = None, **_: Any) -> Obj:
        if obj.get("kind") != "Event":
            self.calls.append(("create", obj))
        return {**obj, "metadata": {**obj["metadata"], "name": obj["metadata"].get("name", "x")}}

    def of(self, verb: str) -> list[Any]:
        return [arg for name, arg in self.calls if name == verb]


def node(name: str = "n1", ready: str | None = "True", *, taints: list[Obj] | None = None,
         heartbeat: str = NOW, zone: str = "", **conditions: str) -> Obj:
    conds = [{"type": t, "status": s, "lastHeartbeatTime": heartbeat} for t, s in conditions.items()]
    if ready is not None:
        conds.append({"type": "Ready", "status": ready, "reason": "KubeletReady", "lastHeartbeatTime": heartbeat,
                      "lastTransitionTime": NOW})
    labels = {"topology.kubernetes.io/zone": zone} if zone else {}
    return {"metadata": {"name": name, "labels": labels, "creationTimestamp": NOW, "resourceVersion": "1"},
            "spec": {"taints": taints} if taints else {}, "status": {"conditions": conds}}


def keys(taints: list[Obj]) -> set[tuple[str, str]]:
    return {(t["key"], t["effect"]) for t in taints}


def test_mark_unknown_sets_every_monitored_condition() -> None:
    n = node(ready="True", MemoryPressure="False")
    assert mark_unknown(n, "later")
    by_type = {c["type"]: c for c in n["status"]["conditions"]}
    assert by_type["Ready"]["status"] == "Unknown"
    assert by_type["Ready"]["reason"] == "NodeStatusUnknown"
    assert by_type["Ready"]["message"] == "Kubelet stopped posting node status."
    assert by_type["Ready"]["lastTransitionTime"] == "later"
    assert by_type["Ready"]["lastHeartbeatTime"] == NOW
    assert by_type["MemoryPressure"]["status"] == "Unknown"
    assert by_type["DiskPressure"]["reason"] == "NodeStatusNeverUpdated"
    assert by_type["PIDPressure"]["lastHeartbeatTime"] == NOW
    assert not mark_unknown(n, "even later")


def test_taints_follow_conditions() -> None:
    assert keys(desired_taints(node(ready="Unknown"), True, NOW)) == {(UNREACHABLE, "NoSchedule"),
                                                                      (UNREACHABLE, "NoExecute")}
    assert keys(desired_taints(node(ready="False"), True, NOW)) == {(NOT_READY, "NoSchedule"), (NOT_READY, "NoExecute")}
    assert keys(desired_taints(node(ready="False"), False, NOW)) == {(NOT_READY, "NoSchedule")}
    assert desired_taints(node(ready=None), True, NOW) == []
    pressured = node(MemoryPressure="True", DiskPressure="False")
    assert keys(desired_taints(pressured, True, NOW)) == {("node.kubernetes.io/memory-pressure", "NoSchedule")}
    cordoned = node()
    cordoned["spec"]["unschedulable"] = True
    assert keys(desired_taints(cordoned, True, NOW)) == {("node.kubernetes.io/unschedulable", "NoSchedule")}


def test_taints_keep_foreign_and_existing_ones() -> None:
    mine = {"key": UNREACHABLE, "effect": "NoExecute", "timeAdded": "earlier"}
    user = {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}
    stale = {"key": NOT_READY, "effect": "NoExecute", "timeAdded": "earlier"}
    taints = desired_taints(node(ready="Unknown", taints=[user, mine, stale]), True, NOW)
    assert taints[:2] == [user, mine]
    assert taints[2] == {"key": UNREACHABLE, "effect": "NoSchedule", "timeAdded": NOW}
    assert len(taints) == 3
    healthy = node(taints=[user, mine, stale])
    assert desired_taints(healthy, True, NOW) == [user]
    settled = node(ready="Unknown", taints=taints)
    assert desired_taints(settled, True, NOW) == taints


def test_full_disruption_needs_every_zone_down() -> None:
    assert not all_zones_fully_disrupted([])
    assert all_zones_fully_disrupted([node("a", "Unknown"), node("b", "False", zone="z")])
    assert not all_zones_fully_disrupted([node("a", "Unknown", zone="z1"), node("b", "True", zone="z2")])
    assert not all_zones_fully_disrupted([node("a", "Unknown"), node("b", "True")])


def test_toleration_matching() -> None:
    taint = {"key": UNREACHABLE, "effect": "NoExecute"}
    assert tolerates({"operator": "Exists"}, taint)
    assert tolerates({"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute"}, taint)
    assert tolerates({"key": UNREACHABLE}, taint)
    assert not tolerates({"key": UNREACHABLE, "value": "x"}, taint)
    assert not tolerates({"key": UNREACHABLE, "operator": "Exists", "effect": "NoSchedule"}, taint)
    assert not tolerates({"key": NOT_READY, "operator": "Exists"}, taint)
    assert not tolerates({"key": UNREACHABLE, "operator": "Gt"}, taint)
    valued = {"key": "k", "value": "v", "effect": "NoExecute"}
    assert tolerates({"key": "k", "operator": "Equal", "value": "v"}, valued)
    assert matching_tolerations([taint, valued], [{"key": "k", "value": "v"}]) is None
    first = {"operator": "Exists", "tolerationSeconds": 10}
    assert matching_tolerations([taint, valued], [first, {"key": "k", "value": "v"}]) == [first, first]


def test_min_toleration_seconds() -> None:
    assert min_toleration_seconds([]) == 0
    assert min_toleration_seconds([{"operator": "Exists"}]) is None
    assert min_toleration_seconds([{"tolerationSeconds": 30}, {"tolerationSeconds": 10}, {}]) == 10
    assert min_toleration_seconds([{"tolerationSeconds": 30}, {"tolerationSeconds": -5}]) == 0


def test_health_probe_moves_only_on_new_heartbeats() -> None:
    health = NodeHealth("t1", "r1", 100.0)
    health.observe("t1", "r1", 150.0)
    assert health.probe == 100.0
    health.observe("t1", "r2", 160.0)
    assert health.probe == 160.0
    health.observe("t1", None, 170.0)
    assert health.probe == 160.0
    health.observe("t2", None, 180.0)
    assert health.probe == 180.0


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def lease(name: str, renew: str) -> Obj:
    return {"metadata": {"name": name, "namespace": LEASE_NAMESPACE}, "spec": {"renewTime": renew}}


async def test_monitor_marks_only_silent_nodes_after_the_grace_period() -> None:
    client, clock = FakeClient(), Clock(1000.0)
    controller = NodeLifecycleController(client, grace_period=40, startup_grace_period=60,  # type: ignore[arg-type]
                                         clock=clock)
    assert len(controller.queue) == 1  # the health pass is queued from the start
    for name in ("quiet", "leased", "new"):
        controller.nodes.store.put(node(name, ready=None if name == "new" else "True"))
    controller.leases.store.put(lease("leased", "r0"))
    await controller.monitor()
    assert client.of("update_status") == []
    clock.now += 30
    controller.leases.store.put(lease("leased", "r1"))
    await controller.monitor()
    clock.now += 15
    await controller.monitor()
    assert [n["metadata"]["name"] for n in client.of("update_status")] == ["quiet"]
    clock.now += 30
    controller.nodes.store.put(client.of("update_status")[0])
    await controller.monitor()
    marked = [n["metadata"]["name"] for n in client.of("update_status")]
    assert marked == ["quiet", "leased"]
    created = 1735689600.0  # NOW: a node that never posted status counts from creation, with the startup grace
    clock.now = created + 59
    await controller.monitor()
    assert "new" not in [n["metadata"]["name"] for n in client.of("update_status")]
    clock.now = created + 61
    await controller.monitor()
    never = [n for n in client.of("update_status") if n["metadata"]["name"] == "new"][0]
    assert {c["reason"] for c in never["status"]["conditions"]} == {"NodeStatusNeverUpdated"}
    await controller.recorder.close()


async def test_reconcile_taints_node_and_marks_pods_not_ready() -> None:
    client = FakeClient()
    controller = NodeLifecycleController(client)  # type: ignore[arg-type]
    controller.nodes.store.put(node("n1", ready="Unknown"))
    pod = {"metadata": {"name": "p", "namespace": "d"}, "spec": {"nodeName": "n1"},
           "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    controller.pods.store.put(pod)
    assert await controller.reconcile("n1") is None
    assert keys(client.of("update")[0]["spec"]["taints"]) == {(UNREACHABLE, "NoSchedule"), (UNREACHABLE, "NoExecute")}
    name, patch = client.of("patch")[0]
    assert name == "p" and patch["status"]["conditions"][0]["status"] == "False"
    assert isinstance(await controller.reconcile(MONITOR_KEY), Requeue)
    await controller.recorder.close()


def bound_pod(tolerations: list[Obj] | None) -> Obj:
    return {"metadata": {"name": "p", "namespace": "d", "uid": "u1"},
            "spec": {"nodeName": "n1", "tolerations": tolerations or []}}


@pytest.mark.parametrize(("tolerations", "after"), [
    (None, 0.0),
    ([{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5}], 5.0),
    ([{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute"}], None),
])
async def test_taint_eviction_timing(tolerations: list[Obj] | None, after: float | None) -> None:
    client, clock = FakeClient(), Clock(0.0)
    controller = TaintEvictionController(client, clock=clock)  # type: ignore[arg-type]
    controller.nodes.store.put(node("n1", "Unknown", taints=[{"key": UNREACHABLE, "effect": "NoExecute"}]))
    pod = bound_pod(tolerations)
    controller.pods.store.put(pod)
    result = await controller.reconcile(key_of(pod))
    if after is None:
        assert result is None and client.of("delete") == []
    elif after == 0:
        assert result is None and client.of("delete") == ["p"]
        assert client.of("patch")[0][1]["status"]["conditions"][0]["reason"] == "DeletionByTaintManager"
    else:
        assert isinstance(result, Requeue) and result.after == after
        clock.now = after - 1
        again = await controller.reconcile(key_of(pod))
        assert isinstance(again, Requeue) and again.after == 1
        clock.now = after
        assert await controller.reconcile(key_of(pod)) is None
        assert client.of("delete") == ["p"]
    await controller.recorder.close()


async def test_taint_eviction_cancelled_when_taint_goes() -> None:
    client, clock = FakeClient(), Clock(0.0)
    controller = TaintEvictionController(client, clock=clock)  # type: ignore[arg-type]
    tainted = node("n1", "Unknown", taints=[{"key": UNREACHABLE, "effect": "NoExecute"}])
    controller.nodes.store.put(tainted)
    pod = bound_pod([{"key": UNREACHABLE, "operator": "Exists", "tolerationSeconds": 5}])
    controller.pods.store.put(pod)
    await controller.reconcile(key_of(pod))
    assert key_of(pod) in controller.scheduled
    controller.nodes.store.put(node("n1"))
    clock.now = 10
    assert await controller.reconcile(key_of(pod)) is None
    assert client.of("delete") == [] and controller.scheduled == {}
    await controller.recorder.close()


async def test_api_errors_other_than_not_found_propagate() -> None:
    class Failing(FakeClient):
        async def delete(self, resource: Any, name: str, namespace: str | None = None, **_: Any) -> Obj:
            raise ApiError({"code": 500, "reason": "InternalError"})

    controller = TaintEvictionController(Failing(), clock=Clock(0.0))  # type: ignore[arg-type]
    controller.nodes.store.put(node("n1", "Unknown", taints=[{"key": UNREACHABLE, "effect": "NoExecute"}]))
    controller.pods.store.put(bound_pod(None))
    with pytest.raises(ApiError):
        await controller.reconcile("d/p")
    await controller.recorder.close()
