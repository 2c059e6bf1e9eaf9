"""Hollow nodes' pure parts: the fake runtime, pod IP pools, pod status, node objects, CLI parsing."""

from __future__ import annotations

from typing import Any

import pytest

from kubelite.kubelet.hollow import (
    EXIT_CODE_ANNOTATION,
    HollowNode,
    IpPool,
    NodeTemplate,
    exit_code_of,
    node_address,
    node_object,
    pod_status,
)
from kubelite.kubelet.node import parse_labels, parse_taints
from kubelite.kubelet.runtime.fake import (
    CONTAINER_EXITED,
    CONTAINER_RUNNING,
    SANDBOX_NOTREADY,
    ContainerConfig,
    FakeRuntime,
    NotFoundError,
)

Obj = dict[str, Any]


def test_fake_runtime_lifecycle() -> None:
    runtime = FakeRuntime()
    sandbox = runtime.run_pod_sandbox("p", "default", "uid", "10.42.0.2")
    forever = runtime.create_container(sandbox, ContainerConfig("app", "busybox"))
    done = runtime.create_container(sandbox, ContainerConfig("job", "busybox", exit_code=3))
    runtime.start_container(forever)
    runtime.start_container(done)
    assert runtime.container_status(forever).state == CONTAINER_RUNNING
    assert runtime.container_status(done).state == CONTAINER_EXITED
    assert runtime.container_status(done).reason == "Error"
    with pytest.raises(ValueError):
        runtime.start_container(forever)
    runtime.stop_pod_sandbox(sandbox)
    assert runtime.pod_sandbox_status(sandbox).state == SANDBOX_NOTREADY
    assert runtime.container_status(forever).exit_code == 137
    with pytest.raises(ValueError):
        runtime.create_container(sandbox, ContainerConfig("late", "busybox"))
    runtime.remove_pod_sandbox(sandbox)
    assert runtime.sandboxes == {} and runtime.containers == {}
    with pytest.raises(NotFoundError):
        runtime.list_containers(sandbox)
    runtime.remove_pod_sandbox(sandbox)


def test_ip_pool() -> None:
    pool = IpPool("10.42.7.0/29")
    assert [pool.allocate() for _ in range(5)] == [f"10.42.7.{i}" for i in range(2, 7)]
    with pytest.raises(ValueError):
        pool.allocate()
    pool.release("10.42.7.4")
    assert pool.allocate() == "10.42.7.4"
    other = IpPool("10.42.8.0/24")
    other.reserve("10.42.8.2")
    other.reserve("192.168.0.1")
    assert other.allocate() == "10.42.8.3"


def test_cli_parsing() -> None:
    assert parse_labels(["a=b", "zone=z1", "empty="]) == {"a": "b", "zone": "z1", "empty": ""}
    assert parse_taints(["gpu=yes:NoSchedule", "dedicated:NoExecute"]) == [
        {"key": "gpu", "value": "yes", "effect": "NoSchedule"}, {"key": "dedicated", "effect": "NoExecute"}]
    for bad in ("nokey", "=v"):
        with pytest.raises(ValueError):
            parse_labels([bad])
    for bad in ("k=v", "k=v:Sometimes", ":NoSchedule"):
        with pytest.raises(ValueError):
            parse_taints([bad])


def test_node_object() -> None:
    node = HollowNode("hn-3", 3, node_address("hn", 3), ready_since="t")
    obj = node_object(node, NodeTemplate(cpu="8", pods=50, labels={"role": "x"},
                                         taints=[{"key": "k", "effect": "NoSchedule"}]))
    assert obj["metadata"]["labels"]["kubernetes.io/hostname"] == "hn-3"
    assert obj["metadata"]["labels"]["role"] == "x"
    assert obj["spec"]["taints"] == [{"key": "k", "effect": "NoSchedule"}]
    status = obj["status"]
    assert status["capacity"]["cpu"] == "8" and status["allocatable"]["pods"] == "50"
    assert status["nodeInfo"]["kubeletVersion"] == "v1.33.0"
    assert status["addresses"][0] == {"type": "InternalIP", "address": node.address}
    assert node.address.startswith("10.") and node_address("hn", 4) != node.address
    ready = [c for c in status["conditions"] if c["type"] == "Ready"][0]
    assert ready["status"] == "True" and ready["reason"] == "KubeletReady"


def pod(restart_policy: str = "Always", exit_code: str | None = None, inits: int = 0) -> Obj:
    annotations = {EXIT_CODE_ANNOTATION: exit_code} if exit_code is not None else {}
    spec = {"restartPolicy": restart_policy, "containers": [{"name": "app", "image": "busybox"}],
            "initContainers": [{"name": f"init{i}", "image": "busybox"} for i in range(inits)]}
    return {"metadata": {"name": "p", "namespace": "d", "uid": "u", "annotations": annotations}, "spec": spec,
            "status": {"phase": "Pending", "conditions": [{"type": "DisruptionTarget", "status": "True"}]}}


def run(p: Obj) -> Obj:
    runtime = FakeRuntime()
    sandbox = runtime.run_pod_sandbox("p", "d", "u", "10.42.0.9")
    for container in p["spec"]["initContainers"]:
        runtime.start_container(runtime.create_container(sandbox, ContainerConfig(container["name"], "busybox", 0)))
    for container in p["spec"]["containers"]:
        config = ContainerConfig(container["name"], "busybox", exit_code_of(p))
        runtime.start_container(runtime.create_container(sandbox, config))
    containers = runtime.list_containers(sandbox)
    inits = len(p["spec"]["initContainers"])
    return pod_status(p, "10.200.0.1", "10.42.0.9", containers[inits:], containers[:inits])


def conditions(status: Obj) -> dict[str, Obj]:
    return {c["type"]: c for c in status["conditions"]}


def test_running_pod_status() -> None:
    status = run(pod(inits=1))
    assert status["phase"] == "Running"
    assert status["podIP"] == "10.42.0.9" and status["podIPs"] == [{"ip": "10.42.0.9"}]
    assert status["hostIP"] == "10.200.0.1" and status["startTime"]
    assert {t for t, c in conditions(status).items() if c["status"] == "True"} == {
        "PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled", "DisruptionTarget"}
    app = status["containerStatuses"][0]
    assert app["ready"] and app["started"] and "running" in app["state"]
    assert status["initContainerStatuses"][0]["state"]["terminated"]["reason"] == "Completed"


def test_exit_codes() -> None:
    assert exit_code_of(pod("Always", "1")) is None
    assert exit_code_of(pod("Never")) is None
    assert exit_code_of(pod("Never", "oops")) == 1
    succeeded = run(pod("Never", "0"))
    assert succeeded["phase"] == "Succeeded"
    assert conditions(succeeded)["Ready"]["reason"] == "PodCompleted"
    failed = run(pod("Never", "2"))
    assert failed["phase"] == "Failed"
    assert failed["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 2
    crashing = run(pod("OnFailure", "1"))
    assert crashing["phase"] == "Running"
    app = crashing["containerStatuses"][0]
    assert app["state"]["waiting"]["reason"] == "CrashLoopBackOff" and app["restartCount"] == 1
    assert conditions(crashing)["Ready"]["status"] == "False"
    assert conditions(crashing)["Ready"]["message"] == "containers with unready status: [app]"


def test_status_keeps_transition_times_when_nothing_changed() -> None:
    p = pod()
    first = run(p)
    p["status"] = {**first, "conditions": [{**c, "lastTransitionTime": "earlier"} for c in first["conditions"]],
                   "startTime": "started"}
    again = run(p)
    assert all(c["lastTransitionTime"] == "earlier" for c in again["conditions"])
    assert again["startTime"] == "started"


def test_commands_end_like_real_containers() -> None:
    from kubelite.kubelet.hollow import command_behaviour, container_behaviour

    assert command_behaviour(["true"]) == (0, 0.0)
    assert command_behaviour(["/bin/false"]) == (1, 0.0)
    assert command_behaviour(["sh", "-c", "exit 3"]) == (3, 0.0)
    assert command_behaviour(["sleep", "2"]) == (0, 2.0)
    assert command_behaviour(["sh", "-c", "sleep 1"]) == (0, 1.0)
    assert command_behaviour(["nginx"]) == (None, 0.0)
    assert command_behaviour([]) == (None, 0.0)
    job_pod = {"metadata": {}, "spec": {"restartPolicy": "Never"}}
    assert container_behaviour(job_pod, {"command": ["sh", "-c"], "args": ["exit 2"]}) == (2, 0.0)
    assert container_behaviour({"metadata": {}, "spec": {}}, {"command": ["true"]}) == (None, 0.0)
