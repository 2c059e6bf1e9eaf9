"""What the runc runtime keeps on disk so a new agent process finds its sandboxes and containers again.

One file per sandbox and per container. Each save appends the whole record as one JSON line and the last complete
line wins: an append allocates no inode, where replacing the file (write a temporary file, then rename) allocates
one per save, which on a busy ext4 costs milliseconds. A file that grew to COMPACT_AFTER lines is replaced
atomically by its last record. The runtime writes through one background thread, in the order it asks, so that a
stalled file operation never stops the event loop.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
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
    in memory like containerd's task bundles under /run, since all of it is made again for a new container."""
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


COMPACT_AFTER = 16
"""Saves appended to a record's file before it is rewritten with the last one only."""


def _line(record: SandboxRecord | ContainerRecord) -> bytes:
    """A record as one JSON line (orjson serializes the dataclasses, nested ones and enums included)."""
    return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _append(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def _last_record(path: Path) -> tuple[dict[str, Any], int]:
    """The last complete record of a file (a line cut short by a crash is skipped) and its line count towards
    COMPACT_AFTER: all of it when the file does not end with that record, so that the next save replaces the file
    instead of appending to a cut line."""
    content = path.read_bytes()
    lines = content.splitlines()
    for index in range(len(lines) - 1, -1, -1):
        try:
            record = orjson.loads(lines[index])
        except orjson.JSONDecodeError:
            continue
        intact = index == len(lines) - 1 and content.endswith(b"\n")
        return record, len(lines) if intact else COMPACT_AFTER
    raise ValueError(f"no complete record in {path}")


class StateStore:
    """sandboxes/<id>.json and containers/<id>.json under a state directory.

    The save and delete methods work right away; their async twins (write, erase) take the record's content at the
    call and return once the writer thread has done the work after everything asked before.
    """

    def __init__(self, root: Path):
        self.root = root
        self.sandboxes = root / "sandboxes"
        self.containers = root / "containers"
        self.sandboxes.mkdir(parents=True, exist_ok=True)
        self.containers.mkdir(parents=True, exist_ok=True)
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kubelite-state")
        self._lines: dict[Path, int] = {}

    async def _in_writer(self, work: Callable[[], None]) -> None:
        await asyncio.get_running_loop().run_in_executor(self._writer, work)

    def _save(self, path: Path, data: bytes) -> None:
        if self._lines.get(path, 0) >= COMPACT_AFTER:
            _write_atomic(path, data)
            self._lines[path] = 1
        else:
            _append(path, data)
            self._lines[path] = self._lines.get(path, 0) + 1

    def _delete(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        self._lines.pop(path, None)

    def save_sandbox(self, record: SandboxRecord) -> None:
        """Save a sandbox record."""
        self._save(self.sandboxes / f"{record.id}.json", _line(record))

    def save_container(self, record: ContainerRecord) -> None:
        """Save a container record."""
        self._save(self.containers / f"{record.id}.json", _line(record))

    async def write_sandbox(self, record: SandboxRecord) -> None:
        """save_sandbox in the writer thread."""
        path, data = self.sandboxes / f"{record.id}.json", _line(record)
        await self._in_writer(lambda: self._save(path, data))

    async def write_container(self, record: ContainerRecord) -> None:
        """save_container in the writer thread."""
        path, data = self.containers / f"{record.id}.json", _line(record)
        await self._in_writer(lambda: self._save(path, data))

    async def erase_sandbox(self, sandbox_id: str) -> None:
        """delete_sandbox in the writer thread (after any write of it still queued)."""
        await self._in_writer(lambda: self.delete_sandbox(sandbox_id))

    async def erase_container(self, container_id: str) -> None:
        """delete_container in the writer thread (after any write of it still queued)."""
        await self._in_writer(lambda: self.delete_container(container_id))

    def delete_sandbox(self, sandbox_id: str) -> None:
        """Forget a sandbox (idempotent)."""
        self._delete(self.sandboxes / f"{sandbox_id}.json")

    def delete_container(self, container_id: str) -> None:
        """Forget a container (idempotent)."""
        self._delete(self.containers / f"{container_id}.json")

    def _load(self, directory: Path) -> list[dict[str, Any]]:
        found = []
        for path in directory.glob("*.json"):
            data, self._lines[path] = _last_record(path)
            found.append(data)
        return found

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
