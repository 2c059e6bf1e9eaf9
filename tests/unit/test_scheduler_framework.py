"""The framework and the scheduling cycle: failure messages, configuration, sampling, preemption, binding."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from kubelite.scheduler.config import ConfigError, PluginSet, Profile, SchedulerConfig, parse_config, parse_duration
from kubelite.scheduler.framework import (
    BindPlugin,
    Code,
    CycleState,
    Diagnosis,
    NodeToStatus,
    Status,
    fit_error_message,
    unresolvable,
    unschedulable,
)
from kubelite.scheduler.nodeinfo import NodeInfo
from kubelite.scheduler.plugins import REGISTRY
from kubelite.scheduler.podinfo import PodInfo
from kubelite.scheduler.scheduler import Scheduler, num_feasible_nodes_to_find, pod_scheduled_patch, select_host
from kubelite.scheduler.testing import make_node, make_pod

Obj = dict[str, Any]
CONTROL_PLANE_TAINT = {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}


def test_fit_error_message_is_kube_schedulers() -> None:
    statuses = NodeToStatus()
    statuses.set("master", unresolvable("node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }"))
    statuses.set("w1", unschedulable("Insufficient cpu"))
    statuses.set("w2", unschedulable("Insufficient cpu"))
    preemption = NodeToStatus(unresolvable("Preemption is not helpful for scheduling"))
    post = "preemption: " + fit_error_message(3, Diagnosis(node_to_status=preemption))
    message = fit_error_message(3, Diagnosis(node_to_status=statuses, post_filter_msg=post))
    assert message == ("0/3 nodes are available: 1 node(s) had untolerated taint "
                       "{node-role.kubernetes.io/control-plane: }, 2 Insufficient cpu. preemption: 0/3 nodes are "
                       "available: 3 Preemption is not helpful for scheduling.")
    both = NodeToStatus()
    both.set("n", unschedulable("Insufficient cpu", "Insufficient memory"))
    assert fit_error_message(1, Diagnosis(node_to_status=both)) == (
        "0/1 nodes are available: 1 Insufficient cpu, 1 Insufficient memory.")
    assert fit_error_message(2, Diagnosis(pre_filter_msg="pod affinity terms conflict")) == (
        "0/2 nodes are available: pod affinity terms conflict.")


def test_num_feasible_nodes_to_find_is_adaptive() -> None:
    assert num_feasible_nodes_to_find(None, 50) == 50
    assert num_feasible_nodes_to_find(None, 100) == 100
    assert num_feasible_nodes_to_find(None, 1000) == 420
    assert num_feasible_nodes_to_find(None, 5000) == 500
    assert num_feasible_nodes_to_find(None, 20000) == 1000
    assert num_feasible_nodes_to_find(30, 1000) == 300
    assert num_feasible_nodes_to_find(5, 1000) == 100
    assert num_feasible_nodes_to_find(100, 1000) == 1000


def test_select_host_breaks_ties_randomly() -> None:
    nodes = [NodeInfo(make_node(name)) for name in ("a", "b", "c")]
    assert select_host(nodes, [1, 9, 3]) == "b"
    assert {select_host(nodes, [5, 5, 1]) for _ in range(200)} == {"a", "b"}


def test_config_profiles_plugins_and_args() -> None:
    config = parse_config({
        "apiVersion": "kubescheduler.config.k8s.io/v1", "kind": "KubeSchedulerConfiguration",
        "percentageOfNodesToScore": 20, "podInitialBackoffSeconds": 2, "podMaxBackoffSeconds": 20,
        "clientConnection": {"qps": 100, "burst": 200},
        "leaderElection": {"leaseDuration": "30s", "renewDeadline": "20s", "retryPeriod": "4s",
                           "resourceName": "my-scheduler"},
        "profiles": [
            {"schedulerName": "default-scheduler"},
            {"schedulerName": "bin-packer", "percentageOfNodesToScore": 50,
             "plugins": {"score": {"disabled": [{"name": "NodeResourcesBalancedAllocation"}],
                                   "enabled": [{"name": "NodeResourcesFit", "weight": 5}]},
                         "multiPoint": {"disabled": [{"name": "ImageLocality"}]}},
             "pluginConfig": [{"name": "NodeResourcesFit",
                               "args": {"scoringStrategy": {"type": "MostAllocated"}}}]},
        ]})
    default, packer = config.profiles
    assert default.percentage_of_nodes_to_score == 20 and packer.percentage_of_nodes_to_score == 50
    assert (config.pod_initial_backoff, config.pod_max_backoff, config.qps, config.burst) == (2, 20, 100, 200)
    assert config.leader_election.lease_duration == 30 and config.leader_election.resource_name == "my-scheduler"
    scores = dict(packer.expanded_plugins(REGISTRY)["score"])
    assert scores["NodeResourcesFit"] == 5 and "NodeResourcesBalancedAllocation" not in scores
    assert "ImageLocality" not in scores and scores["TaintToleration"] == 3
    assert list(packer.expanded_plugins(REGISTRY)["score"])[0] == ("NodeResourcesFit", 5), "overrides come first"
    scheduler = Scheduler(config)
    fit = scheduler.profiles["bin-packer"].plugins["NodeResourcesFit"]
    assert fit.strategy == "MostAllocated"
    assert scheduler.profiles["default-scheduler"].plugins["NodeResourcesFit"].strategy == "LeastAllocated"


def test_config_errors() -> None:
    base = {"apiVersion": "kubescheduler.config.k8s.io/v1", "kind": "KubeSchedulerConfiguration"}
    with pytest.raises(ConfigError):
        parse_config({**base, "apiVersion": "v1"})
    with pytest.raises(ConfigError):
        parse_config({**base, "profiles": [{"schedulerName": "a"}, {"schedulerName": "a"}]})
    with pytest.raises(ConfigError):
        parse_config({**base, "profiles": [{"plugins": {"multiPoint": {"enabled": [{"name": "NoSuchPlugin"}]}}}]})
    assert parse_duration("1m30s") == 90 and parse_duration("500ms") == 0.5
    with pytest.raises(ConfigError):
        parse_duration("soon")


class FakeBinder(BindPlugin):
    """Records bindings instead of calling the API."""

    name = "FakeBinder"
    bound: dict[str, str] = {}

    async def bind(self, state: CycleState, pod: PodInfo, node_name: str) -> Status | None:
        if pod.name.startswith("unbindable"):
            return Status(Code.ERROR, "binding rejected: 409 Conflict")
        FakeBinder.bound[pod.key] = node_name
        return None


class Recorder:
    """Collects events like EventRecorder.event."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, str, str]] = []

    def event(self, obj: Obj, type: str, reason: str, message: str) -> None:
        self.events.append((obj["metadata"]["name"], type, reason, message))


def fake_scheduler(pods: dict[str, Obj], **config: Any) -> tuple[Scheduler, Recorder]:
    FakeBinder.bound = {}
    profile = Profile(plugins={"bind": PluginSet([("FakeBinder", 0)], ["*"])})
    recorder = Recorder()
    scheduler = Scheduler(SchedulerConfig(profiles=[profile], **config), recorders={"default-scheduler": recorder},
                          pod_lookup=pods.get, registry={**REGISTRY, "FakeBinder": FakeBinder})
    return scheduler, recorder


def add_pod(scheduler: Scheduler, pods: dict[str, Obj], pod: Obj) -> None:
    pods[f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"] = pod
    scheduler.on_pod_add(pod)


async def settle(scheduler: Scheduler, until: Any, within: float = 5.0) -> None:
    """Run the scheduler until until() holds."""
    task = asyncio.create_task(scheduler.run())
    deadline = time.monotonic() + within
    try:
        while not until():
            assert time.monotonic() < deadline, "scheduler did not settle"
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_schedules_fits_and_reports_the_unschedulable() -> None:
    pods: dict[str, Obj] = {}
    scheduler, recorder = fake_scheduler(pods)
    scheduler.on_node_add(make_node("master", cpu="2", taints=[CONTROL_PLANE_TAINT]))
    scheduler.on_node_add(make_node("w1", cpu="2"))
    scheduler.on_node_add(make_node("w2", cpu="2"))
    for i in range(4):
        add_pod(scheduler, pods, make_pod(f"p{i}", "900m"))
    add_pod(scheduler, pods, make_pod("huge", "3"))
    await settle(scheduler, lambda: len(FakeBinder.bound) == 4 and "default/huge" in scheduler.queue.unschedulable)
    assert sorted(FakeBinder.bound.values()) == ["w1", "w1", "w2", "w2"]
    failed = [e for e in recorder.events if e[2] == "FailedScheduling"]
    assert failed == [("huge", "Warning", "FailedScheduling",
                       "0/3 nodes are available: 1 node(s) had untolerated taint "
                       "{node-role.kubernetes.io/control-plane: }, 2 Insufficient cpu. preemption: 0/3 nodes are "
                       "available: 3 Preemption is not helpful for scheduling.")]
    assert ("p0", "Normal", "Scheduled", f"Successfully assigned default/p0 to {FakeBinder.bound['default/p0']}") \
        in recorder.events
    patch = pod_scheduled_patch(pods["default/huge"], "Unschedulable", failed[0][3], "")
    condition = patch["status"]["conditions"][0]
    assert (condition["type"], condition["status"], condition["reason"]) == ("PodScheduled", "False",
                                                                             "Unschedulable")
    assert "nominatedNodeName" not in patch["status"]
    scheduler.on_node_add(make_node("big", cpu="4"))
    await settle(scheduler, lambda: "default/huge" in FakeBinder.bound)
    assert FakeBinder.bound["default/huge"] == "big"


async def test_pod_status_patch_only_when_something_changes() -> None:
    pod = make_pod("p")
    pod["status"]["conditions"] = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                    "message": "m", "lastTransitionTime": "2020-01-01T00:00:00Z"}]
    assert pod_scheduled_patch(pod, "Unschedulable", "m", None) is None
    changed = pod_scheduled_patch(pod, "Unschedulable", "other", "n1")
    assert changed["status"]["conditions"][0]["lastTransitionTime"] == "2020-01-01T00:00:00Z"
    assert changed["status"]["nominatedNodeName"] == "n1"


async def test_bind_failure_forgets_the_assumed_pod_and_retries() -> None:
    pods: dict[str, Obj] = {}
    scheduler, recorder = fake_scheduler(pods, pod_initial_backoff=0.01, pod_max_backoff=0.02)
    scheduler.on_node_add(make_node("n1", cpu="1"))
    add_pod(scheduler, pods, make_pod("unbindable", "1"))
    await settle(scheduler, lambda: sum(e[2] == "FailedScheduling" for e in recorder.events) >= 2)
    assert scheduler.cache.nodes["n1"].requested.milli_cpu == 0
    assert ("unbindable", "Warning", "FailedScheduling", "binding rejected: 409 Conflict") in recorder.events


async def test_filters_walk_a_rotating_sample_of_nodes() -> None:
    pods: dict[str, Obj] = {}
    scheduler, _ = fake_scheduler(pods)
    for i in range(300):
        scheduler.on_node_add(make_node(f"n{i:03}"))
    framework = scheduler.profiles["default-scheduler"]
    pod = PodInfo(make_pod("p", "100m"))
    first = scheduler.find_nodes_that_fit(framework, CycleState(), pod, scheduler.cache.node_list())[0]
    second = scheduler.find_nodes_that_fit(framework, CycleState(), pod, scheduler.cache.node_list())[0]
    assert len(first) == len(second) == 300 * (50 - 300 // 125) // 100
    assert first[0].name == "n000" and second[0].name == f"n{len(first):03}"


async def test_preemption_evicts_the_least_important_victims_and_nominates() -> None:
    pods: dict[str, Obj] = {}
    scheduler, recorder = fake_scheduler(pods, pod_initial_backoff=0.01, pod_max_backoff=0.02)
    scheduler.on_node_add(make_node("n1", cpu="2"))
    low = make_pod("low", "1", node="n1", priority=0)
    mid = make_pod("mid", "500m", node="n1", priority=5)
    for pod in (low, mid):
        add_pod(scheduler, pods, pod)
    add_pod(scheduler, pods, make_pod("high", "1", priority=100))
    await settle(scheduler, lambda: any(e[2] == "Preempted" for e in recorder.events))
    preempted = [e for e in recorder.events if e[2] == "Preempted"]
    assert [e[0] for e in preempted] == ["low"]
    assert preempted[0][3].endswith("on node n1")
    assert scheduler.nominator.node_of[pods["default/high"]["metadata"]["uid"]] == "n1"
    failed = [e[3] for e in recorder.events if e[2] == "FailedScheduling"]
    assert failed == ["0/1 nodes are available: 1 Insufficient cpu."]
    add_pod(scheduler, pods, make_pod("latecomer", "1", priority=50))
    await settle(scheduler, lambda: "default/latecomer" in scheduler.queue.unschedulable)
    assert "default/latecomer" not in FakeBinder.bound, "the room is reserved for the nominated pod"
    del pods["default/low"]
    scheduler.on_pod_delete(low)
    await settle(scheduler, lambda: "default/high" in FakeBinder.bound)
    assert FakeBinder.bound["default/high"] == "n1"


async def test_preemption_policy_never_and_no_victims() -> None:
    pods: dict[str, Obj] = {}
    scheduler, recorder = fake_scheduler(pods)
    scheduler.on_node_add(make_node("n1", cpu="1"))
    add_pod(scheduler, pods, make_pod("resident", "1", node="n1", priority=1000))
    add_pod(scheduler, pods, make_pod("polite", "1", priority=2000, preemptionPolicy="Never"))
    add_pod(scheduler, pods, make_pod("weak", "1", priority=10))
    await settle(scheduler, lambda: len(scheduler.queue.unschedulable) == 2)
    messages = {e[0]: e[3] for e in recorder.events if e[2] == "FailedScheduling"}
    assert messages["polite"] == ("0/1 nodes are available: 1 Insufficient cpu. "
                                  "preemption: not eligible due to preemptionPolicy=Never.")
    assert messages["weak"] == ("0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are "
                                "available: 1 No preemption victims found for incoming pod.")


async def test_pods_of_other_schedulers_and_bound_pods_are_ignored() -> None:
    pods: dict[str, Obj] = {}
    scheduler, _ = fake_scheduler(pods)
    scheduler.on_node_add(make_node("n1"))
    add_pod(scheduler, pods, make_pod("other", scheduler="someone-else"))
    add_pod(scheduler, pods, make_pod("bound", "1", node="n1"))
    assert len(scheduler.queue) == 0
    assert scheduler.cache.nodes["n1"].requested.milli_cpu == 1000
