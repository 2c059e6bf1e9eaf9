"""Acknowledged writes survive kill -9 of the server, and revisions keep growing after restart."""

from __future__ import annotations

import json
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.e2e.conftest import free_port, start_server, stop_server


def test_kill_9_keeps_every_acknowledged_write(tmp_path: Path) -> None:
    port = free_port()
    cluster = start_server(tmp_path, port)
    acknowledged: dict[str, str] = {}
    try:
        def create(i: int) -> tuple[str, str]:
            body = json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"durable-{i}"},
                               "data": {"i": str(i)}})
            status, obj = cluster.http("POST", "/api/v1/namespaces/default/configmaps", body)
            assert status == 201, obj
            return obj["metadata"]["name"], obj["metadata"]["resourceVersion"]

        with ThreadPoolExecutor(16) as pool:
            acknowledged = dict(pool.map(create, range(200)))
    finally:
        # SIGKILL the whole process group (supervisor and apiserver) right after the acknowledgements.
        stop_server(cluster, signal.SIGKILL)
    restarted = start_server(tmp_path, port)
    try:
        status, listed = restarted.http("GET", "/api/v1/namespaces/default/configmaps")
        assert status == 200
        found = {item["metadata"]["name"]: item["metadata"]["resourceVersion"] for item in listed["items"]}
        assert {name: found.get(name) for name in acknowledged} == acknowledged
        highest = max(int(rv) for rv in acknowledged.values())
        body = json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "after-restart"}})
        status, created = restarted.http("POST", "/api/v1/namespaces/default/configmaps", body)
        assert status == 201 and int(created["metadata"]["resourceVersion"]) > highest
    finally:
        stop_server(restarted)
