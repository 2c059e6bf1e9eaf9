"""`kubelite server` supervises its components: a crashed one is restarted, SIGTERM stops them all."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from tests.e2e.conftest import free_port, start_server, stop_server
from tests.e2e.test_workloads import eventually

COMPONENTS = ("apiserver", "scheduler", "controller-manager")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state != "Z"


def test_crashed_component_restarts_and_sigterm_stops_all(tmp_path: Path) -> None:
    cluster = start_server(tmp_path, free_port())
    try:
        eventually(lambda: all(cluster.component_pid(name) for name in COMPONENTS), 30, "all three components")
        pids = {name: cluster.component_pid(name) for name in COMPONENTS}
        os.kill(pids["scheduler"], signal.SIGKILL)
        eventually(lambda: cluster.component_pid("scheduler") not in (None, pids["scheduler"]), 30,
                   "a new scheduler process")
        assert cluster.component_pid("apiserver") == pids["apiserver"], "only the crashed component restarts"
        pids = {name: cluster.component_pid(name) for name in COMPONENTS}
        cluster.proc.send_signal(signal.SIGTERM)
        cluster.proc.wait(30)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(_alive(pid) for pid in pids.values() if pid):
            time.sleep(0.2)
        assert not [name for name, pid in pids.items() if pid and _alive(pid)], "components outlived the server"
    finally:
        stop_server(cluster)
