"""ResourceQuota controller: status.hard from spec.hard, status.used counted over the namespace's objects."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import Any, ClassVar

from kubelite.api.kinds.builtin import BUILTIN
from kubelite.api.quantity import format_quantity, parse_quantity
from kubelite.client.controller import Controller, Requeue
from kubelite.client.resources import (
    CONFIGMAPS,
    PERSISTENTVOLUMECLAIMS,
    PODS,
    REPLICATIONCONTROLLERS,
    RESOURCEQUOTAS,
    SECRETS,
    SERVICES,
    Resource,
)
from kubelite.client.store import NAMESPACE_INDEX, key_of

Obj = dict[str, Any]
COUNTED = {"pods": PODS, "services": SERVICES, "configmaps": CONFIGMAPS, "secrets": SECRETS,
           "replicationcontrollers": REPLICATIONCONTROLLERS, "resourcequotas": RESOURCEQUOTAS,
           "persistentvolumeclaims": PERSISTENTVOLUMECLAIMS}
"""The core resources counted from informers, by their quota name (also as count/NAME)."""
COMPUTE = ("cpu", "memory", "ephemeral-storage")
"""Bare quota names that mean requests.NAME."""
STORAGE_CLASS = ".storageclass.storage.k8s.io/"
class Amount:
    """A running sum of quantities that remembers whether they were written in binary suffixes (Mi, Gi)."""

    def __init__(self) -> None:
        """Zero, in decimal form."""
        self.value = Fraction(0)
        self.binary = False

    def add(self, quantity: Any) -> None:
        """Add a quantity string or number (ignored when it does not parse)."""
        parsed = parse_quantity(quantity)
        if parsed is not None:
            self.binary = self.binary or str(quantity).endswith("i")
            self.value += parsed

    def __str__(self) -> str:
        """The sum in canonical form."""
        return format_quantity(self.value, self.binary)


def _quantity(container: Obj, kind: str, name: str) -> Any:
    """A container's requests or limits of `name`, as written (None if absent)."""
    return ((container.get("resources") or {}).get(kind) or {}).get(name)


def _value(quantity: Any) -> Fraction:
    """A quantity's value (0 when absent or unparsable)."""
    return parse_quantity(quantity) or Fraction(0)


def pod_quantities(pod: Obj, kind: str, name: str) -> list[Any]:
    """What a pod's requests (or limits) of `name` add up from: its containers, or its largest init container if
    that is more, and its overhead."""
    spec = pod.get("spec") or {}
    quantities = [q for c in spec.get("containers") or [] if (q := _quantity(c, kind, name)) is not None]
    largest = max((q for c in spec.get("initContainers") or [] if (q := _quantity(c, kind, name)) is not None),
                  key=_value, default=None)
    if largest is not None and _value(largest) > sum(map(_value, quantities), Fraction(0)):
        quantities = [largest]
    overhead = (spec.get("overhead") or {}).get(name)
    return quantities if overhead is None else [*quantities, overhead]


def counts_for_quota(pod: Obj) -> bool:
    """Upstream's QuotaV1Pod: not terminal, and not past its deletion grace period."""
    if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
        return False
    meta = pod["metadata"]
    if meta.get("deletionTimestamp"):
        deadline = datetime.fromisoformat(meta["deletionTimestamp"]) + timedelta(
            seconds=meta.get("deletionGracePeriodSeconds") or 0)
        return datetime.now(UTC) <= deadline
    return True


def best_effort(pod: Obj) -> bool:
    """QoS class BestEffort: no container requests or limits cpu or memory."""
    spec = pod.get("spec") or {}
    return not any(name in ((c.get("resources") or {}).get(kind) or {})
                   for c in [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]
                   for kind in ("requests", "limits") for name in ("cpu", "memory"))


def in_scope(pod: Obj, scope: str, operator: str = "Exists", values: list[str] | None = None) -> bool:
    """Whether a pod falls in a quota scope (spec.scopes, or a scopeSelector expression)."""
    spec = pod.get("spec") or {}
    if scope == "PriorityClass":
        priority = spec.get("priorityClassName") or ""
        return {"In": priority in (values or []), "NotIn": priority not in (values or []),
                "Exists": bool(priority), "DoesNotExist": not priority}.get(operator, False)
    terminating, effort = spec.get("activeDeadlineSeconds") is not None, best_effort(pod)
    matched = {"Terminating": terminating, "NotTerminating": not terminating, "BestEffort": effort,
               "NotBestEffort": not effort}.get(scope, False)
    return matched if operator != "DoesNotExist" else not matched


def _builtin(name: str) -> Resource | None:
    """The namespaced built-in resource of a count/PLURAL.GROUP quota name."""
    plural, _, group = name.partition(".")
    for rt in BUILTIN:
        if rt.plural == plural and rt.group == group and rt.namespaced:
            return Resource(rt.group, rt.version, rt.plural, rt.namespaced, rt.kind)
    return None


class ResourceQuotaController(Controller):
    """Keys are ResourceQuota keys; a change to any counted object queues every quota of its namespace."""

    name = "resourcequota"
    resync_period: ClassVar[float] = 300.0
    """How often quotas counting other resources (count/deployments.apps) are recounted (upstream's 5 min)."""

    def setup(self) -> None:
        """Quotas, and informers of the core resources they count."""
        self.quotas = self.watch(RESOURCEQUOTAS, keys=self._quotas_of)
        self.counted = {name: self.quotas if res is RESOURCEQUOTAS else self.watch(res, keys=self._quotas_of)
                        for name, res in COUNTED.items()}

    def _quotas_of(self, obj: Obj) -> list[str]:
        """Keys of every quota in obj's namespace: what a change to obj requeues."""
        return [key_of(q) for q in self.quotas.store.by_index(NAMESPACE_INDEX, obj["metadata"].get("namespace", ""))]

    async def reconcile(self, key: str) -> Requeue | None:
        """Recount usage of every hard limit and write status if it changed."""
        quota = self.quotas.store.get(key)
        if quota is None:
            return None
        namespace = quota["metadata"]["namespace"]
        spec = quota.get("spec") or {}
        hard = spec.get("hard") or {}
        scopes = [(s, "Exists", []) for s in spec.get("scopes") or []] + [
            (e.get("scopeName", ""), e.get("operator", ""), e.get("values") or [])
            for e in (spec.get("scopeSelector") or {}).get("matchExpressions") or []]
        pods = [p for p in self._objects("pods", namespace)
                if counts_for_quota(p) and all(in_scope(p, *scope) for scope in scopes)]
        used: dict[str, str] = {}
        listed = False
        for name in hard:
            value = self._pod_usage(name, pods)
            if value is None and not scopes:
                value = self._usage(name, namespace)
                if value is None and name.startswith("count/") and (res := _builtin(name[6:])) is not None:
                    value = await self._count(res, namespace)
                    listed = True
            if value is not None:
                used[name] = value
        status = {"hard": hard, "used": used}
        if quota.get("status") != status:
            await self.client.update_status(RESOURCEQUOTAS, {**quota, "status": status})
        return Requeue(after=self.resync_period) if listed else None

    def _objects(self, name: str, namespace: str) -> list[Obj]:
        """The cached objects of a counted resource in a namespace."""
        return self.counted[name].store.by_index(NAMESPACE_INDEX, namespace)

    @staticmethod
    def _pod_usage(name: str, pods: list[Obj]) -> str | None:
        """pods, count/pods, requests.*, limits.* and the bare compute names, over the pods that count."""
        if name in ("pods", "count/pods"):
            return str(len(pods))
        if name in COMPUTE:
            kind, resource = "requests", name
        elif name.startswith(("requests.", "limits.")) and name != "requests.storage":
            kind, _, resource = name.partition(".")
        else:
            return None
        amount = Amount()
        for pod in pods:
            for quantity in pod_quantities(pod, kind, resource):
                amount.add(quantity)
        return str(amount)

    def _usage(self, name: str, namespace: str) -> str | None:
        """Counts of core objects, service ports and persistent volume claim storage."""
        counted = name.removeprefix("count/")
        if counted in self.counted:
            return str(len(self._objects(counted, namespace)))
        if name in ("services.nodeports", "services.loadbalancers"):
            total = 0
            for service in self._objects("services", namespace):
                spec = service.get("spec") or {}
                ports = spec.get("ports") or []
                if name == "services.loadbalancers":
                    total += spec.get("type") == "LoadBalancer"
                elif spec.get("type") == "NodePort":
                    total += len(ports)
                elif spec.get("type") == "LoadBalancer":
                    total += len(ports) if spec.get("allocateLoadBalancerNodePorts", True) else sum(
                        1 for p in ports if p.get("nodePort"))
            return str(total)
        claims = self._objects("persistentvolumeclaims", namespace)
        storage_class, per_class, what = name.partition(STORAGE_CLASS)
        if per_class:
            claims = [c for c in claims if (c.get("spec") or {}).get("storageClassName") == storage_class]
            if what == "persistentvolumeclaims":
                return str(len(claims))
        if (what if per_class else name) == "requests.storage":
            amount = Amount()
            for claim in claims:
                amount.add((((claim.get("spec") or {}).get("resources") or {}).get("requests") or {}).get("storage"))
            return str(amount)
        return None

    async def _count(self, res: Resource, namespace: str) -> str:
        """The number of objects of a resource in the namespace, from one short page and its remainingItemCount."""
        page = await self.client.list(res, namespace, limit=1)
        return str(len(page.get("items") or []) + int((page.get("metadata") or {}).get("remainingItemCount") or 0))

