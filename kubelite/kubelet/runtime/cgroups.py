"""cgroupfs as runc lays it out: one directory per hierarchy (v1 controllers, plus cgroup2 when mounted).

Reads what the runtime reports (OOM kills, CPU and memory usage) and removes pod cgroups runc leaves behind.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

V1_CONTROLLERS = frozenset({"blkio", "cpu", "cpuacct", "cpuset", "devices", "freezer", "hugetlb", "memory", "misc",
                            "net_cls", "net_prio", "perf_event", "pids", "rdma"})


@functools.cache
def hierarchies() -> dict[str, Path]:
    """Mount points by v1 controller name (cpu, memory, name=systemd, ...) and "unified" for cgroup2."""
    found: dict[str, Path] = {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        pre, _, post = line.partition(" - ")
        fstype, _source, options = post.split(" ")[:3]
        mount_point = Path(pre.split(" ")[4])
        if fstype == "cgroup2":
            found.setdefault("unified", mount_point)
        elif fstype == "cgroup":
            for option in options.split(","):
                if option in V1_CONTROLLERS or option.startswith("name="):
                    found.setdefault(option, mount_point)
    return found


def hugetlb_available() -> bool:
    """Whether runc can limit huge pages: a v1 hugetlb hierarchy, or hugetlb among the controllers of a cgroup2-only
    /sys/fs/cgroup (runc sets no limit of a controller that is not there: it fails the container instead)."""
    found = hierarchies()
    if "hugetlb" in found:
        return True
    unified = found.get("unified")
    try:
        return unified == Path("/sys/fs/cgroup") and "hugetlb" in (unified / "cgroup.controllers").read_text().split()
    except OSError:
        return False


def path_in(controller: str, cgroups_path: str) -> Path | None:
    """The directory of a cgroup in one hierarchy, or None when that hierarchy is not mounted."""
    root = hierarchies().get(controller)
    return None if root is None else root / cgroups_path.lstrip("/")


def _read_keyed(path: Path) -> dict[str, int]:
    values = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            values[key] = int(value)
    return values


def oom_kills(cgroups_path: str) -> int:
    """How many processes the kernel's OOM killer killed in the cgroup (0 when unknown)."""
    memory = path_in("memory", cgroups_path)
    if memory is not None:
        path = memory / "memory.oom_control"
    else:
        unified = path_in("unified", cgroups_path)
        path = unified / "memory.events" if unified is not None else Path("/nonexistent")
    return _read_keyed(path).get("oom_kill", 0) if path.exists() else 0


def usage(cgroups_path: str) -> tuple[int, int, int]:
    """(CPU time in ns, memory usage bytes, working set bytes = usage minus inactive file pages), as cAdvisor."""
    cpuacct = path_in("cpuacct", cgroups_path)
    memory = path_in("memory", cgroups_path)
    if cpuacct is not None and memory is not None:
        cpu = int((cpuacct / "cpuacct.usage").read_text())
        used = int((memory / "memory.usage_in_bytes").read_text())
        inactive = _read_keyed(memory / "memory.stat").get("total_inactive_file", 0)
    else:
        unified = path_in("unified", cgroups_path)
        if unified is None:
            raise FileNotFoundError(f"no cgroup hierarchy for {cgroups_path}")
        cpu = _read_keyed(unified / "cpu.stat")["usage_usec"] * 1000
        used = int((unified / "memory.current").read_text())
        inactive = _read_keyed(unified / "memory.stat").get("inactive_file", 0)
    return cpu, used, max(0, used - inactive)


def remove(cgroups_path: str) -> None:
    """rmdir the cgroup and its empty descendants in every hierarchy (a busy one stays; idempotent)."""
    for controller in hierarchies():
        root = path_in(controller, cgroups_path)
        if root is None or not root.exists():
            continue
        for directory, _dirs, _files in os.walk(root, topdown=False):
            try:
                os.rmdir(directory)
            except FileNotFoundError:
                pass
            except OSError:
                break
