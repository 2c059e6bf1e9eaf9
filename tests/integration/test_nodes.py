"""Hollow nodes and the node controllers (run here, with short periods) against a real `kubelite server`."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from kubelite.client import ApiClient, ApiError, Controller, SharedInformerFactory
from kubelite.client.resources import DEPLOYMENTS, HORIZONTALPODAUTOSCALERS, NAMESPACES, NODES, PODS
from kubelite.controllers.horizontalpodautoscaler import HorizontalPodAutoscalerController
from kubelite.controllers.nodeipam import NodeIpamController
from kubelite.controllers.nodelifecycle import UNREACHABLE, NodeLifecycleController, TaintEvictionController
from kubelite.kubelet.hollow import fleet_names, run_hollow_nodes
from tests.e2e.conftest import Cluster

Obj = dict[str, Any]
GRACE = 3.0
CLUSTER_CIDR = "10.42.0.0/22"
"""Room for four node subnets: the fourth node must get exactly the one left."""
TOLERATION_SECONDS = 5
FAST = {"lease_interval": 0.5, "status_interval": 10.0}
"""Within the grace period only the Lease shows a kubelet is alive (as with upstream's 10 s and 5 min)."""



@contextlib.asynccontextmanager
async def controllers(*built: Controller) -> AsyncIterator[None]:
    """Run controllers until the block ends."""
    stop = asyncio.Event()
    tasks = [asyncio.create_task(c.run(stop)) for c in built]
    try:
        yield
        for task in tasks:
            assert not task.done(), f"controller ended early: {task}"
    finally:
        stop.set()
        await asyncio.gather(*tasks)


@contextlib.asynccontextmanager
async def hollow(server: Cluster, count: int, prefix: str) -> AsyncIterator[asyncio.Task[None]]:
    """Run hollow nodes until the block ends (or the caller cancels the task)."""
    task = asyncio.create_task(run_hollow_nodes(str(server.kubeconfig), fleet_names(prefix, count), **FAST))
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def eventually(check: Callable[[], Awaitable[Any]], within: float = 15.0, what: str = "") -> Any:
    """Poll check() until it returns something truthy without raising; fail with the last answer or error."""
    deadline = time.monotonic() + within
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = await check()
            if last:
                return last
        except (ApiError, AssertionError, KeyError) as exc:
            last = exc
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}: last saw {last!r}")


def ready(obj: Obj) -> str:
    return next((c["status"] for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == "Ready"), "")


def pod(name: str, node: str, tolerations: list[Obj] | None = None) -> Obj:
    spec: Obj = {"nodeName": node, "containers": [{"name": "app", "image": "busybox"}]}
    if tolerations is not None:
        spec["tolerations"] = tolerations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


async def test_hollow_nodes_lifecycle_ipam_and_eviction(server: Cluster, client: ApiClient) -> None:
    ns = "nodes-test"
    await client.create(NAMESPACES, {"metadata": {"name": ns}})
    informers = SharedInformerFactory(client)
    lifecycle = NodeLifecycleController(client, informers, grace_period=GRACE, monitor_period=0.5)
    eviction = TaintEvictionController(client, informers)
    async with controllers(lifecycle, eviction), hollow(server, 3, "hollow"):
        async with controllers(NodeIpamController(client, cluster_cidr=CLUSTER_CIDR)):
            async def registered() -> list[Obj]:
                nodes = [await client.get(NODES, f"hollow-{i}") for i in range(3)]
                return nodes if all(ready(n) == "True" and n["spec"].get("podCIDR") for n in nodes) else []

            nodes = await eventually(registered, what="3 Ready hollow nodes with podCIDRs")
        cidrs = [n["spec"]["podCIDR"] for n in nodes]
        assert len(set(cidrs)) == 3
        for node, cidr in zip(nodes, cidrs, strict=True):
            assert node["spec"]["podCIDRs"] == [cidr]
            assert ipaddress.ip_network(cidr).subnet_of(ipaddress.ip_network(CLUSTER_CIDR))
            assert ipaddress.ip_network(cidr).prefixlen == 24
            assert node["status"]["nodeInfo"]["kubeletVersion"] == "v1.33.0"
            assert node["metadata"]["labels"]["kubernetes.io/hostname"] == node["metadata"]["name"]
            assert not [t for t in node["spec"].get("taints") or [] if t["key"].startswith("node.kubernetes.io/")]

        # Lease renewals alone keep nodes healthy: their status heartbeat is rarer than the grace period.
        deadline = time.monotonic() + GRACE + 2
        while time.monotonic() < deadline:
            assert [ready(await client.get(NODES, f"hollow-{i}")) for i in range(3)] == ["True"] * 3
            await asyncio.sleep(0.3)

        # A pod bound to a hollow node runs there, with an IP from that node's podCIDR.
        await client.create(PODS, pod("web", "hollow-1"), ns)

        async def running() -> Obj:
            got = await client.get(PODS, "web", ns)
            return got if got["status"].get("phase") == "Running" and ready(got) == "True" else {}

        web = await eventually(running, what="pod web Running and Ready")
        assert ipaddress.ip_address(web["status"]["podIP"]) in ipaddress.ip_network(cidrs[1])
        assert web["status"]["containerStatuses"][0]["state"].get("running")
        assert {c["type"] for c in web["status"]["conditions"] if c["status"] == "True"} >= {
            "PodScheduled", "Initialized", "ContainersReady", "Ready"}

        # A node registers while no allocator runs; a new allocator rebuilds from the nodes before it
        # allocates (doomed-0 is listed first), so the node gets the one subnet nobody has.
        left = {str(n) for n in ipaddress.ip_network(CLUSTER_CIDR).subnets(new_prefix=24)} - set(cidrs)
        async with hollow(server, 1, "doomed") as doomed:
            await eventually(lambda: _is_ready_node(client, "doomed-0"), what="doomed-0 registered")
            async with controllers(NodeIpamController(client, cluster_cidr=CLUSTER_CIDR)):
                doomed_node = await eventually(
                    lambda: _with_cidr(client, "doomed-0"), what="doomed-0 with a podCIDR")
            assert {doomed_node["spec"]["podCIDR"]} == left
            intolerant = [{"key": UNREACHABLE, "operator": "Equal", "value": "other", "effect": "NoExecute"}]
            patient = [{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute",
                        "tolerationSeconds": TOLERATION_SECONDS}]
            for name, tolerations in (("intolerant", intolerant), ("patient", patient), ("default", None)):
                await client.create(PODS, pod(name, "doomed-0", tolerations), ns)
            for name in ("intolerant", "patient", "default"):
                await eventually(lambda name=name: _is_ready(client, name, ns), what=f"pod {name} Ready")

            # The doomed node's kubelet stops: no more Lease renewals or status updates.
            doomed.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await doomed
            stopped = time.monotonic()
            tainted = await eventually(lambda: _unreachable(client), within=GRACE + 10,
                                       what="doomed-0 Unknown with unreachable taints")
            assert time.monotonic() - stopped >= GRACE - 1
            conditions = {c["type"]: c for c in tainted["status"]["conditions"]}
            assert conditions["Ready"]["reason"] == "NodeStatusUnknown"
            assert conditions["Ready"]["message"] == "Kubelet stopped posting node status."
            assert conditions["MemoryPressure"]["status"] == "Unknown"

            # Not tolerated: evicted at once. Tolerated for N s: evicted after N s. Default 300 s: stays.
            await eventually(lambda: _deleting(client, "intolerant", ns), within=3, what="intolerant evicted")
            assert not await _deleting(client, "patient", ns)
            await eventually(lambda: _deleting(client, "patient", ns), within=TOLERATION_SECONDS + 5,
                             what="patient evicted")
            assert time.monotonic() - stopped >= GRACE + TOLERATION_SECONDS - 1.5
            evicted = await client.get(PODS, "patient", ns)
            assert any(c["type"] == "DisruptionTarget" and c["status"] == "True"
                       for c in evicted["status"]["conditions"])
            default = await client.get(PODS, "default", ns)
            assert not default["metadata"].get("deletionTimestamp")
            assert ready(default) == "False"
            assert (await client.get(PODS, "web", ns))["metadata"].get("deletionTimestamp") is None

        # The kubelet comes back: Ready again, taints gone, terminating pods finished, the survivor Ready.
        async with hollow(server, 1, "doomed"):
            async def recovered() -> bool:
                node = await client.get(NODES, "doomed-0")
                return ready(node) == "True" and not node["spec"].get("taints")

            await eventually(recovered, what="doomed-0 Ready without taints")
            for name in ("intolerant", "patient"):
                await eventually(lambda name=name: _gone(client, name, ns), what=f"{name} deleted")
            await eventually(lambda: _is_ready(client, "default", ns), what="default pod Ready again")

        # Deleting a pod on a live hollow node: the hollow kubelet finishes the graceful deletion.
        await client.delete(PODS, "web", ns)
        await eventually(lambda: _gone(client, "web", ns), what="web deleted")
    await informers.stop()


async def _is_ready_node(client: ApiClient, name: str) -> bool:
    return ready(await client.get(NODES, name)) == "True"


async def _with_cidr(client: ApiClient, name: str) -> Obj:
    node = await client.get(NODES, name)
    return node if node["spec"].get("podCIDR") else {}


async def _is_ready(client: ApiClient, name: str, ns: str) -> bool:
    return ready(await client.get(PODS, name, ns)) == "True"


async def _unreachable(client: ApiClient) -> Obj:
    node = await client.get(NODES, "doomed-0")
    taints = {(t["key"], t["effect"]) for t in node["spec"].get("taints") or []}
    wanted = {(UNREACHABLE, "NoExecute"), (UNREACHABLE, "NoSchedule")}
    return node if ready(node) == "Unknown" and taints >= wanted else {}


async def _deleting(client: ApiClient, name: str, ns: str) -> bool:
    try:
        return bool((await client.get(PODS, name, ns))["metadata"].get("deletionTimestamp"))
    except ApiError as exc:
        return exc.code == 404


async def _gone(client: ApiClient, name: str, ns: str) -> bool:
    try:
        await client.get(PODS, name, ns)
    except ApiError as exc:
        return exc.code == 404
    return False


def deployment(name: str, replicas: int) -> Obj:
    labels = {"app": name}
    container = {"name": "app", "image": "busybox", "resources": {"requests": {"cpu": "100m"}}}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}}}}


def hpa(name: str, target: str, low: int, high: int) -> Obj:
    metric = {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization",
                                                                       "averageUtilization": 50}}}
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": name},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
                     "minReplicas": low, "maxReplicas": high, "metrics": [metric]}}


def conditions_of(obj: Obj) -> dict[str, Obj]:
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}


async def test_hpa_without_metrics_server(client: ApiClient) -> None:
    ns = "hpa-test"
    await client.create(NAMESPACES, {"metadata": {"name": ns}})
    await client.create(DEPLOYMENTS, deployment("web", 2), ns)
    await client.create(DEPLOYMENTS, deployment("big", 7), ns)
    for name, target, low, high in (("web", "web", 1, 5), ("big", "big", 1, 4), ("lost", "missing", 1, 3)):
        await client.create(HORIZONTALPODAUTOSCALERS, hpa(name, target, low, high), ns)
    controller = HorizontalPodAutoscalerController(client, sync_period=0.5)
    async with controllers(controller):
        async def inactive() -> Obj:
            got = await client.get(HORIZONTALPODAUTOSCALERS, "web", ns)
            return got if conditions_of(got).get("ScalingActive", {}).get("status") == "False" else {}

        web = await eventually(inactive, what="HPA web ScalingActive False")
        conditions = conditions_of(web)
        assert conditions["ScalingActive"]["reason"] == "FailedGetResourceMetric"
        assert "unable to fetch metrics from resource metrics API" in conditions["ScalingActive"]["message"]
        assert conditions["AbleToScale"]["status"] == "True"
        assert conditions["AbleToScale"]["reason"] == "SucceededGetScale"
        assert web["status"]["currentReplicas"] == 2

        # Above maxReplicas needs no metrics: the target is scaled down to the maximum through /scale.
        async def capped() -> Obj:
            got = await client.get(HORIZONTALPODAUTOSCALERS, "big", ns)
            return got if got["status"].get("desiredReplicas") == 4 else {}

        big = await eventually(capped, what="HPA big capped at 4")
        assert big["status"].get("lastScaleTime")
        assert (await client.get(DEPLOYMENTS, "big", ns))["spec"]["replicas"] == 4

        lost = await eventually(lambda: _condition(client, "lost", ns, "AbleToScale"), what="HPA lost condition")
        assert lost["status"] == "False" and lost["reason"] == "FailedGetScale"

        await asyncio.sleep(1.5)  # several more syncs: still no scaling, still running
        assert (await client.get(DEPLOYMENTS, "web", ns))["spec"]["replicas"] == 2


async def _condition(client: ApiClient, name: str, ns: str, type_: str) -> Obj:
    return conditions_of(await client.get(HORIZONTALPODAUTOSCALERS, name, ns)).get(type_, {})
