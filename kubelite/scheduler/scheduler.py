"""The scheduler: scheduling cycle, async binding cycle, failure handling, and informer handlers feeding it."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any

from kubelite.client.errors import CONNECTION_ERRORS, ApiError, is_not_found
from kubelite.client.resources import PODS
from kubelite.client.timestamps import now_time
from kubelite.scheduler.cache import Cache
from kubelite.scheduler.config import SchedulerConfig
from kubelite.scheduler.framework import (
    NODE,
    POD,
    ActionType,
    ClusterEvent,
    Code,
    CycleState,
    Diagnosis,
    FitError,
    Framework,
    Handle,
    Listers,
    Nominator,
    Plugin,
    Status,
    WaitingPod,
    unresolvable,
)
from kubelite.scheduler.nodeinfo import NodeInfo
from kubelite.scheduler.plugins import REGISTRY
from kubelite.scheduler.podinfo import PodInfo, QueuedPodInfo
from kubelite.scheduler.queue import SchedulingQueue

if TYPE_CHECKING:
    from kubelite.client.events import EventRecorder
    from kubelite.client.rest import ApiClient

log = logging.getLogger(__name__)

Obj = dict[str, Any]
MIN_FEASIBLE_NODES_TO_FIND = 100
MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND = 5
BASE_PERCENTAGE_OF_NODES_TO_SCORE = 50
NO_NODES_AVAILABLE = "no nodes available to schedule pods"
EVENT_MESSAGE_LIMIT = 1024
HOUSEKEEPING_PERIOD = 1.0
"""How often backoff completions, stale unschedulable pods and expired assumptions are handled."""
TERMINAL_PHASES = ("Succeeded", "Failed")

NODE_ADD = ClusterEvent(NODE, ActionType.ADD, "NodeAdd")
ASSIGNED_POD_ADD = ClusterEvent(POD, ActionType.ADD, "AssignedPodAdd")
ASSIGNED_POD_DELETE = ClusterEvent(POD, ActionType.DELETE, "AssignedPodDelete")


class SchedulingError(Exception):
    """A plugin or the algorithm failed (not a fit problem): the pod is retried after backoff."""


def num_feasible_nodes_to_find(percentage: int | None, num_all_nodes: int) -> int:
    """How many feasible nodes to look for: all below 100 nodes, else an adaptive 50%..5% share, at least 100."""
    if num_all_nodes < MIN_FEASIBLE_NODES_TO_FIND:
        return num_all_nodes
    if not percentage:
        percentage = max(BASE_PERCENTAGE_OF_NODES_TO_SCORE - num_all_nodes // 125,
                         MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND)
    return max(num_all_nodes * percentage // 100, MIN_FEASIBLE_NODES_TO_FIND)


def select_host(nodes: list[NodeInfo], scores: list[int]) -> str:
    """The highest-scoring node, ties broken uniformly at random."""
    best = max(scores)
    return nodes[random.choice([i for i, score in enumerate(scores) if score == best])].name


def _assigned(pod: Obj) -> bool:
    return bool((pod.get("spec") or {}).get("nodeName"))


def _terminal(pod: Obj) -> bool:
    return (pod.get("status") or {}).get("phase") in TERMINAL_PHASES


def node_update_action(old: Obj, new: Obj) -> ActionType:
    """What changed between two versions of a node, as far as scheduling cares (heartbeats do not count)."""
    action = ActionType(0)
    old_status, new_status = old.get("status") or {}, new.get("status") or {}
    old_spec, new_spec = old.get("spec") or {}, new.get("spec") or {}
    if old_status.get("allocatable") != new_status.get("allocatable"):
        action |= ActionType.UPDATE_NODE_ALLOCATABLE
    if old["metadata"].get("labels") != new["metadata"].get("labels"):
        action |= ActionType.UPDATE_NODE_LABEL
    if (old_spec.get("taints") != new_spec.get("taints")
            or bool(old_spec.get("unschedulable")) != bool(new_spec.get("unschedulable"))):
        action |= ActionType.UPDATE_NODE_TAINT

    def conditions(status: Obj) -> dict[str, str]:
        return {c.get("type", ""): c.get("status", "") for c in status.get("conditions") or []}
    if conditions(old_status) != conditions(new_status):
        action |= ActionType.UPDATE_NODE_CONDITION
    if old["metadata"].get("annotations") != new["metadata"].get("annotations"):
        action |= ActionType.UPDATE_NODE_ANNOTATION
    return action


def pod_update_action(old: PodInfo | None, new: PodInfo) -> ActionType:
    """What changed in an assigned pod: labels, a scale-down of requests, or something else."""
    if old is None:
        return ActionType.UPDATE_OTHER
    action = ActionType(0)
    if old.labels != new.labels:
        action |= ActionType.UPDATE_POD_LABEL
    before, after = old.requests, new.requests
    if (after.milli_cpu < before.milli_cpu or after.memory < before.memory
            or after.ephemeral_storage < before.ephemeral_storage):
        action |= ActionType.UPDATE_POD_SCALE_DOWN
    return action or ActionType.UPDATE_OTHER


class Scheduler:
    """Schedules pending pods of its profiles one at a time; binds each in a background task."""

    def __init__(self, config: SchedulerConfig, client: ApiClient | None = None, *,
                 recorders: dict[str, EventRecorder] | None = None, listers: Listers | None = None,
                 pod_lookup: Callable[[str], Obj | None] | None = None,
                 registry: Mapping[str, type[Plugin]] = REGISTRY):
        self.config = config
        self.client = client
        self.recorders = recorders or {}
        self.pod_lookup = pod_lookup
        """The informer's current version of a pod by namespace/name (None when it is gone)."""
        self.cache = Cache()
        self.nominator = Nominator()
        self.listers = listers or Listers()
        self.tasks: set[asyncio.Task[None]] = set()
        waiting_pods: dict[str, WaitingPod] = {}
        self.profiles: dict[str, Framework] = {}
        for profile in config.profiles:
            handle = Handle(snapshot=self.cache, listers=self.listers, nominator=self.nominator, client=client,
                            recorder=self.recorders.get(profile.scheduler_name), spawn=self.spawn,
                            waiting_pods=waiting_pods)
            self.profiles[profile.scheduler_name] = Framework(profile, handle, registry)
        first = next(iter(self.profiles.values()))
        for framework in self.profiles.values():
            if framework.queue_sort.name != first.queue_sort.name:
                raise ValueError("every profile must use the same queueSort plugin")
        self.queue = SchedulingQueue(
            first.queue_sort.less,
            pre_enqueue={name: fw.run_pre_enqueue for name, fw in self.profiles.items()},
            registrations={name: fw.events_to_register() for name, fw in self.profiles.items()},
            nominator=self.nominator, initial_backoff=config.pod_initial_backoff,
            max_backoff=config.pod_max_backoff)
        self.waiting_pods = waiting_pods
        self.next_start_node_index = 0

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a coroutine in the background, keeping a reference until it ends."""
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # The loop.

    async def run(self) -> None:
        """Schedule pods until cancelled."""
        housekeeping = asyncio.create_task(self._housekeeping(), name="scheduler-housekeeping")
        try:
            while True:
                qpi = await self.queue.pop()
                try:
                    self.schedule_one(qpi)
                except Exception:
                    log.exception("scheduling %s failed unexpectedly", qpi.key)
                    self.queue.add_unschedulable_if_not_present(qpi, self.queue.scheduling_cycle)
                await asyncio.sleep(0)
        finally:
            housekeeping.cancel()
            tasks = [housekeeping, *self.tasks]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(HOUSEKEEPING_PERIOD)
            self.queue.flush()
            for expired in self.cache.cleanup_expired():
                self.queue.move_all(ASSIGNED_POD_DELETE, expired.pod, None)

    # The scheduling cycle.

    def schedule_one(self, qpi: QueuedPodInfo) -> None:
        """One scheduling cycle for one pod; on success the binding cycle continues in the background."""
        pod = qpi.pod_info
        framework = self.profiles.get(pod.scheduler_name)
        if framework is None or pod.deleting or self.cache.is_assumed(pod.uid):
            self.queue.done(pod.key)
            return
        cycle = self.queue.scheduling_cycle
        state = CycleState()
        try:
            host = self.schedule_pod(framework, state, pod)
        except FitError as fit:
            nominated: str | None = None
            if framework.post_filter:
                nominated, status = framework.run_post_filter(state, pod, fit.diagnosis.node_to_status)
                fit.diagnosis.post_filter_msg = status.message if status is not None else ""
                if status is not None and status.code == Code.ERROR:
                    log.error("PostFilter for %s failed: %s", pod.key, status.message)
            self.handle_failure(framework, qpi, Code.UNSCHEDULABLE, str(fit), fit.diagnosis.unschedulable_plugins,
                                nominated, cycle)
            return
        except SchedulingError as exc:
            code = Code.UNSCHEDULABLE_AND_UNRESOLVABLE if str(exc) == NO_NODES_AVAILABLE else Code.ERROR
            self.handle_failure(framework, qpi, code, str(exc), set(), None, cycle)
            return
        assumed = pod.on_node(host)
        self.cache.assume_pod(assumed)
        self.nominator.delete(pod.uid)
        status = framework.run_reserve(state, assumed, host)
        if status is None:
            status = framework.run_permit(state, assumed, host)
            if status is not None and status.code == Code.WAIT:
                status = None
        if status is not None:
            framework.run_unreserve(state, assumed, host)
            self.cache.forget_pod(assumed)
            plugins = {status.plugin} if status.rejected else set()
            self.handle_failure(framework, qpi, status.code, status.message, plugins, None, cycle)
            return
        self.spawn(self.binding_cycle(framework, state, qpi, assumed, cycle))

    def schedule_pod(self, framework: Framework, state: CycleState, pod: PodInfo) -> str:
        """schedulePod: the feasible nodes, then the best-scoring one (FitError when none fits)."""
        all_nodes = self.cache.node_list()
        if not all_nodes:
            raise SchedulingError(NO_NODES_AVAILABLE)
        feasible, diagnosis = self.find_nodes_that_fit(framework, state, pod, all_nodes)
        if not feasible:
            raise FitError(pod, len(all_nodes), diagnosis)
        if len(feasible) == 1:
            return feasible[0].name
        status = framework.run_pre_score(state, pod, feasible)
        if status is not None:
            raise SchedulingError(f"running PreScore plugin {status.plugin}: {status.message}")
        return select_host(feasible, framework.run_score(state, pod, feasible))

    def find_nodes_that_fit(self, framework: Framework, state: CycleState, pod: PodInfo,
                            all_nodes: list[NodeInfo]) -> tuple[list[NodeInfo], Diagnosis]:
        """PreFilter, the nominated node first, then Filter over a rotating sample of the nodes."""
        diagnosis = Diagnosis()
        names, narrowing, status = framework.run_pre_filter(state, pod, all_nodes)
        if status is not None:
            if status.code == Code.ERROR:
                raise SchedulingError(f"running PreFilter plugin {status.plugin}: {status.message}")
            diagnosis.pre_filter_msg = status.message
            diagnosis.node_to_status.absent = status
            diagnosis.unschedulable_plugins.add(status.plugin)
            return [], diagnosis
        nominated = self.nominator.node_of.get(pod.uid) or pod.nominated_node_name
        if nominated:
            node = self.cache.get(nominated)
            if node is not None and framework.run_filters_with_nominated(state, pod, node) is None:
                return [node], diagnosis
        nodes = all_nodes
        if names is not None:
            nodes = [n for n in (self.cache.get(name) for name in sorted(names)) if n is not None]
            diagnosis.node_to_status.absent = unresolvable(f"node(s) didn't satisfy plugin(s) [{' '.join(narrowing)}]")
            diagnosis.unschedulable_plugins.update(narrowing)
        return self.find_nodes_that_pass_filters(framework, state, pod, diagnosis, nodes), diagnosis

    def find_nodes_that_pass_filters(self, framework: Framework, state: CycleState, pod: PodInfo,
                                     diagnosis: Diagnosis, nodes: list[NodeInfo]) -> list[NodeInfo]:
        """Run the filters from the rotating start index until enough feasible nodes are found."""
        # Nodes go through the plugins in batches as large as the number of feasible nodes still wanted, so no
        # node past the last one needed is examined: the result is that of filtering node by node.
        count = len(nodes)
        if not count:
            return []
        wanted = num_feasible_nodes_to_find(framework.percentage_of_nodes_to_score, count)
        start = self.next_start_node_index % count
        ordered = nodes[start:] + nodes[:start] if start else nodes
        filters = framework.filters_for(state)
        if not filters:
            self.next_start_node_index = (start + wanted) % count
            return ordered[:wanted]
        feasible: list[NodeInfo] = []
        nominated_nodes = self.nominator.by_node
        position = 0
        while position < count and len(feasible) < wanted:
            batch = ordered[position:position + wanted - len(feasible)]
            position += len(batch)
            if nominated_nodes:
                candidates = []
                for node in batch:
                    if node.name in nominated_nodes:
                        status = framework.run_filters_with_nominated(state, pod, node)
                        if status is None:
                            feasible.append(node)
                        else:
                            self._rejected(diagnosis, node, status)
                    else:
                        candidates.append(node)
            else:
                candidates = batch
            for plugin in filters:
                if not candidates:
                    break
                results = plugin.filter_nodes(state, pod, candidates)
                if results is None:
                    continue
                survivors = []
                for node, status in zip(candidates, results, strict=True):
                    if status is None:
                        survivors.append(node)
                    else:
                        status.plugin = plugin.name
                        self._rejected(diagnosis, node, status)
                candidates = survivors
            feasible.extend(candidates)
        self.next_start_node_index = (start + position) % count
        return feasible

    @staticmethod
    def _rejected(diagnosis: Diagnosis, node: NodeInfo, status: Status) -> None:
        if status.code == Code.ERROR:
            raise SchedulingError(f"running Filter plugin {status.plugin}: {status.message}")
        diagnosis.node_to_status.explicit[node.name] = status
        diagnosis.unschedulable_plugins.add(status.plugin)

    # The binding cycle.

    async def binding_cycle(self, framework: Framework, state: CycleState, qpi: QueuedPodInfo, assumed: PodInfo,
                            cycle: int) -> None:
        """WaitOnPermit, PreBind, Bind; on failure undo the assumption and requeue the pod."""
        host = assumed.node_name
        try:
            status = await framework.wait_on_permit(assumed)
            if status is None:
                status = await framework.run_pre_bind(state, assumed, host)
            if status is None:
                status = await framework.run_bind(state, assumed, host)
        except Exception as exc:
            log.exception("binding %s to %s failed", assumed.key, host)
            status = Status(Code.ERROR, str(exc))
        if status is not None:
            framework.run_unreserve(state, assumed, host)
            self.cache.forget_pod(assumed)
            self.queue.move_all(ASSIGNED_POD_DELETE, assumed.pod, None)
            plugins = {status.plugin} if status.rejected else set()
            self.handle_failure(framework, qpi, status.code, status.message, plugins, None, cycle)
            return
        self.cache.finish_binding(assumed)
        framework.run_post_bind(state, assumed, host)
        recorder = self.recorders.get(framework.name)
        if recorder is not None:
            recorder.event(assumed.pod, "Normal", "Scheduled",
                           f"Successfully assigned {assumed.namespace}/{assumed.name} to {host}")
        self.queue.done(qpi.key)

    # Failures.

    def handle_failure(self, framework: Framework, qpi: QueuedPodInfo, code: Code, message: str,
                       plugins: set[str], nominated: str | None, cycle: int) -> None:
        """Requeue the pod (unless gone or bound), record FailedScheduling and set PodScheduled=False."""
        pod = qpi.pod_info
        current = self.pod_lookup(pod.key) if self.pod_lookup is not None else pod.pod
        if current is None or (current["metadata"].get("uid") or pod.uid) != pod.uid:
            self.queue.done(pod.key)
            return
        if _assigned(current):
            log.info("pod %s is already assigned to %s; not requeueing it", pod.key, current["spec"]["nodeName"])
            self.queue.done(pod.key)
            return
        if current is not pod.pod:
            qpi.pod_info = PodInfo(current)
        qpi.unschedulable_plugins = set(plugins)
        self.queue.add_unschedulable_if_not_present(qpi, cycle)
        if nominated is not None:
            if nominated:
                self.nominator.add(qpi.pod_info, nominated)
            else:
                self.nominator.delete(pod.uid)
        rejected = code in (Code.UNSCHEDULABLE, Code.UNSCHEDULABLE_AND_UNRESOLVABLE, Code.PENDING)
        reason = "Unschedulable" if rejected else "SchedulerError"
        log.info("unable to schedule %s: %s", pod.key, message)
        recorder = self.recorders.get(framework.name)
        if recorder is not None:
            short = message if len(message) <= EVENT_MESSAGE_LIMIT else message[:EVENT_MESSAGE_LIMIT - 4] + " ..."
            recorder.event(current, "Warning", "FailedScheduling", short)
        patch = pod_scheduled_patch(current, reason, message, nominated)
        if patch is not None and self.client is not None:
            self.spawn(self._patch_status(pod, patch))

    async def _patch_status(self, pod: PodInfo, patch: Obj) -> None:
        assert self.client is not None
        try:
            await self.client.patch(PODS, pod.name, patch, pod.namespace, type="strategic", subresource="status")
        except (ApiError, *CONNECTION_ERRORS) as exc:
            if not is_not_found(exc):
                log.warning("updating the status of %s failed: %s", pod.key, exc)

    # Informer event handlers.

    def responsible(self, pod: Obj) -> bool:
        """True for a pending pod that names one of this scheduler's profiles."""
        return (pod.get("spec") or {}).get("schedulerName") in self.profiles and not _assigned(pod)

    def on_pod_add(self, pod: Obj) -> None:
        if _terminal(pod):
            return
        if _assigned(pod):
            self.cache.add_pod(pod)
            self.queue.move_all(ASSIGNED_POD_ADD, None, pod)
        elif self.responsible(pod):
            self.queue.add(PodInfo(pod))

    def on_pod_update(self, old: Obj, new: Obj) -> None:
        if _terminal(new):
            if not _terminal(old):
                self.on_pod_delete(old)
            return
        if _assigned(new):
            if _assigned(old) and not _terminal(old):
                uid = new["metadata"].get("uid") or ""
                before = self.cache.get_pod(uid)
                after = self.cache.update_pod(new)
                action = pod_update_action(before, after)
                self.queue.move_all(ClusterEvent(POD, action, "AssignedPodUpdate"), old, new)
            else:
                self.queue.delete(_key(new), new["metadata"].get("uid") or "")
                self.cache.add_pod(new)
                self.queue.move_all(ASSIGNED_POD_ADD, None, new)
            return
        if self.responsible(new):
            if self.responsible(old) and not _terminal(old):
                self.queue.update(old, PodInfo(new))
            else:
                self.queue.add(PodInfo(new))
        elif self.responsible(old):
            self.queue.delete(_key(old), old["metadata"].get("uid") or "")

    def on_pod_delete(self, pod: Obj) -> None:
        uid = pod["metadata"].get("uid") or ""
        if _assigned(pod) or self.cache.get_pod(uid) is not None:
            self.cache.remove_pod(pod)
            self.queue.move_all(ASSIGNED_POD_DELETE, pod, None)
        self.queue.delete(_key(pod), uid)
        waiting = self.waiting_pods.get(uid)
        if waiting is not None:
            waiting.reject("", "pod was deleted")

    def on_node_add(self, node: Obj) -> None:
        self.cache.add_node(node)
        self.queue.move_all(NODE_ADD, None, node)

    def on_node_update(self, old: Obj, new: Obj) -> None:
        self.cache.add_node(new)
        action = node_update_action(old, new)
        if action:
            self.queue.move_all(ClusterEvent(NODE, action, "NodeUpdate"), old, new)

    def on_node_delete(self, node: Obj) -> None:
        self.cache.remove_node(node)

    def resource_handlers(self, kind: str) -> tuple[Callable[[Obj], None], Callable[[Obj, Obj], None],
                                                    Callable[[Obj], None]] | None:
        """Informer handlers (add, update, delete) turning changes of another kind ("PersistentVolumeClaim", ...)
        into cluster events for the queue; None when no plugin registered that kind (upstream ignores those too)."""
        if not any(event.resource == kind for registrations in self.queue.registrations.values()
                   for events in registrations.values() for event, _ in events):
            return None
        added = ClusterEvent(kind, ActionType.ADD, f"{kind}Add")
        updated = ClusterEvent(kind, ActionType.UPDATE, f"{kind}Update")
        deleted = ClusterEvent(kind, ActionType.DELETE, f"{kind}Delete")

        def on_add(obj: Obj) -> None:
            self.queue.move_all(added, None, obj)

        def on_update(old: Obj, new: Obj) -> None:
            self.queue.move_all(updated, old, new)

        def on_delete(obj: Obj) -> None:
            self.queue.move_all(deleted, obj, None)
        return on_add, on_update, on_delete


def _key(pod: Obj) -> str:
    meta = pod["metadata"]
    return f"{meta.get('namespace') or ''}/{meta['name']}"


def pod_scheduled_patch(pod: Obj, reason: str, message: str, nominated: str | None) -> Obj | None:
    """The status patch setting PodScheduled=False (and nominatedNodeName), None when nothing would change."""
    status = pod.get("status") or {}
    old = next((c for c in status.get("conditions") or [] if c.get("type") == "PodScheduled"), None)
    condition_changed = old is None or (old.get("status"), old.get("reason"), old.get("message")) != (
        "False", reason, message)
    nominated_changed = nominated is not None and (status.get("nominatedNodeName") or "") != nominated
    if not condition_changed and not nominated_changed:
        return None
    transition = old.get("lastTransitionTime") if old is not None and old.get("status") == "False" else None
    patch: Obj = {"status": {"conditions": [{
        "type": "PodScheduled", "status": "False", "reason": reason, "message": message, "lastProbeTime": None,
        "lastTransitionTime": transition or now_time()}]}}
    if nominated_changed:
        patch["status"]["nominatedNodeName"] = nominated or None
    return patch
