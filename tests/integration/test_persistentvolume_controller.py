"""The PersistentVolume and protection controllers in-process against a real `kubelite server` (its own
controller-manager off): static binding, the default class, waiting for the first consumer, local-path
provisioning, release and reclaim, claims kept while a pod uses them, ephemeral volumes' claims, and resizing
only where the class allows it."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from kubelite.client import ApiClient, ApiError
from kubelite.client.resources import (
    EVENTS,
    NAMESPACES,
    PERSISTENTVOLUMECLAIMS,
    PERSISTENTVOLUMES,
    PODS,
    STORAGECLASSES,
)
from kubelite.controllers.ephemeralvolume import EphemeralVolumeController
from kubelite.controllers.persistentvolume import PersistentVolumeController
from kubelite.controllers.pvcprotection import PVCProtectionController
from kubelite.controllers.pvprotection import PVProtectionController
from kubelite.scheduler.volumes import (
    LOCAL_PATH_FINALIZER,
    LOCAL_PATH_PROVISIONER,
    PV_PROTECTION,
    PVC_PROTECTION,
    SELECTED_NODE,
)
from tests.e2e.conftest import API_ONLY, Cluster, free_port, start_server, stop_server
from tests.integration.test_controllers_core import controllers_running, eventually, get_or_none, gone

Obj = dict[str, Any]
_names = itertools.count()
CONTROLLERS = [PersistentVolumeController, PVCProtectionController, PVProtectionController, EphemeralVolumeController]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    work = tmp_path_factory.mktemp("pv")
    running = start_server(work, free_port(), *API_ONLY, "--default-local-storage-path", str(work / "volumes"))
    yield running
    stop_server(running)


@pytest.fixture
async def client(server: Cluster) -> AsyncIterator[ApiClient]:
    """A client, with the controllers under test running until the test ends."""
    async with controllers_running(server, CONTROLLERS) as api:
        yield api


@pytest.fixture
async def ns(client: ApiClient) -> str:
    name = f"pv-{next(_names)}"
    await client.create(NAMESPACES, {"metadata": {"name": name}})
    return name


def volume(name: str, size: str, cls: str = "", **spec: Any) -> Obj:
    """A volume labelled with its test's namespace (the prefix of its name), so claims of other tests skip it."""
    return {"apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": name, "labels": {"test": name.rsplit("-", 1)[0]}},
            "spec": {"capacity": {"storage": size}, "accessModes": ["ReadWriteOnce"], "storageClassName": cls,
                     "hostPath": {"path": f"/tmp/{name}"}, **spec}}


def claim(name: str, size: str, cls: str | None = "", ns: str = "", **meta: Any) -> Obj:
    """A claim; with ns, one that only takes volumes of its test."""
    spec: Obj = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}}
    if ns:
        spec["selector"] = {"matchLabels": {"test": ns}}
    if cls is not None:
        spec["storageClassName"] = cls
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name, **meta}, "spec": spec}


async def phase_of(client: ApiClient, res: Any, name: str, namespace: str | None = None) -> str:
    obj = await get_or_none(client, res, name, namespace)
    return ((obj or {}).get("status") or {}).get("phase", "")


async def bound(client: ApiClient, name: str, namespace: str) -> Obj:
    async def check() -> Obj | None:
        pvc = await client.get(PERSISTENTVOLUMECLAIMS, name, namespace)
        return pvc if pvc["status"].get("phase") == "Bound" else None
    return await eventually(check, f"claim {name} Bound")


async def reasons(client: ApiClient, namespace: str, name: str) -> set[str]:
    events = (await client.list(EVENTS, namespace))["items"]
    return {e["reason"] for e in events if e["involvedObject"]["name"] == name}


async def test_claim_binds_to_the_smallest_fitting_volume_and_is_released_when_deleted(client: ApiClient,
                                                                                      ns: str) -> None:
    for name, size in ((f"{ns}-small", "1Gi"), (f"{ns}-fit", "5Gi"), (f"{ns}-big", "50Gi")):
        await client.create(PERSISTENTVOLUMES, volume(name, size))
    await eventually(lambda: _phase_is(client, f"{ns}-fit", "Available"), "the volume Available")
    await client.create(PERSISTENTVOLUMECLAIMS, claim("data", "2Gi", ns=ns), ns)
    pvc = await bound(client, "data", ns)
    assert pvc["spec"]["volumeName"] == f"{ns}-fit"
    assert pvc["status"]["capacity"] == {"storage": "5Gi"} and pvc["status"]["accessModes"] == ["ReadWriteOnce"]
    assert pvc["metadata"]["annotations"]["pv.kubernetes.io/bind-completed"] == "yes"
    pv = await client.get(PERSISTENTVOLUMES, f"{ns}-fit")
    assert pv["status"]["phase"] == "Bound"
    assert pv["spec"]["claimRef"]["uid"] == pvc["metadata"]["uid"]
    assert pvc["metadata"]["finalizers"] == [PVC_PROTECTION] and pv["metadata"]["finalizers"] == [PV_PROTECTION]
    assert await phase_of(client, PERSISTENTVOLUMES, f"{ns}-small") == "Available"

    await client.delete(PERSISTENTVOLUMECLAIMS, "data", ns)
    released = await eventually(
        lambda: _phase_is(client, f"{ns}-fit", "Released"), "the volume Released (Retain keeps it)")
    assert released["spec"]["claimRef"]["name"] == "data"


async def _phase_is(client: ApiClient, name: str, phase: str) -> Obj | None:
    pv = await get_or_none(client, PERSISTENTVOLUMES, name)
    return pv if pv is not None and (pv.get("status") or {}).get("phase") == phase else None


async def test_claim_without_a_fitting_volume_waits_and_binds_when_one_appears(client: ApiClient, ns: str) -> None:
    await client.create(PERSISTENTVOLUMECLAIMS, claim("later", "3Gi", ns=ns), ns)
    await eventually(lambda: _has_reason(client, ns, "later", "FailedBinding"), "a FailedBinding event")
    assert await phase_of(client, PERSISTENTVOLUMECLAIMS, "later", ns) == "Pending"
    await client.create(PERSISTENTVOLUMES, volume(f"{ns}-too-small", "1Gi"))
    await client.create(PERSISTENTVOLUMES, volume(f"{ns}-other-mode", "9Gi", accessModes=["ReadOnlyMany"]))
    await client.create(PERSISTENTVOLUMES, volume(f"{ns}-ok", "3Gi"))
    assert (await bound(client, "later", ns))["spec"]["volumeName"] == f"{ns}-ok"


async def _has_reason(client: ApiClient, ns: str, name: str, reason: str) -> bool:
    return reason in await reasons(client, ns, name)


async def test_pre_bound_claim_and_volume_taken_by_another_claim(client: ApiClient, ns: str) -> None:
    await client.create(PERSISTENTVOLUMES, volume(f"{ns}-named", "1Gi"))
    first = claim("first", "1Gi")
    first["spec"]["volumeName"] = f"{ns}-named"
    await client.create(PERSISTENTVOLUMECLAIMS, first, ns)
    await bound(client, "first", ns)
    second = claim("second", "1Gi")
    second["spec"]["volumeName"] = f"{ns}-named"
    await client.create(PERSISTENTVOLUMECLAIMS, second, ns)
    await eventually(lambda: _has_reason(client, ns, "second", "FailedBinding"), "FailedBinding for the second")
    assert await phase_of(client, PERSISTENTVOLUMECLAIMS, "second", ns) == "Pending"


async def test_default_class_waits_for_its_consumer_then_provisions_on_the_selected_node(
        client: ApiClient, ns: str, server: Cluster) -> None:
    local_path = await client.get(STORAGECLASSES, "local-path")
    assert local_path["provisioner"] == LOCAL_PATH_PROVISIONER
    assert local_path["volumeBindingMode"] == "WaitForFirstConsumer"
    assert local_path["parameters"]["path"] == str(server.data_dir / "volumes")
    await client.create(PERSISTENTVOLUMECLAIMS, claim("web", "1Gi", cls=None), ns)

    async def defaulted() -> bool:
        pvc = await client.get(PERSISTENTVOLUMECLAIMS, "web", ns)
        return pvc["spec"].get("storageClassName") == "local-path"
    await eventually(defaulted, "the default class set on the claim")
    await eventually(lambda: _has_reason(client, ns, "web", "WaitForFirstConsumer"), "WaitForFirstConsumer event")
    assert await phase_of(client, PERSISTENTVOLUMECLAIMS, "web", ns) == "Pending"

    await client.patch(PERSISTENTVOLUMECLAIMS, "web", {"metadata": {"annotations": {SELECTED_NODE: "node-a"}}}, ns)
    pvc = await bound(client, "web", ns)
    pv = await client.get(PERSISTENTVOLUMES, pvc["spec"]["volumeName"])
    uid = pvc["metadata"]["uid"]
    assert pv["metadata"]["name"] == f"pvc-{uid}"
    assert pv["spec"]["hostPath"] == {"path": f"{server.data_dir}/volumes/pvc-{uid}_{ns}_web",
                                      "type": "DirectoryOrCreate"}
    terms = pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"]
    assert terms == [{"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In",
                                            "values": ["node-a"]}]}]
    assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Delete"
    assert pv["metadata"]["finalizers"] == [LOCAL_PATH_FINALIZER, PV_PROTECTION]
    await eventually(lambda: _has_reason(client, ns, "web", "ProvisioningSucceeded"), "ProvisioningSucceeded event")

    await client.delete(PERSISTENTVOLUMECLAIMS, "web", ns)

    async def deleting() -> Obj | None:
        current = await get_or_none(client, PERSISTENTVOLUMES, pv["metadata"]["name"])
        return current if current and current["metadata"].get("deletionTimestamp") else None
    held = await deleting() or await eventually(deleting, "the provisioned volume deleted (held by its finalizer)")
    assert held["metadata"]["finalizers"] == [LOCAL_PATH_FINALIZER], "pv-protection lets a Released volume go"
    await client.patch(PERSISTENTVOLUMES, pv["metadata"]["name"], {"metadata": {
        "finalizers": None, "resourceVersion": held["metadata"]["resourceVersion"]}})
    await gone(client, PERSISTENTVOLUMES, pv["metadata"]["name"])


async def test_delete_policy_on_a_volume_nothing_can_delete_fails_it(client: ApiClient, ns: str) -> None:
    await client.create(PERSISTENTVOLUMES, volume(f"{ns}-del", "1Gi", persistentVolumeReclaimPolicy="Delete"))
    await client.create(PERSISTENTVOLUMECLAIMS, claim("gone", "1Gi", ns=ns), ns)
    await bound(client, "gone", ns)
    await client.delete(PERSISTENTVOLUMECLAIMS, "gone", ns)
    failed = await eventually(lambda: _phase_is(client, f"{ns}-del", "Failed"), "the volume Failed")
    assert "no deletable volume plugin matched" in failed["status"]["message"]


async def test_claim_in_use_by_a_pod_stays_until_the_pod_is_gone(client: ApiClient, ns: str) -> None:
    await client.create(PERSISTENTVOLUMES, volume(f"{ns}-used", "1Gi"))
    await client.create(PERSISTENTVOLUMECLAIMS, claim("used", "1Gi", ns=ns), ns)
    await bound(client, "used", ns)
    await client.create(PODS, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "user"}, "spec": {
        "containers": [{"name": "c", "image": "busybox"}],
        "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "used"}}]}}, ns)
    await client.delete(PERSISTENTVOLUMECLAIMS, "used", ns)
    await asyncio.sleep(1.0)
    pvc = await client.get(PERSISTENTVOLUMECLAIMS, "used", ns)
    assert pvc["metadata"]["deletionTimestamp"] and pvc["metadata"]["finalizers"] == [PVC_PROTECTION]
    assert await phase_of(client, PERSISTENTVOLUMES, f"{ns}-used") == "Bound"
    await client.delete(PODS, "user", ns, grace_period_seconds=0)
    await gone(client, PERSISTENTVOLUMECLAIMS, "used", ns)
    await eventually(lambda: _phase_is(client, f"{ns}-used", "Released"), "the volume Released")


async def test_ephemeral_volume_gets_a_claim_owned_by_its_pod(client: ApiClient, ns: str) -> None:
    await client.create(PERSISTENTVOLUMECLAIMS, claim("pod-taken", "1Gi"), ns)
    template = {"metadata": {"labels": {"kind": "scratch"}},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "2Gi"}}}}
    pod = await client.create(PODS, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "pod"}, "spec": {
        "containers": [{"name": "c", "image": "busybox"}],
        "volumes": [{"name": "scratch", "ephemeral": {"volumeClaimTemplate": template}},
                    {"name": "taken", "ephemeral": {"volumeClaimTemplate": template}}]}}, ns)
    made = await eventually(lambda: get_or_none(client, PERSISTENTVOLUMECLAIMS, "pod-scratch", ns),
                            "the ephemeral volume's claim")
    assert made["metadata"]["labels"] == {"kind": "scratch"}
    assert made["spec"]["resources"] == {"requests": {"storage": "2Gi"}}
    assert made["spec"]["storageClassName"] == "local-path"
    assert made["metadata"]["ownerReferences"] == [{"apiVersion": "v1", "kind": "Pod", "name": "pod",
                                                    "uid": pod["metadata"]["uid"], "controller": True,
                                                    "blockOwnerDeletion": True}]
    taken = await client.get(PERSISTENTVOLUMECLAIMS, "pod-taken", ns)
    assert "ownerReferences" not in taken["metadata"], "a claim of that name made by someone else is left alone"


async def test_a_claim_grows_only_where_its_class_allows_expansion(client: ApiClient, ns: str) -> None:
    await client.create(STORAGECLASSES, {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                                         "metadata": {"name": ns}, "provisioner": "example.com/grow",
                                         "allowVolumeExpansion": True})
    await client.create(PERSISTENTVOLUMES, volume(f"{ns}-fixed", "1Gi"))
    await client.create(PERSISTENTVOLUMES, volume(f"{ns}-grows", "1Gi", cls=ns))
    await client.create(PERSISTENTVOLUMECLAIMS, claim("fixed", "1Gi", ns=ns), ns)
    await client.create(PERSISTENTVOLUMECLAIMS, claim("grows", "1Gi", cls=ns, ns=ns), ns)
    await bound(client, "fixed", ns)
    await bound(client, "grows", ns)
    bigger = {"spec": {"resources": {"requests": {"storage": "2Gi"}}}}
    with pytest.raises(ApiError) as refused:
        await client.patch(PERSISTENTVOLUMECLAIMS, "fixed", bigger, ns)
    assert refused.value.code == 403 and "must support resize" in str(refused.value)
    grown = await client.patch(PERSISTENTVOLUMECLAIMS, "grows", bigger, ns)
    assert grown["spec"]["resources"]["requests"]["storage"] == "2Gi"
