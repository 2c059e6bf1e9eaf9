"""Paths that keep pod start cheap: runtime state files replaced atomically, helper processes spawned without forking
the agent (large stdin/stdout, reaped when cancelled), and nft runs shared by concurrent pod network set-ups."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest

from kubelite.kubelet.network import nat
from kubelite.kubelet.network.plugin import BridgeNetwork
from kubelite.kubelet.runtime import spawn
from kubelite.kubelet.runtime.base import ContainerState
from kubelite.kubelet.runtime.state import ContainerRecord, StateStore
from tests import netns
from tests.integration.test_network import hostport, pod_config


def record(exit_code: int) -> ContainerRecord:
    return ContainerRecord(id="c1", sandbox_id="s1", name="app", attempt=0, dir="/c", cgroups_path="/x/c1",
                           state=ContainerState.EXITED, created_at=7, exit_code=exit_code)


def zombie_children() -> list[str]:
    """This process's children that exited and were not reaped."""
    children = Path(f"/proc/self/task/{os.getpid()}/children").read_text().split()
    return [pid for pid in children if Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] == "Z"]


def hairpin_set(table: str) -> str:
    return subprocess.run(["nft", "list", "set", "ip", table, "hairpin"], capture_output=True, text=True,
                          check=True).stdout


def test_a_save_replaces_the_record_whole(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.open()
    for code in range(3):
        store.save_container(record(code))
    assert [p.name for p in (tmp_path / "containers").iterdir()] == ["c1.json"], "no temporary file left"
    leftover = tmp_path / "containers" / ".c1.json.tmp"
    leftover.write_bytes(b'{"id": "c1", "sandbox_id"')
    assert [r.exit_code for r in StateStore(tmp_path).load_containers()] == [2], "a save cut by a crash is ignored"
    store.delete_container("c1")
    assert StateStore(tmp_path).load_containers() == []


async def test_spawn_feeds_and_captures_more_than_a_pipe_holds() -> None:
    data = os.urandom(300_000)
    done = await spawn.run(["sh", "-c", "cat; echo err >&2; exit 3"], stdin=data, stdout=spawn.PIPE,
                           stderr=spawn.PIPE)
    assert (done.returncode, done.stdout, done.stderr) == (3, data, b"err\n")


async def test_cancelled_spawn_is_still_reaped() -> None:
    task = asyncio.ensure_future(spawn.run(["sleep", "0.3"], stdout=spawn.PIPE))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.5)
    assert zombie_children() == []


@pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces and nftables need root")
async def test_concurrent_setups_share_nft_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runs: list[str] = []
    real = nat.run_nft

    async def counting(script: str) -> None:
        runs.append(script)
        await real(script)

    monkeypatch.setattr(nat, "run_nft", counting)
    paths = [f"/run/netns/klprop-{os.getpid()}-{i}" for i in range(10)]
    for path in paths:
        netns.create(path)
    network = BridgeNetwork(tmp_path / "net", "10.90.0.0/24", "10.90.0.0/16", bridge="klprop0", table="klprop-net")
    try:
        plain = await network.setup("first", paths[0], None)
        assert len(runs) == 1, "the first pod puts the table in place"
        await network.setup("second", paths[1], None)
        assert len(runs) == 1, "a pod without hostPorts costs no nft run"
        ips = await asyncio.gather(*(network.setup(f"s{i}", paths[i], pod_config(
            f"s{i}", port_mappings=[hostport("TCP", 8080, 28080 + i)])) for i in range(2, 10)))
        assert 1 < len(runs) < 1 + 8, "concurrent pods' hostPort rules go in together"
        listing = hairpin_set("klprop-net")
        assert all(f"{ip} . {ip}" in listing for ip in ips), "pods with hostPorts reach themselves through them"
        assert plain not in listing
    finally:
        await network.destroy()
        for path in paths:
            netns.remove(path)
