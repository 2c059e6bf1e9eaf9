"""Builders of Node and Pod objects for scheduler tests and benchmarks (upstream's scheduler/testing wrappers)."""

from __future__ import annotations

import itertools
from typing import Any

Obj = dict[str, Any]
_uids = itertools.count(1)


def make_node(name: str, cpu: str = "4", memory: str = "8Gi", pods: int = 110, *,
              labels: dict[str, str] | None = None, taints: list[Obj] | None = None, unschedulable: bool = False,
              extra: dict[str, str] | None = None, images: list[tuple[list[str], int]] | None = None) -> Obj:
    """A Node with allocatable = capacity, a hostname label and optional taints, images and extended resources."""
    resources = {"cpu": cpu, "memory": memory, "pods": str(pods), **(extra or {})}
    spec: Obj = {}
    if taints:
        spec["taints"] = taints
    if unschedulable:
        spec["unschedulable"] = True
    status: Obj = {"capacity": resources, "allocatable": resources}
    if images:
        status["images"] = [{"names": names, "sizeBytes": size} for names, size in images]
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "uid": f"node-{name}", "resourceVersion": "1",
                         "labels": {"kubernetes.io/hostname": name, **(labels or {})}},
            "spec": spec, "status": status}


def make_pod(name: str, cpu: str | None = None, memory: str | None = None, *, namespace: str = "default",
             node: str = "", labels: dict[str, str] | None = None, priority: int | None = None,
             scheduler: str = "default-scheduler", uid: str | None = None, **spec: Any) -> Obj:
    """A Pod with one container requesting cpu/memory; extra keyword arguments go into the spec."""
    requests = {k: v for k, v in (("cpu", cpu), ("memory", memory)) if v is not None}
    pod_spec: Obj = {"schedulerName": scheduler,
                     "containers": [{"name": "c", "image": "busybox", "resources": {"requests": requests}}],
                     **spec}
    if node:
        pod_spec["nodeName"] = node
    if priority is not None:
        pod_spec["priority"] = priority
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "uid": uid or f"uid-{next(_uids)}",
                         "resourceVersion": "1", "labels": labels or {}},
            "spec": pod_spec, "status": {"phase": "Pending"}}
