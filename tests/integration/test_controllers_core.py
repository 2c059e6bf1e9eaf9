"""The core controllers in-process against a real `kubelite server` (whose own controller-manager is off):
garbage collection, namespace deletion, service accounts and root CA, endpoints and slices, quota, disruption
budgets, TTL after finished and pod GC."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import yaml

from kubelite.client import ApiClient, ApiError, Resource, is_not_found, load_kubeconfig, resource, run_controllers
from kubelite.client.resources import (
    CONFIGMAPS,
    ENDPOINTS,
    ENDPOINTSLICES,
    JOBS,
    NAMESPACES,
    NODES,
    PODDISRUPTIONBUDGETS,
    PODS,
    REPLICASETS,
    RESOURCEQUOTAS,
    SECRETS,
    SERVICEACCOUNTS,
    SERVICES,
)
from kubelite.client.timestamps import now_time
from kubelite.controllers.disruption import DisruptionController
from kubelite.controllers.endpoints import EndpointsController
from kubelite.controllers.endpointslice import CONTROLLER, EndpointSliceController
from kubelite.controllers.garbagecollector import GarbageCollector
from kubelite.controllers.namespace import NamespaceController
from kubelite.controllers.podgc import PodGC
from kubelite.controllers.resourcequota import ResourceQuotaController
from kubelite.controllers.rootcacertpublisher import RootCACertPublisher
from kubelite.controllers.serviceaccount import ServiceAccountsController
from kubelite.controllers.ttlafterfinished import TTLAfterFinishedController
from tests.e2e.conftest import Cluster

Obj = dict[str, Any]
CUSTOMRESOURCEDEFINITIONS = resource("apiextensions.k8s.io/v1", "customresourcedefinitions")
_names = itertools.count()
WAIT = 15.0


class FastGarbageCollector(GarbageCollector):
    """Discovers new resources (CRDs) every 0.5 s."""

    discovery_period = 0.5


class FastNamespaceController(NamespaceController):
    """Looks again after 1.5 s (not 8.5 s) at content held by finalizers."""

    finalizer_estimate = 1.0


class FastPodGC(PodGC):
    """Passes every 0.2 s; a node missing for 1 s counts as gone."""

    gc_period = 0.2
    quarantine = 1.0


CONTROLLERS = [FastGarbageCollector, FastNamespaceController, FastPodGC, ServiceAccountsController, RootCACertPublisher,
               EndpointsController, EndpointSliceController, ResourceQuotaController, DisruptionController,
               TTLAfterFinishedController]



@contextlib.asynccontextmanager
async def controllers_running(server: Cluster, controllers: list[Any]) -> AsyncIterator[ApiClient]:
    """A client, with the controllers running on another one until the block ends."""
    async with ApiClient(load_kubeconfig(server.kubeconfig)) as api, \
            ApiClient(load_kubeconfig(server.kubeconfig)) as controller_client:
        stop = asyncio.Event()
        running = asyncio.create_task(run_controllers(controller_client, stop, controllers))
        try:
            yield api
        finally:
            stop.set()
            await asyncio.wait_for(running, 20)


@pytest.fixture
async def client(server: Cluster) -> AsyncIterator[ApiClient]:
    """A client, with the controllers under test running until the test ends."""
    async with controllers_running(server, CONTROLLERS) as api:
        yield api


@pytest.fixture
async def ns(client: ApiClient) -> str:
    name = f"ctl-{next(_names)}"
    await client.create(NAMESPACES, {"metadata": {"name": name}})
    return name


async def eventually(check: Callable[[], Awaitable[Any]], what: str = "") -> Any:
    """Poll until check() returns something truthy (and return it); fail with its last answer after WAIT seconds."""
    deadline = asyncio.get_running_loop().time() + WAIT
    while True:
        result = await check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}: last {result!r}")
        await asyncio.sleep(0.1)


async def get_or_none(client: ApiClient, res: Any, name: str, namespace: str | None = None) -> Obj | None:
    try:
        return await client.get(res, name, namespace)
    except ApiError as exc:
        if is_not_found(exc):
            return None
        raise


async def gone(client: ApiClient, res: Any, name: str, namespace: str | None = None) -> None:
    async def absent() -> bool:
        return await get_or_none(client, res, name, namespace) is None
    await eventually(absent, what=f"{res.plural}/{name} to be gone")


def _ref(owner: Obj, block: bool = False) -> Obj:
    ref = {"apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": owner["metadata"]["name"],
           "uid": owner["metadata"]["uid"]}
    return {**ref, "blockOwnerDeletion": True} if block else ref


async def _cm(client: ApiClient, ns: str, name: str, **meta: Any) -> Obj:
    return await client.create(CONFIGMAPS, {"apiVersion": "v1", "kind": "ConfigMap",
                                            "metadata": {"name": name, **meta}, "data": {"k": "v"}}, ns)


async def _pod(client: ApiClient, ns: str, name: str, *, labels: dict[str, str] | None = None, ip: str = "",
               ready: bool = False, node: str = "", phase: str = "Running", resources: Obj | None = None,
               **meta: Any) -> Obj:
    """A pod, and (with an ip or a phase other than Running) its status written through the status subresource."""
    container: Obj = {"name": "c", "image": "busybox", "ports": [{"name": "web", "containerPort": 8080}]}
    if resources:
        container["resources"] = resources
    spec: Obj = {"containers": [container]}
    if node:
        spec["nodeName"] = node
    pod = await client.create(PODS, {"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": name, "labels": labels or {}, **meta}, "spec": spec}, ns)
    if ip or phase != "Running":
        status: Obj = {"phase": phase, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
        if ip:
            status.update(podIP=ip, podIPs=[{"ip": ip}])
        pod = await client.patch(PODS, name, {"status": status}, ns, subresource="status")
    return pod


# garbage collector -------------------------------------------------------------------------------------------------

async def test_background_gc_deletes_dependents_of_deleted_owners(client: ApiClient, ns: str) -> None:
    owner = await _cm(client, ns, "owner")
    await _cm(client, ns, "dependent", ownerReferences=[_ref(owner)])
    survivor_owner = await _cm(client, ns, "kept-owner")
    await _cm(client, ns, "kept", ownerReferences=[_ref(survivor_owner), _ref(owner)])
    # Same name as a live object, another uid: that owner is gone too.
    impostor = {**_ref(survivor_owner), "uid": "00000000-0000-0000-0000-000000000000"}
    await _cm(client, ns, "impostor-dependent", ownerReferences=[impostor])
    await client.delete(CONFIGMAPS, "owner", ns)
    await gone(client, CONFIGMAPS, "dependent", ns)
    await gone(client, CONFIGMAPS, "impostor-dependent", ns)

    async def dangling_ref_dropped() -> bool:
        kept = await client.get(CONFIGMAPS, "kept", ns)
        return kept["metadata"].get("ownerReferences") == [_ref(survivor_owner)]
    await eventually(dangling_ref_dropped, what="the reference to the deleted owner removed from a kept dependent")


async def test_orphan_deletion_strips_owner_references(client: ApiClient, ns: str) -> None:
    owner = await _cm(client, ns, "owner")
    other = await _cm(client, ns, "other")
    await _cm(client, ns, "dependent", ownerReferences=[_ref(owner), _ref(other)])
    await client.delete(CONFIGMAPS, "owner", ns, propagation_policy="Orphan")
    await gone(client, CONFIGMAPS, "owner", ns)
    dependent = await client.get(CONFIGMAPS, "dependent", ns)
    assert dependent["metadata"]["ownerReferences"] == [_ref(other)]


async def test_foreground_deletion_deletes_dependents_first(client: ApiClient, ns: str) -> None:
    owner = await _cm(client, ns, "owner")
    await _cm(client, ns, "held", ownerReferences=[_ref(owner, block=True)], finalizers=["example.com/hold"])
    await _cm(client, ns, "plain", ownerReferences=[_ref(owner)])
    await client.delete(CONFIGMAPS, "owner", ns, propagation_policy="Foreground")

    async def dependent_deleting() -> bool:
        held = await client.get(CONFIGMAPS, "held", ns)
        return bool(held["metadata"].get("deletionTimestamp"))
    await eventually(dependent_deleting, what="the blocking dependent to be deleted")
    await gone(client, CONFIGMAPS, "plain", ns)
    await asyncio.sleep(0.5)
    waiting = await client.get(CONFIGMAPS, "owner", ns)
    assert waiting["metadata"]["finalizers"] == ["foregroundDeletion"], "the owner must wait for its dependent"
    await client.patch(CONFIGMAPS, "held", {"metadata": {"finalizers": None}}, ns)
    await gone(client, CONFIGMAPS, "held", ns)
    await gone(client, CONFIGMAPS, "owner", ns)


async def test_gc_across_custom_resources_discovered_later(client: ApiClient, ns: str) -> None:
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": "gadgets.example.com"},
           "spec": {"group": "example.com", "scope": "Namespaced",
                    "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget"},
                    "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                        "type": "object", "x-kubernetes-preserve-unknown-fields": True}}}]}}
    await client.create(CUSTOMRESOURCEDEFINITIONS, crd)
    gadgets = Resource("example.com", "v1", "gadgets", True, "Gadget")

    async def served() -> Obj | None:
        try:
            return await client.create(gadgets, {"apiVersion": "example.com/v1", "kind": "Gadget",
                                                 "metadata": {"name": "owner"}}, ns)
        except ApiError as exc:
            if is_not_found(exc):
                return None
            raise
    try:
        gadget = await eventually(served, what="the Gadget resource served")
        await _cm(client, ns, "owned-by-gadget", ownerReferences=[_ref(gadget)])
        owner = await _cm(client, ns, "owner")
        await client.create(gadgets, {"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {
            "name": "owned", "ownerReferences": [_ref(owner)]}}, ns)
        await client.delete(gadgets, "owner", ns)
        await client.delete(CONFIGMAPS, "owner", ns)
        await gone(client, CONFIGMAPS, "owned-by-gadget", ns)
        await gone(client, gadgets, "owned", ns)
    finally:
        await client.delete(CUSTOMRESOURCEDEFINITIONS, "gadgets.example.com")


# namespaces, service accounts, root CA -----------------------------------------------------------------------------

async def test_deleted_namespace_is_emptied_and_disappears(client: ApiClient, ns: str) -> None:
    await _cm(client, ns, "plain")
    await _cm(client, ns, "held", finalizers=["example.com/hold"])
    await client.create(SECRETS, {"metadata": {"name": "s"}, "stringData": {"k": "v"}}, ns)
    await _pod(client, ns, "p")
    await client.create(SERVICES, {"metadata": {"name": "svc"}, "spec": {"ports": [{"port": 80}]}}, ns)
    await client.delete(NAMESPACES, ns)

    async def waiting_for_finalizer() -> dict[str, Obj]:
        namespace = await client.get(NAMESPACES, ns)
        conditions = {c["type"]: c for c in namespace.get("status", {}).get("conditions") or []}
        return conditions if conditions.get("NamespaceFinalizersRemaining", {}).get("status") == "True" else {}
    conditions = await eventually(waiting_for_finalizer, what="NamespaceFinalizersRemaining")
    assert conditions["NamespaceContentRemaining"]["status"] == "True"
    assert "configmaps. has 1 resource instances" in conditions["NamespaceContentRemaining"]["message"]
    assert "example.com/hold in 1 resource instances" in conditions["NamespaceFinalizersRemaining"]["message"]
    assert conditions["NamespaceDeletionDiscoveryFailure"]["status"] == "False"
    for res in (SECRETS, PODS, SERVICES, SERVICEACCOUNTS):
        assert (await client.list(res, ns))["items"] == [], res.plural
    assert [c["metadata"]["name"] for c in (await client.list(CONFIGMAPS, ns))["items"]] == ["held"]
    await client.patch(CONFIGMAPS, "held", {"metadata": {"finalizers": None}}, ns)
    await gone(client, NAMESPACES, ns)


async def test_new_namespace_gets_default_service_account_and_root_ca(client: ApiClient, ns: str,
                                                                      server: Cluster) -> None:
    kubeconfig = yaml.safe_load(server.kubeconfig.read_text())
    ca = base64.b64decode(kubeconfig["clusters"][0]["cluster"]["certificate-authority-data"]).decode()

    async def account() -> Obj | None:
        return await get_or_none(client, SERVICEACCOUNTS, "default", ns)

    async def root_ca() -> Obj | None:
        return await get_or_none(client, CONFIGMAPS, "kube-root-ca.crt", ns)
    first = await eventually(account, what="the default ServiceAccount")
    published = await eventually(root_ca, what="kube-root-ca.crt")
    assert published["data"]["ca.crt"].split() == ca.split()
    assert published["metadata"]["annotations"]["kubernetes.io/description"]

    await client.delete(SERVICEACCOUNTS, "default", ns)

    async def recreated() -> bool:
        again = await account()
        return again is not None and again["metadata"]["uid"] != first["metadata"]["uid"]
    await eventually(recreated, what="the default ServiceAccount to come back")

    await client.patch(CONFIGMAPS, "kube-root-ca.crt", {"data": {"ca.crt": "tampered"}}, ns)

    async def restored() -> bool:
        return (await client.get(CONFIGMAPS, "kube-root-ca.crt", ns))["data"]["ca.crt"].split() == ca.split()
    await eventually(restored, what="kube-root-ca.crt restored")


# endpoints and endpoint slices -------------------------------------------------------------------------------------

async def test_service_gets_endpoints_and_slices(client: ApiClient, ns: str) -> None:
    web = {"app": "web"}
    node = f"{ns}-node"
    await client.create(NODES, {"metadata": {"name": node, "labels": {"topology.kubernetes.io/zone": "zone-a"}}})
    await _pod(client, ns, "ready", labels=web, ip="10.1.0.1", ready=True, node=node)
    await _pod(client, ns, "unready", labels=web, ip="10.1.0.2")
    await _pod(client, ns, "no-ip", labels=web)
    await _pod(client, ns, "other", labels={"app": "db"}, ip="10.1.0.9", ready=True)
    service = await client.create(SERVICES, {"metadata": {"name": "web", "labels": {"tier": "front"}}, "spec": {
        "selector": web, "ports": [{"name": "http", "port": 80, "targetPort": "web"}]}}, ns)
    await client.create(SERVICES, {"metadata": {"name": "manual"}, "spec": {"ports": [{"port": 80}]}}, ns)

    async def endpoints() -> Obj | None:
        found = await get_or_none(client, ENDPOINTS, "web", ns)
        return found if found and found.get("subsets") else None
    subsets = (await eventually(endpoints, what="Endpoints of web"))["subsets"]
    assert len(subsets) == 1
    assert [(a["ip"], a["targetRef"]["name"], a.get("nodeName")) for a in subsets[0]["addresses"]] == [
        ("10.1.0.1", "ready", node)]
    assert [a["ip"] for a in subsets[0]["notReadyAddresses"]] == ["10.1.0.2"]
    assert subsets[0]["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP"}]

    async def slices() -> list[Obj]:
        listed = await client.list(ENDPOINTSLICES, ns, label_selector="kubernetes.io/service-name=web")
        items = listed["items"]
        return items if items and len(items[0]["endpoints"]) == 2 else []
    [endpoint_slice] = await eventually(slices, what="an EndpointSlice of web")
    assert endpoint_slice["addressType"] == "IPv4"
    assert endpoint_slice["metadata"]["labels"] == {"kubernetes.io/service-name": "web", "tier": "front",
                                                    "endpointslice.kubernetes.io/managed-by": CONTROLLER}
    assert [(r["kind"], r["name"], r["uid"], r.get("controller")) for r in endpoint_slice["metadata"][
        "ownerReferences"]] == [("Service", "web", service["metadata"]["uid"], True)]
    assert endpoint_slice["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP"}]
    by_pod = {e["targetRef"]["name"]: e for e in endpoint_slice["endpoints"]}
    assert by_pod["ready"]["addresses"] == ["10.1.0.1"]
    assert by_pod["ready"]["nodeName"] == node and by_pod["ready"]["zone"] == "zone-a"
    assert by_pod["ready"]["conditions"] == {"ready": True, "serving": True, "terminating": False}
    assert by_pod["unready"]["conditions"] == {"ready": False, "serving": False, "terminating": False}
    assert await get_or_none(client, ENDPOINTS, "manual", ns) is None
    assert (await client.list(ENDPOINTSLICES, ns, label_selector="kubernetes.io/service-name=manual"))["items"] == []

    # The pod on a node is deleted gracefully (no kubelet finishes it): terminating, out of Endpoints.
    await client.delete(PODS, "ready", ns)

    async def terminating() -> bool:
        subsets = (await client.get(ENDPOINTS, "web", ns)).get("subsets") or []
        listed = (await client.list(ENDPOINTSLICES, ns, label_selector="kubernetes.io/service-name=web"))["items"]
        conditions = {e["targetRef"]["name"]: e["conditions"] for s in listed for e in s["endpoints"]}
        return (all("addresses" not in s for s in subsets) and conditions.get("ready") == {
            "ready": False, "serving": True, "terminating": True})
    await eventually(terminating, what="the terminating pod out of Endpoints and terminating in its slice")

    await client.delete(SERVICES, "web", ns)
    await gone(client, ENDPOINTS, "web", ns)

    async def slices_gone() -> bool:
        listed = await client.list(ENDPOINTSLICES, ns, label_selector="kubernetes.io/service-name=web")
        return not listed["items"]
    await eventually(slices_gone, what="the slices of a deleted Service collected")


# quota, disruption budgets -----------------------------------------------------------------------------------------

async def test_resource_quota_counts_usage(client: ApiClient, ns: str) -> None:
    hard = {"pods": "10", "count/pods": "10", "configmaps": "20", "count/secrets": "5", "services": "5",
            "services.nodeports": "5", "services.loadbalancers": "2", "requests.cpu": "2", "cpu": "2",
            "requests.memory": "1Gi", "limits.memory": "2Gi", "limits.cpu": "4", "count/deployments.apps": "3",
            "resourcequotas": "2"}
    await client.create(RESOURCEQUOTAS, {"metadata": {"name": "q"}, "spec": {"hard": hard}}, ns)
    await _pod(client, ns, "a", resources={"requests": {"cpu": "100m", "memory": "64Mi"},
                                           "limits": {"cpu": "1", "memory": "128Mi"}})
    await _pod(client, ns, "b", resources={"requests": {"cpu": "1200m", "memory": "128Mi"}})
    await _pod(client, ns, "done", phase="Succeeded", resources={"requests": {"cpu": "1"}})
    await client.create(SERVICES, {"metadata": {"name": "np"}, "spec": {"type": "NodePort", "selector": {"a": "b"},
                                                                      "ports": [{"name": "a", "port": 80},
                                                                                {"name": "b", "port": 81}]}}, ns)
    await _cm(client, ns, "one")
    await client.create(SECRETS, {"metadata": {"name": "s"}}, ns)
    configmaps = str(len((await client.list(CONFIGMAPS, ns))["items"]))
    expected = {"pods": "2", "count/pods": "2", "configmaps": configmaps, "count/secrets": "1", "services": "1",
                "services.nodeports": "2", "services.loadbalancers": "0", "requests.cpu": "1300m", "cpu": "1300m",
                "requests.memory": "192Mi", "limits.memory": "128Mi", "limits.cpu": "1",
                "count/deployments.apps": "0", "resourcequotas": "1"}

    async def counted() -> Obj | None:
        status = (await client.get(RESOURCEQUOTAS, "q", ns)).get("status") or {}
        return status if status.get("used") == expected else None
    status = await eventually(counted, what=f"quota usage {expected}")
    assert status["hard"] == hard

    await client.delete(PODS, "b", ns)
    expected.update({"pods": "1", "count/pods": "1", "requests.cpu": "100m", "cpu": "100m", "requests.memory": "64Mi"})
    await eventually(counted, what="quota usage after a pod went")


async def test_disruption_budget_status(client: ApiClient, ns: str) -> None:
    labels = {"app": "db"}
    await _pod(client, ns, "a", labels=labels, ip="10.2.0.1", ready=True)
    await _pod(client, ns, "b", labels=labels, ip="10.2.0.2", ready=True)
    await _pod(client, ns, "c", labels=labels, ip="10.2.0.3")
    await client.create(PODDISRUPTIONBUDGETS, {"metadata": {"name": "min"}, "spec": {
        "minAvailable": 1, "selector": {"matchLabels": labels}}}, ns)

    template = {"metadata": {"labels": {"app": "rs"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
    rs = await client.create(REPLICASETS, {"metadata": {"name": "rs"}, "spec": {
        "replicas": 4, "selector": {"matchLabels": {"app": "rs"}}, "template": template}}, ns)
    for i in range(2):
        await _pod(client, ns, f"rs-{i}", labels={"app": "rs"}, ip=f"10.2.1.{i}", ready=True,
                   ownerReferences=[{**_ref(rs), "controller": True}])
    await client.create(PODDISRUPTIONBUDGETS, {"metadata": {"name": "max"}, "spec": {
        "maxUnavailable": "50%", "selector": {"matchLabels": {"app": "rs"}}}}, ns)

    async def status_of(name: str, **want: Any) -> Obj | None:
        status = (await client.get(PODDISRUPTIONBUDGETS, name, ns)).get("status") or {}
        return status if all(status.get(k) == v for k, v in want.items()) else None

    status = await eventually(lambda: status_of("min", expectedPods=3, currentHealthy=2, desiredHealthy=1,
                                                disruptionsAllowed=1, observedGeneration=1), what="PDB min status")
    assert [(c["type"], c["status"], c["reason"]) for c in status["conditions"]] == [
        ("DisruptionAllowed", "True", "SufficientPods")]
    status = await eventually(lambda: status_of("max", expectedPods=4, currentHealthy=2, desiredHealthy=2,
                                                disruptionsAllowed=0), what="PDB max status from the ReplicaSet")
    assert [(c["type"], c["status"], c["reason"]) for c in status["conditions"]] == [
        ("DisruptionAllowed", "False", "InsufficientPods")]

    await client.patch(PODS, "a", {"status": {"conditions": [{"type": "Ready", "status": "False"}]}}, ns,
                       subresource="status")
    await eventually(lambda: status_of("min", currentHealthy=1, disruptionsAllowed=0), what="PDB after a pod unready")


# TTL after finished, pod GC ----------------------------------------------------------------------------------------

async def test_finished_job_deleted_after_ttl(client: ApiClient, ns: str) -> None:
    def job(name: str, ttl: int | None) -> Obj:
        pod = {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}
        spec: Obj = {"template": {"spec": pod}}
        if ttl is not None:
            spec["ttlSecondsAfterFinished"] = ttl
        return {"metadata": {"name": name}, "spec": spec}
    complete = {"status": {"conditions": [{"type": "Complete", "status": "True", "lastTransitionTime": now_time()}]}}
    for name, ttl in (("short", 1), ("long", 3600), ("forever", None)):
        await client.create(JOBS, job(name, ttl), ns)
        await client.patch(JOBS, name, complete, ns, subresource="status")
    await client.create(JOBS, job("running", 0), ns)
    await gone(client, JOBS, "short", ns)
    await asyncio.sleep(0.5)
    for name in ("long", "forever", "running"):
        assert await get_or_none(client, JOBS, name, ns) is not None, name


async def test_pod_gc_removes_orphaned_and_unscheduled_terminating_pods(client: ApiClient, ns: str) -> None:
    await _pod(client, ns, "orphan", node="ghost-node")
    await _pod(client, ns, "held", finalizers=["example.com/hold"])
    await client.delete(PODS, "held", ns)

    async def marked_failed() -> bool:
        return (await client.get(PODS, "held", ns)).get("status", {}).get("phase") == "Failed"
    await eventually(marked_failed, what="the unscheduled terminating pod marked Failed")
    await client.patch(PODS, "held", {"metadata": {"finalizers": None}}, ns)
    await gone(client, PODS, "held", ns)
    await gone(client, PODS, "orphan", ns)
