"""This machine as a Node: capacity and allocatable read from the host, addresses, node info, pressure conditions,
labels and taints from the command line; registration, the Lease renewed every 10 s, and status posted when it
changes (or every 5 minutes)."""

from __future__ import annotations

import asyncio
import logging
import os
import platform
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from kubelite.api.quantity import HUGEPAGES_PREFIX, format_quantity
from kubelite.client.errors import CONNECTION_ERRORS, ApiError, is_already_exists
from kubelite.client.resources import NODES
from kubelite.client.rest import ApiClient
from kubelite.client.timestamps import now_time
from kubelite.kubelet.eviction import Thresholds
from kubelite.kubelet.heartbeat import KUBELET_VERSION, NODE_CONDITIONS, renew_lease

log = logging.getLogger(__name__)
Obj = dict[str, Any]
LEASE_RENEW = 10.0
STATUS_CHECK = 10.0
STATUS_REPORT = 300.0
"""nodeStatusReportFrequency: an unchanged status is posted this often (the Lease is the heartbeat)."""
MAX_PODS = 110
KUBELET_PORT = 10250
HUGEPAGES_SYSFS = Path("/sys/kernel/mm/hugepages")


def default_address() -> str:
    """The IP of the interface the default route leaves by (no packet is sent), else loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))
            return probe.getsockname()[0]
        except OSError:
            return "127.0.0.1"


def hugepages(sysfs: Path = HUGEPAGES_SYSFS) -> dict[str, int]:
    """The pre-allocated huge pages in bytes by resource name (hugepages-2Mi, hugepages-1Gi), one per page size
    the kernel offers, as the kubelet reports them."""
    found = {}
    for entry in sorted(sysfs.glob(f"{HUGEPAGES_PREFIX}*kB")):
        try:
            size = int(entry.name.removeprefix(HUGEPAGES_PREFIX).removesuffix("kB")) * 1024
            count = int((entry / "nr_hugepages").read_text())
        except (OSError, ValueError):
            continue
        found[f"{HUGEPAGES_PREFIX}{format_quantity(Fraction(size), binary=True)}"] = count * size
    return found


def meminfo() -> dict[str, int]:
    """/proc/meminfo in bytes."""
    values = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts:
            values[key] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    return values


@dataclass
class Machine:
    """The host's resources as the kubelet measures them."""

    data_dir: Path
    thresholds: Thresholds = field(default_factory=Thresholds)
    """The hard eviction thresholds: kept out of allocatable, and what pressure means."""
    cpus: int = field(default_factory=lambda: os.cpu_count() or 1)
    hugepages_sysfs: Path = HUGEPAGES_SYSFS

    def memory(self) -> int:
        return meminfo()["MemTotal"]

    def disk(self) -> tuple[int, int]:
        """(total, available) bytes of the filesystem holding the data directory."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        stats = os.statvfs(self.data_dir)
        return stats.f_blocks * stats.f_frsize, stats.f_bavail * stats.f_frsize

    def resources(self) -> dict[str, dict[str, str]]:
        """The Node status's capacity and allocatable, from one reading of the host. Allocatable is capacity less
        the eviction thresholds (no kube or system reservations by default), and memory held as huge pages is not
        allocatable as memory."""
        memory, (disk, _) = self.memory(), self.disk()
        pages = hugepages(self.hugepages_sysfs)
        capacity = {"cpu": str(self.cpus), "memory": f"{memory // 1024}Ki", "pods": str(MAX_PODS),
                    "ephemeral-storage": f"{disk // 1024}Ki",
                    **{name: format_quantity(Fraction(size), binary=True) for name, size in pages.items()}}
        free_memory = max(memory - self.thresholds.memory_available - sum(pages.values()), 0)
        allocatable = {**capacity, "memory": f"{free_memory // 1024}Ki",
                       "ephemeral-storage": str(int(disk * (1 - self.thresholds.nodefs_available)))}
        return {"capacity": capacity, "allocatable": allocatable}

    def allocatable(self) -> dict[str, str]:
        return self.resources()["allocatable"]

    def signals(self) -> dict[str, float]:
        """What eviction decides on: available memory, and the data filesystem's size and free share."""
        total, available = self.disk()
        return {"memory_available": meminfo().get("MemAvailable", 0), "nodefs_total": total,
                "nodefs_available_ratio": available / total if total else 1.0}

    def pressure(self) -> dict[str, bool]:
        """MemoryPressure, DiskPressure and PIDPressure against the eviction thresholds."""
        signals = self.signals()
        pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
        pids = sum(1 for entry in os.scandir("/proc") if entry.name.isdigit())
        return {"MemoryPressure": signals["memory_available"] < self.thresholds.memory_available,
                "DiskPressure": signals["nodefs_available_ratio"] < self.thresholds.nodefs_available,
                "PIDPressure": pids > pid_max * 0.9}


PRESSURE_REASONS = {
    "MemoryPressure": ("KubeletHasInsufficientMemory", "kubelet has insufficient memory available"),
    "DiskPressure": ("KubeletHasDiskPressure", "kubelet has disk pressure"),
    "PIDPressure": ("KubeletHasInsufficientPID", "kubelet has insufficient PID available"),
}


def parse_labels(values: Iterable[str]) -> dict[str, str]:
    """Labels from 'key=value' strings (a CLI's repeated --label)."""
    labels = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key:
            raise ValueError(f"label {value!r} is not key=value")
        labels[key] = val
    return labels


def parse_taints(values: Iterable[str]) -> list[Obj]:
    """Taints from kubectl's 'key[=value]:Effect' strings (a CLI's repeated --taint)."""
    taints = []
    for value in values:
        spec, _, effect = value.rpartition(":")
        key, sep, val = spec.partition("=")
        if not key or effect not in ("NoSchedule", "PreferNoSchedule", "NoExecute"):
            raise ValueError(f"taint {value!r} is not key[=value]:NoSchedule|PreferNoSchedule|NoExecute")
        taints.append({"key": key, **({"value": val} if sep else {}), "effect": effect})
    return taints


def _conditions(pressure: dict[str, bool], old: list[Obj]) -> list[Obj]:
    """The node conditions with a fresh heartbeat; transition times kept while a status holds."""
    now = now_time()
    previous = {c["type"]: c for c in old}
    result = []
    for type_, status, reason, message in NODE_CONDITIONS:
        if pressure.get(type_):
            status = "True"
            reason, message = PRESSURE_REASONS[type_]
        kept = previous.get(type_, {})
        since = kept.get("lastTransitionTime") if kept.get("status") == status else None
        result.append({"type": type_, "status": status, "reason": reason, "message": message,
                       "lastHeartbeatTime": now, "lastTransitionTime": since or now})
    return result


class NodeAgent:
    """Registers the Node and keeps its Lease and status current; calls on_pod_cidr when a podCIDR is assigned."""

    def __init__(self, client: ApiClient, name: str, address: str, machine: Machine, runtime_version: str, *,
                 labels: dict[str, str] | None = None, taints: list[Obj] | None = None, port: int = KUBELET_PORT,
                 on_pod_cidr: Callable[[str], None] | None = None):
        self.client = client
        self.name = name
        self.address = address
        self.machine = machine
        self.runtime_version = runtime_version
        self.labels = labels or {}
        self.taints = taints or []
        self.port = port
        self.on_pod_cidr = on_pod_cidr
        self.uid = ""
        self.pod_cidr = ""
        self._lease: Obj | None = None
        self._conditions: list[Obj] = []
        self._resources: dict[str, dict[str, str]] = {}
        self._reported = 0.0

    def node_object(self) -> Obj:
        """The Node this kubelet registers."""
        machine_id = Path("/etc/machine-id").read_text().strip() if Path("/etc/machine-id").exists() else ""
        labels = {"kubernetes.io/hostname": self.name, "kubernetes.io/os": "linux",
                  "kubernetes.io/arch": "amd64" if platform.machine() == "x86_64" else platform.machine(),
                  "beta.kubernetes.io/os": "linux", **self.labels}
        labels["beta.kubernetes.io/arch"] = labels["kubernetes.io/arch"]
        self._conditions = _conditions(self.machine.pressure(), [])
        self._resources = self.machine.resources()
        return {
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": self.name, "labels": labels},
            "spec": {"taints": list(self.taints)} if self.taints else {},
            "status": {
                **self._resources,
                "addresses": [{"type": "InternalIP", "address": self.address},
                              {"type": "Hostname", "address": self.name}],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": self.port}},
                "nodeInfo": {"machineID": machine_id, "systemUUID": machine_id, "bootID": _boot_id(),
                             "kernelVersion": platform.release(), "osImage": _os_image(),
                             "containerRuntimeVersion": self.runtime_version, "kubeletVersion": KUBELET_VERSION,
                             "kubeProxyVersion": "", "operatingSystem": "linux",
                             "architecture": labels["kubernetes.io/arch"]},
                "conditions": self._conditions,
            },
        }

    async def register(self) -> Obj:
        """Create the Node (or take over an existing one and post our status), retrying until the server answers."""
        delay = 0.2
        while True:
            body = self.node_object()
            try:
                try:
                    node = await self.client.create(NODES, body)
                except ApiError as exc:
                    if not is_already_exists(exc):
                        raise
                    node = await self.client.patch(NODES, self.name, {"status": body["status"]}, type="strategic",
                                                   subresource="status")
                break
            except (ApiError, *CONNECTION_ERRORS) as exc:
                log.warning("registering node %s failed: %s; retrying in %.1fs", self.name, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 7.0)
        log.info("registered node %s (%s)", self.name, self.address)
        self.uid = node["metadata"]["uid"]
        self._reported = time.monotonic()
        self._learn(node)
        self._lease = await renew_lease(self.client, self.name, self.uid, None)
        return node

    def _learn(self, node: Obj) -> None:
        cidr = (node.get("spec") or {}).get("podCIDR", "")
        if cidr and cidr != self.pod_cidr:
            self.pod_cidr = cidr
            if self.on_pod_cidr is not None:
                self.on_pod_cidr(cidr)

    async def run(self) -> None:
        """Renew the Lease every 10 s and post the status when it changes; until cancelled."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._every(LEASE_RENEW, self._renew, "lease renewal"))
            group.create_task(self._every(STATUS_CHECK, self._status, "node status update"))

    async def _every(self, interval: float, action: Callable[[], Any], what: str) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await action()
            except (ApiError, *CONNECTION_ERRORS) as exc:
                log.warning("%s of node %s failed: %s", what, self.name, exc)

    async def _renew(self) -> None:
        self._lease = await renew_lease(self.client, self.name, self.uid, self._lease)

    async def _status(self) -> None:
        """Post conditions and resources when a condition or a resource (say, the huge pages set aside) changed or
        the report interval passed; pick up the podCIDR."""
        conditions = _conditions(await asyncio.to_thread(self.machine.pressure), self._conditions)
        resources = await asyncio.to_thread(self.machine.resources)
        changed = [(c["type"], c["status"]) for c in conditions] != [(c["type"], c["status"])
                                                                     for c in self._conditions]
        if not changed and resources == self._resources and time.monotonic() - self._reported < STATUS_REPORT \
                and self.pod_cidr:
            return
        node = await self.client.patch(NODES, self.name, {"status": {"conditions": conditions, **resources}},
                                       type="strategic", subresource="status")
        self._conditions, self._resources, self._reported = conditions, resources, time.monotonic()
        self._learn(node)


def _boot_id() -> str:
    path = Path("/proc/sys/kernel/random/boot_id")
    return path.read_text().strip() if path.exists() else ""


def _os_image() -> str:
    for line in Path("/etc/os-release").read_text().splitlines() if Path("/etc/os-release").exists() else []:
        if line.startswith("PRETTY_NAME="):
            return line.partition("=")[2].strip('"')
    return "Linux"
