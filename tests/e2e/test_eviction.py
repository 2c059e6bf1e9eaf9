"""Node-pressure eviction with a real agent whose memory threshold is above what the machine has free."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.e2e.conftest import API_ONLY, free_port, start_server, stop_server
from tests.e2e.test_kubelet import eventually
from tests.images import busybox_image, push
from tests.registry import start_registry, stop_registry

NODE = "pressed"


def test_memory_pressure_evicts_a_pod(tmp_path: Path) -> None:
    registry = start_registry(tmp_path / "registry")
    push(registry.url, "busybox", "1.36", busybox_image())
    cluster = start_server(tmp_path, free_port(), *API_ONLY)
    agent = subprocess.Popen([sys.executable, "-m", "kubelite", "agent", "--kubeconfig", str(cluster.kubeconfig),
                              "--node-name", NODE, "--data-dir", str(tmp_path / "agent"),
                              "--eviction-hard", "memory.available<100000Gi"],
                             stdout=(tmp_path / "agent.log").open("ab"), stderr=subprocess.STDOUT,
                             start_new_session=True)
    try:
        conditions = eventually(lambda: cluster.get_json("node", NODE)["status"]["conditions"], 60, "the node")
        assert {c["type"]: c["status"] for c in conditions}["MemoryPressure"] == "True"
        image = f"{registry.url.removeprefix('http://')}/busybox:1.36"
        # No ServiceAccount token: this API-only server runs no controller-manager to make the default
        # ServiceAccount and the kube-root-ca.crt ConfigMap the token volume needs.
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "victim"}, "spec": {
            "nodeName": NODE, "terminationGracePeriodSeconds": 1, "automountServiceAccountToken": False,
            "containers": [{"name": "c", "image": image, "command": ["sleep", "3600"]}]}}
        cluster.kubectl("create", "-f", "-", input=json.dumps(pod))
        try:
            status = eventually(lambda: (lambda s: s if s.get("phase") == "Failed" else None)(
                cluster.get_json("pod", "victim")["status"]), 60, "the pod evicted")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; its status: {cluster.get_json('pod', 'victim')['status']}") from None
        assert status["reason"] == "Evicted" and "low on resource: memory" in status["message"]
        assert "Evicted" in cluster.kubectl("describe", "pod", "victim").stdout
    finally:
        cluster.kubectl("delete", "pod", "victim", "--wait=true", "--timeout=60s", check=False)
        os.killpg(agent.pid, signal.SIGTERM)
        agent.wait(30)
        stop_server(cluster)
        stop_registry(registry)
