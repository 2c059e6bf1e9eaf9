"""On-disk records of the runc runtime, the pidfd reaper, sysctl paths, and the cgroup mount table."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from kubelite.kubelet.runtime import cgroups, reaper
from kubelite.kubelet.runtime.base import ContainerState, DNSConfig, PortMapping, SandboxConfig, SandboxState
from kubelite.kubelet.runtime.namespaces import sysctl_path
from kubelite.kubelet.runtime.state import ContainerRecord, SandboxRecord, StateStore


def test_records_round_trip(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.open()
    dns = DNSConfig(["10.0.0.10"], ["prod.svc"], ["ndots:5"])
    config = SandboxConfig(name="web", namespace="prod", uid="u1", dns=dns,
                           port_mappings=[PortMapping(80, 8080)], labels={"app": "web"}, sysctls={"net.a": "1"})
    sandbox = SandboxRecord(id="s1", config=config, state=SandboxState.READY, created_at=5, dir="/d",
                            cgroup_parent="/kubelite/podu1", ip="10.1.0.2", namespaces={"net": "/run/netns/s1"})
    container = ContainerRecord(id="c1", sandbox_id="s1", name="app", attempt=2, dir="/c", cgroups_path="/x/c1",
                                state=ContainerState.EXITED, created_at=7, exit_code=137, reason="OOMKilled",
                                labels={"k": "v"})
    store.save_sandbox(sandbox)
    store.save_container(container)
    assert store.load_sandboxes() == [sandbox]
    assert store.load_containers() == [container]
    assert isinstance(store.load_sandboxes()[0].config.dns, DNSConfig)
    assert sorted(p.name for p in (tmp_path / "sandboxes").iterdir()) == ["s1.json"], "no temporary file left"
    store.delete_sandbox("s1")
    store.delete_container("c1")
    store.delete_container("c1")
    assert store.load_sandboxes() == [] and store.load_containers() == []


def test_sysctl_names_map_to_proc() -> None:
    assert sysctl_path("net.ipv4.ip_forward") == Path("/proc/sys/net/ipv4/ip_forward")
    assert sysctl_path("net/ipv4/conf/eth0.100/forwarding") == Path("/proc/sys/net/ipv4/conf/eth0.100/forwarding")


def test_cgroup_hierarchies_are_found() -> None:
    found = cgroups.hierarchies()
    assert found, "this machine mounts cgroups"
    for path in found.values():
        assert (path / "cgroup.procs").exists()


def spawn(*argv: str) -> int:
    """A child process known only by its pid (no subprocess object that would reap it)."""
    return os.posix_spawn(argv[0], list(argv), os.environ)


async def test_pidfd_watch_reports_exit_codes_and_signals() -> None:
    results: list[int | None] = []
    done = asyncio.Event()

    def record(code: int | None) -> None:
        results.append(code)
        if len(results) == 2:
            done.set()

    exiting = spawn("/bin/sh", "-c", "exit 3")
    sleeping = spawn("/bin/sleep", "60")
    watches = [reaper.ProcessWatch(exiting, record), reaper.ProcessWatch(sleeping, record)]
    assert reaper.start_time(sleeping) > 0
    watches[1].send_signal(9)
    await asyncio.wait_for(done.wait(), 10)
    assert sorted(results) == [3, 137]
    assert all(w.fd == -1 for w in watches)
    assert reaper.start_time(exiting) == reaper.start_time(sleeping) == 0, "reaped: gone from /proc"
    assert len(reaper.boot_id()) == 36
