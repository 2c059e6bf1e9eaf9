"""The scheduling framework: statuses, cycle state, cluster events, the plugin interfaces and their runner."""

from __future__ import annotations

import asyncio
import enum
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from kubelite.scheduler.nodeinfo import NodeInfo
from kubelite.scheduler.podinfo import PodInfo, QueuedPodInfo

if TYPE_CHECKING:
    from kubelite.client.events import EventRecorder
    from kubelite.client.rest import ApiClient
    from kubelite.client.store import Store
    from kubelite.scheduler.cache import Cache
    from kubelite.scheduler.config import Profile

Obj = dict[str, Any]
MAX_NODE_SCORE = 100
MAX_PERMIT_TIMEOUT = 15 * 60.0


class Code(enum.IntEnum):
    """framework.Code: how an extension point answered."""

    SUCCESS = 0
    ERROR = 1
    UNSCHEDULABLE = 2
    UNSCHEDULABLE_AND_UNRESOLVABLE = 3
    WAIT = 4
    SKIP = 5
    PENDING = 6


class Status:
    """A non-success answer of a plugin (success is None everywhere, to keep the hot loops cheap)."""

    __slots__ = ("code", "reasons", "plugin")

    def __init__(self, code: Code, *reasons: str, plugin: str = ""):
        self.code = code
        self.reasons: tuple[str, ...] = reasons
        self.plugin = plugin

    @property
    def message(self) -> str:
        """The reasons joined as upstream's Status.Message()."""
        return ", ".join(self.reasons)

    @property
    def rejected(self) -> bool:
        """True for Unschedulable, UnschedulableAndUnresolvable and Pending."""
        return self.code in (Code.UNSCHEDULABLE, Code.UNSCHEDULABLE_AND_UNRESOLVABLE, Code.PENDING)

    def __repr__(self) -> str:
        return f"Status({self.code.name}, {self.message!r}, plugin={self.plugin!r})"


SKIP = Status(Code.SKIP)


def unschedulable(*reasons: str) -> Status:
    return Status(Code.UNSCHEDULABLE, *reasons)


def unresolvable(*reasons: str) -> Status:
    return Status(Code.UNSCHEDULABLE_AND_UNRESOLVABLE, *reasons)


def error(message: str) -> Status:
    return Status(Code.ERROR, message)


class CycleState:
    """Data plugins share within one scheduling cycle, plus which plugins skip Filter and Score."""

    __slots__ = ("data", "skip_filter", "skip_score")

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self.skip_filter: set[str] = set()
        self.skip_score: set[str] = set()

    def clone(self) -> CycleState:
        """A copy whose plugin data can be changed (values with clone() are cloned), for preemption dry runs."""
        clone = CycleState()
        clone.data = {k: v.clone() if hasattr(v, "clone") else v for k, v in self.data.items()}
        clone.skip_filter = set(self.skip_filter)
        clone.skip_score = set(self.skip_score)
        return clone


class ActionType(enum.IntFlag):
    """What happened to an object, with node and pod updates split by what changed."""

    ADD = 1
    DELETE = 2
    UPDATE_NODE_ALLOCATABLE = 4
    UPDATE_NODE_LABEL = 8
    UPDATE_NODE_TAINT = 16
    UPDATE_NODE_CONDITION = 32
    UPDATE_NODE_ANNOTATION = 64
    UPDATE_POD_LABEL = 128
    UPDATE_POD_SCALE_DOWN = 256
    UPDATE_POD_TOLERATIONS = 512
    UPDATE_POD_SCHEDULING_GATES = 1024
    UPDATE_OTHER = 2048
    UPDATE = 4 | 8 | 16 | 32 | 64 | 128 | 256 | 512 | 1024 | 2048
    ALL = 1 | 2 | UPDATE


POD, NODE, WILDCARD = "Pod", "Node", "*"
UNSCHEDULED_POD = "UnscheduledPod"
"""Events about the pending pod itself (e.g. its scheduling gates or tolerations changed)."""


@dataclass(frozen=True)
class ClusterEvent:
    """A change in the cluster that may make pending pods schedulable: a resource and the actions."""

    resource: str
    action: ActionType
    label: str = ""

    def matches(self, other: ClusterEvent) -> bool:
        """True when this registered event covers the incoming one."""
        return (self.resource == WILDCARD or self.resource == other.resource) and bool(self.action & other.action)


Hint = Callable[[PodInfo, Obj | None, Obj | None], bool]
"""A queueing hint: True when the event (old, new object) may make the pod schedulable."""
EventRegistration = tuple[ClusterEvent, Hint | None]


class Plugin:
    """A scheduling plugin; subclasses implement one or more extension-point interfaces below."""

    name: ClassVar[str] = ""

    def __init__(self, args: Obj, handle: Handle):
        self.handle = handle

    def events_to_register(self) -> list[EventRegistration]:
        """Cluster events that may make a pod this plugin rejected schedulable (EnqueueExtensions): any by default."""
        return [(ClusterEvent(WILDCARD, ActionType.ALL), None)]


class QueueSortPlugin(Plugin):
    def less(self, a: QueuedPodInfo, b: QueuedPodInfo) -> bool:
        raise NotImplementedError


class PreEnqueuePlugin(Plugin):
    def pre_enqueue(self, pod: PodInfo) -> Status | None:
        raise NotImplementedError


class PreFilterPlugin(Plugin):
    def pre_filter(self, state: CycleState, pod: PodInfo,
                   nodes: list[NodeInfo]) -> tuple[set[str] | None, Status | None]:
        """Pre-compute per-cycle data; may narrow the nodes to a set of names, Skip Filter, or reject the pod."""
        raise NotImplementedError

    def add_pod(self, state: CycleState, pod: PodInfo, added: PodInfo, node: NodeInfo) -> None:
        """Update the cycle data as if `added` ran on `node` (PreFilterExtensions)."""

    def remove_pod(self, state: CycleState, pod: PodInfo, removed: PodInfo, node: NodeInfo) -> None:
        """Update the cycle data as if `removed` left `node` (PreFilterExtensions)."""


class FilterPlugin(Plugin):
    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        raise NotImplementedError

    def filter_nodes(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]) -> list[Status | None] | None:
        """Filter many nodes: a status per node, or None when all pass (hot plugins override this)."""
        check = self.filter
        results = [check(state, pod, node) for node in nodes]
        return None if results.count(None) == len(results) else results


class PostFilterPlugin(Plugin):
    def post_filter(self, state: CycleState, pod: PodInfo,
                    statuses: NodeToStatus) -> tuple[str | None, Status | None]:
        """Try to make the pod schedulable (preemption): (nominated node or None, status)."""
        raise NotImplementedError


class PreScorePlugin(Plugin):
    def pre_score(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]) -> Status | None:
        raise NotImplementedError


class ScorePlugin(Plugin):
    normalizes: ClassVar[bool] = False
    """True when normalize_score must run (ScoreExtensions)."""

    def score(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> int:
        raise NotImplementedError

    def score_nodes(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]) -> list[int]:
        """Score every node (plugins override this to save a call per node on hot paths)."""
        score = self.score
        return [score(state, pod, node) for node in nodes]

    def normalize_score(self, state: CycleState, pod: PodInfo, scores: list[int], nodes: list[NodeInfo]) -> None:
        """Rescale the scores (in place) into [0, MAX_NODE_SCORE]."""


class ReservePlugin(Plugin):
    def reserve(self, state: CycleState, pod: PodInfo, node_name: str) -> Status | None:
        raise NotImplementedError

    def unreserve(self, state: CycleState, pod: PodInfo, node_name: str) -> None:
        raise NotImplementedError


class PermitPlugin(Plugin):
    def permit(self, state: CycleState, pod: PodInfo, node_name: str) -> tuple[Status | None, float]:
        """Allow (None), reject, or Wait with a timeout in seconds."""
        raise NotImplementedError


class PreBindPlugin(Plugin):
    async def pre_bind(self, state: CycleState, pod: PodInfo, node_name: str) -> Status | None:
        raise NotImplementedError


class BindPlugin(Plugin):
    async def bind(self, state: CycleState, pod: PodInfo, node_name: str) -> Status | None:
        """Bind the pod; Skip lets the next bind plugin do it."""
        raise NotImplementedError


class PostBindPlugin(Plugin):
    def post_bind(self, state: CycleState, pod: PodInfo, node_name: str) -> None:
        raise NotImplementedError


EXTENSION_POINTS: dict[str, type[Plugin]] = {
    "preEnqueue": PreEnqueuePlugin,
    "queueSort": QueueSortPlugin,
    "preFilter": PreFilterPlugin,
    "filter": FilterPlugin,
    "postFilter": PostFilterPlugin,
    "preScore": PreScorePlugin,
    "score": ScorePlugin,
    "reserve": ReservePlugin,
    "permit": PermitPlugin,
    "preBind": PreBindPlugin,
    "bind": BindPlugin,
    "postBind": PostBindPlugin,
}


class NodeToStatus:
    """Why each node was rejected; nodes not listed share `absent` (UnschedulableAndUnresolvable by default)."""

    __slots__ = ("explicit", "absent")

    def __init__(self, absent: Status | None = None):
        self.explicit: dict[str, Status] = {}
        self.absent = absent or Status(Code.UNSCHEDULABLE_AND_UNRESOLVABLE)

    def get(self, name: str) -> Status:
        return self.explicit.get(name, self.absent)

    def set(self, name: str, status: Status) -> None:
        self.explicit[name] = status

    def nodes_with_code(self, nodes: Iterable[NodeInfo], code: Code) -> list[NodeInfo]:
        """The nodes whose status has this code (absent nodes included when `absent` has it)."""
        return [n for n in nodes if self.get(n.name).code == code]


@dataclass
class Diagnosis:
    """Why a pod fits nowhere: per-node statuses, rejecting plugins, and PreFilter/PostFilter messages."""

    node_to_status: NodeToStatus = field(default_factory=NodeToStatus)
    unschedulable_plugins: set[str] = field(default_factory=set)
    pre_filter_msg: str = ""
    post_filter_msg: str = ""


class FitError(Exception):
    """No node fits the pod; str() is kube-scheduler's "0/N nodes are available: ..." message."""

    def __init__(self, pod: PodInfo, num_all_nodes: int, diagnosis: Diagnosis):
        super().__init__()
        self.pod = pod
        self.num_all_nodes = num_all_nodes
        self.diagnosis = diagnosis

    def __str__(self) -> str:
        return fit_error_message(self.num_all_nodes, self.diagnosis)


def fit_error_message(num_all_nodes: int, diagnosis: Diagnosis) -> str:
    """FitError.Error(): sorted "COUNT reason" histogram, then the PostFilter message."""
    message = f"0/{num_all_nodes} nodes are available:"
    if diagnosis.pre_filter_msg:
        message += f" {diagnosis.pre_filter_msg}."
    else:
        statuses = diagnosis.node_to_status
        reasons: Counter[str] = Counter()
        for status in statuses.explicit.values():
            reasons.update(status.reasons)
        absent = num_all_nodes - len(statuses.explicit)
        if absent > 0:
            for reason in statuses.absent.reasons:
                reasons[reason] += absent
        histogram = sorted(f"{count} {reason}" for reason, count in reasons.items())
        if histogram:
            message += f" {', '.join(histogram)}."
    if diagnosis.post_filter_msg:
        message += f" {diagnosis.post_filter_msg}"
    return message


class Listers:
    """Read access to informer caches plugins need beyond nodes and pods (namespaces, owners, PDBs)."""

    def __init__(self, stores: Mapping[str, Store] | None = None):
        self.stores: dict[str, Store] = dict(stores or {})

    def list(self, kind: str, namespace: str | None = None) -> list[Obj]:
        """Objects of a kind ("services", "replicasets", ...), in a namespace or all."""
        store = self.stores.get(kind)
        if store is None:
            return []
        return store.by_index("namespace", namespace) if namespace is not None else store.list()

    def get(self, kind: str, namespace: str | None, name: str) -> Obj | None:
        store = self.stores.get(kind)
        return store.get_by_name(namespace, name) if store is not None else None

    def namespace_labels(self, name: str) -> Mapping[str, str] | None:
        """A namespace's labels (None when unknown)."""
        ns = self.get("namespaces", None, name)
        return (ns["metadata"].get("labels") or {}) if ns is not None else None


class Nominator:
    """Pods nominated to nodes by preemption: they reserve room that lower-priority pods must not take."""

    def __init__(self) -> None:
        self.by_node: dict[str, dict[str, PodInfo]] = {}
        self.node_of: dict[str, str] = {}

    def add(self, pod: PodInfo, node_name: str = "") -> None:
        """Nominate a pod (to node_name, else its status.nominatedNodeName); replaces an earlier nomination."""
        self.delete(pod.uid)
        node_name = node_name or pod.nominated_node_name
        if not node_name:
            return
        self.node_of[pod.uid] = node_name
        self.by_node.setdefault(node_name, {})[pod.uid] = pod

    def delete(self, uid: str) -> None:
        node_name = self.node_of.pop(uid, None)
        if node_name is not None:
            pods = self.by_node.get(node_name, {})
            pods.pop(uid, None)
            if not pods:
                self.by_node.pop(node_name, None)

    def update(self, pod: PodInfo) -> None:
        """A newer version of a pending pod: keep a nomination made here until its status names one."""
        node_name = pod.nominated_node_name or self.node_of.get(pod.uid, "")
        if node_name or pod.uid in self.node_of:
            self.add(pod, node_name)

    def pods_on(self, node_name: str) -> list[PodInfo]:
        pods = self.by_node.get(node_name)
        return list(pods.values()) if pods else []


class WaitingPod:
    """A pod held at Permit until every waiting plugin allows it, one rejects it, or the timeout passes."""

    def __init__(self, pod: PodInfo, plugins: dict[str, float]):
        self.pod = pod
        self.pending = set(plugins)
        self.future: asyncio.Future[Status | None] = asyncio.get_running_loop().create_future()
        self.timeout = min(min(plugins.values()), MAX_PERMIT_TIMEOUT)

    def allow(self, plugin: str) -> None:
        self.pending.discard(plugin)
        if not self.pending and not self.future.done():
            self.future.set_result(None)

    def reject(self, plugin: str, message: str) -> None:
        if not self.future.done():
            self.future.set_result(Status(Code.UNSCHEDULABLE, message, plugin=plugin))


@dataclass
class Handle:
    """What plugins may use: the node cache, listers, the nominator, the API client and the event recorder."""

    snapshot: Cache
    listers: Listers = field(default_factory=Listers)
    nominator: Nominator = field(default_factory=Nominator)
    client: ApiClient | None = None
    recorder: EventRecorder | None = None
    scheduler_name: str = "default-scheduler"
    spawn: Callable[[Coroutine[Any, Any, None]], Any] | None = None
    framework: Framework | None = None
    waiting_pods: dict[str, WaitingPod] = field(default_factory=dict)

    def background(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run API work off the scheduling cycle (the scheduler keeps references to its tasks)."""
        if self.spawn is not None:
            self.spawn(coro)
        else:
            coro.close()


class Framework:
    """One profile's plugins per extension point, and how each extension point runs them."""

    def __init__(self, profile: Profile, handle: Handle, registry: Mapping[str, type[Plugin]]):
        self.profile = profile
        self.name = profile.scheduler_name
        self.handle = handle
        handle.framework = self
        handle.scheduler_name = profile.scheduler_name
        self.percentage_of_nodes_to_score = profile.percentage_of_nodes_to_score
        expanded = profile.expanded_plugins(registry)
        self.plugins: dict[str, Plugin] = {}
        for names in expanded.values():
            for plugin_name, _ in names:
                if plugin_name in self.plugins:
                    continue
                factory = registry.get(plugin_name)
                if factory is None:
                    raise ValueError(f"plugin {plugin_name!r} does not exist")
                self.plugins[plugin_name] = factory(profile.plugin_config.get(plugin_name) or {}, handle)

        def at(point: str) -> list[Any]:
            kind = EXTENSION_POINTS[point]
            chosen = []
            for plugin_name, _ in expanded.get(point, []):
                plugin = self.plugins[plugin_name]
                if not isinstance(plugin, kind):
                    raise ValueError(f"plugin {plugin_name!r} does not extend {point}")
                chosen.append(plugin)
            return chosen

        sorts = at("queueSort")
        if len(sorts) != 1:
            raise ValueError(f"profile {self.name!r} needs exactly one queueSort plugin, has {len(sorts)}")
        self.queue_sort: QueueSortPlugin = sorts[0]
        self.pre_enqueue: list[PreEnqueuePlugin] = at("preEnqueue")
        self.pre_filter: list[PreFilterPlugin] = at("preFilter")
        self.filter: list[FilterPlugin] = at("filter")
        self.post_filter: list[PostFilterPlugin] = at("postFilter")
        self.pre_score: list[PreScorePlugin] = at("preScore")
        self.score: list[tuple[ScorePlugin, int]] = [
            (self.plugins[n], w) for n, w in expanded.get("score", [])]
        for plugin, _ in self.score:
            if not isinstance(plugin, ScorePlugin):
                raise ValueError(f"plugin {plugin.name!r} does not extend score")
        self.reserve: list[ReservePlugin] = at("reserve")
        self.permit: list[PermitPlugin] = at("permit")
        self.pre_bind: list[PreBindPlugin] = at("preBind")
        self.bind: list[BindPlugin] = at("bind")
        self.post_bind: list[PostBindPlugin] = at("postBind")
        if not self.bind:
            raise ValueError(f"profile {self.name!r} needs at least one bind plugin")

    def events_to_register(self) -> dict[str, list[EventRegistration]]:
        """Every plugin's registered cluster events, by plugin name."""
        return {name: plugin.events_to_register() for name, plugin in self.plugins.items()}

    def run_pre_enqueue(self, pod: PodInfo) -> Status | None:
        for plugin in self.pre_enqueue:
            status = plugin.pre_enqueue(pod)
            if status is not None:
                status.plugin = plugin.name
                return status
        return None

    def run_pre_filter(self, state: CycleState, pod: PodInfo,
                       nodes: list[NodeInfo]) -> tuple[set[str] | None, list[str], Status | None]:
        """PreFilter plugins in order: (node names they narrow to, the narrowing plugins, first rejection)."""
        result: set[str] | None = None
        narrowing: list[str] = []
        for plugin in self.pre_filter:
            names, status = plugin.pre_filter(state, pod, nodes)
            if status is not None:
                if status.code == Code.SKIP:
                    state.skip_filter.add(plugin.name)
                    continue
                status.plugin = plugin.name
                return None, narrowing, status
            if names is not None:
                narrowing.append(plugin.name)
                result = set(names) if result is None else result & names
                if not result:
                    return None, narrowing, Status(
                        Code.UNSCHEDULABLE_AND_UNRESOLVABLE,
                        f"node(s) didn't satisfy plugin(s) [{' '.join(narrowing)}] simultaneously",
                        plugin=plugin.name)
        return result, narrowing, None

    def filters_for(self, state: CycleState) -> list[FilterPlugin]:
        """The Filter plugins this cycle runs (those PreFilter did not skip)."""
        return [p for p in self.filter if p.name not in state.skip_filter]

    def run_filter_plugins(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        for plugin in self.filter:
            if plugin.name in state.skip_filter:
                continue
            status = plugin.filter(state, pod, node)
            if status is not None:
                status.plugin = plugin.name
                return status
        return None

    def run_pre_filter_add_pod(self, state: CycleState, pod: PodInfo, added: PodInfo, node: NodeInfo) -> None:
        for plugin in self.pre_filter:
            if plugin.name not in state.skip_filter:
                plugin.add_pod(state, pod, added, node)

    def run_pre_filter_remove_pod(self, state: CycleState, pod: PodInfo, removed: PodInfo,
                                  node: NodeInfo) -> None:
        for plugin in self.pre_filter:
            if plugin.name not in state.skip_filter:
                plugin.remove_pod(state, pod, removed, node)

    def run_filters_with_nominated(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status | None:
        """Filter twice when higher-or-equal priority pods are nominated to the node: with them, then without."""
        nominated = [p for p in self.handle.nominator.pods_on(node.name)
                     if p.priority >= pod.priority and p.uid != pod.uid]
        if nominated:
            with_nominated = node.clone()
            nominated_state = state.clone()
            for other in nominated:
                with_nominated.add_pod(other)
                self.run_pre_filter_add_pod(nominated_state, pod, other, with_nominated)
            status = self.run_filter_plugins(nominated_state, pod, with_nominated)
            if status is not None:
                return status
        return self.run_filter_plugins(state, pod, node)

    def run_post_filter(self, state: CycleState, pod: PodInfo,
                        statuses: NodeToStatus) -> tuple[str | None, Status | None]:
        """PostFilter plugins until one succeeds (returns its nominated node) or one errors."""
        result: str | None = None
        reasons: list[str] = []
        rejector = ""
        for plugin in self.post_filter:
            nominated, status = plugin.post_filter(state, pod, statuses)
            if status is None:
                return nominated, None
            status.plugin = plugin.name
            if status.code == Code.UNSCHEDULABLE_AND_UNRESOLVABLE:
                return nominated, status
            if not status.rejected:
                return None, Status(Code.ERROR, *status.reasons, plugin=plugin.name)
            if nominated is not None:
                result = nominated
            reasons.extend(status.reasons)
            rejector = rejector or plugin.name
        return result, Status(Code.UNSCHEDULABLE, *reasons, plugin=rejector)

    def run_pre_score(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]) -> Status | None:
        for plugin in self.pre_score:
            status = plugin.pre_score(state, pod, nodes)
            if status is not None:
                if status.code == Code.SKIP:
                    state.skip_score.add(plugin.name)
                    continue
                status.plugin = plugin.name
                return status
        return None

    def run_score(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]) -> list[int]:
        """Each node's weighted sum of normalized plugin scores."""
        totals = [0] * len(nodes)
        for plugin, weight in self.score:
            if plugin.name in state.skip_score:
                continue
            scores = plugin.score_nodes(state, pod, nodes)
            if plugin.normalizes:
                plugin.normalize_score(state, pod, scores, nodes)
            totals = [t + s * weight for t, s in zip(totals, scores, strict=True)]
        return totals

    def run_reserve(self, state: CycleState, pod: PodInfo, node_name: str) -> Status | None:
        for plugin in self.reserve:
            status = plugin.reserve(state, pod, node_name)
            if status is not None:
                status.plugin = plugin.name
                return status
        return None

    def run_unreserve(self, state: CycleState, pod: PodInfo, node_name: str) -> None:
        for plugin in reversed(self.reserve):
            plugin.unreserve(state, pod, node_name)

    def run_permit(self, state: CycleState, pod: PodInfo, node_name: str) -> Status | None:
        """Permit plugins: a rejection, None (allowed), or Wait after registering the pod as waiting."""
        waits: dict[str, float] = {}
        for plugin in self.permit:
            status, timeout = plugin.permit(state, pod, node_name)
            if status is None:
                continue
            status.plugin = plugin.name
            if status.code == Code.WAIT:
                waits[plugin.name] = timeout
                continue
            return status
        if waits:
            self.handle.waiting_pods[pod.uid] = WaitingPod(pod, waits)
            return Status(Code.WAIT)
        return None

    async def wait_on_permit(self, pod: PodInfo) -> Status | None:
        """Wait until a pod held at Permit is allowed (None) or rejected or timed out (a status)."""
        waiting = self.handle.waiting_pods.get(pod.uid)
        if waiting is None:
            return None
        try:
            async with asyncio.timeout(waiting.timeout):
                return await waiting.future
        except TimeoutError:
            return Status(Code.UNSCHEDULABLE, f"rejected due to timeout after waiting {waiting.timeout}s at permit",
                          plugin=sorted(waiting.pending)[0])
        finally:
            self.handle.waiting_pods.pop(pod.uid, None)

    async def run_pre_bind(self, state: CycleState, pod: PodInfo, node_name: str) -> Status | None:
        for plugin in self.pre_bind:
            status = await plugin.pre_bind(state, pod, node_name)
            if status is not None:
                status.plugin = plugin.name
                return status
        return None

    async def run_bind(self, state: CycleState, pod: PodInfo, node_name: str) -> Status | None:
        for plugin in self.bind:
            status = await plugin.bind(state, pod, node_name)
            if status is not None and status.code == Code.SKIP:
                continue
            if status is not None:
                status.plugin = plugin.name
            return status
        return Status(Code.ERROR, "no bind plugin bound the pod")

    def run_post_bind(self, state: CycleState, pod: PodInfo, node_name: str) -> None:
        for plugin in self.post_bind:
            plugin.post_bind(state, pod, node_name)


def default_normalize_score(max_priority: int, reverse: bool, scores: list[int]) -> None:
    """helper.DefaultNormalizeScore: scale to [0, max_priority] by the highest score, optionally reversed."""
    highest = max(scores, default=0)
    if highest == 0:
        if reverse:
            scores[:] = [max_priority] * len(scores)
        return
    if reverse:
        scores[:] = [max_priority - max_priority * s // highest for s in scores]
    else:
        scores[:] = [max_priority * s // highest for s in scores]
