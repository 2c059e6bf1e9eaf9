"""Each plugin's Filter and Score on small hand-made NodeInfos."""

from __future__ import annotations

from typing import Any

import pytest

from kubelite.client.store import Store
from kubelite.scheduler.cache import Cache
from kubelite.scheduler.framework import (
    SKIP,
    Code,
    CycleState,
    Handle,
    Listers,
    Plugin,
    ScorePlugin,
    Status,
)
from kubelite.scheduler.nodeinfo import NodeInfo
from kubelite.scheduler.plugins import REGISTRY
from kubelite.scheduler.podinfo import PodInfo, QueuedPodInfo
from kubelite.scheduler.testing import make_node, make_pod

Obj = dict[str, Any]
ZONE = "topology.kubernetes.io/zone"


def plugin(name: str, args: Obj | None = None, cache: Cache | None = None,
           listers: Listers | None = None) -> Any:
    return REGISTRY[name](args or {}, Handle(snapshot=cache or Cache(), listers=listers or Listers()))


def cluster(*nodes: Obj, pods: tuple[Obj, ...] = ()) -> Cache:
    cache = Cache()
    for node in nodes:
        cache.add_node(node)
    for pod in pods:
        cache.add_pod(pod)
    return cache


def run_filter(p: Any, pod: Obj, cache: Cache) -> dict[str, Status | None]:
    """PreFilter (honouring Skip and node-name results) then Filter on every node: node name -> status."""
    state = CycleState()
    info = PodInfo(pod)
    names: set[str] | None = None
    if hasattr(p, "pre_filter"):
        names, status = p.pre_filter(state, info, cache.node_list())
        if status is SKIP:
            return {n.name: None for n in cache.node_list()}
        if status is not None:
            return {n.name: status for n in cache.node_list()}
    return {n.name: p.filter(state, info, n) for n in cache.node_list() if names is None or n.name in names}


def run_score(p: ScorePlugin, pod: Obj, cache: Cache) -> dict[str, int]:
    state = CycleState()
    info = PodInfo(pod)
    nodes = cache.node_list()
    if hasattr(p, "pre_filter"):
        p.pre_filter(state, info, nodes)
    if hasattr(p, "pre_score") and p.pre_score(state, info, nodes) is SKIP:
        return {}
    scores = p.score_nodes(state, info, nodes)
    assert scores == [p.score(state, info, n) for n in nodes], "batch and per-node scores agree"
    if p.normalizes:
        p.normalize_score(state, info, scores, nodes)
    return {n.name: s for n, s in zip(nodes, scores, strict=True)}


def reasons(statuses: dict[str, Status | None]) -> dict[str, tuple[str, ...]]:
    return {name: status.reasons for name, status in statuses.items() if status is not None}


def test_registry_names_match_classes() -> None:
    assert all(issubclass(cls, Plugin) and cls.name == name for name, cls in REGISTRY.items())


def test_priority_sort_orders_by_priority_then_timestamp() -> None:
    sort = plugin("PrioritySort")
    high = QueuedPodInfo(PodInfo(make_pod("h", priority=10)), 5)
    low_early = QueuedPodInfo(PodInfo(make_pod("l1")), 1)
    low_late = QueuedPodInfo(PodInfo(make_pod("l2")), 2)
    assert sort.less(high, low_early) and not sort.less(low_early, high)
    assert sort.less(low_early, low_late) and not sort.less(low_late, low_early)


def test_scheduling_gates_hold_gated_pods() -> None:
    gates = plugin("SchedulingGates")
    status = gates.pre_enqueue(PodInfo(make_pod("p", schedulingGates=[{"name": "a"}, {"name": "b"}])))
    assert status.code == Code.UNSCHEDULABLE_AND_UNRESOLVABLE
    assert status.message == "waiting for scheduling gates: [a b]"
    assert gates.pre_enqueue(PodInfo(make_pod("q"))) is None


def test_node_unschedulable_unless_tolerated() -> None:
    cache = cluster(make_node("cordoned", unschedulable=True), make_node("open"))
    p = plugin("NodeUnschedulable")
    assert reasons(run_filter(p, make_pod("p"), cache)) == {"cordoned": ("node(s) were unschedulable",)}
    tolerant = make_pod("t", tolerations=[{"key": "node.kubernetes.io/unschedulable", "operator": "Exists",
                                           "effect": "NoSchedule"}])
    assert reasons(run_filter(p, tolerant, cache)) == {}


def test_node_name() -> None:
    cache = cluster(make_node("a"), make_node("b"))
    p = plugin("NodeName")
    assert reasons(run_filter(p, make_pod("free"), cache)) == {}
    assert reasons(run_filter(p, make_pod("pinned", nodeName="b"), cache)) == {
        "a": ("node(s) didn't match the requested node name",)}


def test_taint_toleration_filter_and_prefer_no_schedule_score() -> None:
    cache = cluster(
        make_node("master", taints=[{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]),
        make_node("gpu", taints=[{"key": "gpu", "value": "true", "effect": "NoExecute"}]),
        make_node("soft", taints=[{"key": "spot", "value": "yes", "effect": "PreferNoSchedule"}]),
        make_node("plain"))
    p = plugin("TaintToleration")
    assert reasons(run_filter(p, make_pod("p"), cache)) == {
        "master": ("node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }",),
        "gpu": ("node(s) had untolerated taint {gpu: true}",)}
    tolerant = make_pod("t", tolerations=[{"key": "gpu", "operator": "Equal", "value": "true"},
                                          {"operator": "Exists", "effect": "NoSchedule"}])
    assert reasons(run_filter(p, tolerant, cache)) == {}
    assert run_score(p, make_pod("p"), cache) == {"master": 100, "gpu": 100, "soft": 0, "plain": 100}
    spot_ok = make_pod("s", tolerations=[{"key": "spot", "operator": "Exists"}])
    assert set(run_score(p, spot_ok, cache).values()) == {100}


def test_node_affinity_selector_and_required_terms() -> None:
    cache = cluster(make_node("a", labels={"disk": "ssd", "cores": "8", ZONE: "z1"}),
                    make_node("b", labels={"disk": "hdd", "cores": "2", ZONE: "z2"}),
                    make_node("c", labels={"cores": "16"}))
    p = plugin("NodeAffinity")
    assert run_filter(p, make_pod("any"), cache) == {"a": None, "b": None, "c": None}

    def fits(**spec: Any) -> list[str]:
        return [name for name, status in run_filter(p, make_pod("p", **spec), cache).items() if status is None]

    def required(*expressions: Obj, fields: tuple[Obj, ...] = ()) -> Obj:
        term: Obj = {"matchExpressions": list(expressions)}
        if fields:
            term["matchFields"] = list(fields)
        return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}}}

    assert fits(nodeSelector={"disk": "ssd"}) == ["a"]
    assert fits(affinity=required({"key": "disk", "operator": "In", "values": ["ssd", "hdd"]})) == ["a", "b"]
    assert fits(affinity=required({"key": "disk", "operator": "NotIn", "values": ["ssd"]})) == ["b", "c"]
    assert fits(affinity=required({"key": "disk", "operator": "Exists"})) == ["a", "b"]
    assert fits(affinity=required({"key": "disk", "operator": "DoesNotExist"})) == ["c"]
    assert fits(affinity=required({"key": "cores", "operator": "Gt", "values": ["4"]})) == ["a", "c"]
    assert fits(affinity=required({"key": "cores", "operator": "Lt", "values": ["4"]})) == ["b"]
    assert fits(affinity=required(fields=({"key": "metadata.name", "operator": "In", "values": ["b"]},))) == ["b"]
    denied = run_filter(p, make_pod("p", nodeSelector={"disk": "nvme"}), cache)
    assert set(reasons(denied).values()) == {("node(s) didn't match Pod's node affinity/selector",)}
    assert denied["a"].code == Code.UNSCHEDULABLE_AND_UNRESOLVABLE
    preferred = {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 3, "preference": {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}},
        {"weight": 1, "preference": {"matchExpressions": [{"key": ZONE, "operator": "Exists"}]}}]}}
    assert run_score(p, make_pod("p", affinity=preferred), cache) == {"a": 100, "b": 25, "c": 0}
    assert run_score(p, make_pod("p"), cache) == {}, "no preferred terms: Score is skipped"


def test_node_ports() -> None:
    def with_port(name: str, port: int, node: str = "", ip: str = "", protocol: str = "TCP") -> Obj:
        mapping: Obj = {"containerPort": port, "hostPort": port, "protocol": protocol}
        if ip:
            mapping["hostIP"] = ip
        return make_pod(name, node=node, containers=[{"name": "c", "ports": [mapping]}])
    cache = cluster(make_node("a"), make_node("b"), pods=(with_port("web", 80, "a", "10.0.0.1"),))
    p = plugin("NodePorts")
    assert reasons(run_filter(p, with_port("p", 80), cache)) == {
        "a": ("node(s) didn't have free ports for the requested pod ports",)}
    assert reasons(run_filter(p, with_port("p", 80, ip="10.0.0.2"), cache)) == {}
    assert reasons(run_filter(p, with_port("p", 80, protocol="UDP"), cache)) == {}
    assert run_filter(p, make_pod("no-ports"), cache) == {"a": None, "b": None}


def test_node_resources_fit_filter() -> None:
    cache = cluster(make_node("small", cpu="1", memory="1Gi", pods=2, extra={"example.com/gpu": "1"}),
                    make_node("big", cpu="8", memory="16Gi", pods=2),
                    pods=(make_pod("used", "500m", "512Mi", node="small"),))
    p = plugin("NodeResourcesFit")
    result = run_filter(p, make_pod("p", "600m", "256Mi"), cache)
    assert reasons(result) == {"small": ("Insufficient cpu",)}
    assert result["small"].code == Code.UNSCHEDULABLE, "evicting the 500m pod would make room"
    huge = run_filter(p, make_pod("p", "2", "2Gi"), cache)
    assert reasons(huge) == {"small": ("Insufficient cpu", "Insufficient memory")}
    assert huge["small"].code == Code.UNSCHEDULABLE_AND_UNRESOLVABLE, "more than the node's allocatable"
    gpu = make_pod("g", containers=[{"name": "c", "resources": {"limits": {"example.com/gpu": "2"}}}])
    assert reasons(run_filter(p, gpu, cache)) == {"small": ("Insufficient example.com/gpu",),
                                                  "big": ("Insufficient example.com/gpu",)}
    ignoring = plugin("NodeResourcesFit", {"ignoredResourceGroups": ["example.com"]})
    assert reasons(run_filter(ignoring, gpu, cache)) == {}
    cache.add_pod(make_pod("second", node="small"))
    assert reasons(run_filter(p, make_pod("p"), cache)) == {"small": ("Too many pods",)}


def test_node_resources_fit_scoring_strategies() -> None:
    cache = cluster(make_node("n", cpu="4", memory="10000"))
    pod = make_pod("p", "3", "5000")
    assert run_score(plugin("NodeResourcesFit"), pod, cache) == {"n": (25 + 50) // 2}
    most = plugin("NodeResourcesFit", {"scoringStrategy": {"type": "MostAllocated"}})
    assert run_score(most, pod, cache) == {"n": (75 + 50) // 2}
    weighted = plugin("NodeResourcesFit", {"scoringStrategy": {"type": "LeastAllocated", "resources": [
        {"name": "cpu", "weight": 3}, {"name": "memory", "weight": 1}]}})
    assert run_score(weighted, pod, cache) == {"n": (25 * 3 + 50) // 4}
    defaults = run_score(plugin("NodeResourcesFit"), make_pod("e"), cache)
    assert defaults == {"n": (97 + 0) // 2}, "scored as 100m cpu and 200Mi memory, which exceeds the node"
    with pytest.raises(ValueError):
        plugin("NodeResourcesFit", {"scoringStrategy": {"type": "Unknown"}})


def test_balanced_allocation() -> None:
    cache = cluster(make_node("even", cpu="4", memory="8000"), make_node("skewed", cpu="4", memory="40000"))
    p = plugin("NodeResourcesBalancedAllocation")
    scores = run_score(p, make_pod("p", "2", "4000"), cache)
    assert scores == {"even": 100, "skewed": int((1 - abs(0.5 - 0.1) / 2) * 100)}
    assert run_score(p, make_pod("best-effort"), cache) == {}, "best-effort pods skip balancing"


def test_image_locality() -> None:
    mb = 1024 * 1024
    cache = cluster(make_node("has", images=[(["docker.io/library/app:1"], 250 * mb)]), make_node("lacks"))
    p = plugin("ImageLocality", cache=cache)
    pod = make_pod("p", containers=[{"name": "c", "image": "docker.io/library/app:1"}])
    expected = 100 * (250 * mb // 2 - 23 * mb) // (1000 * mb - 23 * mb)
    assert run_score(p, pod, cache) == {"has": expected, "lacks": 0}
    untagged = make_pod("u", containers=[{"name": "c", "image": "docker.io/library/app"}])
    assert run_score(p, untagged, cache) == {}, "app means app:latest, which no node has"


def _spread_pods(count_by_node: dict[str, int], labels: dict[str, str]) -> tuple[Obj, ...]:
    return tuple(make_pod(f"{node}-{i}", node=node, labels=labels)
                 for node, count in count_by_node.items() for i in range(count))


def test_pod_topology_spread_hard_constraint() -> None:
    cache = cluster(make_node("a1", labels={ZONE: "a"}), make_node("a2", labels={ZONE: "a"}),
                    make_node("b1", labels={ZONE: "b"}), make_node("nolabel"),
                    pods=_spread_pods({"a1": 1, "a2": 1, "b1": 1}, {"app": "web"}))
    p = plugin("PodTopologySpread", cache=cache)
    constraint = {"maxSkew": 1, "topologyKey": ZONE, "whenUnsatisfiable": "DoNotSchedule",
                  "labelSelector": {"matchLabels": {"app": "web"}}}
    pod = make_pod("new", labels={"app": "web"}, topologySpreadConstraints=[constraint])
    assert reasons(run_filter(p, pod, cache)) == {
        "a1": ("node(s) didn't match pod topology spread constraints",),
        "a2": ("node(s) didn't match pod topology spread constraints",),
        "nolabel": ("node(s) didn't match pod topology spread constraints (missing required label)",)}
    lenient = make_pod("new", labels={"app": "web"}, topologySpreadConstraints=[{**constraint, "maxSkew": 2}])
    assert list(reasons(run_filter(p, lenient, cache))) == ["nolabel"]
    domains = make_pod("new", labels={"app": "web"}, topologySpreadConstraints=[{**constraint, "minDomains": 3}])
    assert set(reasons(run_filter(p, domains, cache))) == {"a1", "a2", "b1", "nolabel"}, "2 domains < 3: min is 0"
    other = make_pod("other", labels={"app": "api"}, topologySpreadConstraints=[constraint])
    assert list(reasons(run_filter(p, other, cache))) == ["nolabel"], "a pod its selector misses adds no skew"


def test_pod_topology_spread_soft_and_default_constraints() -> None:
    cache = cluster(make_node("a1", labels={ZONE: "a"}), make_node("a2", labels={ZONE: "a"}),
                    make_node("b1", labels={ZONE: "b"}),
                    pods=_spread_pods({"a1": 2, "a2": 1}, {"app": "web"}))
    soft = {"maxSkew": 1, "topologyKey": ZONE, "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": {"app": "web"}}}
    p = plugin("PodTopologySpread", cache=cache)
    scores = run_score(p, make_pod("new", labels={"app": "web"}, topologySpreadConstraints=[soft]), cache)
    assert scores["b1"] == 100 and scores["a1"] == scores["a2"] < 100
    assert run_score(p, make_pod("loner", labels={"app": "web"}), cache) == {}, "no Service: no default spreading"
    services = Store()
    services.put({"metadata": {"name": "web", "namespace": "default"}, "spec": {"selector": {"app": "web"}}})
    p = plugin("PodTopologySpread", cache=cache, listers=Listers({"services": services}))
    scores = run_score(p, make_pod("new", labels={"app": "web"}), cache)
    assert scores["b1"] == max(scores.values()) and scores["a1"] == min(scores.values())


def test_inter_pod_affinity_filters() -> None:
    cache = cluster(make_node("n1", labels={ZONE: "a"}), make_node("n2", labels={ZONE: "a"}),
                    make_node("n3", labels={ZONE: "b"}),
                    pods=(make_pod("db", node="n1", labels={"app": "db"}),))
    p = plugin("InterPodAffinity", cache=cache)
    term = {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": ZONE}
    near = make_pod("near", affinity={"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term]}})
    assert reasons(run_filter(p, near, cache)) == {"n3": ("node(s) didn't match pod affinity rules",)}
    far = make_pod("far", affinity={"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term]}})
    assert set(reasons(run_filter(p, far, cache))) == {"n1", "n2"}
    first = make_pod("first", labels={"app": "cache"}, affinity={"podAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": [{**term, "labelSelector": {
            "matchLabels": {"app": "cache"}}}]}})
    assert reasons(run_filter(p, first, cache)) == {}, "the first pod of a self-affine group goes anywhere"
    assert run_filter(p, make_pod("plain"), cache) == {"n1": None, "n2": None, "n3": None}
    cache.add_pod(make_pod("lonely", node="n3", labels={"app": "lonely"}, affinity={"podAntiAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": [{"labelSelector": {"matchLabels": {"team": "x"}},
                                                            "topologyKey": ZONE}]}}))
    assert reasons(run_filter(p, make_pod("x", labels={"team": "x"}), cache)) == {
        "n3": ("node(s) didn't satisfy existing pods anti-affinity rules",)}


def test_inter_pod_affinity_preferred_scoring() -> None:
    cache = cluster(make_node("n1", labels={ZONE: "a"}), make_node("n2", labels={ZONE: "b"}),
                    make_node("n3", labels={ZONE: "c"}),
                    pods=(make_pod("db", node="n1", labels={"app": "db"}),
                          make_pod("noisy", node="n2", labels={"app": "noisy"})))
    p = plugin("InterPodAffinity", cache=cache)
    affinity = {"podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 10, "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": ZONE}}]},
        "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 5, "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "noisy"}},
                                              "topologyKey": ZONE}}]}}
    assert run_score(p, make_pod("p", affinity=affinity), cache) == {"n1": 100, "n2": 0, "n3": 33}
    assert run_score(p, make_pod("plain"), cache) == {}


def test_node_info_clone_is_independent() -> None:
    node = NodeInfo(make_node("n"))
    pod = PodInfo(make_pod("p", "1", node="n"))
    node.add_pod(pod)
    clone = node.clone()
    clone.remove_pod(pod)
    assert node.requested.milli_cpu == 1000 and clone.requested.milli_cpu == 0
