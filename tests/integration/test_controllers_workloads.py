"""The workload controllers (ReplicaSet, ReplicationController, Deployment, StatefulSet, DaemonSet, Job, CronJob)
in-process against a real `kubelite server`; the test plays the kubelet by writing pod status."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kubelite.client import ApiClient, SharedInformerFactory, is_not_found, load_kubeconfig, run_controllers
from kubelite.client.controller import Controller
from kubelite.client.errors import ApiError
from kubelite.client.resources import (
    CONTROLLERREVISIONS,
    CRONJOBS,
    DAEMONSETS,
    DEPLOYMENTS,
    EVENTS,
    JOBS,
    NAMESPACES,
    NODES,
    PERSISTENTVOLUMECLAIMS,
    PODS,
    REPLICASETS,
    REPLICATIONCONTROLLERS,
    STATEFULSETS,
)
from kubelite.controllers import REGISTRY
from kubelite.controllers.cronjob import CronJobController
from kubelite.controllers.daemonset import DaemonSetController
from kubelite.controllers.deployment import DeploymentController
from kubelite.controllers.job import JobController
from kubelite.controllers.replicaset import ReplicaSetController, ReplicationManager
from kubelite.controllers.statefulset import StatefulSetController
from tests.e2e.conftest import KUBECTL, Cluster, free_port, start_server, stop_server

Obj = dict[str, Any]
Factory = Callable[[ApiClient, SharedInformerFactory], Controller]
_names = itertools.count()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    running = start_server(tmp_path_factory.mktemp("workloads"), free_port())
    yield running
    stop_server(running)


@pytest.fixture
async def api(server: Cluster) -> AsyncIterator[ApiClient]:
    async with ApiClient(load_kubeconfig(server.kubeconfig), qps=0) as client:
        yield client


@pytest.fixture
async def ns(api: ApiClient) -> str:
    name = f"wl-{next(_names)}"
    await api.create(NAMESPACES, {"metadata": {"name": name}})
    return name


@contextlib.asynccontextmanager
async def controllers(api: ApiClient, *factories: Factory) -> AsyncIterator[None]:
    """Run controllers in-process until the block ends."""
    stop = asyncio.Event()
    task = asyncio.create_task(run_controllers(api, stop, factories))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)


async def eventually(check: Callable[[], Awaitable[Any]], within: float = 15.0) -> Any:
    """Poll an async check until it returns something truthy; its last answer in the failure message."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        result = await check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {within}s (last: {result!r})")
        await asyncio.sleep(0.1)


async def never(check: Callable[[], Awaitable[Any]], during: float = 1.5) -> None:
    """Assert that an async check stays falsy for a while."""
    deadline = asyncio.get_running_loop().time() + during
    while asyncio.get_running_loop().time() < deadline:
        assert not await check()
        await asyncio.sleep(0.1)


def stamp(moment: datetime | None = None) -> str:
    return (moment or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")


async def pods_of(api: ApiClient, ns: str, selector: str = "") -> list[Obj]:
    return (await api.list(PODS, ns, label_selector=selector))["items"]


async def set_pod_status(api: ApiClient, pod: Obj, status: Obj) -> None:
    with contextlib.suppress(ApiError):
        await api.patch(PODS, pod["metadata"]["name"], {"status": status}, pod["metadata"]["namespace"],
                        subresource="status")


async def make_ready(api: ApiClient, pod: Obj, ready: bool = True) -> None:
    """Play the kubelet: the pod runs and is (or is not) ready."""
    await set_pod_status(api, pod, {"phase": "Running", "podIP": "10.1.0.1", "conditions": [
        {"type": "Ready", "status": "True" if ready else "False", "lastTransitionTime": stamp()}]})


def is_ready(pod: Obj) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod.get("status", {}).get("conditions", []))


@contextlib.asynccontextmanager
async def kubelet(api: ApiClient, ns: str, wanted: Callable[[Obj], bool] = lambda pod: True,
                  delay: float = 0.0) -> AsyncIterator[None]:
    """Mark every (wanted) pod in the namespace running and ready, `delay` seconds after first seeing it."""
    seen: dict[str, float] = {}

    async def loop() -> None:
        while True:
            now = asyncio.get_running_loop().time()
            for pod in await pods_of(api, ns):
                uid = pod["metadata"]["uid"]
                if is_ready(pod) or pod["metadata"].get("deletionTimestamp") or not wanted(pod):
                    continue
                if now - seen.setdefault(uid, now) >= delay:
                    await make_ready(api, pod)
            await asyncio.sleep(0.1)

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def template(labels: dict[str, str], image: str = "busybox:1", **spec: Any) -> Obj:
    return {"metadata": {"labels": labels},
            "spec": {"containers": [{"name": "c", "image": image}], "terminationGracePeriodSeconds": 0, **spec}}


def controlled_by(obj: Obj, owner: Obj) -> bool:
    return any(ref.get("controller") and ref["uid"] == owner["metadata"]["uid"]
               for ref in obj["metadata"].get("ownerReferences") or [])


async def events_of(api: ApiClient, ns: str, name: str) -> list[tuple[str, str]]:
    items = (await api.list(EVENTS, ns))["items"]
    return [(e["reason"], e["message"]) for e in items if e["involvedObject"]["name"] == name]


async def kubectl(server: Cluster, *args: str, timeout: float = 60) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(KUBECTL, "--kubeconfig", str(server.kubeconfig), *args,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode or 0, out.decode()


def test_registry_names_the_workload_controllers() -> None:
    for name in ("replicaset", "replicationcontroller", "deployment", "statefulset", "daemonset", "job", "cronjob"):
        assert name in REGISTRY
        module, _, cls = REGISTRY[name].partition(":")
        assert module.startswith("kubelite.controllers.") and cls


# ReplicaSet / ReplicationController


async def test_replicaset_creates_deletes_adopts_and_releases(api: ApiClient, ns: str) -> None:
    labels = {"app": "web"}
    orphan = await api.create(PODS, {"metadata": {"name": "orphan", "labels": labels}, "spec": template(labels)["spec"]},
                              ns)
    rs = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "web"},
          "spec": {"replicas": 3, "selector": {"matchLabels": labels}, "template": template(labels)}}
    async with controllers(api, ReplicaSetController):
        rs = await api.create(REPLICASETS, rs, ns)

        async def three_owned() -> list[Obj]:
            pods = await pods_of(api, ns)
            return pods if len(pods) == 3 and all(controlled_by(p, rs) for p in pods) else []

        pods = await eventually(three_owned)
        assert "orphan" in {p["metadata"]["name"] for p in pods}, "the matching orphan was adopted"
        made = [p for p in pods if p["metadata"]["name"] != "orphan"]
        assert all(p["metadata"]["name"].startswith("web-") and len(p["metadata"]["name"]) == 9 for p in made)
        ref = next(r for r in made[0]["metadata"]["ownerReferences"] if r["uid"] == rs["metadata"]["uid"])
        assert ref == {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": rs["metadata"]["uid"],
                       "controller": True, "blockOwnerDeletion": True}

        keep = made[0]
        await make_ready(api, keep)

        async def status_counts() -> Obj:
            status = (await api.get(REPLICASETS, "web", ns)).get("status", {})
            return status if status.get("readyReplicas") == 1 and status.get("replicas") == 3 else {}

        status = await eventually(status_counts)
        assert status["availableReplicas"] == 1 and status["fullyLabeledReplicas"] == 3
        assert status["observedGeneration"] == 1

        await api.patch(REPLICASETS, "web", {"spec": {"replicas": 1}}, ns)

        async def one_left() -> list[Obj]:
            pods = await pods_of(api, ns)
            return pods if len(pods) == 1 else []

        (left,) = await eventually(one_left)
        assert left["metadata"]["name"] == keep["metadata"]["name"], "not-ready pods go before ready ones"

        await api.patch(PODS, left["metadata"]["name"], {"metadata": {"labels": {"app": "other"}}}, ns)

        async def released_and_replaced() -> bool:
            pods = {p["metadata"]["name"]: p for p in await pods_of(api, ns)}
            released = pods.get(left["metadata"]["name"])
            return (len(pods) == 2 and released is not None and not controlled_by(released, rs)
                    and all(controlled_by(p, rs) for n, p in pods.items() if n != left["metadata"]["name"]))

        await eventually(released_and_replaced)
        reasons = {reason for reason, _ in await events_of(api, ns, "web")}
        assert {"SuccessfulCreate", "SuccessfulDelete"} <= reasons
    assert orphan["metadata"]["uid"]


async def test_replicaset_slow_start_does_not_overcreate_and_reports_failures(api: ApiClient, ns: str) -> None:
    labels = {"app": "burst"}
    rs = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "burst"},
          "spec": {"replicas": 20, "selector": {"matchLabels": labels}, "template": template(labels)}}
    async with controllers(api, ReplicaSetController):
        await api.create(REPLICASETS, rs, ns)
        await eventually(lambda: _count(api, ns, 20))
        await never(lambda: _more_than(api, ns, 20), during=1.0)
        await api.delete(NAMESPACES, ns)
        await api.patch(REPLICASETS, "burst", {"spec": {"replicas": 25}}, ns)

        async def failure() -> Obj | None:
            status = (await api.get(REPLICASETS, "burst", ns)).get("status", {})
            return next((c for c in status.get("conditions", []) if c["type"] == "ReplicaFailure"), None)

        cond = await eventually(failure)
        assert cond["reason"] == "FailedCreate" and "terminated" in cond["message"]
        assert len(await pods_of(api, ns)) == 20


async def _count(api: ApiClient, ns: str, n: int) -> bool:
    return len(await pods_of(api, ns)) == n


async def _more_than(api: ApiClient, ns: str, n: int) -> bool:
    return len(await pods_of(api, ns)) > n


async def test_replication_controller_keeps_replicas(api: ApiClient, ns: str) -> None:
    labels = {"app": "rc"}
    rc = {"apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": "rc"},
          "spec": {"replicas": 2, "selector": labels, "template": template(labels)}}
    async with controllers(api, ReplicationManager):
        rc = await api.create(REPLICATIONCONTROLLERS, rc, ns)
        await eventually(lambda: _count(api, ns, 2))
        victim = (await pods_of(api, ns))[0]
        await api.delete(PODS, victim["metadata"]["name"], ns)

        async def replaced() -> bool:
            pods = await pods_of(api, ns)
            return len(pods) == 2 and victim["metadata"]["name"] not in {p["metadata"]["name"] for p in pods}

        await eventually(replaced)
        assert all(controlled_by(p, rc) for p in await pods_of(api, ns))
        await eventually(lambda: _status_is(api, REPLICATIONCONTROLLERS, ns, "rc", replicas=2))


async def _status_is(api: ApiClient, resource: Any, ns: str, name: str, **expected: Any) -> bool:
    status = (await api.get(resource, name, ns)).get("status", {})
    return all(status.get(k) == v for k, v in expected.items())


# Deployment


def deployment(name: str, labels: dict[str, str], replicas: int, image: str = "busybox:1", **spec: Any) -> Obj:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels}, "template": template(labels, image),
                     **spec}}


def image_of(obj: Obj) -> str:
    spec = obj["spec"]["template"]["spec"] if "template" in obj["spec"] else obj["spec"]
    return spec["containers"][0]["image"]


async def sets_of(api: ApiClient, ns: str) -> list[Obj]:
    """The ReplicaSets, oldest first (by creation, then by the revision they were created at)."""
    return sorted((await api.list(REPLICASETS, ns))["items"],
                  key=lambda rs: (rs["metadata"]["creationTimestamp"], first_revision(rs)))


def first_revision(rs: Obj) -> int:
    annotations = rs["metadata"].get("annotations", {})
    history = annotations.get("deployment.kubernetes.io/revision-history", "")
    return int(history.split(",")[0] or annotations.get("deployment.kubernetes.io/revision", "0"))


async def rolled_out(api: ApiClient, ns: str, name: str) -> Obj | None:
    d = await api.get(DEPLOYMENTS, name, ns)
    status, want = d.get("status", {}), d["spec"]["replicas"]
    progressing = next((c for c in status.get("conditions", []) if c["type"] == "Progressing"), {})
    done = (status.get("observedGeneration") == d["metadata"]["generation"] and status.get("updatedReplicas") == want
            and status.get("replicas") == want and status.get("availableReplicas") == want
            and progressing.get("reason") == "NewReplicaSetAvailable")
    return d if done else None


async def test_deployment_rolls_out_within_surge_and_unavailability(api: ApiClient, ns: str) -> None:
    labels = {"app": "roll"}
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    violations: list[str] = []

    async def watch_invariants() -> None:
        while True:
            pods = [p for p in await pods_of(api, ns) if not p["metadata"].get("deletionTimestamp")]
            if len(pods) > 5:
                violations.append(f"{len(pods)} pods > replicas + maxSurge")
            if sum(map(is_ready, pods)) < 4 and watching_ready:
                violations.append(f"{sum(map(is_ready, pods))} ready < replicas - maxUnavailable")
            await asyncio.sleep(0.05)

    watching_ready = False
    async with controllers(api, DeploymentController, ReplicaSetController), kubelet(api, ns, delay=0.3):
        await api.create(DEPLOYMENTS, deployment("roll", labels, 4, strategy=strategy), ns)
        d = await eventually(lambda: rolled_out(api, ns, "roll"))
        (first,) = await sets_of(api, ns)
        hash_ = first["metadata"]["labels"]["pod-template-hash"]
        assert first["metadata"]["name"] == f"roll-{hash_}"
        assert first["spec"]["selector"]["matchLabels"] == {**labels, "pod-template-hash": hash_}
        assert first["spec"]["template"]["metadata"]["labels"]["pod-template-hash"] == hash_
        assert first["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"
        assert first["metadata"]["annotations"]["deployment.kubernetes.io/desired-replicas"] == "4"
        assert first["metadata"]["annotations"]["deployment.kubernetes.io/max-replicas"] == "5"
        assert d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"
        available = next(c for c in d["status"]["conditions"] if c["type"] == "Available")
        assert available["status"] == "True" and available["reason"] == "MinimumReplicasAvailable"

        watching_ready = True
        monitor = asyncio.create_task(watch_invariants())
        try:
            await api.patch(DEPLOYMENTS, "roll", {"spec": {"template": template(labels, "busybox:2")}}, ns)
            d = await eventually(lambda: rolled_out(api, ns, "roll"), within=30)
        finally:
            monitor.cancel()
        assert not violations, violations[:3]
        old, new = await sets_of(api, ns)
        assert old["metadata"]["uid"] == first["metadata"]["uid"] and old["spec"]["replicas"] == 0
        assert image_of(new) == "busybox:2" and new["spec"]["replicas"] == 4
        assert new["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
        assert d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
        assert d["status"]["unavailableReplicas"] == 0 and d["status"]["readyReplicas"] == 4
        assert all(image_of(p) == "busybox:2" for p in await pods_of(api, ns))
        messages = [m for r, m in await events_of(api, ns, "roll") if r == "ScalingReplicaSet"]
        assert f"Scaled down replica set {old['metadata']['name']} from 4 to 3" in messages


async def test_rollout_undo_status_and_history_limit(server: Cluster, api: ApiClient, ns: str) -> None:
    labels = {"app": "undo"}
    async with controllers(api, DeploymentController, ReplicaSetController), kubelet(api, ns, delay=0.2):
        await api.create(DEPLOYMENTS, deployment("undo", labels, 2, revisionHistoryLimit=1), ns)
        code, out = await kubectl(server, "-n", ns, "rollout", "status", "deployment/undo", "--timeout=30s")
        assert code == 0 and 'deployment "undo" successfully rolled out' in out, out
        for image in ("busybox:2", "busybox:3"):
            code, out = await kubectl(server, "-n", ns, "set", "image", "deployment/undo", f"c={image}")
            assert code == 0, out
            code, out = await kubectl(server, "-n", ns, "rollout", "status", "deployment/undo", "--timeout=30s")
            assert code == 0 and "successfully rolled out" in out, out

        async def history_trimmed() -> list[Obj]:
            sets = await sets_of(api, ns)
            return sets if len(sets) == 2 else []

        sets = await eventually(history_trimmed)
        assert sorted(image_of(rs) for rs in sets) == ["busybox:2", "busybox:3"], "revision 1 was cleaned up"
        code, out = await kubectl(server, "-n", ns, "rollout", "undo", "deployment/undo")
        assert code == 0 and "rolled back" in out, out
        code, out = await kubectl(server, "-n", ns, "rollout", "status", "deployment/undo", "--timeout=30s")
        assert code == 0, out
        d = await api.get(DEPLOYMENTS, "undo", ns)
        assert image_of(d) == "busybox:2"
        current = next(rs for rs in await sets_of(api, ns) if image_of(rs) == "busybox:2")
        annotations = current["metadata"]["annotations"]
        assert annotations["deployment.kubernetes.io/revision"] == "4", "the old RS became the newest revision"
        assert annotations["deployment.kubernetes.io/revision-history"] == "2"
        assert current["spec"]["replicas"] == 2
        assert d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "4"
        code, out = await kubectl(server, "-n", ns, "rollout", "history", "deployment/undo")
        assert code == 0 and "3 " in out and "4 " in out, out


async def test_recreate_waits_for_old_pods_before_creating_new(api: ApiClient, ns: str) -> None:
    labels = {"app": "recreate"}
    overlap: list[str] = []

    async def watch_overlap() -> None:
        while True:
            images = {image_of(p) for p in await pods_of(api, ns)}
            if len(images) > 1:
                overlap.append(str(images))
            await asyncio.sleep(0.05)

    async with controllers(api, DeploymentController, ReplicaSetController), kubelet(api, ns, delay=0.2):
        await api.create(DEPLOYMENTS, deployment("recreate", labels, 3, strategy={"type": "Recreate"}), ns)
        await eventually(lambda: rolled_out(api, ns, "recreate"))
        monitor = asyncio.create_task(watch_overlap())
        try:
            await api.patch(DEPLOYMENTS, "recreate", {"spec": {"template": template(labels, "busybox:2")}}, ns)
            await eventually(lambda: rolled_out(api, ns, "recreate"), within=30)
        finally:
            monitor.cancel()
        assert not overlap, overlap[:3]
        assert {image_of(p) for p in await pods_of(api, ns)} == {"busybox:2"}


async def test_paused_deployment_does_not_roll_until_resumed(api: ApiClient, ns: str) -> None:
    labels = {"app": "pause"}
    async with controllers(api, DeploymentController, ReplicaSetController), kubelet(api, ns):
        await api.create(DEPLOYMENTS, deployment("pause", labels, 2), ns)
        await eventually(lambda: rolled_out(api, ns, "pause"))
        await api.patch(DEPLOYMENTS, "pause", {"spec": {"paused": True}}, ns)

        async def paused_condition() -> bool:
            conds = (await api.get(DEPLOYMENTS, "pause", ns))["status"]["conditions"]
            return any(c["type"] == "Progressing" and c["reason"] == "DeploymentPaused" for c in conds)

        await eventually(paused_condition)
        await api.patch(DEPLOYMENTS, "pause", {"spec": {"template": template(labels, "busybox:2"), "replicas": 3}}, ns)
        await eventually(lambda: _sizes(api, ns, [3]))
        await never(lambda: _set_count_above(api, ns, 1))
        await api.patch(DEPLOYMENTS, "pause", {"spec": {"paused": False}}, ns)
        d = await eventually(lambda: rolled_out(api, ns, "pause"), within=30)
        assert image_of(d) == "busybox:2" and len(await sets_of(api, ns)) == 2


async def _sizes(api: ApiClient, ns: str, sizes: list[int]) -> bool:
    return sorted(rs["spec"]["replicas"] for rs in await sets_of(api, ns)) == sorted(sizes)


async def _set_count_above(api: ApiClient, ns: str, n: int) -> bool:
    return len(await sets_of(api, ns)) > n


async def test_scaling_mid_rollout_is_proportional(server: Cluster, api: ApiClient, ns: str) -> None:
    labels = {"app": "prop"}
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}
    async with (controllers(api, DeploymentController, ReplicaSetController),
                kubelet(api, ns, wanted=lambda pod: image_of(pod) == "busybox:1")):
        await api.create(DEPLOYMENTS, deployment("prop", labels, 10, strategy=strategy), ns)
        await eventually(lambda: rolled_out(api, ns, "prop"))
        await api.patch(DEPLOYMENTS, "prop", {"spec": {"template": template(labels, "busybox:2")}}, ns)
        # 25% of 10: surge rounds up to 3, unavailable down to 2; the new pods never get ready.
        await eventually(lambda: _sizes(api, ns, [8, 5]))
        await never(lambda: _sizes_not(api, ns, [8, 5]), during=1.0)
        code, out = await kubectl(server, "-n", ns, "scale", "deployment/prop", "--replicas=20")
        assert code == 0, out
        await eventually(lambda: _sizes(api, ns, [15, 10]))
        old, new = await sets_of(api, ns)
        assert (image_of(old), old["spec"]["replicas"]) == ("busybox:1", 15)
        assert new["metadata"]["annotations"]["deployment.kubernetes.io/desired-replicas"] == "20"
        assert new["metadata"]["annotations"]["deployment.kubernetes.io/max-replicas"] == "25"


async def _sizes_not(api: ApiClient, ns: str, sizes: list[int]) -> bool:
    return not await _sizes(api, ns, sizes)


async def test_progress_deadline_exceeded(api: ApiClient, ns: str) -> None:
    labels = {"app": "stuck"}
    async with controllers(api, DeploymentController, ReplicaSetController):
        await api.create(DEPLOYMENTS, deployment("stuck", labels, 1, progressDeadlineSeconds=2), ns)

        async def exceeded() -> Obj | None:
            conds = (await api.get(DEPLOYMENTS, "stuck", ns)).get("status", {}).get("conditions", [])
            return next((c for c in conds if c["type"] == "Progressing" and c["status"] == "False"), None)

        cond = await eventually(exceeded, within=10)
        assert cond["reason"] == "ProgressDeadlineExceeded"
        assert cond["message"].startswith('ReplicaSet "stuck-') and cond["message"].endswith("has timed out progressing.")


# StatefulSet


def statefulset(name: str, labels: dict[str, str], replicas: int, **spec: Any) -> Obj:
    return {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": name},
            "spec": {"replicas": replicas, "serviceName": name, "selector": {"matchLabels": labels},
                     "template": template(labels), **spec}}


async def pod_names(api: ApiClient, ns: str) -> set[str]:
    return {p["metadata"]["name"] for p in await pods_of(api, ns) if not p["metadata"].get("deletionTimestamp")}


async def test_statefulset_ordered_pods_claims_scale_down_and_partitioned_update(api: ApiClient, ns: str) -> None:
    labels = {"app": "db"}
    claim = {"metadata": {"name": "data"},
             "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}
    async with controllers(api, StatefulSetController):
        sts = await api.create(STATEFULSETS, statefulset("db", labels, 3, volumeClaimTemplates=[claim]), ns)
        await eventually(lambda: _names_are(api, ns, {"db-0"}))
        await never(lambda: _names_include(api, ns, "db-1"), during=1.0)
        (pod,) = await pods_of(api, ns)
        status = (await api.get(STATEFULSETS, "db", ns)).get("status", {})
        assert pod["metadata"]["labels"] == {**labels, "statefulset.kubernetes.io/pod-name": "db-0",
                                             "apps.kubernetes.io/pod-index": "0",
                                             "controller-revision-hash": status["updateRevision"]}
        assert pod["spec"]["hostname"] == "db-0" and pod["spec"]["subdomain"] == "db"
        assert {"name": "data", "persistentVolumeClaim": {"claimName": "data-db-0"}} in pod["spec"]["volumes"]
        assert controlled_by(pod, sts)
        pvc = await api.get(PERSISTENTVOLUMECLAIMS, "data-db-0", ns)
        assert pvc["metadata"]["labels"] == labels and "ownerReferences" not in pvc["metadata"], "Retain keeps claims"
        (revision,) = (await api.list(CONTROLLERREVISIONS, ns))["items"]
        assert revision["metadata"]["name"] == status["updateRevision"] == status["currentRevision"]
        assert revision["revision"] == 1 and controlled_by(revision, sts)

        async with kubelet(api, ns, delay=0.3):
            await eventually(lambda: _status_is(api, STATEFULSETS, ns, "db", replicas=3, readyReplicas=3,
                                                availableReplicas=3, updatedReplicas=3, currentReplicas=3))
            assert sorted(p["metadata"]["creationTimestamp"] for p in await pods_of(api, ns)) == \
                [p["metadata"]["creationTimestamp"] for p in sorted(await pods_of(api, ns),
                                                                    key=lambda p: p["metadata"]["name"])]
            assert {p["metadata"]["name"] for p in (await api.list(PERSISTENTVOLUMECLAIMS, ns))["items"]} == \
                {"data-db-0", "data-db-1", "data-db-2"}

            order: list[set[str]] = []

            async def record() -> None:
                while True:
                    order.append(await pod_names(api, ns))
                    await asyncio.sleep(0.03)

            recorder = asyncio.create_task(record())
            await api.patch(STATEFULSETS, "db", {"spec": {"replicas": 1}}, ns)
            await eventually(lambda: _names_are(api, ns, {"db-0"}))
            recorder.cancel()
            assert not any("db-1" not in names and "db-2" in names for names in order), "scale down goes in reverse"

            await api.patch(STATEFULSETS, "db", {"spec": {"replicas": 3}}, ns)
            await eventually(lambda: _status_is(api, STATEFULSETS, ns, "db", replicas=3, readyReplicas=3))
            old_revision = (await api.get(STATEFULSETS, "db", ns))["status"]["currentRevision"]
            await api.patch(STATEFULSETS, "db", {"spec": {
                "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 1}},
                "template": template(labels, "busybox:2")}}, ns)

            async def partitioned() -> Obj:
                status = (await api.get(STATEFULSETS, "db", ns)).get("status", {})
                return status if status.get("updatedReplicas") == 2 and status.get("readyReplicas") == 3 else {}

            status = await eventually(partitioned, within=20)
            assert status["currentRevision"] == old_revision != status["updateRevision"]
            revisions = {p["metadata"]["name"]: (p["metadata"]["labels"]["controller-revision-hash"], image_of(p))
                         for p in await pods_of(api, ns)}
            assert revisions == {"db-0": (old_revision, "busybox:1"), "db-1": (status["updateRevision"], "busybox:2"),
                                 "db-2": (status["updateRevision"], "busybox:2")}
            await never(lambda: _image_is(api, ns, "db-0", "busybox:2"), during=1.0)
            await api.patch(STATEFULSETS, "db", {"spec": {"updateStrategy": {"rollingUpdate": {"partition": 0}}}}, ns)
            await eventually(lambda: _status_is(api, STATEFULSETS, ns, "db", updatedReplicas=3, currentReplicas=3,
                                                readyReplicas=3, currentRevision=status["updateRevision"]))
        messages = [m for r, m in await events_of(api, ns, "db") if r == "SuccessfulCreate"]
        assert "create Pod db-0 in StatefulSet db successful" in messages
        assert "create Claim data-db-0 Pod db-0 in StatefulSet db success" in messages


async def _names_are(api: ApiClient, ns: str, names: set[str]) -> bool:
    return await pod_names(api, ns) == names


async def _names_include(api: ApiClient, ns: str, name: str) -> bool:
    return name in await pod_names(api, ns)


async def _image_is(api: ApiClient, ns: str, name: str, image: str) -> bool:
    with contextlib.suppress(ApiError):
        return image_of(await api.get(PODS, name, ns)) == image
    return False


async def test_statefulset_parallel_on_delete_and_claim_retention(api: ApiClient, ns: str) -> None:
    labels = {"app": "par"}
    claim = {"metadata": {"name": "data"},
             "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}
    spec = {"podManagementPolicy": "Parallel", "updateStrategy": {"type": "OnDelete"}, "volumeClaimTemplates": [claim],
            "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Delete", "whenScaled": "Retain"}}
    async with controllers(api, StatefulSetController):
        sts = await api.create(STATEFULSETS, statefulset("par", labels, 3, **spec), ns)
        await eventually(lambda: _names_are(api, ns, {"par-0", "par-1", "par-2"}))
        pvc = await api.get(PERSISTENTVOLUMECLAIMS, "data-par-1", ns)
        assert [r["uid"] for r in pvc["metadata"]["ownerReferences"]] == [sts["metadata"]["uid"]]
        await api.patch(STATEFULSETS, "par", {"spec": {"template": template(labels, "busybox:2")}}, ns)
        await never(lambda: _image_is(api, ns, "par-1", "busybox:2"), during=1.0)
        await api.delete(PODS, "par-1", ns)
        await eventually(lambda: _image_is(api, ns, "par-1", "busybox:2"))
        assert not await _image_is(api, ns, "par-0", "busybox:2")
        await eventually(lambda: _status_is(api, STATEFULSETS, ns, "par", replicas=3, updatedReplicas=1,
                                            currentReplicas=2))
