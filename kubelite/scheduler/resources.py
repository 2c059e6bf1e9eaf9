"""Resource amounts as integers (millicores, bytes, counts) and a pod's requests as the scheduler counts them."""

from __future__ import annotations

import math
from typing import Any

from kubelite.api.quantity import parse_quantity

CPU, MEMORY, EPHEMERAL_STORAGE, PODS = "cpu", "memory", "ephemeral-storage", "pods"
DEFAULT_MILLI_CPU_REQUEST = 100
"""What a container without a cpu request counts as when scoring (upstream's 0.1 core)."""
DEFAULT_MEMORY_REQUEST = 200 * 1024 * 1024
"""What a container without a memory request counts as when scoring (upstream's 200 MiB)."""
_NOT_SCALAR = frozenset((CPU, MEMORY, EPHEMERAL_STORAGE, PODS, "storage"))
_PARSED: dict[tuple[str, str], int] = {}

Obj = dict[str, Any]


def amount(name: str, value: Any) -> int:
    """A quantity as the integer the scheduler compares: millicores for cpu, else the value rounded up."""
    key = (name, str(value))
    parsed = _PARSED.get(key)
    if parsed is None:
        quantity = parse_quantity(value) or 0
        parsed = math.ceil(quantity * 1000) if name == CPU else math.ceil(quantity)
        if len(_PARSED) < 100_000:
            _PARSED[key] = parsed
    return parsed


class Resource:
    """cpu (millicores), memory and ephemeral storage (bytes), a pod count and scalar (extended) resources."""

    __slots__ = ("milli_cpu", "memory", "ephemeral_storage", "pods", "scalar")

    def __init__(self, milli_cpu: int = 0, memory: int = 0, ephemeral_storage: int = 0, pods: int = 0,
                 scalar: dict[str, int] | None = None):
        self.milli_cpu = milli_cpu
        self.memory = memory
        self.ephemeral_storage = ephemeral_storage
        self.pods = pods
        self.scalar: dict[str, int] = scalar if scalar is not None else {}

    @classmethod
    def from_list(cls, resources: dict[str, Any] | None) -> Resource:
        """A ResourceList (name -> quantity), e.g. a node's status.allocatable."""
        result = cls()
        for name, value in (resources or {}).items():
            result.set(name, amount(name, value))
        return result

    @classmethod
    def from_amounts(cls, amounts: dict[str, int]) -> Resource:
        """Integer amounts by resource name."""
        result = cls()
        for name, value in amounts.items():
            result.set(name, value)
        return result

    def set(self, name: str, value: int) -> None:
        """Set one resource by its API name."""
        if name == CPU:
            self.milli_cpu = value
        elif name == MEMORY:
            self.memory = value
        elif name == EPHEMERAL_STORAGE:
            self.ephemeral_storage = value
        elif name == PODS:
            self.pods = value
        elif name not in _NOT_SCALAR:
            self.scalar[name] = value

    def get(self, name: str) -> int:
        """One resource by its API name (0 when absent)."""
        if name == CPU:
            return self.milli_cpu
        if name == MEMORY:
            return self.memory
        if name == EPHEMERAL_STORAGE:
            return self.ephemeral_storage
        if name == PODS:
            return self.pods
        return self.scalar.get(name, 0)

    def add(self, other: Resource, sign: int = 1) -> None:
        """Add (or with sign=-1 subtract) another amount in place."""
        self.milli_cpu += sign * other.milli_cpu
        self.memory += sign * other.memory
        self.ephemeral_storage += sign * other.ephemeral_storage
        self.pods += sign * other.pods
        for name, value in other.scalar.items():
            self.scalar[name] = self.scalar.get(name, 0) + sign * value

    def is_zero(self) -> bool:
        """True when nothing at all is requested."""
        return not (self.milli_cpu or self.memory or self.ephemeral_storage or any(self.scalar.values()))

    def clone(self) -> Resource:
        return Resource(self.milli_cpu, self.memory, self.ephemeral_storage, self.pods, dict(self.scalar))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Resource) and (
            (self.milli_cpu, self.memory, self.ephemeral_storage, self.pods, self.scalar)
            == (other.milli_cpu, other.memory, other.ephemeral_storage, other.pods, other.scalar))

    def __repr__(self) -> str:
        return (f"Resource(cpu={self.milli_cpu}m, memory={self.memory}, ephemeral={self.ephemeral_storage}, "
                f"pods={self.pods}, scalar={self.scalar})")


def _container_requests(container: Obj, defaults: dict[str, int] | None) -> dict[str, int]:
    """A container's requests; limits stand in for missing requests (API defaulting), then the defaults."""
    resources = container.get("resources") or {}
    requests = resources.get("requests") or {}
    limits = resources.get("limits") or {}
    out = {name: amount(name, value) for name, value in limits.items()}
    out.update((name, amount(name, value)) for name, value in requests.items())
    if defaults:
        for name, value in defaults.items():
            out.setdefault(name, value)
    return out


def _add_into(total: dict[str, int], more: dict[str, int]) -> None:
    for name, value in more.items():
        total[name] = total.get(name, 0) + value


def _max_into(total: dict[str, int], more: dict[str, int]) -> None:
    for name, value in more.items():
        if value > total.get(name, 0):
            total[name] = value


def pod_requests(spec: Obj, defaults: dict[str, int] | None = None) -> dict[str, int]:
    """resource.PodRequests: containers summed, init containers by the max rule (sidecars add), plus overhead."""
    total: dict[str, int] = {}
    for container in spec.get("containers") or []:
        _add_into(total, _container_requests(container, defaults))
    init_max: dict[str, int] = {}
    sidecars: dict[str, int] = {}
    for container in spec.get("initContainers") or []:
        requests = _container_requests(container, defaults)
        if container.get("restartPolicy") == "Always":
            _add_into(total, requests)
            _add_into(sidecars, requests)
            current = dict(sidecars)
        else:
            current = dict(requests)
            _add_into(current, sidecars)
        _max_into(init_max, current)
    _max_into(total, init_max)
    overhead = spec.get("overhead") or {}
    _add_into(total, {name: amount(name, value) for name, value in overhead.items()})
    return total


NON_ZERO_DEFAULTS = {CPU: DEFAULT_MILLI_CPU_REQUEST, MEMORY: DEFAULT_MEMORY_REQUEST}
