"""The kubelet's stats summary (GET /stats/summary): node and per-pod CPU and memory, as metrics-server reads it.

Only the fields the runtime and /proc give are filled: cumulative CPU time and a rate between two calls, memory
usage and working set. Shapes follow stats/v1alpha1 Summary.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from kubelite.client.timestamps import time_at
from kubelite.kubelet.runtime.base import ContainerState, RuntimeService, RuntimeServiceError

Obj = dict[str, Any]
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def node_cpu_ns(proc: Path = Path("/proc")) -> int:
    """CPU time the machine spent busy since boot, in nanoseconds (all of /proc/stat's cpu line but idle and iowait)."""
    fields = [int(v) for v in (proc / "stat").read_text().splitlines()[0].split()[1:9]]
    busy = sum(fields) - fields[3] - fields[4]
    return busy * 1_000_000_000 // _CLOCK_TICKS


def boot_time_ns(proc: Path = Path("/proc")) -> int:
    """When the machine booted (btime of /proc/stat)."""
    for line in (proc / "stat").read_text().splitlines():
        if line.startswith("btime "):
            return int(line.split()[1]) * 1_000_000_000
    return 0


def node_memory(proc: Path = Path("/proc")) -> Obj:
    """availableBytes, usageBytes and workingSetBytes of the machine from /proc/meminfo."""
    info = {}
    for line in (proc / "meminfo").read_text().splitlines():
        name, _, rest = line.partition(":")
        info[name] = int(rest.split()[0]) * 1024
    total, available = info.get("MemTotal", 0), info.get("MemAvailable", 0)
    return {"availableBytes": available, "usageBytes": total - info.get("MemFree", 0),
            "workingSetBytes": total - available}


class SummaryProvider:
    """Builds summaries; remembers the previous CPU sample of each container (and the node) to give a rate."""

    def __init__(self, runtime: RuntimeService, node_name: str, proc: Path = Path("/proc")):
        self.runtime = runtime
        self.node_name = node_name
        self.proc = proc
        self._previous: dict[str, tuple[int, int]] = {}

    def _cpu(self, key: str, at_ns: int, usage_ns: int) -> Obj:
        cpu: Obj = {"time": time_at(at_ns / 1e9), "usageCoreNanoSeconds": usage_ns}
        previous = self._previous.get(key)
        if previous is not None and at_ns > previous[0] and usage_ns >= previous[1]:
            cpu["usageNanoCores"] = (usage_ns - previous[1]) * 1_000_000_000 // (at_ns - previous[0])
        self._previous[key] = (at_ns, usage_ns)
        return cpu

    async def summary(self) -> Obj:
        """The Summary document."""
        now = time.time_ns()
        node = {"nodeName": self.node_name, "startTime": time_at(boot_time_ns(self.proc) / 1e9),
                "cpu": self._cpu("", now, node_cpu_ns(self.proc)),
                "memory": {"time": time_at(now / 1e9), **node_memory(self.proc)}}
        sandboxes = {s.id: s for s in await self.runtime.list_pod_sandboxes()}
        pods: dict[str, Obj] = {}
        seen = {""}
        for container in await self.runtime.list_containers(state=ContainerState.RUNNING):
            sandbox = sandboxes.get(container.sandbox_id)
            if sandbox is None:
                continue
            try:
                stats = await self.runtime.container_stats(container.id)
            except RuntimeServiceError:
                continue
            seen.add(container.id)
            pod = pods.setdefault(sandbox.id, {
                "podRef": {"name": sandbox.config.name, "namespace": sandbox.config.namespace,
                           "uid": sandbox.config.uid},
                "startTime": time_at(sandbox.created_at / 1e9), "containers": []})
            pod["containers"].append({
                "name": container.name, "startTime": time_at((container.started_at or container.created_at) / 1e9),
                "cpu": self._cpu(container.id, stats.timestamp, stats.cpu_usage_core_nanoseconds),
                "memory": {"time": time_at(stats.timestamp / 1e9), "usageBytes": stats.memory_usage_bytes,
                           "workingSetBytes": stats.memory_working_set_bytes}})
        for pod in pods.values():
            pod["cpu"] = _sum(pod["containers"], "cpu", ("usageCoreNanoSeconds", "usageNanoCores"), now)
            pod["memory"] = _sum(pod["containers"], "memory", ("usageBytes", "workingSetBytes"), now)
        for key in set(self._previous) - seen:
            del self._previous[key]
        return {"node": node, "pods": list(pods.values())}


def _sum(containers: list[Obj], kind: str, fields: tuple[str, ...], now: int) -> Obj:
    """A pod's total of its containers' fields (a field only when every container has it)."""
    total: Obj = {"time": time_at(now / 1e9)}
    for name in fields:
        values = [c[kind].get(name) for c in containers]
        if values and all(v is not None for v in values):
            total[name] = sum(values)
    return total
