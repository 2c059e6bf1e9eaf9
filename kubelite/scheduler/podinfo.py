"""PodInfo: a pod with what scheduling needs pre-computed once (requests, ports, affinity terms, priority)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from kubelite.api.selectors import LabelSelector
from kubelite.scheduler.helpers import label_selector
from kubelite.scheduler.resources import CPU, MEMORY, NON_ZERO_DEFAULTS, Resource, pod_requests

Obj = dict[str, Any]
NamespaceLabels = Callable[[str], Mapping[str, str] | None]
"""The labels of a namespace by name (None when unknown)."""
DEFAULT_BIND_ALL_HOST_IP = "0.0.0.0"


class AffinityTerm:
    """A (weighted) pod affinity term: namespaces, a namespace selector, a pod selector and a topology key."""

    __slots__ = ("namespaces", "namespace_selector", "selector", "topology_key", "weight")

    def __init__(self, term: Obj, pod_namespace: str, pod_labels: Mapping[str, str], weight: int = 0):
        self.topology_key: str = term.get("topologyKey") or ""
        self.selector = label_selector(term.get("labelSelector"), pod_labels, term.get("matchLabelKeys") or (),
                                       term.get("mismatchLabelKeys") or ())
        namespaces = frozenset(term.get("namespaces") or ())
        ns_selector = term.get("namespaceSelector")
        if not namespaces and ns_selector is None:
            namespaces = frozenset((pod_namespace,))
        self.namespaces = namespaces
        self.namespace_selector: LabelSelector | None = (
            label_selector(ns_selector) if ns_selector is not None else None)
        self.weight = weight

    def matches(self, pod: PodInfo, namespace_labels: NamespaceLabels) -> bool:
        """AffinityTerm.Matches: the pod is in one of the namespaces (or a selected one) and has matching labels."""
        if pod.namespace not in self.namespaces:
            if self.namespace_selector is None:
                return False
            if not self.namespace_selector.matches(namespace_labels(pod.namespace) or {}):
                return False
        return self.selector.matches(pod.labels)


def _terms(affinity: Obj, kind: str, namespace: str, labels: Mapping[str, str]) -> tuple[list[AffinityTerm],
                                                                                          list[AffinityTerm]]:
    """The required and the preferred (weighted) terms of podAffinity or podAntiAffinity."""
    section = affinity.get(kind) or {}
    required = [AffinityTerm(t, namespace, labels)
                for t in section.get("requiredDuringSchedulingIgnoredDuringExecution") or []]
    preferred = [AffinityTerm(w.get("podAffinityTerm") or {}, namespace, labels, int(w.get("weight") or 0))
                 for w in section.get("preferredDuringSchedulingIgnoredDuringExecution") or []]
    return required, preferred


def host_ports(spec: Obj) -> list[tuple[str, str, int]]:
    """(hostIP, protocol, hostPort) of every container port that asks for a host port."""
    ports = []
    containers = [*(spec.get("containers") or []),
                  *(c for c in spec.get("initContainers") or [] if c.get("restartPolicy") == "Always")]
    for container in containers:
        for port in container.get("ports") or []:
            host_port = int(port.get("hostPort") or 0)
            if host_port > 0:
                ports.append((port.get("hostIP") or DEFAULT_BIND_ALL_HOST_IP, port.get("protocol") or "TCP",
                              host_port))
    return ports


class PodInfo:
    """A pod plus its derived scheduling data; treat as read-only (the cache shares it between views)."""

    __slots__ = ("pod", "uid", "namespace", "name", "key", "labels", "priority", "node_name", "deleting",
                 "requests", "non_zero_cpu", "non_zero_memory", "host_ports", "tolerations",
                 "required_affinity", "required_anti_affinity", "preferred_affinity", "preferred_anti_affinity",
                 "scheduler_name", "nominated_node_name", "start_time")

    def __init__(self, pod: Obj):
        meta = pod["metadata"]
        spec = pod.get("spec") or {}
        self.pod = pod
        self.namespace: str = meta.get("namespace") or ""
        self.name: str = meta["name"]
        self.key = f"{self.namespace}/{self.name}"
        self.uid: str = meta.get("uid") or self.key
        self.labels: dict[str, str] = meta.get("labels") or {}
        self.priority: int = int(spec.get("priority") or 0)
        self.node_name: str = spec.get("nodeName") or ""
        self.scheduler_name: str = spec.get("schedulerName") or ""
        self.deleting = bool(meta.get("deletionTimestamp"))
        status = pod.get("status") or {}
        self.nominated_node_name: str = status.get("nominatedNodeName") or ""
        self.start_time: str = status.get("startTime") or ""
        self.requests = Resource.from_amounts(pod_requests(spec))
        non_zero = pod_requests(spec, NON_ZERO_DEFAULTS)
        self.non_zero_cpu = non_zero.get(CPU, 0)
        self.non_zero_memory = non_zero.get(MEMORY, 0)
        self.host_ports = host_ports(spec)
        self.tolerations: list[Obj] = spec.get("tolerations") or []
        affinity = spec.get("affinity") or {}
        if affinity.get("podAffinity") or affinity.get("podAntiAffinity"):
            self.required_affinity, self.preferred_affinity = _terms(affinity, "podAffinity", self.namespace,
                                                                     self.labels)
            self.required_anti_affinity, self.preferred_anti_affinity = _terms(
                affinity, "podAntiAffinity", self.namespace, self.labels)
        else:
            self.required_affinity = self.preferred_affinity = []
            self.required_anti_affinity = self.preferred_anti_affinity = []

    @property
    def has_affinity(self) -> bool:
        """True when the pod has any pod affinity or anti-affinity term (NodeInfo.PodsWithAffinity)."""
        return bool(self.required_affinity or self.preferred_affinity or self.required_anti_affinity
                    or self.preferred_anti_affinity)

    def with_pod(self, pod: Obj) -> PodInfo:
        """A copy for a newer version of the same pod whose spec is unchanged (e.g. once bound)."""
        clone = object.__new__(PodInfo)
        for slot in PodInfo.__slots__:
            setattr(clone, slot, getattr(self, slot))
        clone.pod = pod
        meta = pod["metadata"]
        clone.labels = meta.get("labels") or {}
        clone.node_name = (pod.get("spec") or {}).get("nodeName") or ""
        clone.deleting = bool(meta.get("deletionTimestamp"))
        status = pod.get("status") or {}
        clone.nominated_node_name = status.get("nominatedNodeName") or ""
        clone.start_time = status.get("startTime") or ""
        return clone

    def on_node(self, node_name: str) -> PodInfo:
        """A copy assumed onto a node (the pod object gets spec.nodeName as the binding will set it)."""
        pod = {**self.pod, "spec": {**(self.pod.get("spec") or {}), "nodeName": node_name}}
        return self.with_pod(pod)

    def __repr__(self) -> str:
        return f"PodInfo({self.key})"


class QueuedPodInfo:
    """A pod in the scheduling queue: when it was queued, attempts so far and what rejected it last."""

    __slots__ = ("pod_info", "timestamp", "initial_attempt_timestamp", "attempts", "unschedulable_plugins",
                 "gated", "backoff_expiry")

    def __init__(self, pod_info: PodInfo, timestamp: float):
        self.pod_info = pod_info
        self.timestamp = timestamp
        self.initial_attempt_timestamp: float | None = None
        self.attempts = 0
        self.unschedulable_plugins: set[str] = set()
        self.gated = False
        self.backoff_expiry = 0.0

    @property
    def key(self) -> str:
        return self.pod_info.key

    def __repr__(self) -> str:
        return f"QueuedPodInfo({self.pod_info.key}, attempts={self.attempts})"
