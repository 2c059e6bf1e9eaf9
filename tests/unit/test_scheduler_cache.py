"""The node cache: NodeInfo accounting, assumed pods (assume, confirm, forget, expire), node order and images."""

from __future__ import annotations

from kubelite.scheduler.cache import Cache
from kubelite.scheduler.nodeinfo import NodeInfo
from kubelite.scheduler.podinfo import PodInfo
from kubelite.scheduler.resources import DEFAULT_MEMORY_REQUEST, DEFAULT_MILLI_CPU_REQUEST, Resource, pod_requests
from kubelite.scheduler.testing import make_node, make_pod


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_node_info_sums_requests_ports_and_non_zero_defaults() -> None:
    node = NodeInfo(make_node("n", cpu="2", memory="4Gi", pods=10))
    assert node.allocatable == Resource(2000, 4 * 2**30, 0, 10)
    web = PodInfo(make_pod("web", "500m", "1Gi", node="n",
                           containers=[{"name": "c", "ports": [{"containerPort": 80, "hostPort": 8080}],
                                        "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}}]))
    idle = PodInfo(make_pod("idle", node="n"))
    node.add_pod(web)
    node.add_pod(idle)
    assert node.requested.milli_cpu == 500 and node.requested.memory == 2**30
    assert node.non_zero_cpu == 500 + DEFAULT_MILLI_CPU_REQUEST
    assert node.non_zero_memory == 2**30 + DEFAULT_MEMORY_REQUEST
    assert node.port_conflict("0.0.0.0", "TCP", 8080) and node.port_conflict("10.0.0.1", "TCP", 8080)
    assert not node.port_conflict("0.0.0.0", "UDP", 8080)
    assert node.remove_pod(web) and not node.remove_pod(web)
    assert node.requested.milli_cpu == 0 and not node.used_ports


def test_pod_requests_take_the_init_container_maximum_sidecars_and_overhead() -> None:
    spec = {
        "initContainers": [{"name": "i1", "resources": {"requests": {"cpu": "2", "memory": "1G"}}},
                           {"name": "i2", "resources": {"requests": {"cpu": "2", "memory": "3G"}}}],
        "containers": [{"name": "c1", "resources": {"requests": {"cpu": "2", "memory": "1G"}}},
                       {"name": "c2", "resources": {"requests": {"cpu": "1", "memory": "1G"}}}],
        "overhead": {"cpu": "250m"},
    }
    assert pod_requests(spec) == {"cpu": 3250, "memory": 3 * 10**9}
    sidecar = {"initContainers": [{"name": "s", "restartPolicy": "Always",
                                   "resources": {"requests": {"cpu": "500m"}}},
                                  {"name": "i", "resources": {"requests": {"cpu": "3"}}}],
               "containers": [{"name": "c", "resources": {"limits": {"cpu": "1", "nvidia.com/gpu": "1"}}}]}
    assert pod_requests(sidecar) == {"cpu": 3500, "nvidia.com/gpu": 1}, "limits stand in for missing requests"
    assert Resource.from_list({"cpu": "1.5", "memory": "1e3", "ephemeral-storage": "1Ki", "pods": "3",
                               "example.com/dongle": "2"}) == Resource(1500, 1000, 1024, 3,
                                                                        {"example.com/dongle": 2})


def test_assumed_pod_counts_until_the_binding_is_confirmed() -> None:
    cache = Cache()
    cache.add_node(make_node("n1"))
    pod = PodInfo(make_pod("p", "1", uid="u1"))
    cache.assume_pod(pod.on_node("n1"))
    assert cache.is_assumed("u1")
    assert cache.nodes["n1"].requested.milli_cpu == 1000
    bound = make_pod("p", "1", uid="u1", node="n1")
    cache.add_pod(bound)
    assert not cache.is_assumed("u1")
    assert cache.nodes["n1"].requested.milli_cpu == 1000, "confirming does not count the pod twice"
    assert cache.get_pod("u1").pod is bound
    cache.remove_pod(bound)
    assert cache.nodes["n1"].requested.milli_cpu == 0 and not cache.nodes["n1"].pods


def test_forget_undoes_an_assumption_and_expiry_drops_unconfirmed_ones() -> None:
    clock = Clock()
    cache = Cache(clock=clock, assumed_ttl=30)
    cache.add_node(make_node("n1"))
    first = PodInfo(make_pod("a", "1", uid="ua")).on_node("n1")
    second = PodInfo(make_pod("b", "1", uid="ub")).on_node("n1")
    cache.assume_pod(first)
    cache.assume_pod(second)
    cache.forget_pod(first)
    assert cache.nodes["n1"].requested.milli_cpu == 1000
    cache.finish_binding(second)
    clock.now = 29
    assert cache.cleanup_expired() == []
    clock.now = 31
    assert [p.name for p in cache.cleanup_expired()] == ["b"]
    assert cache.nodes["n1"].requested.milli_cpu == 0


def test_deleted_node_keeps_its_pods_until_they_go() -> None:
    cache = Cache()
    node = make_node("n1")
    cache.add_node(node)
    pod = make_pod("p", "1", node="n1")
    cache.add_pod(pod)
    cache.remove_node(node)
    assert cache.get("n1") is None and cache.num_nodes() == 0
    assert "n1" in cache.nodes
    cache.remove_pod(pod)
    assert "n1" not in cache.nodes


def test_pod_seen_before_its_node_is_accounted_when_the_node_arrives() -> None:
    cache = Cache()
    cache.add_pod(make_pod("p", "1", node="late"))
    assert cache.num_nodes() == 0
    cache.add_node(make_node("late"))
    assert cache.get("late").requested.milli_cpu == 1000 and cache.num_nodes() == 1


def test_node_list_interleaves_zones() -> None:
    cache = Cache()
    for name, zone in (("a1", "a"), ("a2", "a"), ("a3", "a"), ("b1", "b"), ("c1", "c"), ("c2", "c")):
        cache.add_node(make_node(name, labels={"topology.kubernetes.io/zone": zone}))
    assert [n.name for n in cache.node_list()] == ["a1", "b1", "c1", "a2", "c2", "a3"]


def test_image_states_count_nodes_per_image() -> None:
    cache = Cache()
    cache.add_node(make_node("n1", images=[(["registry/app:v1", "registry/app@sha256:1"], 100)]))
    cache.add_node(make_node("n2", images=[(["registry/app:v1"], 100)]))
    assert cache.image_num_nodes("registry/app:v1") == 2
    cache.add_node(make_node("n2"))
    assert cache.image_num_nodes("registry/app:v1") == 1
    cache.remove_node(make_node("n1"))
    assert cache.image_num_nodes("registry/app:v1") == 0
