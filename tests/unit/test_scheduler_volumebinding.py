"""VolumeBinding: PreFilter and Filter over claims, volumes and classes in listers; PreBind against a fake API client
that plays the PV controller; cluster events of those kinds requeueing pods."""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Callable
from typing import Any

from kubelite.client.resources import PERSISTENTVOLUMECLAIMS, Resource
from kubelite.client.store import Store
from kubelite.scheduler.cache import Cache
from kubelite.scheduler.config import PluginSet, Profile, SchedulerConfig
from kubelite.scheduler.framework import SKIP, BindPlugin, Code, CycleState, Handle, Listers, Status
from kubelite.scheduler.nodeinfo import NodeInfo
from kubelite.scheduler.plugins import REGISTRY
from kubelite.scheduler.plugins.volumebinding import (
    ERR_REASON_BIND_CONFLICT,
    ERR_REASON_NODE_CONFLICT,
    ERR_REASON_PV_NOT_EXIST,
    ERR_REASON_UNBOUND_IMMEDIATE,
    VolumeBinding,
)
from kubelite.scheduler.podinfo import PodInfo
from kubelite.scheduler.scheduler import Scheduler
from kubelite.scheduler.testing import make_node, make_pod
from kubelite.scheduler.volumes import LOCAL_PATH_PROVISIONER, NO_PROVISIONER, SELECTED_NODE

Obj = dict[str, Any]
ZONE = "topology.kubernetes.io/zone"


def storage_class(name: str, provisioner: str = NO_PROVISIONER, mode: str = "WaitForFirstConsumer",
                  **extra: Any) -> Obj:
    return {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": name},
            "provisioner": provisioner, "volumeBindingMode": mode, **extra}


def claim(name: str, class_name: str | None = "local", size: str = "1Gi", *, volume: str = "",
          phase: str = "Pending", **meta: Any) -> Obj:
    spec: Obj = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}}
    if class_name is not None:
        spec["storageClassName"] = class_name
    if volume:
        spec["volumeName"] = volume
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}", "resourceVersion": "1", **meta},
            "spec": spec, "status": {"phase": phase}}


def volume(name: str, node: str | None = None, size: str = "5Gi", class_name: str = "local",
           claim_ref: Obj | None = None) -> Obj:
    spec: Obj = {"capacity": {"storage": size}, "accessModes": ["ReadWriteOnce"], "storageClassName": class_name,
                 "local": {"path": f"/mnt/{name}"}}
    if node is not None:
        spec["nodeAffinity"] = {"required": {"nodeSelectorTerms": [{"matchExpressions": [
            {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}}
    if claim_ref is not None:
        spec["claimRef"] = claim_ref
    return {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name, "resourceVersion": "1"},
            "spec": spec, "status": {"phase": "Bound" if claim_ref else "Available"}}


def bound_pair(claim_name: str, volume_name: str, node: str | None) -> tuple[Obj, Obj]:
    """A claim and the volume it is bound to."""
    ref = {"kind": "PersistentVolumeClaim", "namespace": "default", "name": claim_name, "uid": f"uid-{claim_name}"}
    return claim(claim_name, volume=volume_name, phase="Bound"), volume(volume_name, node, claim_ref=ref)


def with_claims(name: str, *claims: str, ephemeral: tuple[str, ...] = ()) -> Obj:
    volumes = [{"name": f"v{i}", "persistentVolumeClaim": {"claimName": c}} for i, c in enumerate(claims)]
    volumes += [{"name": v, "ephemeral": {"volumeClaimTemplate": {"spec": {}}}} for v in ephemeral]
    return make_pod(name, volumes=volumes)


def listers(*objs: Obj) -> Listers:
    stores = {"persistentvolumeclaims": Store(), "persistentvolumes": Store(), "storageclasses": Store()}
    for obj in objs:
        stores[{"PersistentVolumeClaim": "persistentvolumeclaims", "PersistentVolume": "persistentvolumes",
                "StorageClass": "storageclasses"}[obj["kind"]]].put(obj)
    return Listers(stores)


NODES = [NodeInfo(make_node("n1", labels={ZONE: "a"})), NodeInfo(make_node("n2", labels={ZONE: "b"}))]


def binding(objs: tuple[Obj, ...], args: Obj | None = None, client: Any = None) -> VolumeBinding:
    cache = Cache()
    for node in NODES:
        cache.add_node(node.node)
    return VolumeBinding(args or {}, Handle(snapshot=cache, listers=listers(*objs), client=client))


def run_filter(pod: Obj, *objs: Obj) -> dict[str, Status | None] | Status:
    """PreFilter's rejection, or Filter's verdict per node (None: fits)."""
    plugin = binding(objs)
    state = CycleState()
    names, status = plugin.pre_filter(state, PodInfo(pod), NODES)
    assert names is None
    if status is not None:
        return status
    return {node.name: plugin.filter(state, PodInfo(pod), node) for node in NODES}


def verdicts(result: dict[str, Status | None] | Status) -> dict[str, tuple[str, ...] | None]:
    assert isinstance(result, dict), result
    for status in result.values():
        assert status is None or status.code == Code.UNSCHEDULABLE_AND_UNRESOLVABLE
    return {name: status.reasons if status is not None else None for name, status in result.items()}


def test_pods_without_claims_skip() -> None:
    pod = make_pod("p", volumes=[{"name": "scratch", "emptyDir": {}}])
    assert run_filter(pod) is SKIP
    assert run_filter(with_claims("p", "data"), claim("data")) is not SKIP


def test_missing_or_deleted_claims_are_unresolvable() -> None:
    status = run_filter(with_claims("p", "data"))
    assert isinstance(status, Status) and status.code == Code.UNSCHEDULABLE_AND_UNRESOLVABLE
    assert status.reasons == ('persistentvolumeclaim "data" not found',)
    status = run_filter(with_claims("p", ephemeral=("cache",)))
    assert isinstance(status, Status)
    assert status.reasons == ('waiting for ephemeral volume controller to create the persistentvolumeclaim '
                              '"p-cache"',)
    deleting = claim("data", deletionTimestamp="2024-01-01T00:00:00Z")
    status = run_filter(with_claims("p", "data"), deleting, storage_class("local"))
    assert isinstance(status, Status) and status.reasons == ('persistentvolumeclaim "data" is being deleted',)


def test_ephemeral_claim_must_be_the_pods() -> None:
    pod = with_claims("p", ephemeral=("cache",))
    foreign = claim("p-cache", ownerReferences=[{"kind": "Pod", "name": "p", "uid": "someone-else",
                                                 "controller": True}])
    status = run_filter(pod, foreign, storage_class("local"))
    assert isinstance(status, Status)
    assert status.reasons == ("PVC default/p-cache was not created for pod default/p (pod is not owner)",)
    owned = claim("p-cache", ownerReferences=[{"kind": "Pod", "name": "p", "uid": pod["metadata"]["uid"],
                                               "controller": True}])
    assert verdicts(run_filter(pod, owned, storage_class("local"), volume("pv1", "n1"))) == {
        "n1": None, "n2": (ERR_REASON_BIND_CONFLICT,)}


def test_unbound_immediate_claims_are_unresolvable() -> None:
    pod = with_claims("p", "data")
    for objs in [(claim("data", "fast"), storage_class("fast", mode="Immediate")),
                 (claim("data", None),),
                 (claim("data", "missing-class"),),
                 (claim("data", volume="pv1"), storage_class("local"))]:  # pre-bound, the controller finishes it
        status = run_filter(pod, *objs)
        assert isinstance(status, Status), objs
        assert (status.code, status.reasons) == (Code.UNSCHEDULABLE_AND_UNRESOLVABLE, (ERR_REASON_UNBOUND_IMMEDIATE,))
    assert isinstance(run_filter(pod, claim("data"), storage_class("local")), dict), "WaitForFirstConsumer waits"


def test_bound_volume_node_affinity() -> None:
    data, pv = bound_pair("data", "pv1", "n1")
    assert verdicts(run_filter(with_claims("p", "data"), data, pv)) == {"n1": None, "n2": (ERR_REASON_NODE_CONFLICT,)}
    data, pv = bound_pair("data", "pv1", None)
    assert verdicts(run_filter(with_claims("p", "data"), data, pv)) == {"n1": None, "n2": None}
    assert verdicts(run_filter(with_claims("p", "data"), data)) == {
        "n1": (ERR_REASON_PV_NOT_EXIST,), "n2": (ERR_REASON_PV_NOT_EXIST,)}


def test_wait_for_first_consumer_needs_a_free_fitting_static_volume_on_the_node() -> None:
    pod = with_claims("p", "data")
    local = storage_class("local")
    assert verdicts(run_filter(pod, claim("data"), local, volume("pv1", "n1"))) == {
        "n1": None, "n2": (ERR_REASON_BIND_CONFLICT,)}
    too_small = volume("pv1", "n1", size="500Mi")
    other_class = volume("pv2", "n1", class_name="other")
    taken = volume("pv3", "n1", claim_ref={"namespace": "default", "name": "someone", "uid": "x"})
    assert verdicts(run_filter(pod, claim("data"), local, too_small, other_class, taken)) == {
        "n1": (ERR_REASON_BIND_CONFLICT,), "n2": (ERR_REASON_BIND_CONFLICT,)}
    # Bound and unbound claims both count: each reason is given.
    mixed = with_claims("p", "data", "logs")
    logs, logs_pv = bound_pair("logs", "pv-logs", "n2")
    assert verdicts(run_filter(mixed, claim("data"), local, volume("pv1", "n1"), logs, logs_pv)) == {
        "n1": (ERR_REASON_NODE_CONFLICT,), "n2": (ERR_REASON_BIND_CONFLICT,)}


def test_two_claims_do_not_share_one_static_volume() -> None:
    pod = with_claims("p", "a", "b")
    local = storage_class("local")
    assert verdicts(run_filter(pod, claim("a"), claim("b"), local, volume("pv1", "n1"))) == {
        "n1": (ERR_REASON_BIND_CONFLICT,), "n2": (ERR_REASON_BIND_CONFLICT,)}
    # With a volume each (of the right sizes), both claims fit.
    objs = (claim("a", size="4Gi"), claim("b", size="1Gi"), local, volume("big", "n1", size="5Gi"),
            volume("small", "n1", size="1Gi"))
    assert verdicts(run_filter(pod, *objs)) == {"n1": None, "n2": (ERR_REASON_BIND_CONFLICT,)}


def test_a_class_with_a_provisioner_fits_any_node_it_allows() -> None:
    pod = with_claims("p", "data")
    provisioned = storage_class("local", LOCAL_PATH_PROVISIONER)
    assert verdicts(run_filter(pod, claim("data"), provisioned)) == {"n1": None, "n2": None}
    zoned = storage_class("local", LOCAL_PATH_PROVISIONER, allowedTopologies=[
        {"matchLabelExpressions": [{"key": ZONE, "values": ["b"]}]}])
    assert verdicts(run_filter(pod, claim("data"), zoned)) == {"n1": (ERR_REASON_BIND_CONFLICT,), "n2": None}
    # A node already selected for provisioning keeps the claim; a static-only class does not hold it.
    selected = claim("data", annotations={SELECTED_NODE: "n2"})
    assert verdicts(run_filter(pod, selected, provisioned)) == {"n1": (ERR_REASON_BIND_CONFLICT,), "n2": None}
    assert verdicts(run_filter(pod, selected, storage_class("local"), volume("pv1", "n1"))) == {
        "n1": None, "n2": (ERR_REASON_BIND_CONFLICT,)}


class FakeClient:
    """Records claim patches; as the PV controller, binds a claim annotated with a node after `delay` (unless None),
    updating the informer store the plugin reads."""

    def __init__(self, stores: Listers, delay: float | None = 0.05, volume_node: str | None = None):
        self.stores = stores
        self.delay = delay
        self.volume_node = volume_node
        self.patches: list[tuple[str, str, Obj]] = []

    async def patch(self, resource: Resource, name: str, patch: Obj, namespace: str | None = None, *,
                    type: str = "merge", subresource: str = "") -> Obj:
        self.patches.append((resource.plural, name, patch))
        if resource != PERSISTENTVOLUMECLAIMS:
            return {}
        store = self.stores.stores["persistentvolumeclaims"]
        current = copy.deepcopy(store.get_by_name(namespace, name))
        current["metadata"].setdefault("annotations", {}).update(patch["metadata"]["annotations"])
        store.put(current)
        if self.delay is not None:
            asyncio.get_running_loop().call_later(self.delay, self.bind, namespace, name,
                                                  patch["metadata"]["annotations"][SELECTED_NODE])
        return current

    def bind(self, namespace: str, name: str, node: str) -> None:
        claims = self.stores.stores["persistentvolumeclaims"]
        bound = copy.deepcopy(claims.get_by_name(namespace, name))
        bound["spec"]["volumeName"] = f"pvc-{name}"
        bound["status"]["phase"] = "Bound"
        claims.put(bound)
        ref = {"namespace": namespace, "name": name, "uid": bound["metadata"]["uid"]}
        self.stores.stores["persistentvolumes"].put(volume(f"pvc-{name}", self.volume_node or node, claim_ref=ref))


async def pre_bind(plugin: VolumeBinding, pod: Obj, node: str) -> Status | None:
    state = CycleState()
    _, status = plugin.pre_filter(state, PodInfo(pod), NODES)
    assert status is None
    assert plugin.filter(state, PodInfo(pod), next(n for n in NODES if n.name == node)) is None
    return await asyncio.wait_for(plugin.pre_bind(state, PodInfo(pod), node), 5)


async def test_pre_bind_selects_the_node_and_waits_for_the_binding() -> None:
    plugin = binding((claim("data"), claim("logs", annotations={SELECTED_NODE: "n2"}),
                      storage_class("local", LOCAL_PATH_PROVISIONER)))
    client = FakeClient(plugin.handle.listers)
    plugin.handle.client = client  # type: ignore[assignment]
    asyncio.get_running_loop().call_later(0.2, client.bind, "default", "logs", "n2")  # annotated: no patch
    assert await pre_bind(plugin, with_claims("p", "data", "logs"), "n2") is None
    assert client.patches == [("persistentvolumeclaims", "data", {"metadata": {"annotations": {SELECTED_NODE: "n2"}}})]
    for name in ("data", "logs"):
        stored = plugin.handle.listers.get("persistentvolumeclaims", "default", name)
        assert stored is not None and stored["status"]["phase"] == "Bound"


async def test_pre_bind_without_claims_to_bind_does_nothing() -> None:
    data, pv = bound_pair("data", "pv1", "n1")
    plugin = binding((data, pv))
    client = FakeClient(plugin.handle.listers)
    plugin.handle.client = client  # type: ignore[assignment]
    assert await pre_bind(plugin, with_claims("p", "data"), "n1") is None
    assert client.patches == []


async def test_pre_bind_times_out_with_an_error() -> None:
    plugin = binding((claim("data"), storage_class("local", LOCAL_PATH_PROVISIONER)), {"bindTimeoutSeconds": 0.3})
    plugin.handle.client = FakeClient(plugin.handle.listers, delay=None)  # type: ignore[assignment]
    status = await pre_bind(plugin, with_claims("p", "data"), "n1")
    assert status is not None and status.code == Code.ERROR
    assert status.message == 'binding volumes: timed out after 0.3s waiting for persistentvolumeclaim(s) "data" to ' \
                             'be bound'


async def test_pre_bind_fails_when_the_binding_cannot_serve_the_node() -> None:
    plugin = binding((claim("data"), storage_class("local", LOCAL_PATH_PROVISIONER)))
    plugin.handle.client = FakeClient(plugin.handle.listers, volume_node="n2")  # type: ignore[assignment]
    status = await pre_bind(plugin, with_claims("p", "data"), "n1")
    assert status is not None and status.code == Code.ERROR
    assert status.message == 'binding volumes: pv "pvc-data" node affinity doesn\'t match node "n1"'

    plugin = binding((claim("data"), storage_class("local", LOCAL_PATH_PROVISIONER)))
    stores = plugin.handle.listers
    plugin.handle.client = FakeClient(stores, delay=None)  # type: ignore[assignment]

    def reset() -> None:  # the provisioner gives up: it removes the node so that the scheduler picks again
        claims = stores.stores["persistentvolumeclaims"]
        current = copy.deepcopy(claims.get_by_name("default", "data"))
        del current["metadata"]["annotations"][SELECTED_NODE]
        claims.put(current)
    asyncio.get_running_loop().call_later(0.3, reset)
    status = await pre_bind(plugin, with_claims("p", "data"), "n1")
    assert status is not None and status.message == 'binding volumes: selectedNode annotation reset for PVC "data"'


class FakeBinder(BindPlugin):
    """Records bindings instead of calling the API."""

    name = "FakeBinder"
    bound: dict[str, str] = {}

    async def bind(self, state: CycleState, pod: PodInfo, node_name: str) -> Status | None:
        FakeBinder.bound[pod.key] = node_name
        return None


async def until(condition: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def test_claim_events_requeue_and_the_pod_binds_where_its_volume_is() -> None:
    FakeBinder.bound = {}
    stores = listers(storage_class("local"), volume("pv1", "n2"))
    client = FakeClient(stores)
    pods: dict[str, Obj] = {}
    profile = Profile(plugins={"bind": PluginSet([("FakeBinder", 0)], ["*"])})
    scheduler = Scheduler(SchedulerConfig(profiles=[profile]), client, listers=stores,  # type: ignore[arg-type]
                          pod_lookup=pods.get, registry={**REGISTRY, "FakeBinder": FakeBinder})
    assert scheduler.resource_handlers("Service") is None, "kinds no plugin registered are not watched"
    handlers = scheduler.resource_handlers("PersistentVolumeClaim")
    assert handlers is not None
    on_add, _, _ = handlers
    for node in NODES:
        scheduler.on_node_add(node.node)
    pod = with_claims("p", "data")
    pods["default/p"] = pod
    scheduler.on_pod_add(pod)
    task = asyncio.create_task(scheduler.run())
    try:
        await until(lambda: "default/p" in scheduler.queue.unschedulable)
        assert scheduler.queue.unschedulable["default/p"].unschedulable_plugins == {"VolumeBinding"}
        on_add(claim("other"))
        assert "default/p" in scheduler.queue.unschedulable, "a claim the pod does not use does not move it"
        data = claim("data")
        stores.stores["persistentvolumeclaims"].put(data)
        on_add(data)
        assert "default/p" not in scheduler.queue.unschedulable
        await until(lambda: "default/p" in FakeBinder.bound)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert FakeBinder.bound["default/p"] == "n2"
    assert ("persistentvolumeclaims", "data", {"metadata": {"annotations": {SELECTED_NODE: "n2"}}}) in client.patches
