#!/usr/bin/env python3
"""Issue 4's node figures: pod startup latency of 30 pods created at once on one real node (the shared client
../shared/bench/podbench.py, image already present), the agent's idle RSS with 30 pods running and the largest
per-container helper process, and the pull time of a 5 MB image from a local registry.

Starts a local docker-registry and `kubelite server` with its agent on the default data paths of a temporary
directory; needs root. Prints one JSON line.

Usage: bench/pod_startup_bench.py [--pods 30] [--shared ../shared/bench]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.e2e.conftest import Cluster, free_port, start_server, stop_server  # noqa: E402
from tests.images import busybox_image, file, push  # noqa: E402
from tests.registry import start_registry, stop_registry  # noqa: E402

NODE = "bench-node"


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def children(pid: int) -> list[int]:
    """Every process whose parent is pid."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                found.append(int(entry.name))
    return found


def wait_for(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise RuntimeError(f"timed out waiting for {what}")


def running(cluster: Cluster, selector: str) -> int:
    pods = cluster.get_json("pods", "-A", "-l", selector)["items"]
    return sum(p.get("status", {}).get("phase") == "Running" for p in pods)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pods", type=int, default=30)
    parser.add_argument("--shared", default=str(ROOT.parent / "shared" / "bench"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kubelite-pods-") as tmp:
        work = Path(tmp)
        registry = start_registry(work / "registry")
        cluster = None
        try:
            push(registry.url, "busybox", "1.36", busybox_image())
            big = busybox_image([file("data/blob", os.urandom(5 * 2**20))])
            push(registry.url, "big", "1", big)
            image = f"{registry.url.removeprefix('http://')}/busybox:1.36"
            started = time.monotonic()
            subprocess.run([sys.executable, "-m", "kubelite", "image", "pull", "--data-dir", str(work / "pull"),
                            f"{registry.url.removeprefix('http://')}/big:1"], check=True, capture_output=True)
            pull_s = time.monotonic() - started
            cluster = start_server(work, free_port(), agent=NODE)
            wait_for(lambda: "True" in cluster.kubectl("get", "node", NODE, "-o",
                                                         "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
                                                         check=False).stdout, 60, "the node")
            cluster.kubectl("run", "warm", f"--image={image}", "--", "sleep", "3600")
            wait_for(lambda: running(cluster, "run=warm") == 1, 60, "the warm-up pod (image pulled)")
            bench = subprocess.run([sys.executable, os.path.join(args.shared, "podbench.py"),
                                    str(cluster.kubeconfig), image, "--pods", str(args.pods)],
                                   capture_output=True, text=True, cwd=args.shared, check=True)
            figures = json.loads(bench.stdout.strip().splitlines()[-1])
            cluster.kubectl("create", "deployment", "idle", f"--image={image}", f"--replicas={args.pods}",
                            "--", "sleep", "3600")
            wait_for(lambda: running(cluster, "app=idle") == args.pods, 120, f"{args.pods} idle pods")
            time.sleep(20)
            agent = cluster.component_pid("agent")
            assert agent is not None
            helpers = [rss_mib(pid) for pid in children(agent)]
            figures.update(pods=args.pods, agent_idle_rss_mib=round(rss_mib(agent), 1),
                           largest_per_container_helper_mib=round(max(helpers, default=0.0), 1),
                           pull_5mb_image_s=round(pull_s, 3))
            print(json.dumps(figures))
            cluster.kubectl("delete", "deployment", "idle", "--wait=false")
            cluster.kubectl("delete", "pods", "--all", "--grace-period=1", "--timeout=120s", check=False)
        finally:
            if cluster is not None:
                stop_server(cluster)
            stop_registry(registry)


if __name__ == "__main__":
    main()
