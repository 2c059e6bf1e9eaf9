"""The scheduler in-process against a real `kubelite server`: binding, Unschedulable reporting, retry, preemption."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubelite.client import ApiClient
from kubelite.client.resources import EVENTS, LEASES, NAMESPACES, NODES, PODS
from kubelite.scheduler.app import run_scheduler
from tests.e2e.conftest import Cluster

Obj = dict[str, Any]
SCHEDULER = "integration-scheduler"
"""A profile of its own, so the scheduler process `kubelite server` supervises leaves these pods alone."""
IMPOSSIBLE = ("0/3 nodes are available: 1 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }, "
              "2 Insufficient cpu. preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling.")



@pytest.fixture
async def scheduler(server: Cluster, tmp_path: Path) -> AsyncIterator[None]:
    config = tmp_path / "scheduler.yaml"
    config.write_text(yaml.safe_dump({
        "apiVersion": "kubescheduler.config.k8s.io/v1", "kind": "KubeSchedulerConfiguration",
        "podInitialBackoffSeconds": 1, "podMaxBackoffSeconds": 2,
        "leaderElection": {"leaderElect": True, "resourceName": SCHEDULER},
        "profiles": [{"schedulerName": SCHEDULER}],
    }))
    task = asyncio.create_task(run_scheduler(str(server.kubeconfig), str(config), leader_elect=True))
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _node(name: str, cpu: str, labels: dict[str, str] | None = None, taints: list[Obj] | None = None) -> Obj:
    resources = {"cpu": cpu, "memory": "8Gi", "pods": "20"}
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **(labels or {})}},
            "spec": {"taints": taints or []},
            "status": {"capacity": resources, "allocatable": resources,
                       "conditions": [{"type": "Ready", "status": "True"}]}}


def _pod(name: str, cpu: str, **spec: Any) -> Obj:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"schedulerName": SCHEDULER, **spec,
                     "containers": [{"name": "c", "image": "busybox",
                                     "resources": {"requests": {"cpu": cpu, "memory": "100Mi"}}}]}}


async def _create_node(client: ApiClient, node: Obj) -> None:
    """Create a Node with its status (written through the status subresource if create dropped it)."""
    created = await client.create(NODES, node)
    if not created.get("status", {}).get("allocatable"):
        await client.update_status(NODES, {**created, "status": node["status"]})


async def _eventually(check: Any, within: float = 15.0) -> Any:
    """Poll an async check until it returns something truthy; fail after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met in {within}s")
        await asyncio.sleep(0.1)


async def _node_of(client: ApiClient, ns: str, name: str) -> str:
    return (await client.get(PODS, name, ns)).get("spec", {}).get("nodeName", "")


async def test_binds_by_resources_taints_and_selectors_then_retries_impossible_pod(
        client: ApiClient, scheduler: None) -> None:
    ns = "sched-it"
    await client.create(NAMESPACES, {"metadata": {"name": ns}})
    for node in (_node("node-a", "2", {"disktype": "ssd"}), _node("node-b", "2"),
                 _node("node-c", "2", taints=[{"key": "node-role.kubernetes.io/control-plane",
                                               "effect": "NoSchedule"}])):
        await _create_node(client, node)

    await client.create(PODS, _pod("ssd", "500m", nodeSelector={"disktype": "ssd"}), ns)
    await client.create(PODS, _pod("control-plane", "100m", nodeSelector={"kubernetes.io/hostname": "node-c"},
                                   tolerations=[{"key": "node-role.kubernetes.io/control-plane",
                                                 "operator": "Exists", "effect": "NoSchedule"}]), ns)
    for i in range(4):
        await client.create(PODS, _pod(f"filler-{i}", "700m"), ns)
    await client.create(PODS, _pod("impossible", "3"), ns)

    assert await _eventually(lambda: _node_of(client, ns, "ssd")) == "node-a"
    assert await _eventually(lambda: _node_of(client, ns, "control-plane")) == "node-c"
    placed = [await _eventually(lambda i=i: _node_of(client, ns, f"filler-{i}")) for i in range(4)]
    assert set(placed) <= {"node-a", "node-b"}, "the tainted node takes only tolerating pods"
    assert placed.count("node-a") <= 2 and placed.count("node-b") <= 2, "2 cpu hold at most two 700m pods"

    async def unschedulable() -> Obj | None:
        pod = await client.get(PODS, "impossible", ns)
        return next((c for c in pod.get("status", {}).get("conditions") or []
                     if c["type"] == "PodScheduled" and c["status"] == "False"), None)
    condition = await _eventually(unschedulable)
    assert condition["reason"] == "Unschedulable"
    assert condition["message"] == IMPOSSIBLE

    async def failed_event() -> Obj | None:
        events = (await client.list(EVENTS, ns))["items"]
        return next((e for e in events if e["involvedObject"]["name"] == "impossible"
                     and e["reason"] == "FailedScheduling"), None)
    event = await _eventually(failed_event)
    assert event["type"] == "Warning" and event["message"] == IMPOSSIBLE
    assert event["source"]["component"] == SCHEDULER

    async def scheduled_event() -> Obj | None:
        events = (await client.list(EVENTS, ns))["items"]
        return next((e for e in events if e["involvedObject"]["name"] == "ssd" and e["reason"] == "Scheduled"), None)
    event = await _eventually(scheduled_event)
    assert event["type"] == "Normal" and event["message"] == f"Successfully assigned {ns}/ssd to node-a"

    lease = await client.get(LEASES, SCHEDULER, "kube-system")
    assert lease["spec"]["holderIdentity"], "the scheduler leads through its own Lease"

    assert await _node_of(client, ns, "impossible") == ""
    await _create_node(client, _node("node-big", "4"))
    assert await _eventually(lambda: _node_of(client, ns, "impossible"), within=10) == "node-big"


async def test_higher_priority_pod_preempts_and_is_nominated(client: ApiClient, scheduler: None) -> None:
    ns = "sched-preempt"
    await client.create(NAMESPACES, {"metadata": {"name": ns}})
    await _create_node(client, _node("node-p", "1", {"pool": "preempt"}))
    pool = {"pool": "preempt"}
    await client.create(PODS, _pod("low", "800m", nodeSelector=pool, priority=0, terminationGracePeriodSeconds=0), ns)
    assert await _eventually(lambda: _node_of(client, ns, "low")) == "node-p"
    await client.create(PODS, _pod("high", "800m", nodeSelector=pool, priority=1000), ns)

    async def preempted() -> Obj | None:
        events = (await client.list(EVENTS, ns))["items"]
        return next((e for e in events if e["involvedObject"]["name"] == "low" and e["reason"] == "Preempted"), None)
    event = await _eventually(preempted)
    assert event["message"].endswith("on node node-p")

    async def low_gone() -> bool:
        return not any(p["metadata"]["name"] == "low" for p in (await client.list(PODS, ns))["items"])
    await _eventually(low_gone)
    assert await _eventually(lambda: _node_of(client, ns, "high")) == "node-p"
    high = await client.get(PODS, "high", ns)
    assert high["status"].get("nominatedNodeName") == "node-p"
