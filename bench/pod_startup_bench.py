#!/usr/bin/env python3
"""Issue 4's node figures: pod startup latency of 30 pods created at once on one real node (the shared client
../shared/bench/podbench.py, image already present), the agent's idle RSS with 30 pods running and the largest
helper process (there is none per container), and the pull time of a 5 MB image from a local registry.

Starts a local docker-registry and `kubelite server` with its agent on the default data paths of a temporary
directory; needs root. Prints one JSON line. With --containerd the agent runs the pods on a containerd started for
the run (the CRI runtime, `--container-runtime-endpoint`): the helpers are then its shims, and there is no pull
figure (pulls are containerd's).

Usage: bench/pod_startup_bench.py [--pods 30] [--shared ../shared/bench] [--containerd]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kubelite.kubelet.images.store import ImageStore  # noqa: E402
from kubelite.kubelet.network.cni import CONFLIST  # noqa: E402
from tests.containerd import Containerd, shim_pids, start_containerd, stop_containerd  # noqa: E402
from tests.e2e.conftest import Cluster, free_port, start_server, stop_server  # noqa: E402
from tests.images import busybox_image, file, push  # noqa: E402
from tests.registry import start_registry, stop_registry  # noqa: E402

NODE = "bench-node"


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def helpers(pid: int) -> list[int]:
    """The agent's child processes that are not containers (a container's init is the agent's child too, as its
    subreaper, but lives in a pod cgroup under /kubelite/)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                in_pod = "/kubelite/" in (entry / "cgroup").read_text()
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid and not in_pod:
                found.append(int(entry.name))
    return found


async def pull_seconds(ref: str, root: Path) -> float:
    """A cold pull into an empty store, timed in-process (no CLI start-up in the figure); a loopback registry
    is spoken to over plain HTTP."""
    async with ImageStore(root) as store:
        started = time.monotonic()
        await store.pull(ref)
        return time.monotonic() - started


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


def runtime_args(daemon: Containerd | None) -> list[str]:
    """The server's flags for the runtime: none for the embedded runc one."""
    if daemon is None:
        return []
    return ["--container-runtime-endpoint", daemon.endpoint, "--cni-conf-dir", str(daemon.cni_conf_dir)]


def helper_pids(agent: int, daemon: Containerd | None) -> list[int]:
    """Per-container helper processes: containerd's shims, or the agent's own non-container children."""
    return shim_pids(daemon.socket) if daemon is not None else helpers(agent)


def stop_pods(cluster: Cluster, daemon: Containerd | None) -> None:
    """Delete the benchmark's pods and, with containerd, wait until it has torn their sandboxes down."""
    cluster.kubectl("delete", "deployment", "idle", "--wait=false")
    cluster.kubectl("delete", "pods", "--all", "--grace-period=1", "--timeout=120s", check=False)
    if daemon is not None:
        wait_for(lambda: not daemon.containers(), 60, "containerd's sandboxes gone")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pods", type=int, default=30)
    parser.add_argument("--shared", default=str(ROOT.parent / "shared" / "bench"))
    parser.add_argument("--containerd", action="store_true", help="run the pods on a containerd (CRI) instead of runc")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kubelite-pods-") as tmp:
        work = Path(tmp)
        daemon = start_containerd(work / "containerd") if args.containerd else None
        registry = daemon.registry if daemon is not None else start_registry(work / "registry")
        cluster = None
        try:
            push(registry.url, "busybox", "1.36", busybox_image())
            image = f"{registry.host}/busybox:1.36"
            figures: dict[str, object] = {}
            if daemon is None:
                push(registry.url, "big", "1", busybox_image([file("data/blob", os.urandom(5 * 2**20))]))
                figures["pull_5mb_image_s"] = round(asyncio.run(pull_seconds(f"{registry.host}/big:1",
                                                                             work / "pull")), 3)
            cluster = start_server(work, free_port(), *runtime_args(daemon), agent=NODE)
            wait_for(lambda: "True" in cluster.kubectl("get", "node", NODE, "-o",
                                                         "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
                                                         check=False).stdout, 60, "the node")
            cluster.kubectl("run", "warm", f"--image={image}", "--", "sleep", "3600")
            wait_for(lambda: running(cluster, "run=warm") == 1, 60, "the warm-up pod (image pulled)")
            bench = subprocess.run([sys.executable, os.path.join(args.shared, "podbench.py"),
                                    str(cluster.kubeconfig), image, "--pods", str(args.pods)],
                                   capture_output=True, text=True, cwd=args.shared, check=True)
            figures.update(json.loads(bench.stdout.strip().splitlines()[-1]))
            cluster.kubectl("create", "deployment", "idle", f"--image={image}", f"--replicas={args.pods}",
                            "--", "sleep", "3600")
            wait_for(lambda: running(cluster, "app=idle") == args.pods, 120, f"{args.pods} idle pods")
            time.sleep(20)
            agent = cluster.component_pid("agent")
            assert agent is not None
            helper_rss = [rss_mib(pid) for pid in helper_pids(agent, daemon)]
            figures.update(runtime="containerd" if daemon is not None else "runc", pods=args.pods,
                           agent_idle_rss_mib=round(rss_mib(agent), 1), helper_processes=len(helper_rss),
                           largest_helper_mib=round(max(helper_rss, default=0.0), 1))
            if daemon is not None:
                figures["containerd_rss_mib"] = round(rss_mib(daemon.proc.pid), 1)
            print(json.dumps(figures))
            stop_pods(cluster, daemon)
        finally:
            if cluster is not None:
                stop_server(cluster)
            if daemon is not None:
                (daemon.cni_conf_dir / CONFLIST).unlink(missing_ok=True)
                subprocess.run(["umount", f"/run/kubelite/{NODE}"], capture_output=True, check=False)
                stop_containerd(daemon)
            else:
                stop_registry(registry)


if __name__ == "__main__":
    main()
