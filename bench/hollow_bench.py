#!/usr/bin/env python3
"""Issue 3's hollow-node figures: what N heart-beating hollow nodes cost the API server (CPU share of one core
over a quiet minute), then how long a Deployment of R replicas takes to be fully Available on them.
Prints one JSON line.

Usage: bench/hollow_bench.py [--nodes 1000] [--replicas 1000] [--idle-seconds 60]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.e2e.conftest import Cluster, free_port, start_server, stop_server  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def wait_for(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(1)
    raise RuntimeError(f"timed out after {timeout} s waiting for {what}")


def ready_nodes(cluster: Cluster) -> int:
    return sum(any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"].get("conditions", []))
               for n in cluster.get_json("nodes")["items"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--replicas", type=int, default=1000)
    parser.add_argument("--idle-seconds", type=float, default=60)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kubelite-hollow-") as tmp:
        data = Path(tmp)
        cluster = start_server(data, free_port())
        hollow = subprocess.Popen([sys.executable, "-m", "kubelite", "hollow-nodes", "--kubeconfig",
                                   str(cluster.kubeconfig), "--count", str(args.nodes)],
                                  stdout=(data / "hollow.log").open("ab"), stderr=subprocess.STDOUT,
                                  start_new_session=True)
        try:
            wait_for(lambda: ready_nodes(cluster) >= args.nodes, 300, f"{args.nodes} Ready nodes")
            apiserver = cluster.component_pid("apiserver")
            assert apiserver is not None, "the server runs no apiserver process"
            time.sleep(15)  # let registration settle so the window sees only steady heartbeats
            before, started = cpu_seconds(apiserver), time.monotonic()
            time.sleep(args.idle_seconds)
            share = (cpu_seconds(apiserver) - before) / (time.monotonic() - started)
            figures = {"nodes": args.nodes, "apiserver_cpu_share_heartbeats": round(share, 3),
                       "apiserver_rss_mib": round(rss_mib(apiserver), 1),
                       "hollow_process_rss_mib": round(rss_mib(hollow.pid), 1)}

            created = time.monotonic()
            cluster.kubectl("create", "deployment", "bench", "--image=busybox:1.36", f"--replicas={args.replicas}")

            def available() -> bool:
                status = cluster.get_json("deployment", "bench").get("status", {})
                return status.get("availableReplicas", 0) >= args.replicas

            wait_for(available, 300, f"{args.replicas} available replicas")
            figures.update(replicas=args.replicas, deployment_available_s=round(time.monotonic() - created, 1))
            print(json.dumps(figures))
        finally:
            os.killpg(hollow.pid, signal.SIGTERM)
            hollow.wait(60)
            stop_server(cluster)


if __name__ == "__main__":
    main()
