"""What the runc runtime records so that a new agent process finds its sandboxes and containers again.

One file per sandbox and per container, replaced atomically (a temporary file, then rename) at each save. They live
on the run directory, a tmpfs: a save costs microseconds, so the event loop makes it itself, and the records go with
a reboot as the containers do (CRI-O, too, forgets its containers after a reboot); pods then start afresh.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from kubelite.kubelet.runtime.base import (
    ContainerState,
    DNSConfig,
    PortMapping,
    SandboxConfig,
    SandboxState,
)


@dataclass(slots=True)
class SandboxRecord:
    """A sandbox: its config, state, IP and the paths of its pinned namespaces and shared files."""

    id: str
    config: SandboxConfig
    state: SandboxState
    created_at: int
    dir: str
    """Holds the hostname, hosts and resolv.conf files."""
    cgroup_parent: str
    hostname: str = ""
    ip: str = ""
    files: dict[str, str] = field(default_factory=dict)
    """Container path -> host file shared by all containers (/etc/hosts, ...)."""
    namespaces: dict[str, str] = field(default_factory=dict)
    """Pinned namespace files by kind (net, ipc, uts)."""
    shm_path: str = ""
    """The pod's /dev/shm (a tmpfs mount), empty with host IPC."""
    pause_id: str = ""
    """The pause container holding a shared PID namespace, if any."""
    network_ready: bool = False


@dataclass(slots=True)
class ContainerRecord:
    """A container: identity, where its bundle and log are, and its lifecycle as last seen."""

    id: str
    sandbox_id: str
    name: str
    attempt: int
    dir: str
    """Holds the bundle (config.json, rootfs mount point), runc's log and the stdio FIFOs: under the run directory,
    in memory, as containerd keeps its task bundles under /run."""
    cgroups_path: str
    state: ContainerState
    created_at: int
    layer: str = ""
    """The writable layer on disk (the overlay's upper and work directories); none for a pause container."""
    image: str = ""
    log_path: str = ""
    tty: bool = False
    stdin: bool = False
    stdin_once: bool = False
    stop_signal: int = 15
    host_pid: bool = False
    started_at: int = 0
    finished_at: int = 0
    exit_code: int = 0
    reason: str = ""
    message: str = ""
    pid: int = 0
    pid_start: int = 0
    """The init process's start time (clock ticks after boot): tells it from a later process with the same pid."""
    boot_id: str = ""
    cleaned: bool = False
    """runc's state, the cgroups and the rootfs mount are gone (done right after the exit)."""
    pause: bool = False
    """A sandbox's pause process, not a pod's container."""
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)


def sandbox_config_from_dict(data: dict[str, Any]) -> SandboxConfig:
    """Rebuild a SandboxConfig (with its nested DNS config and port mappings) from its JSON form."""
    data = dict(data)
    data["dns"] = DNSConfig(**data["dns"]) if data.get("dns") else None
    data["port_mappings"] = [PortMapping(**p) for p in data.get("port_mappings", [])]
    return SandboxConfig(**data)


def _encode(record: SandboxRecord | ContainerRecord) -> bytes:
    """A record as JSON (orjson serializes the dataclasses, nested ones and enums included)."""
    return orjson.dumps(record)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


class StateStore:
    """sandboxes/<id>.json and containers/<id>.json under a directory of the run directory."""

    def __init__(self, root: Path):
        self.root = root
        self.sandboxes = root / "sandboxes"
        self.containers = root / "containers"

    def open(self) -> None:
        """Make the directories (once the run directory's tmpfs is mounted)."""
        self.sandboxes.mkdir(parents=True, exist_ok=True)
        self.containers.mkdir(parents=True, exist_ok=True)

    def save_sandbox(self, record: SandboxRecord) -> None:
        """Save a sandbox record."""
        _write_atomic(self.sandboxes / f"{record.id}.json", _encode(record))

    def save_container(self, record: ContainerRecord) -> None:
        """Save a container record."""
        _write_atomic(self.containers / f"{record.id}.json", _encode(record))

    def delete_sandbox(self, sandbox_id: str) -> None:
        """Forget a sandbox (idempotent)."""
        (self.sandboxes / f"{sandbox_id}.json").unlink(missing_ok=True)

    def delete_container(self, container_id: str) -> None:
        """Forget a container (idempotent)."""
        (self.containers / f"{container_id}.json").unlink(missing_ok=True)

    @staticmethod
    def _load(directory: Path) -> list[dict[str, Any]]:
        return [orjson.loads(path.read_bytes()) for path in directory.glob("*.json")]

    def load_sandboxes(self) -> list[SandboxRecord]:
        """Every sandbox record, oldest first."""
        records = []
        for data in self._load(self.sandboxes):
            data["config"] = sandbox_config_from_dict(data["config"])
            data["state"] = SandboxState(data["state"])
            records.append(SandboxRecord(**data))
        return sorted(records, key=lambda r: r.created_at)

    def load_containers(self) -> list[ContainerRecord]:
        """Every container record, oldest first."""
        records = []
        for data in self._load(self.containers):
            data["state"] = ContainerState(data["state"])
            records.append(ContainerRecord(**data))
        return sorted(records, key=lambda r: r.created_at)
