"""Desired state with the real kubectl: a full control plane and three hollow nodes (one tainted)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from tests.e2e.conftest import Cluster, free_port, start_server, stop_server


def agent(cluster: Cluster, name: str, *args: str) -> subprocess.Popen[bytes]:
    """`kubelite agent --runtime fake` joining with the server URL and its node token, as a new machine would."""
    token = (cluster.data_dir / "server" / "node-token").read_text().strip()
    log = (cluster.data_dir / f"agent-{name}.log").open("ab")
    return subprocess.Popen([sys.executable, "-m", "kubelite", "agent", "--runtime", "fake", "--node-name", name,
                             "--server", f"https://127.0.0.1:{cluster.port}", "--token", token, *args],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def stop_agent(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    os.killpg(proc.pid, sig)
    proc.wait(20)


def eventually(check: Callable[[], bool], within: float = 60, what: str = "") -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"not within {within} s: {what}")


@pytest.fixture(scope="module")
def nodes_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = start_server(tmp_path_factory.mktemp("workloads-e2e"), free_port())
    zone = "topology.kubernetes.io/zone"
    agents = [agent(cluster, "worker-0", "--cpu", "4", "--node-label", "tier=app", "--node-label", f"{zone}=a"),
              agent(cluster, "worker-1", "--cpu", "4", "--node-label", "tier=app", "--node-label", f"{zone}=b"),
              agent(cluster, "infra-0", "--cpu", "8", "--memory", "32Gi", "--node-label", f"{zone}=a",
                    "--node-taint", "dedicated=infra:NoSchedule")]
    try:
        eventually(lambda: len(_ready_nodes(cluster)) == 3, 60, "three Ready hollow nodes")
        yield cluster
    finally:
        for proc in agents:
            stop_agent(proc)
        stop_server(cluster)


def _ready_nodes(cluster: Cluster) -> list[str]:
    nodes = cluster.get_json("nodes")["items"]
    return [n["metadata"]["name"] for n in nodes
            if any(c["type"] == "Ready" and c["status"] == "True" for c in n.get("status", {}).get("conditions", []))]


def _pods(cluster: Cluster, selector: str, namespace: str = "default") -> list[dict]:
    return cluster.get_json("pods", "-n", namespace, "-l", selector)["items"]


def _running(pods: list[dict]) -> list[dict]:
    return [p for p in pods if p.get("status", {}).get("phase") == "Running" and
            not p["metadata"].get("deletionTimestamp")]


class AvailabilityWatch:
    """Samples a Deployment's availableReplicas in a thread, to prove a rollout never drops below the allowed floor."""

    def __init__(self, cluster: Cluster, name: str):
        self.cluster, self.name, self.samples = cluster, name, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            status = self.cluster.get_json("deployment", self.name).get("status", {})
            self.samples.append(status.get("availableReplicas", 0))
            time.sleep(0.1)

    def __enter__(self) -> AvailabilityWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def _images(c: Cluster, selector: str) -> set[str]:
    return {p["spec"]["containers"][0]["image"] for p in _running(_pods(c, selector))}


def test_deployment_spreads_scales_rolls_and_undoes(nodes_cluster: Cluster) -> None:
    c = nodes_cluster
    c.kubectl("create", "deployment", "web", "--image=busybox:1.36", "--replicas=10")
    eventually(lambda: len(_running(_pods(c, "app=web"))) == 10, 60, "10 running replicas")
    placed = [p["spec"]["nodeName"] for p in _running(_pods(c, "app=web"))]
    assert set(placed) == {"worker-0", "worker-1"} and min(placed.count("worker-0"), placed.count("worker-1")) >= 3
    c.kubectl("rollout", "status", "deployment/web", "--timeout=60s")
    c.kubectl("scale", "deployment/web", "--replicas=14")
    eventually(lambda: len(_running(_pods(c, "app=web"))) == 14, 60, "scaled up to 14")
    c.kubectl("scale", "deployment/web", "--replicas=4")
    eventually(lambda: len(_pods(c, "app=web")) == 4, 60, "scaled down to 4")
    c.kubectl("rollout", "status", "deployment/web", "--timeout=60s")
    with AvailabilityWatch(c, "web") as watch:
        c.kubectl("set", "image", "deployment/web", "busybox=busybox:1.37")
        c.kubectl("rollout", "status", "deployment/web", "--timeout=90s")
    # maxUnavailable 25% of 4 rounds down to 1: at least 3 available throughout.
    assert watch.samples and min(watch.samples) >= 3, watch.samples
    assert _images(c, "app=web") == {"busybox:1.37"}
    history = c.kubectl("rollout", "history", "deployment/web").stdout
    assert "1" in history and "2" in history
    c.kubectl("rollout", "undo", "deployment/web")
    c.kubectl("rollout", "status", "deployment/web", "--timeout=90s")
    eventually(lambda: _images(c, "app=web") == {"busybox:1.36"}, 60, "undo back to busybox:1.36")

    c.kubectl("rollout", "pause", "deployment/web")
    c.kubectl("set", "image", "deployment/web", "busybox=busybox:1.38")
    time.sleep(3)
    assert _images(c, "app=web") == {"busybox:1.36"}, "a paused deployment must not roll out"
    assert any(cond["reason"] == "DeploymentPaused"
               for cond in c.get_json("deployment", "web")["status"]["conditions"])
    c.kubectl("rollout", "resume", "deployment/web")
    c.kubectl("rollout", "status", "deployment/web", "--timeout=90s")
    eventually(lambda: _images(c, "app=web") == {"busybox:1.38"}, 60, "resumed rollout to busybox:1.38")

    victim = _running(_pods(c, "app=web"))[0]["metadata"]["name"]
    c.kubectl("delete", "pod", victim)
    eventually(lambda: len(_running(_pods(c, "app=web"))) == 4 and
               victim not in {p["metadata"]["name"] for p in _pods(c, "app=web")}, 60, "a replacement pod")
    replicasets = c.get_json("rs", "-l", "app=web")["items"]
    c.kubectl("delete", "deployment", "web")
    eventually(lambda: not c.get_json("rs", "-l", "app=web")["items"] and not _pods(c, "app=web"), 60,
               "cascading delete of ReplicaSets and pods")
    assert replicasets


def test_orphan_cascade_leaves_replicasets_and_pods(nodes_cluster: Cluster) -> None:
    c = nodes_cluster
    c.kubectl("create", "deployment", "kept", "--image=busybox:1.36", "--replicas=2")
    eventually(lambda: len(_running(_pods(c, "app=kept"))) == 2, 60, "2 running replicas")
    c.kubectl("delete", "deployment", "kept", "--cascade=orphan")
    assert c.kubectl("get", "deployment", "kept", check=False).returncode != 0
    time.sleep(3)
    sets = c.get_json("rs", "-l", "app=kept")["items"]
    assert len(sets) == 1 and not sets[0]["metadata"].get("ownerReferences")
    assert len(_running(_pods(c, "app=kept"))) == 2
    c.kubectl("delete", "rs", "-l", "app=kept")
    eventually(lambda: not _pods(c, "app=kept"), 60, "pods of the deleted ReplicaSet gone")


def test_unschedulable_pod_explains_why(nodes_cluster: Cluster) -> None:
    c = nodes_cluster
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "huge"},
           "spec": {"containers": [{"name": "c", "image": "busybox:1.36",
                                    "resources": {"requests": {"cpu": "64"}}}]}}
    c.kubectl("create", "-f", "-", input=json.dumps(pod))
    eventually(lambda: "Insufficient cpu" in c.kubectl("describe", "pod", "huge").stdout, 30,
               "FailedScheduling with Insufficient cpu")
    described = c.kubectl("describe", "pod", "huge").stdout
    assert "0/3 nodes are available" in described and "untolerated taint" in described
    assert c.get_json("pod", "huge")["status"]["phase"] == "Pending"
    c.kubectl("delete", "pod", "huge")


def test_statefulset_in_order_and_daemonset_per_node(nodes_cluster: Cluster) -> None:
    c = nodes_cluster
    manifest = """
apiVersion: v1
kind: Service
metadata: {name: web-sts}
spec: {clusterIP: None, selector: {app: sts}, ports: [{port: 80}]}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web}
spec:
  serviceName: web-sts
  replicas: 3
  selector: {matchLabels: {app: sts}}
  template:
    metadata: {labels: {app: sts}}
    spec: {containers: [{name: c, image: "busybox:1.36"}]}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec: {containers: [{name: c, image: "busybox:1.36"}]}
"""
    c.kubectl("apply", "-f", "-", input=manifest)
    eventually(lambda: len(_running(_pods(c, "app=sts"))) == 3, 90, "web-0..2 running")
    created = sorted(_pods(c, "app=sts"), key=lambda p: p["metadata"]["creationTimestamp"])
    assert [p["metadata"]["name"] for p in created] == ["web-0", "web-1", "web-2"]
    eventually(lambda: len(_running(_pods(c, "app=agent"))) == 2, 60, "one daemon pod per untainted node")
    assert {p["spec"]["nodeName"] for p in _running(_pods(c, "app=agent"))} == {"worker-0", "worker-1"}
    late = agent(c, "late-0")
    try:
        eventually(lambda: "late-0" in {p["spec"]["nodeName"] for p in _running(_pods(c, "app=agent"))}, 60,
                   "the DaemonSet follows a new node")
    finally:
        stop_agent(late)
        c.kubectl("delete", "node", "late-0")
    # pod GC deletes the pods of a node missing for 40 s, checking every 20 s: up to 60 s, plus the pass itself
    eventually(lambda: {p["spec"]["nodeName"] for p in _pods(c, "app=agent")} == {"worker-0", "worker-1"}, 90,
               "the daemon pod of the deleted node is gone")


def test_namespace_deletion_empties_it(nodes_cluster: Cluster) -> None:
    c = nodes_cluster
    c.kubectl("create", "namespace", "doomed")
    c.kubectl("create", "deployment", "inside", "-n", "doomed", "--image=busybox:1.36", "--replicas=2")
    c.kubectl("create", "configmap", "inside", "-n", "doomed", "--from-literal=a=b")
    eventually(lambda: len(_pods(c, "app=inside", "doomed")) == 2, 60, "pods in the namespace")
    c.kubectl("delete", "namespace", "doomed", "--timeout=90s")
    assert c.kubectl("get", "namespace", "doomed", check=False).returncode != 0


def test_jobs_complete_and_fail_after_backoff_limit(nodes_cluster: Cluster) -> None:
    c = nodes_cluster
    c.kubectl("create", "job", "ok", "--image=busybox:1.36", "--", "sh", "-c", "sleep 1")
    c.kubectl("wait", "--for=condition=Complete", "job/ok", "--timeout=60s")
    failing = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "bad"},
               "spec": {"backoffLimit": 1, "template": {"spec": {"restartPolicy": "Never", "containers": [
                   {"name": "c", "image": "busybox:1.36", "command": ["sh", "-c", "exit 3"]}]}}}}
    c.kubectl("create", "-f", "-", input=json.dumps(failing))
    c.kubectl("wait", "--for=condition=Failed", "job/bad", "--timeout=90s")
    eventually(lambda: "BackoffLimitExceeded" in c.kubectl("describe", "job", "bad").stdout, 30,
               "a BackoffLimitExceeded event")


def test_cordon_drain_uncordon(nodes_cluster: Cluster) -> None:
    c = nodes_cluster
    c.kubectl("create", "deployment", "drained", "--image=busybox:1.36", "--replicas=4")
    eventually(lambda: len(_running(_pods(c, "app=drained"))) == 4, 60, "4 running replicas")
    c.kubectl("drain", "worker-1", "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=90s")
    assert c.get_json("node", "worker-1")["spec"]["unschedulable"] is True
    eventually(lambda: len(_running(_pods(c, "app=drained"))) == 4 and
               {p["spec"]["nodeName"] for p in _running(_pods(c, "app=drained"))} == {"worker-0"}, 60,
               "replicas rescheduled off the drained node")
    c.kubectl("uncordon", "worker-1")
    assert not c.get_json("node", "worker-1")["spec"].get("unschedulable")
    c.kubectl("delete", "deployment", "drained")


def _pod(name: str, labels: dict | None = None, **spec: object) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels or {}},
                       "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}], **spec}})


def _node_of(c: Cluster, pod: str) -> str:
    return c.get_json("pod", pod)["spec"].get("nodeName", "")


def _scheduled(c: Cluster, pod: str) -> bool:
    return bool(_node_of(c, pod))


def test_selectors_affinity_spread_and_tolerations(nodes_cluster: Cluster) -> None:
    c = nodes_cluster
    infra_term = {"nodeSelectorTerms": [{"matchExpressions": [
        {"key": "kubernetes.io/hostname", "operator": "In", "values": ["infra-0"]}]}]}
    toleration = [{"key": "dedicated", "operator": "Equal", "value": "infra", "effect": "NoSchedule"}]
    c.kubectl("create", "-f", "-", input=_pod("in-zone-b", nodeSelector={"topology.kubernetes.io/zone": "b"}))
    c.kubectl("create", "-f", "-", input=_pod("tolerant", affinity={"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": infra_term}}, tolerations=toleration))
    c.kubectl("create", "-f", "-", input=_pod("intolerant", affinity={"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": infra_term}}))
    c.kubectl("create", "-f", "-", input=_pod("anchor", {"app": "anchor"}, nodeSelector={
        "kubernetes.io/hostname": "worker-0"}))
    eventually(lambda: _scheduled(c, "in-zone-b") and _scheduled(c, "tolerant") and _scheduled(c, "anchor"), 30,
               "selector, toleration and anchor pods placed")
    assert _node_of(c, "in-zone-b") == "worker-1"
    assert _node_of(c, "tolerant") == "infra-0"
    eventually(lambda: "untolerated taint" in c.kubectl("describe", "pod", "intolerant").stdout, 30,
               "the intolerant pod explains the taint")
    assert not _scheduled(c, "intolerant")

    follows = {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "anchor"}}, "topologyKey": "kubernetes.io/hostname"}]}
    c.kubectl("create", "-f", "-", input=_pod("follower", affinity={"podAffinity": follows}))
    c.kubectl("create", "-f", "-", input=_pod("avoider", affinity={"podAntiAffinity": follows}))
    eventually(lambda: _scheduled(c, "follower") and _scheduled(c, "avoider"), 30, "affinity pods placed")
    assert _node_of(c, "follower") == "worker-0" and _node_of(c, "avoider") == "worker-1"

    lonely = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "lonely"},
              "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "lonely"}}, "template": {
                  "metadata": {"labels": {"app": "lonely"}},
                  "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}], "affinity": {"podAntiAffinity": {
                      "requiredDuringSchedulingIgnoredDuringExecution": [{
                          "labelSelector": {"matchLabels": {"app": "lonely"}},
                          "topologyKey": "kubernetes.io/hostname"}]}}}}}}
    c.kubectl("create", "-f", "-", input=json.dumps(lonely))
    eventually(lambda: len(_running(_pods(c, "app=lonely"))) == 2 and len(_pods(c, "app=lonely")) == 3, 60,
               "two anti-affine replicas running, one pending")
    assert {p["spec"]["nodeName"] for p in _running(_pods(c, "app=lonely"))} == {"worker-0", "worker-1"}
    pending = [p["metadata"]["name"] for p in _pods(c, "app=lonely") if not p["spec"].get("nodeName")]
    eventually(lambda: "anti-affinity" in c.kubectl("describe", "pod", pending[0]).stdout, 30,
               "the third replica explains the anti-affinity")

    spread = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "spread"},
              "spec": {"replicas": 6, "selector": {"matchLabels": {"app": "spread"}}, "template": {
                  "metadata": {"labels": {"app": "spread"}},
                  "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}], "tolerations": toleration,
                           "topologySpreadConstraints": [{
                               "maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                               "whenUnsatisfiable": "DoNotSchedule",
                               "labelSelector": {"matchLabels": {"app": "spread"}}}]}}}}
    c.kubectl("create", "-f", "-", input=json.dumps(spread))
    eventually(lambda: len(_running(_pods(c, "app=spread"))) == 6, 60, "6 spread replicas running")
    zones = {"worker-0": "a", "infra-0": "a", "worker-1": "b"}
    per_zone = [zones[p["spec"]["nodeName"]] for p in _running(_pods(c, "app=spread"))]
    assert per_zone.count("a") == per_zone.count("b") == 3, per_zone

    c.kubectl("delete", "deployment", "lonely", "spread")
    c.kubectl("delete", "pod", "in-zone-b", "tolerant", "intolerant", "anchor", "follower", "avoider",
              "--grace-period=0", "--force")


def test_higher_priority_pod_preempts(nodes_cluster: Cluster) -> None:
    c = nodes_cluster
    c.kubectl("create", "priorityclass", "urgent", "--value=1000000")
    filler = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "filler"},
              "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "filler"}}, "template": {
                  "metadata": {"labels": {"app": "filler"}},
                  "spec": {"nodeSelector": {"tier": "app"}, "containers": [
                      {"name": "c", "image": "busybox:1.36", "resources": {"requests": {"cpu": "3"}}}]}}}}
    c.kubectl("create", "-f", "-", input=json.dumps(filler))
    eventually(lambda: len(_running(_pods(c, "app=filler"))) == 2, 60, "one 3-CPU filler per worker")
    before = {p["metadata"]["name"] for p in _pods(c, "app=filler")}
    urgent = json.loads(_pod("urgent", priorityClassName="urgent", nodeSelector={"tier": "app"}))
    urgent["spec"]["containers"][0]["resources"] = {"requests": {"cpu": "2"}}
    c.kubectl("create", "-f", "-", input=json.dumps(urgent))
    eventually(lambda: c.get_json("pod", "urgent").get("status", {}).get("phase") == "Running", 60,
               "the urgent pod runs after preempting a filler")
    survivors = {p["metadata"]["name"] for p in _running(_pods(c, "app=filler"))}
    assert len(survivors & before) == 1, (before, survivors)
    eventually(lambda: "Preempted" in c.kubectl("get", "events", "--field-selector", "reason=Preempted").stdout, 30,
               "a Preempted event")
    c.kubectl("delete", "deployment", "filler")
    c.kubectl("delete", "pod", "urgent")
    c.kubectl("delete", "priorityclass", "urgent")


def test_cronjob_creates_jobs_on_schedule(nodes_cluster: Cluster) -> None:
    c = nodes_cluster
    c.kubectl("create", "cronjob", "tick", "--image=busybox:1.36", "--schedule=* * * * *", "--", "true")
    eventually(lambda: any(j["metadata"].get("ownerReferences", [{}])[0].get("name") == "tick"
                           and j.get("status", {}).get("succeeded") for j in c.get_json("jobs")["items"]),
               75, "a Job of the CronJob completed")
    assert c.get_json("cronjob", "tick")["status"].get("lastScheduleTime")
    c.kubectl("delete", "cronjob", "tick")


def test_silent_node_goes_not_ready_and_its_pods_move(nodes_cluster: Cluster) -> None:
    c = nodes_cluster
    edge = agent(c, "edge-0", "--node-taint", "edge=true:NoSchedule")
    try:
        eventually(lambda: "edge-0" in _ready_nodes(c), 60, "edge-0 Ready")
        c.kubectl("cordon", "worker-0", "worker-1")
        gone_soon = [{"key": f"node.kubernetes.io/{t}", "operator": "Exists", "effect": "NoExecute",
                      "tolerationSeconds": 5} for t in ("not-ready", "unreachable")]
        moving = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "moving"},
                  "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "moving"}}, "template": {
                      "metadata": {"labels": {"app": "moving"}},
                      "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}], "tolerations": [
                          {"key": "edge", "operator": "Exists"}, *gone_soon]}}}}
        c.kubectl("create", "-f", "-", input=json.dumps(moving))
        eventually(lambda: {p["spec"]["nodeName"] for p in _running(_pods(c, "app=moving"))} == {"edge-0"}
                   and len(_running(_pods(c, "app=moving"))) == 2, 60, "both replicas on edge-0")
        c.kubectl("uncordon", "worker-0", "worker-1")
        os.killpg(edge.pid, signal.SIGSTOP)
        started = time.monotonic()
        eventually(lambda: "edge-0" not in _ready_nodes(c), 70, "edge-0 NotReady after 40 s of silence")
        assert time.monotonic() - started >= 30
        eventually(lambda: len(_running(_pods(c, "app=moving"))) == 2 and
                   {p["spec"]["nodeName"] for p in _running(_pods(c, "app=moving"))} <= {"worker-0", "worker-1"},
                   60, "replicas recreated on the workers after the 5 s toleration")
        taints = {t["key"] for t in c.get_json("node", "edge-0")["spec"].get("taints", [])}
        assert "node.kubernetes.io/unreachable" in taints
    finally:
        os.killpg(edge.pid, signal.SIGKILL)
        edge.wait(20)
    c.kubectl("delete", "deployment", "moving")
    c.kubectl("delete", "node", "edge-0")
