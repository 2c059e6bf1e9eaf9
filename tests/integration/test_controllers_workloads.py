"""The workload controllers (ReplicaSet, ReplicationController, Deployment, StatefulSet, DaemonSet, Job, CronJob)
in-process against a real `kubelite server`; the test plays the kubelet by writing pod status."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kubelite.client import ApiClient, SharedInformerFactory, load_kubeconfig, run_controllers
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
from tests.e2e.conftest import KUBECTL, Cluster

Obj = dict[str, Any]
Factory = Callable[[ApiClient, SharedInformerFactory], Controller]
_names = itertools.count()



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


async def has_events(api: ApiClient, ns: str, name: str, *wanted: tuple[str, str | None]) -> None:
    """Wait until the object's Events include each (reason, message) wanted (message None: any); Events are
    written asynchronously, after the change they tell of."""
    async def found() -> bool:
        events = await events_of(api, ns, name)
        return all(any(r == reason and message in (None, m) for r, m in events) for reason, message in wanted)
    await eventually(found)


async def kubectl(server: Cluster, *args: str) -> tuple[int, str]:
    """Run the real kubectl against the server: (exit code, output)."""
    proc = await asyncio.create_subprocess_exec(KUBECTL, "--kubeconfig", str(server.kubeconfig), *args,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    async with asyncio.timeout(60):
        out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


def test_registry_names_the_workload_controllers() -> None:
    for name in ("replicaset", "replicationcontroller", "deployment", "statefulset", "daemonset", "job", "cronjob"):
        assert name in REGISTRY
        module, _, cls = REGISTRY[name].partition(":")
        assert module.startswith("kubelite.controllers.") and cls


# ReplicaSet / ReplicationController


async def test_replicaset_creates_deletes_adopts_and_releases(api: ApiClient, ns: str) -> None:
    labels = {"app": "web"}
    orphan = {"metadata": {"name": "orphan", "labels": labels}, "spec": template(labels)["spec"]}
    orphan = await api.create(PODS, orphan, ns)
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
        await has_events(api, ns, "web", ("SuccessfulCreate", None), ("SuccessfulDelete", None))
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
    """The object's status has these values (an absent count reads as 0, as omitempty drops zeros)."""
    status = (await api.get(resource, name, ns)).get("status", {})
    return all(status.get(k, 0 if isinstance(v, int) else None) == v for k, v in expected.items())


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
        await has_events(api, ns, "roll",
                         ("ScalingReplicaSet", f"Scaled down replica set {old['metadata']['name']} from 4 to 3"))


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
        assert cond["message"].startswith('ReplicaSet "stuck-')
        assert cond["message"].endswith("has timed out progressing.")


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
        await has_events(api, ns, "db", ("SuccessfulCreate", "create Pod db-0 in StatefulSet db successful"),
                         ("SuccessfulCreate", "create Claim data-db-0 Pod db-0 in StatefulSet db success"))


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


# DaemonSet


async def make_node(api: ApiClient, name: str, labels: dict[str, str], taints: list[Obj] | None = None) -> Obj:
    return await api.create(NODES, {"metadata": {"name": name, "labels": labels},
                                    "spec": {"taints": taints} if taints else {}})


def daemonset(name: str, labels: dict[str, str], **pod_spec: Any) -> Obj:
    return {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": name},
            "spec": {"selector": {"matchLabels": labels}, "template": template(labels, **pod_spec)}}


async def pods_by_node(api: ApiClient, ns: str) -> dict[str, list[Obj]]:
    found: dict[str, list[Obj]] = {}
    for pod in await pods_of(api, ns):
        if not pod["metadata"].get("deletionTimestamp"):
            terms = pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            found.setdefault(terms["nodeSelectorTerms"][0]["matchFields"][0]["values"][0], []).append(pod)
    return found


async def test_daemonset_one_pod_per_eligible_node_taints_and_rolling_update(api: ApiClient, ns: str) -> None:
    a, b, c = f"{ns}-a", f"{ns}-b", f"{ns}-c"
    await make_node(api, a, {"role": "worker"})
    await make_node(api, b, {"role": "worker"}, [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}])
    await make_node(api, c, {"role": "db"})
    labels = {"app": "agent"}
    async with controllers(api, DaemonSetController), kubelet(api, ns):
        ds = await api.create(DAEMONSETS, daemonset("agent", labels, nodeSelector={"role": "worker"}), ns)

        async def placed(expected: set[str]) -> dict[str, list[Obj]]:
            found = await pods_by_node(api, ns)
            return found if set(found) == expected and all(len(p) == 1 for p in found.values()) else {}

        found = await eventually(lambda: placed({a}))
        await never(lambda: _nodes_other_than(api, ns, {a}), during=1.0)
        (pod,) = found[a]
        assert controlled_by(pod, ds) and pod["metadata"]["name"].startswith("agent-")
        assert pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"] == {
            "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [a]}]}]}
        tolerations = {(t["key"], t["effect"]) for t in pod["spec"]["tolerations"]}
        assert {("node.kubernetes.io/not-ready", "NoExecute"), ("node.kubernetes.io/unreachable", "NoExecute"),
                ("node.kubernetes.io/disk-pressure", "NoSchedule"),
                ("node.kubernetes.io/memory-pressure", "NoSchedule"), ("node.kubernetes.io/pid-pressure", "NoSchedule"),
                ("node.kubernetes.io/unschedulable", "NoSchedule")} == tolerations
        await eventually(lambda: _status_is(api, DAEMONSETS, ns, "agent", desiredNumberScheduled=1,
                                            currentNumberScheduled=1, numberReady=1, numberAvailable=1,
                                            updatedNumberScheduled=1, numberMisscheduled=0, observedGeneration=1))
        old_hash = pod["metadata"]["labels"]["controller-revision-hash"]

        toleration = {"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"}
        await api.patch(DAEMONSETS, "agent", {"spec": {"template": template(
            labels, nodeSelector={"role": "worker"}, tolerations=[toleration])}}, ns)
        found = await eventually(lambda: placed({a, b}))

        async def all_updated() -> bool:
            found = await pods_by_node(api, ns)
            hashes = {p["metadata"]["labels"]["controller-revision-hash"] for pods in found.values() for p in pods}
            return set(found) == {a, b} and len(hashes) == 1 and old_hash not in hashes

        await eventually(all_updated)
        await eventually(lambda: _status_is(api, DAEMONSETS, ns, "agent", desiredNumberScheduled=2,
                                            updatedNumberScheduled=2, numberAvailable=2, numberUnavailable=0))
        assert len((await api.list(CONTROLLERREVISIONS, ns))["items"]) == 2

        taint = {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}
        cordon = {"unschedulable": True, "taints": [taint]}
        await api.patch(NODES, c, {"metadata": {"labels": {"role": "worker"}}, "spec": cordon})
        await eventually(lambda: placed({a, b, c}))
        await api.patch(NODES, a, {"metadata": {"labels": {"role": "other"}}})
        await eventually(lambda: placed({b, c}))
    for node in (a, b, c):
        await api.delete(NODES, node)


async def _nodes_other_than(api: ApiClient, ns: str, nodes: set[str]) -> bool:
    return bool(set(await pods_by_node(api, ns)) - nodes)


async def test_daemonset_surge_keeps_an_available_pod_on_every_node(api: ApiClient, ns: str) -> None:
    nodes = [f"{ns}-{i}" for i in range(2)]
    for node in nodes:
        await make_node(api, node, {"pool": ns})
    labels = {"app": "surge"}
    ds = daemonset("surge", labels, nodeSelector={"pool": ns})
    ds["spec"]["updateStrategy"] = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    gaps: list[str] = []

    async def watch_gaps() -> None:
        while True:
            found = await pods_by_node(api, ns)
            gaps.extend(n for n in nodes if not any(is_ready(p) for p in found.get(n, [])))
            await asyncio.sleep(0.05)

    async with controllers(api, DaemonSetController), kubelet(api, ns, delay=0.3):
        await api.create(DAEMONSETS, ds, ns)
        await eventually(lambda: _status_is(api, DAEMONSETS, ns, "surge", numberAvailable=2))
        monitor = asyncio.create_task(watch_gaps())
        try:
            await api.patch(DAEMONSETS, "surge", {"spec": {"template": template(labels, "busybox:2",
                                                                                 nodeSelector={"pool": ns})}}, ns)

            async def replaced() -> bool:
                found = await pods_by_node(api, ns)
                return sorted(found) == nodes and all(len(p) == 1 and image_of(p[0]) == "busybox:2" and is_ready(p[0])
                                                      for p in found.values())

            await eventually(replaced, within=20)
        finally:
            monitor.cancel()
        assert not gaps, f"nodes without a ready daemon pod during the update: {gaps[:3]}"
    for node in nodes:
        await api.delete(NODES, node)


# Job


def job_manifest(name: str, **spec: Any) -> Obj:
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox:1"}],
                                           "restartPolicy": "Never"}}, **spec}}


def fast_jobs(client: ApiClient, informers: SharedInformerFactory) -> JobController:
    controller = JobController(client, informers)
    controller.backoff_base = 0.1
    return controller


async def finish(api: ApiClient, pod: Obj, exit_code: int = 0) -> None:
    """Play the kubelet: the pod's container exits."""
    now = stamp()
    await set_pod_status(api, pod, {
        "phase": "Succeeded" if exit_code == 0 else "Failed",
        "conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": now}],
        "containerStatuses": [{"name": "c", "image": "busybox:1", "imageID": "", "ready": False, "restartCount": 0,
                               "state": {"terminated": {"exitCode": exit_code, "startedAt": now, "finishedAt": now,
                                                        "reason": "Completed" if exit_code == 0 else "Error"}}}]})


async def running_pods(api: ApiClient, ns: str, count: int | None = None) -> list[Obj]:
    pods = [p for p in await pods_of(api, ns)
            if p["status"].get("phase") not in ("Succeeded", "Failed") and not p["metadata"].get("deletionTimestamp")]
    return pods if count is None or len(pods) == count else []


def job_condition(job: Obj, type_: str) -> Obj | None:
    return next((c for c in job.get("status", {}).get("conditions", []) if c["type"] == type_), None)


async def job_done(api: ApiClient, ns: str, name: str, type_: str) -> Obj | None:
    job = await api.get(JOBS, name, ns)
    cond = job_condition(job, type_)
    return job if cond and cond["status"] == "True" else None


async def test_job_completions_parallelism_and_finalizers(api: ApiClient, ns: str) -> None:
    async with controllers(api, fast_jobs):
        job = await api.create(JOBS, job_manifest("work", completions=3, parallelism=2), ns)
        pods = await eventually(lambda: running_pods(api, ns, 2))
        await never(lambda: _more_than(api, ns, 2), during=1.0)
        for pod in pods:
            assert pod["metadata"]["finalizers"] == ["batch.kubernetes.io/job-tracking"]
            assert controlled_by(pod, job) and pod["metadata"]["generateName"] == "work-"
            assert pod["metadata"]["labels"]["batch.kubernetes.io/job-name"] == "work"
        await make_ready(api, pods[1])
        await eventually(lambda: _status_is(api, JOBS, ns, "work", active=2, ready=1, succeeded=0))
        job = await api.get(JOBS, "work", ns)
        assert job["status"]["startTime"] and job["status"]["uncountedTerminatedPods"] == {}
        await finish(api, pods[0])
        third = await eventually(lambda: _new_running(api, ns, {p["metadata"]["name"] for p in pods}))
        await eventually(lambda: _status_is(api, JOBS, ns, "work", succeeded=1, active=2))
        done = await api.get(PODS, pods[0]["metadata"]["name"], ns)
        assert not done["metadata"].get("finalizers"), "counted pods lose the tracking finalizer"
        await finish(api, pods[1])
        await finish(api, third)
        job = await eventually(lambda: job_done(api, ns, "work", "Complete"))
        assert job["status"]["succeeded"] == 3 and job["status"]["active"] == 0 and "failed" not in job["status"]
        assert job["status"]["completionTime"] and job["status"]["uncountedTerminatedPods"] == {}
        met = job_condition(job, "SuccessCriteriaMet")
        assert met and met["reason"] == "CompletionsReached"
        assert not any(p["metadata"].get("finalizers") for p in await pods_of(api, ns))
        await has_events(api, ns, "work", ("Completed", "Job completed"))


async def _new_running(api: ApiClient, ns: str, known: set[str]) -> Obj | None:
    return next((p for p in await running_pods(api, ns) if p["metadata"]["name"] not in known), None)


async def test_job_backoff_limit_fails_the_job(api: ApiClient, ns: str) -> None:
    async with controllers(api, fast_jobs):
        await api.create(JOBS, job_manifest("flaky", backoffLimit=1, parallelism=1, completions=1), ns)
        for _ in range(2):
            (pod,) = await eventually(lambda: running_pods(api, ns, 1))
            await finish(api, pod, exit_code=1)
            await eventually(lambda pod=pod: _no_running(api, ns, pod))
        job = await eventually(lambda: job_done(api, ns, "flaky", "Failed"))
        assert job_condition(job, "Failed")["reason"] == "BackoffLimitExceeded"
        assert job_condition(job, "FailureTarget")["reason"] == "BackoffLimitExceeded"
        assert job["status"]["failed"] == 2 and job["status"]["active"] == 0
        await never(lambda: running_pods(api, ns), during=0.5)


async def _no_running(api: ApiClient, ns: str, pod: Obj) -> bool:
    return pod["metadata"]["name"] not in {p["metadata"]["name"] for p in await running_pods(api, ns)}


async def test_indexed_job_pods_carry_their_index(api: ApiClient, ns: str) -> None:
    async with controllers(api, fast_jobs):
        await api.create(JOBS, job_manifest("idx", completions=3, parallelism=3, completionMode="Indexed"), ns)
        pods = await eventually(lambda: running_pods(api, ns, 3))
        by_index = {p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]: p for p in pods}
        assert sorted(by_index) == ["0", "1", "2"]
        for index, pod in by_index.items():
            assert pod["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"] == index
            assert pod["spec"]["hostname"] == f"idx-{index}"
            assert pod["metadata"]["name"].startswith(f"idx-{index}-")
        await finish(api, by_index["1"])
        await eventually(lambda: _status_is(api, JOBS, ns, "idx", completedIndexes="1", succeeded=1))
        await finish(api, by_index["2"], exit_code=1)
        replacement = await eventually(lambda: _new_running(api, ns, {p["metadata"]["name"] for p in pods}))
        assert replacement["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] == "2"
        await finish(api, by_index["0"])
        await finish(api, replacement)
        job = await eventually(lambda: job_done(api, ns, "idx", "Complete"))
        assert job["status"]["completedIndexes"] == "0-2" and job["status"]["failed"] == 1


async def test_job_pod_failure_policy(api: ApiClient, ns: str) -> None:
    policy = {"rules": [{"action": "Ignore", "onExitCodes": {"operator": "In", "values": [3]}},
                        {"action": "FailJob", "onExitCodes": {"containerName": "c", "operator": "In", "values": [42]}}]}
    async with controllers(api, fast_jobs):
        await api.create(JOBS, job_manifest("pfp", backoffLimit=0, podFailurePolicy=policy), ns)
        (pod,) = await eventually(lambda: running_pods(api, ns, 1))
        await finish(api, pod, exit_code=3)
        second = await eventually(lambda: _new_running(api, ns, {pod["metadata"]["name"]}))
        assert (await api.get(JOBS, "pfp", ns))["status"].get("failed", 0) == 0, "ignored failures do not count"
        await finish(api, second, exit_code=42)
        job = await eventually(lambda: job_done(api, ns, "pfp", "Failed"))
        failed = job_condition(job, "Failed")
        assert failed["reason"] == "PodFailurePolicy"
        assert failed["message"] == (f"Container c for pod {ns}/{second['metadata']['name']} failed with exit code 42 "
                                     "matching FailJob rule at index 1")


async def test_job_active_deadline_and_suspend(api: ApiClient, ns: str) -> None:
    async with controllers(api, fast_jobs):
        await api.create(JOBS, job_manifest("late", activeDeadlineSeconds=1), ns)
        await api.create(JOBS, job_manifest("held", suspend=True, parallelism=2, completions=2), ns)
        job = await eventually(lambda: job_done(api, ns, "late", "Failed"), within=10)
        assert job_condition(job, "Failed")["reason"] == "DeadlineExceeded"
        assert not await running_pods(api, ns), "the deadline deleted the running pod; the suspended job has none"
        held = await eventually(lambda: job_done(api, ns, "held", "Suspended"))
        assert job_condition(held, "Suspended")["reason"] == "JobSuspended" and "startTime" not in held["status"]
        await api.patch(JOBS, "held", {"spec": {"suspend": False}}, ns)
        await eventually(lambda: running_pods(api, ns, 2))
        held = await api.get(JOBS, "held", ns)
        resumed = job_condition(held, "Suspended")
        assert resumed["status"] == "False" and resumed["reason"] == "JobResumed" and held["status"]["startTime"]


# CronJob


class Clock:
    """A controllable clock for the CronJob controller."""

    def __init__(self) -> None:
        self.moment = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.moment

    def next_minute(self, after: datetime, seconds: int = 5) -> datetime:
        """Jump to `seconds` past the minute following `after`."""
        self.moment = after.replace(second=0, microsecond=0) + timedelta(minutes=1, seconds=seconds)
        return self.moment.replace(second=0)


def cronjob_with(clock: Clock) -> Factory:
    def make(client: ApiClient, informers: SharedInformerFactory) -> CronJobController:
        controller = CronJobController(client, informers)
        controller.now = clock
        return controller
    return make


async def poke(api: ApiClient, ns: str, name: str) -> None:
    """Touch the CronJob so that the controller syncs now (the test moved the clock)."""
    await api.patch(CRONJOBS, name, {"metadata": {"annotations": {"poke": stamp(datetime.now(UTC))
                                                                   + str(next(_names))}}}, ns)


async def jobs_of(api: ApiClient, ns: str) -> list[Obj]:
    return (await api.list(JOBS, ns))["items"]


async def complete_job(api: ApiClient, job: Obj) -> None:
    now = stamp()
    await api.patch(JOBS, job["metadata"]["name"], {"status": {
        "startTime": job.get("status", {}).get("startTime") or now, "completionTime": now, "succeeded": 1,
        "conditions": [{"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": now},
                       {"type": "Complete", "status": "True", "lastTransitionTime": now}]}},
        job["metadata"]["namespace"], subresource="status")


async def test_cronjob_schedules_forbids_replaces_and_keeps_history(api: ApiClient, ns: str) -> None:
    clock = Clock()
    cronjob = {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "tick"},
               "spec": {"schedule": "*/1 * * * *", "concurrencyPolicy": "Forbid", "successfulJobsHistoryLimit": 1,
                        "jobTemplate": {"metadata": {"labels": {"from": "tick"}},
                                        "spec": {"template": template({"from": "tick"}, restartPolicy="Never")}}}}
    async with controllers(api, cronjob_with(clock)):
        cronjob = await api.create(CRONJOBS, cronjob, ns)
        created = datetime.fromisoformat(cronjob["metadata"]["creationTimestamp"])
        clock.moment = created
        await never(lambda: jobs_of(api, ns), during=1.0)

        first_time = clock.next_minute(created)
        await poke(api, ns, "tick")
        (job,) = await eventually(lambda: jobs_of(api, ns))
        assert job["metadata"]["name"] == f"tick-{int(first_time.timestamp()) // 60}"
        assert controlled_by(job, cronjob) and job["metadata"]["labels"]["from"] == "tick"
        assert job["metadata"]["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"] == \
            first_time.strftime("%Y-%m-%dT%H:%M:%SZ")
        status = (await eventually(lambda: _cronjob_active(api, ns, 1)))["status"]
        assert status["lastScheduleTime"] == stamp(first_time)
        assert status["active"][0]["uid"] == job["metadata"]["uid"]

        second_time = clock.next_minute(first_time)
        await poke(api, ns, "tick")
        await has_events(api, ns, "tick", ("JobAlreadyActive", None))
        assert len(await jobs_of(api, ns)) == 1, "Forbid: no second job while the first runs"

        await complete_job(api, job)
        await eventually(lambda: _job_count(api, ns, 2))
        status = (await eventually(lambda: _cronjob_active(api, ns, 1)))["status"]
        assert status["lastScheduleTime"] == stamp(second_time) and status["lastSuccessfulTime"]
        second = next(j for j in await jobs_of(api, ns) if j["metadata"]["uid"] != job["metadata"]["uid"])
        await complete_job(api, second)
        await eventually(lambda: _cronjob_active(api, ns, 0))

        await api.patch(CRONJOBS, "tick", {"spec": {"concurrencyPolicy": "Replace"}}, ns)
        third_time = clock.next_minute(second_time)
        await poke(api, ns, "tick")
        await eventually(lambda: _job_names(api, ns, {second["metadata"]["name"],
                                                      f"tick-{int(third_time.timestamp()) // 60}"}))
        await eventually(lambda: _cronjob_active(api, ns, 1))
        fourth_time = clock.next_minute(third_time)
        await poke(api, ns, "tick")
        await eventually(lambda: _job_names(api, ns, {second["metadata"]["name"],
                                                      f"tick-{int(fourth_time.timestamp()) // 60}"}))
        await has_events(api, ns, "tick", ("SuccessfulCreate", None), ("SawCompletedJob", None),
                         ("SuccessfulDelete", None))

        await api.patch(CRONJOBS, "tick", {"spec": {"suspend": True}}, ns)
        fifth_time = clock.next_minute(fourth_time)
        await poke(api, ns, "tick")
        await never(lambda: _job_count(api, ns, 3), during=1.0)

        await api.patch(CRONJOBS, "tick", {"spec": {"suspend": False, "startingDeadlineSeconds": 10}}, ns)
        clock.moment = fifth_time + timedelta(seconds=30)
        await poke(api, ns, "tick")
        await never(lambda: _job_count(api, ns, 3), during=1.0)
        sixth_time = clock.next_minute(fifth_time)
        await poke(api, ns, "tick")
        await eventually(lambda: _job_names(api, ns, {second["metadata"]["name"],
                                                      f"tick-{int(sixth_time.timestamp()) // 60}"}))


async def _cronjob_active(api: ApiClient, ns: str, count: int) -> Obj | None:
    cronjob = await api.get(CRONJOBS, "tick", ns)
    return cronjob if len(cronjob.get("status", {}).get("active") or []) == count else None


async def _job_count(api: ApiClient, ns: str, count: int) -> bool:
    return len(await jobs_of(api, ns)) == count


async def _job_names(api: ApiClient, ns: str, names: set[str]) -> bool:
    return {j["metadata"]["name"] for j in await jobs_of(api, ns)} == names
