#!/usr/bin/env python3
"""The runc runtime's start-up figure: N pods (sandbox + one busybox container each) started concurrently, the
agent's RSS afterwards, and the time to remove them all. Needs root and runc; uses temporary directories and
its own cgroup root, and removes everything it made.

Usage: bench/runtime_bench.py [--pods 30] [--uvloop]
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kubelite.kubelet.runtime import cgroups  # noqa: E402
from kubelite.kubelet.runtime.base import ContainerConfig, ContainerState, SandboxConfig  # noqa: E402
from kubelite.kubelet.runtime.runc import RuncRuntime  # noqa: E402
from tests.integration.test_runtime_runc import BusyboxImage, build_busybox_layer  # noqa: E402


def rss_mib() -> float:
    """This process's resident set size."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


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


async def bench(pods: int, base: Path) -> None:
    """Start the pods, print the figures, remove the pods."""
    image = BusyboxImage([build_busybox_layer(base / "layer")])
    cgroup_root = f"/kubelite-bench-{secrets.token_hex(4)}"
    runtime = RuncRuntime(state_dir=base / "state", run_dir=base / "run", cgroup_root=cgroup_root)
    await runtime.start()
    rss_before = rss_mib()
    try:
        started = time.perf_counter()
        sandboxes = await asyncio.gather(*(start_pod(runtime, image, base / "logs", i) for i in range(pods)))
        elapsed = time.perf_counter() - started
        running = await runtime.list_containers(state=ContainerState.RUNNING)
        assert len(running) == pods, f"{len(running)} of {pods} running"
        print(f"start {pods} pods (sandbox + container) concurrently: {elapsed:.2f} s "
              f"({pods / elapsed:.1f} pods/s)")
        print(f"agent RSS: {rss_before:.1f} MiB before, {rss_mib():.1f} MiB with {pods} running containers")
        started = time.perf_counter()
        await asyncio.gather(*(runtime.remove_pod_sandbox(s) for s in sandboxes))
        print(f"remove {pods} pods concurrently: {time.perf_counter() - started:.2f} s")
    finally:
        for sandbox in await runtime.list_pod_sandboxes():
            await runtime.remove_pod_sandbox(sandbox.id)
        await runtime.close()
        cgroups.remove(cgroup_root)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pods", type=int, default=30)
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop, as the agent does")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="kl-bench-"))
    try:
        if args.uvloop:
            import uvloop

            uvloop.run(bench(args.pods, base))
        else:
            asyncio.run(bench(args.pods, base))
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
