#!/usr/bin/env python3
"""Issue 3's scheduler figure: kubelite server without its scheduler, N hollow nodes, then the shared client
../shared/bench/schedbench.py creates the pods and our scheduler starts once they exist (bind_window_per_s).
Prints schedbench's JSON line plus the node count.

Usage: bench/scheduler_bench.py [--nodes 1000] [--pods 5000] [--shared ../shared/bench]
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

from tests.e2e.conftest import free_port, start_server, stop_server  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--pods", type=int, default=5000)
    parser.add_argument("--shared", default=str(ROOT.parent / "shared" / "bench"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kubelite-sched-") as tmp:
        data = Path(tmp)
        cluster = start_server(data, free_port(), "--disable-scheduler")
        kubelite = [sys.executable, "-m", "kubelite"]
        hollow = subprocess.Popen([*kubelite, "hollow-nodes", "--kubeconfig", str(cluster.kubeconfig), "--count",
                                   str(args.nodes), "--cpu", "32", "--memory", "256Gi"],
                                  stdout=(data / "hollow.log").open("ab"), stderr=subprocess.STDOUT,
                                  start_new_session=True)
        scheduler = None
        try:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                nodes = cluster.get_json("nodes")["items"]
                if len(nodes) >= args.nodes:
                    break
                time.sleep(2)
            bench = subprocess.Popen([sys.executable, os.path.join(args.shared, "schedbench.py"),
                                      str(cluster.kubeconfig), "--pods", str(args.pods)],
                                     stdout=subprocess.PIPE, text=True, cwd=args.shared)
            assert bench.stdout is not None
            last = ""
            for line in bench.stdout:
                last = line
                if "pods created" in line and scheduler is None:
                    scheduler = subprocess.Popen([*kubelite, "scheduler", "--kubeconfig", str(cluster.kubeconfig),
                                                  "--no-leader-elect"], stdout=(data / "scheduler.log").open("ab"),
                                                 stderr=subprocess.STDOUT)
            bench.wait()
            figures = json.loads(last)
            figures["nodes"] = args.nodes
            print(json.dumps(figures))
        finally:
            for proc in (scheduler, hollow):
                if proc is not None and proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(30)
            stop_server(cluster)


if __name__ == "__main__":
    main()
