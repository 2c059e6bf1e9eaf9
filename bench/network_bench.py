#!/usr/bin/env python3
"""Pod network figure: time and CPU (this process's and its nft children's) to set up and tear down N pod networks
(veth, IP, NAT) on a scratch bridge.

Namespaces are made beforehand (the runtime's job, not timed). Needs root. Uses bridge klbench0, pod CIDR
10.97.0.0/24 and nft table `ip klbench-net`, all removed at the end.

Usage: bench/network_bench.py [--pods 30] [--host-ports] [--concurrent]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kubelite.kubelet.network.plugin import BridgeNetwork  # noqa: E402
from tests import netns  # noqa: E402
from tests.integration.test_network import hostport, pod_config  # noqa: E402


async def timed(op: Callable[..., Awaitable[object]], items: list[tuple], concurrent: bool) -> list[float]:
    """Run op on every item, one after another or all at once; each call's own duration."""

    async def one(item: tuple) -> float:
        start = time.perf_counter()
        await op(*item)
        return time.perf_counter() - start

    if concurrent:
        return list(await asyncio.gather(*(one(item) for item in items)))
    return [await one(item) for item in items]


def cpu_seconds() -> float:
    """CPU seconds (user + system) of this process and its waited-for children (nft) so far."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def summary(label: str, times: list[float], wall: float, cpu: float) -> str:
    ms = sorted(t * 1000 for t in times)
    return (f"{label}: {len(ms)} pods in {wall * 1000:.0f} ms, {wall * 1000 / len(ms):.1f} ms/pod "
            f"(each call: p50 {statistics.median(ms):.1f} ms, max {ms[-1]:.1f} ms), "
            f"CPU {cpu * 1000 / len(ms):.1f} ms/pod")


async def run(pods: int, host_ports: bool, concurrent: bool) -> None:
    paths = [f"/run/netns/klbench-{os.getpid()}-{i}" for i in range(pods)]
    for path in paths:
        netns.create(path)
    configs = [
        pod_config(f"pod-{i}", port_mappings=[hostport("TCP", 8080, 20000 + i)] if host_ports else [])
        for i in range(pods)
    ]
    with tempfile.TemporaryDirectory(prefix="kubelite-netbench-") as tmp:
        net = BridgeNetwork(tmp, "10.97.0.0/24", "10.97.0.0/16", bridge="klbench0", table="klbench-net")
        items = [(f"sandbox-{i}", paths[i], configs[i]) for i in range(pods)]
        try:
            cpu, start = cpu_seconds(), time.perf_counter()
            setup_times = await timed(net.setup, items, concurrent)
            setup_wall, setup_cpu = time.perf_counter() - start, cpu_seconds() - cpu
            cpu, start = cpu_seconds(), time.perf_counter()
            teardown_times = await timed(net.teardown, items, concurrent)
            teardown_wall, teardown_cpu = time.perf_counter() - start, cpu_seconds() - cpu
        finally:
            await net.destroy()
            for path in paths:
                with contextlib.suppress(OSError):
                    netns.remove(path)
    mode = ("concurrent" if concurrent else "sequential") + (", one hostPort each" if host_ports else "")
    print(f"pod network, {mode}")
    print(summary("setup", setup_times, setup_wall, setup_cpu))
    print(summary("teardown", teardown_times, teardown_wall, teardown_cpu))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pods", type=int, default=30)
    parser.add_argument("--host-ports", action="store_true")
    parser.add_argument("--concurrent", action="store_true")
    args = parser.parse_args()
    asyncio.run(run(args.pods, args.host_ports, args.concurrent))


if __name__ == "__main__":
    main()
