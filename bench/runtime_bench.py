#!/usr/bin/env python3
"""The runc runtime's start-up figure: N pods (sandbox + one busybox container each) started concurrently, the
agent's RSS afterwards, and the time to remove them all. Wall time alone hides cost under contention, so it also
prints CPU seconds: the agent's own (user + system), its waited children's (runc, nft), and what the containers
spent before exec'ing their command (runc init). Needs root and runc; uses temporary directories and its own
cgroup root, and removes everything it made. With --network, pods get a real BridgeNetwork on bridge klrtbench0,
pod CIDR 10.93.0.0/24 and nft table `ip klrtbench-net` (all removed at the end) instead of loopback only.

Usage: bench/runtime_bench.py [--pods 30] [--uvloop] [--network]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kubelite.kubelet.network.plugin import BridgeNetwork  # noqa: E402
from kubelite.kubelet.runtime import cgroups  # noqa: E402
from kubelite.kubelet.runtime.base import ContainerConfig, ContainerState, SandboxConfig  # noqa: E402
from kubelite.kubelet.runtime.runc import RuncRuntime  # noqa: E402
from tests.integration.test_runtime_runc import BusyboxImage, build_busybox_layer  # noqa: E402

CLOCK_TICK = os.sysconf("SC_CLK_TCK")
"""The unit of utime and stime in /proc/<pid>/stat."""


def rss_mib() -> float:
    """This process's resident set size."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds() -> tuple[float, float]:
    """(this process's CPU seconds, its waited-for children's), user + system each."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def process_cpu_seconds(pid: int) -> float:
    """A running process's CPU seconds so far (a container's init: what runc init spent before the exec)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICK


async def start_pod(runtime: RuncRuntime, image: BusyboxImage, logs: Path, index: int) -> str:
    """One pod: its sandbox, then one long-running container, started."""
    uid = secrets.token_hex(8)
    config = SandboxConfig(name=f"bench-{index}", namespace="default", uid=uid,
                           log_directory=str(logs / f"default_bench-{index}_{uid}"))
    sandbox_id = await runtime.run_pod_sandbox(config)
    container_id = await runtime.create_container(sandbox_id, ContainerConfig(
        name="main", image=image, command=["sleep", "3600"], log_path="main/0.log"), config)
    await runtime.start_container(container_id)
    return sandbox_id


async def bench(pods: int, base: Path, network: bool) -> None:
    """Start the pods, print the figures, remove the pods."""
    image = BusyboxImage([build_busybox_layer(base / "layer")])
    cgroup_root = f"/kubelite-bench-{secrets.token_hex(4)}"
    net = BridgeNetwork(base / "net", "10.93.0.0/24", "10.93.0.0/16", bridge="klrtbench0",
                        table="klrtbench-net") if network else None
    runtime = RuncRuntime(layers_dir=base / "layers", run_dir=base / "run", cgroup_root=cgroup_root, network=net)
    await runtime.start()
    rss_before = rss_mib()
    try:
        own, children = cpu_seconds()
        started = time.perf_counter()
        sandboxes = await asyncio.gather(*(start_pod(runtime, image, base / "logs", i) for i in range(pods)))
        elapsed = time.perf_counter() - started
        own_after, children_after = cpu_seconds()
        running = await runtime.list_containers(state=ContainerState.RUNNING)
        assert len(running) == pods, f"{len(running)} of {pods} running"
        inits = sum(process_cpu_seconds(c.pid) for c in running)
        agent, helpers = own_after - own, children_after - children
        print(f"start {pods} pods (sandbox + container{', bridge network' if network else ''}) concurrently: "
              f"{elapsed:.2f} s ({pods / elapsed:.1f} pods/s)")
        print(f"CPU: {agent + helpers + inits:.2f} s in all, {(agent + helpers + inits) * 1000 / pods:.0f} ms/pod "
              f"(agent {agent:.2f} s, runc/nft processes {helpers:.2f} s, container inits {inits:.2f} s)")
        print(f"agent RSS: {rss_before:.1f} MiB before, {rss_mib():.1f} MiB with {pods} running containers")
        started = time.perf_counter()
        await asyncio.gather(*(runtime.remove_pod_sandbox(s) for s in sandboxes))
        own_end, children_end = cpu_seconds()
        removing = own_end - own_after + children_end - children_after - inits
        print(f"remove {pods} pods concurrently: {time.perf_counter() - started:.2f} s, CPU {removing:.2f} s "
              f"(less what the reaped containers had spent at start)")
    finally:
        for sandbox in await runtime.list_pod_sandboxes():
            await runtime.remove_pod_sandbox(sandbox.id)
        await runtime.close()
        if net is not None:
            await net.destroy()
        cgroups.remove(cgroup_root)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pods", type=int, default=30)
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop, as the agent does")
    parser.add_argument("--network", action="store_true", help="a real bridge network instead of loopback only")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="kl-bench-"))
    try:
        if args.uvloop:
            import uvloop

            uvloop.run(bench(args.pods, base, args.network))
        else:
            asyncio.run(bench(args.pods, base, args.network))
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
