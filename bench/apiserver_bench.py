#!/usr/bin/env python3
"""Issue 2's figures: start a kubelite server on durable SQLite, measure its idle RSS, then run the
shared client (../shared/bench/apibench.py) against it. Prints one JSON line.

Usage: bench/apiserver_bench.py [--pods 3000] [--conc 50] [--watchers 100] [--shared ../shared/bench]
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

from tests.e2e.conftest import free_port, start_server, stop_server  # noqa: E402


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def apiserver_pid(server_pid: int) -> int:
    """The supervised `kubelite apiserver` child of the `kubelite server` process."""
    children = Path(f"/proc/{server_pid}/task/{server_pid}/children").read_text().split()
    for child in children:
        if b"apiserver" in Path(f"/proc/{child}/cmdline").read_bytes():
            return int(child)
    raise RuntimeError("no apiserver child process found")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pods", type=int, default=3000)
    parser.add_argument("--conc", type=int, default=50)
    parser.add_argument("--watchers", type=int, default=100)
    parser.add_argument("--shared", default=str(ROOT.parent / "shared" / "bench"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kubelite-bench-") as tmp:
        cluster = start_server(Path(tmp), free_port())
        try:
            pid = apiserver_pid(cluster.proc.pid)
            time.sleep(5)
            idle = rss_mb(pid)
            result = subprocess.run(
                [sys.executable, os.path.join(args.shared, "apibench.py"), str(cluster.kubeconfig),
                 "--pods", str(args.pods), "--conc", str(args.conc), "--watchers", str(args.watchers)],
                capture_output=True, text=True, cwd=args.shared, check=False)
            if result.returncode != 0:
                raise SystemExit(f"apibench failed:\n{result.stdout}\n{result.stderr}")
            figures = json.loads(result.stdout.strip().splitlines()[-1])
            figures["apiserver_idle_rss_mb"] = round(idle, 1)
            figures["apiserver_rss_after_mb"] = round(rss_mb(pid), 1)
            print(json.dumps(figures))
        finally:
            stop_server(cluster)


if __name__ == "__main__":
    main()
