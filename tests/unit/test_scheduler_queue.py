"""The scheduling queue: QueueSort order, per-pod exponential backoff, unschedulable pods and cluster events."""

from __future__ import annotations

import asyncio

import pytest

from kubelite.scheduler.framework import NODE, POD, ActionType, ClusterEvent, Status, unresolvable
from kubelite.scheduler.podinfo import PodInfo, QueuedPodInfo
from kubelite.scheduler.queue import SchedulingQueue, pod_updated
from kubelite.scheduler.testing import make_pod


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def priority_less(a: QueuedPodInfo, b: QueuedPodInfo) -> bool:
    p1, p2 = a.pod_info.priority, b.pod_info.priority
    return p1 > p2 or (p1 == p2 and a.timestamp < b.timestamp)


def new_queue(clock: Clock, **kwargs: object) -> SchedulingQueue:
    return SchedulingQueue(priority_less, clock=clock, **kwargs)  # type: ignore[arg-type]


async def pop_now(queue: SchedulingQueue) -> QueuedPodInfo:
    return await asyncio.wait_for(queue.pop(), 0.1)


async def test_pops_by_priority_then_arrival() -> None:
    clock = Clock()
    queue = new_queue(clock)
    for name, priority in (("low", 0), ("high", 100), ("low2", 0), ("mid", 50)):
        queue.add(PodInfo(make_pod(name, priority=priority)))
        clock.now += 1
    assert [(await pop_now(queue)).pod_info.name for _ in range(4)] == ["high", "mid", "low", "low2"]
    with pytest.raises(TimeoutError):
        await pop_now(queue)


async def test_pop_waits_for_a_pod() -> None:
    queue = new_queue(Clock())
    waiter = asyncio.create_task(queue.pop())
    await asyncio.sleep(0)
    assert not waiter.done()
    queue.add(PodInfo(make_pod("late")))
    assert (await asyncio.wait_for(waiter, 1)).pod_info.name == "late"


def test_backoff_doubles_from_one_to_ten_seconds() -> None:
    queue = new_queue(Clock())
    qpi = QueuedPodInfo(PodInfo(make_pod("p")), 0)
    durations = []
    for attempts in range(1, 7):
        qpi.attempts = attempts
        durations.append(queue.backoff_duration(qpi))
    assert durations == [1, 2, 4, 8, 10, 10]


async def test_failed_pod_waits_out_its_backoff_after_a_move() -> None:
    clock = Clock()
    queue = new_queue(clock)
    queue.add(PodInfo(make_pod("p")))
    qpi = await pop_now(queue)
    qpi.attempts = 2
    qpi.unschedulable_plugins = {"NodeResourcesFit"}
    queue.add_unschedulable_if_not_present(qpi, queue.scheduling_cycle)
    assert "default/p" in queue.unschedulable
    assert queue.move_all(ClusterEvent(NODE, ActionType.ADD)) == 1
    assert queue.backoff_keys() == ["default/p"], "2 attempts: 2 s of backoff left"
    clock.now += 1.5
    queue.flush()
    assert queue.backoff_keys() == ["default/p"]
    clock.now += 1
    queue.flush()
    assert queue.active_keys() == ["default/p"]


async def test_event_moves_only_pods_whose_rejecting_plugin_registered_it() -> None:
    clock = Clock()
    registrations = {"default-scheduler": {
        "NodeResourcesFit": [(ClusterEvent(POD, ActionType.DELETE), None)],
        "TaintToleration": [(ClusterEvent(NODE, ActionType.ADD | ActionType.UPDATE_NODE_TAINT),
                             lambda pod, old, new: bool(new and new["metadata"]["name"] == "good"))],
    }}
    queue = new_queue(clock, registrations=registrations)
    for name, plugin in (("fit", "NodeResourcesFit"), ("taint", "TaintToleration")):
        queue.add(PodInfo(make_pod(name)))
        qpi = await pop_now(queue)
        qpi.unschedulable_plugins = {plugin}
        queue.add_unschedulable_if_not_present(qpi, queue.scheduling_cycle)
    clock.now += 20
    assert queue.move_all(ClusterEvent(NODE, ActionType.UPDATE_NODE_LABEL)) == 0
    assert queue.move_all(ClusterEvent(NODE, ActionType.ADD), None, {"metadata": {"name": "bad"}}) == 0
    assert queue.move_all(ClusterEvent(NODE, ActionType.ADD), None, {"metadata": {"name": "good"}}) == 1
    assert queue.active_keys() == ["default/taint"]
    assert queue.move_all(ClusterEvent(POD, ActionType.DELETE)) == 1
    assert sorted(queue.active_keys()) == ["default/fit", "default/taint"]


async def test_pod_failing_after_a_move_request_goes_to_backoff_not_unschedulable() -> None:
    clock = Clock()
    queue = new_queue(clock)
    queue.add(PodInfo(make_pod("p")))
    qpi = await pop_now(queue)
    cycle = queue.scheduling_cycle
    queue.move_all(ClusterEvent(NODE, ActionType.ADD))
    qpi.unschedulable_plugins = {"NodeResourcesFit"}
    queue.add_unschedulable_if_not_present(qpi, cycle)
    assert queue.backoff_keys() == ["default/p"] and not queue.unschedulable


async def test_error_without_rejecting_plugins_retries_after_backoff() -> None:
    clock = Clock()
    queue = new_queue(clock)
    queue.add(PodInfo(make_pod("p")))
    qpi = await pop_now(queue)
    queue.add_unschedulable_if_not_present(qpi, queue.scheduling_cycle)
    assert queue.backoff_keys() == ["default/p"]
    clock.now += 1.01
    queue.flush()
    assert (await pop_now(queue)).attempts == 2


async def test_unschedulable_pods_are_retried_after_sixty_seconds() -> None:
    clock = Clock()
    queue = new_queue(clock)
    queue.add(PodInfo(make_pod("p")))
    qpi = await pop_now(queue)
    qpi.unschedulable_plugins = {"NodeResourcesFit"}
    queue.add_unschedulable_if_not_present(qpi, queue.scheduling_cycle)
    clock.now += 59
    queue.flush()
    assert queue.unschedulable
    clock.now += 2
    queue.flush()
    assert queue.active_keys() == ["default/p"]


async def test_gated_pod_waits_until_its_gates_are_removed() -> None:
    def gates(pod: PodInfo) -> Status | None:
        status = unresolvable("gated") if pod.pod["spec"].get("schedulingGates") else None
        if status is not None:
            status.plugin = "SchedulingGates"
        return status
    clock = Clock()
    queue = new_queue(clock, pre_enqueue={"default-scheduler": gates})
    gated = make_pod("g", schedulingGates=[{"name": "wait"}])
    queue.add(PodInfo(gated))
    assert queue.unschedulable["default/g"].gated
    clock.now += 120
    queue.flush()
    queue.move_all(ClusterEvent(NODE, ActionType.ADD))
    assert not queue.active_keys(), "gated pods move only when their gates go"
    opened = {**gated, "spec": {**gated["spec"], "schedulingGates": []}}
    queue.update(gated, PodInfo(opened))
    assert queue.active_keys() == ["default/g"]


async def test_status_only_update_leaves_an_unschedulable_pod_where_it_is() -> None:
    clock = Clock()
    queue = new_queue(clock)
    pod = make_pod("p")
    queue.add(PodInfo(pod))
    qpi = await pop_now(queue)
    qpi.unschedulable_plugins = {"NodeResourcesFit"}
    queue.add_unschedulable_if_not_present(qpi, queue.scheduling_cycle)
    with_status = {**pod, "metadata": {**pod["metadata"], "resourceVersion": "2"},
                   "status": {"conditions": [{"type": "PodScheduled", "status": "False"}]}}
    assert not pod_updated(pod, with_status)
    queue.update(pod, PodInfo(with_status))
    assert "default/p" in queue.unschedulable
    assert queue.unschedulable["default/p"].pod_info.pod is with_status
    relabeled = {**pod, "metadata": {**pod["metadata"], "labels": {"x": "y"}}}
    queue.update(with_status, PodInfo(relabeled))
    assert queue.backoff_keys() == ["default/p"]


async def test_delete_removes_the_pod_everywhere() -> None:
    clock = Clock()
    queue = new_queue(clock)
    queue.add(PodInfo(make_pod("a", uid="ua")))
    queue.add(PodInfo(make_pod("b", uid="ub")))
    queue.delete("default/a", "ua")
    assert [(await pop_now(queue)).pod_info.name] == ["b"]
    assert len(queue) == 0


async def test_nominated_pods_are_tracked_per_node() -> None:
    queue = new_queue(Clock())
    pod = make_pod("p", uid="up")
    pod["status"]["nominatedNodeName"] = "node-1"
    queue.add(PodInfo(pod))
    assert [p.name for p in queue.nominator.pods_on("node-1")] == ["p"]
    queue.delete("default/p", "up")
    assert not queue.nominator.pods_on("node-1")
