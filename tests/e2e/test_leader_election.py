"""Two schedulers and two controller-managers: one of each leads; killing a leader hands over within 20 s."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.e2e.conftest import API_ONLY, Cluster, free_port, start_server, stop_server
from tests.e2e.test_workloads import agent, eventually, stop_agent

HANDOVER_LIMIT = 20.0


def _component(cluster: Cluster, name: str, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "kubelite", name, "--kubeconfig", str(cluster.kubeconfig)],
                            stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)


def _holder(cluster: Cluster, lease: str) -> str:
    result = cluster.kubectl("get", "lease", "-n", "kube-system", lease, "-o", "json", check=False)
    return json.loads(result.stdout)["spec"].get("holderIdentity", "") if result.returncode == 0 else ""


def _leader(procs: dict[Path, subprocess.Popen[bytes]], identity: str) -> tuple[Path, subprocess.Popen[bytes]]:
    """The process whose log says it became leader under this identity."""
    for log, proc in procs.items():
        if f"{identity} became leader" in log.read_text():
            return log, proc
    raise AssertionError(f"no process logged leadership as {identity}")


def _available(cluster: Cluster, name: str) -> int:
    return cluster.get_json("deployment", name).get("status", {}).get("availableReplicas", 0)


def test_killing_leaders_hands_over_to_standbys(tmp_path: Path) -> None:
    cluster = start_server(tmp_path, free_port(), *API_ONLY)
    node = agent(cluster, "node-0")
    procs: dict[str, dict[Path, subprocess.Popen[bytes]]] = {"scheduler": {}, "controller-manager": {}}
    try:
        for name, group in procs.items():
            for replica in ("a", "b"):
                log = tmp_path / f"{name}-{replica}.log"
                group[log] = _component(cluster, name, log)
        leases = {"scheduler": "kube-scheduler", "controller-manager": "kube-controller-manager"}
        eventually(lambda: all(_holder(cluster, lease) for lease in leases.values()), 30, "both leases held")
        cluster.kubectl("create", "deployment", "web", "--image=busybox:1.36", "--replicas=2")
        eventually(lambda: _available(cluster, "web") == 2, 60, "2 available replicas")

        old = {name: _holder(cluster, lease) for name, lease in leases.items()}
        for name, identity in old.items():
            _, leader = _leader(procs[name], identity)
            os.killpg(leader.pid, signal.SIGKILL)
            leader.wait(10)
        killed = time.monotonic()
        eventually(lambda: all(_holder(cluster, lease) not in ("", old[name]) for name, lease in leases.items()),
                   HANDOVER_LIMIT, "standbys took both leases")
        assert time.monotonic() - killed <= HANDOVER_LIMIT
        for name, lease in leases.items():
            _leader(procs[name], _holder(cluster, lease))

        cluster.kubectl("scale", "deployment/web", "--replicas=4")
        eventually(lambda: _available(cluster, "web") == 4, 60, "the new leaders scale to 4")
    finally:
        for group in procs.values():
            for proc in group.values():
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGTERM)
                    proc.wait(20)
        stop_agent(node)
        stop_server(cluster)
