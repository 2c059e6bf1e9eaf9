"""The node agent's memory figure (idle RSS) depends on what it imports: optional parts stay unloaded."""

from __future__ import annotations

import json
import subprocess
import sys

AGENT_IMPORTS = ("import json, sys; import kubelite.cli.main, kubelite.kubelet.agent, kubelite.kubelet.eviction, "
                 "kubelite.kubelet.node; print(json.dumps(sorted(sys.modules)))")


def test_agent_does_not_load_optional_parts() -> None:
    """HTTP/2 (gRPC probes, CRI), the hollow node and every API kind's schema are loaded only when used."""
    out = subprocess.run([sys.executable, "-c", AGENT_IMPORTS], capture_output=True, text=True, check=True).stdout
    loaded = set(json.loads(out))
    unwanted = {"h2", "kubelite.kubelet.grpcchannel", "kubelite.kubelet.grpcprobe", "kubelite.kubelet.hollow",
                "kubelite.kubelet.runtime.cri", "kubelite.api.kinds.builtin", "kubelite.api.kinds.core"}
    assert loaded & unwanted == set()
