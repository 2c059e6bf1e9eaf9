"""The embedded container runtime: CRI-shaped sandboxes and containers run by runc, with the agent as their reaper.

- Sandbox: no pause container by default. The pod's network, IPC and UTS namespaces are created by a helper
  thread and pinned by bind mounts under <run_dir>/{netns,ipcns,utsns}/<id> (as CRI-O's pinns), so a pod costs
  no process and its namespaces outlive an agent restart. Only shareProcessNamespace needs a process: a pause
  container (busybox sh as PID 1, reaping orphans) holds the shared PID namespace.
- Container: an OCI bundle over an overlayfs rootfs, kept with runc's log and the stdio FIFOs on the run directory
  (a tmpfs) and only the writable layer on disk, as containerd lays them out (on this machine's ext4 every new
  inode costs); cgroups under the pod's cgroup (cgroupfs), `runc create` with FIFOs as stdout/stderr opened
  read-write by the container (so a writer never meets a missing reader); the agent copies the FIFOs into
  CRI-format logs, and reopens them after a restart.
- Exits: the agent is a child subreaper; each init is watched through a pidfd, its status read with
  waitid(P_PIDFD), or for an init adopted from a previous instance (no longer our child) from the kernel's process
  events. State lives in one JSON file per sandbox and per container, so a new instance adopts
  running containers without restarting them.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import resource
import secrets
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import orjson

from kubelite.kubelet.runtime import cgroups, namespaces, podfiles, reaper, rootfs, seccomp, spawn, syscalls
from kubelite.kubelet.runtime.base import (
    ContainerConfig,
    ContainerEvent,
    ContainerEventType,
    ContainerState,
    ContainerStats,
    ContainerStatus,
    FailedPreconditionError,
    LoopbackNetwork,
    NetworkPlugin,
    NotFoundError,
    RuntimeService,
    RuntimeVersion,
    SandboxConfig,
    SandboxState,
    SandboxStatus,
    StreamSession,
)
from kubelite.kubelet.runtime.bundle import (
    CAPABILITY_NAMES,
    HostInfo,
    SandboxContext,
    build_spec,
    exec_process,
    image_settings,
    pause_spec,
    stop_signal,
)
from kubelite.kubelet.runtime.exitevents import ExitEvents
from kubelite.kubelet.runtime.logs import DEFAULT_MAX_FILES, DEFAULT_MAX_SIZE, CriLogFile, Listener, Pump
from kubelite.kubelet.runtime.runccli import Runc, RuncError, find_runc
from kubelite.kubelet.runtime.state import ContainerRecord, SandboxRecord, StateStore
from kubelite.kubelet.runtime.stdio import Stdio, container_stdio, make_fifos, open_output, reopen_stdin
from kubelite.kubelet.runtime.streams import (
    AttachSession,
    ChunkQueue,
    PipeExecSession,
    TtyExecSession,
    kill_exec,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_LAYERS_DIR = Path("/var/lib/kubelite/agent/layers")
DEFAULT_RUN_DIR = Path("/run/kubelite")
DRAIN_TIMEOUT = 2.0
KILL_TIMEOUT = 30.0
ORPHAN_SWEEP = 5.0
UNKNOWN_EXIT_CODE = 255
UNKNOWN_REASON = "Unknown"


def _still_running(record: ContainerRecord) -> bool:
    """Whether the process a container record names is still that container's init (same boot, same start)."""
    return record.state != ContainerState.EXITED and record.boot_id == reaper.boot_id() and bool(
        record.pid_start) and reaper.start_time(record.pid) == record.pid_start


async def in_thread(fn: Callable[[], T]) -> T:
    """Blocking file work (creating files and directories, mounting) in a worker thread, off the event loop; a
    cancelled caller still waits for it to end, so that the caller's cleanup never runs beside it."""
    work = asyncio.ensure_future(asyncio.to_thread(fn))
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        await asyncio.wait([work])
        raise


def _write_pause_bundle(bundle: Path, spec: bytes) -> None:
    """The pause container's bundle: an empty rootfs with mount points for /proc, /dev and the busybox binary."""
    for sub in ("proc", "dev"):
        (bundle / "rootfs" / sub).mkdir(parents=True, exist_ok=True)
    (bundle / "rootfs" / "busybox").touch()
    (bundle / "config.json").write_bytes(spec)


def _remove_dirs(*paths: str) -> None:
    """Remove directory trees that may be gone already; an empty path names none."""
    for path in paths:
        if path:
            shutil.rmtree(path, ignore_errors=True)


def _remove_layers_but(layers_dir: Path, keep: set[str]) -> None:
    """Remove the writable layers of containers not in keep."""
    layers_dir.mkdir(parents=True, exist_ok=True)
    for layer in layers_dir.iterdir():
        if layer.name not in keep:
            shutil.rmtree(layer, ignore_errors=True)


def now_ns() -> int:
    """Now, in nanoseconds since the epoch."""
    return time.time_ns()


def host_info() -> HostInfo:
    """The agent's capability bounding set and RLIMIT_NOFILE hard limit: what containers may get at most."""
    bounding = 0
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapBnd:"):
            bounding = int(line.split()[1], 16)
    caps = [name for bit, name in enumerate(CAPABILITY_NAMES) if bounding >> bit & 1]
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    memory = cgroups.hierarchies().get("memory")
    swap = memory is not None and (memory / "memory.memsw.limit_in_bytes").exists()
    return HostInfo(capabilities=caps, nofile=(hard, hard), swap_accounting=swap, hugetlb=cgroups.hugetlb_available())


@dataclass
class _Live:
    """What the running agent holds for a container: its watch, log pumps, stdin and terminal, attach listeners."""

    watch: reaper.ProcessWatch | None = None
    pumps: list[Pump] = field(default_factory=list)
    log: CriLogFile | None = None
    listeners: list[Listener] = field(default_factory=list)
    stdin_fd: int = -1
    master_fd: int = -1
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    finishing: asyncio.Task[None] | None = None

    def close(self) -> None:
        """Stop watching and copying; close the agent's descriptors (the container keeps its own)."""
        if self.watch is not None:
            self.watch.close()
        for pump in self.pumps:
            pump.stop()
        if self.log is not None:
            self.log.close()
        for fd in (self.stdin_fd, self.master_fd):
            if fd >= 0:
                os.close(fd)
        self.stdin_fd = self.master_fd = -1


class RuncRuntime(RuntimeService):
    """RuntimeService on runc: see the module docstring for the design."""

    def __init__(self, layers_dir: Path = DEFAULT_LAYERS_DIR, run_dir: Path = DEFAULT_RUN_DIR,
                 network: NetworkPlugin | None = None, runc_binary: str | None = None, cgroup_root: str = "/kubelite",
                 log_max_size: int = DEFAULT_MAX_SIZE, log_max_files: int = DEFAULT_MAX_FILES,
                 pause_binary: str = "/usr/bin/busybox", orphan_sweep_s: float = ORPHAN_SWEEP):
        self.layers_dir = Path(layers_dir)
        self.run_dir = Path(run_dir)
        self.network: NetworkPlugin = network or LoopbackNetwork()
        self.runc = Runc(runc_binary or find_runc(), self.run_dir / "runc")
        self.cgroup_root = "/" + cgroup_root.strip("/")
        self.log_max_size = log_max_size
        self.log_max_files = log_max_files
        self.pause_binary = pause_binary
        self.orphan_sweep_s = orphan_sweep_s
        self.store = StateStore(self.run_dir / "state")
        self.host: HostInfo | None = None
        self._sandboxes: dict[str, SandboxRecord] = {}
        self._containers: dict[str, ContainerRecord] = {}
        self._live: dict[str, _Live] = {}
        self._subscribers: list[asyncio.Queue[ContainerEvent]] = []
        self._sweeper: asyncio.Task[None] | None = None
        self._exits: ExitEvents | None = None
        self._version: RuntimeVersion | None = None

    # ---- lifecycle of the runtime itself

    async def start(self) -> None:
        """Become the subreaper, load the state a previous instance left, adopt its running containers, and remove
        writable layers no record names (their containers went with a reboot, which emptied the run directory)."""
        syscalls.set_child_subreaper(True)
        self.host = host_info()
        self.runc.root.mkdir(parents=True, exist_ok=True)
        self.store.open()
        for sandbox in self.store.load_sandboxes():
            self._sandboxes[sandbox.id] = sandbox
            if sandbox.state == SandboxState.READY and not all(
                    namespaces.is_pinned(Path(p)) for p in sandbox.namespaces.values()):
                sandbox.state = SandboxState.NOTREADY
                self.store.save_sandbox(sandbox)
        records = self.store.load_containers()
        running = [record.pid for record in records if _still_running(record)]
        self._exits = ExitEvents.open(running) if running else None
        for record in records:
            self._containers[record.id] = record
            try:
                await self._adopt(record)
            except Exception:
                log.exception("could not adopt container %s", record.id)
        await asyncio.to_thread(_remove_layers_but, self.layers_dir, set(self._containers))
        self._sweeper = asyncio.create_task(self._sweep_orphans())

    async def close(self) -> None:
        """Stop watching and copying; containers keep running for the next instance."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        for live in self._live.values():
            if live.finishing is not None and not live.finishing.done():
                with contextlib.suppress(Exception):
                    await live.finishing
            live.close()
        self._live.clear()
        if self._exits is not None:
            self._exits.close()

    async def version(self) -> RuntimeVersion:
        """runc's version, e.g. runc://1.1.5."""
        if self._version is None:
            words = (await spawn.run([self.runc.binary, "--version"], stdout=spawn.PIPE)).stdout.decode().split()
            self._version = RuntimeVersion("runc", words[2].split("+")[0] if len(words) > 2 else "unknown")
        return self._version

    # ---- events

    def subscribe_events(self) -> asyncio.Queue[ContainerEvent]:
        """A queue fed with every container event from now on."""
        queue: asyncio.Queue[ContainerEvent] = asyncio.Queue()
        self._subscribers.append(queue)
        return queue

    def unsubscribe_events(self, queue: asyncio.Queue[ContainerEvent]) -> None:
        """Stop feeding the queue."""
        with contextlib.suppress(ValueError):
            self._subscribers.remove(queue)

    def _emit(self, record: ContainerRecord, kind: ContainerEventType) -> None:
        if record.pause:
            return
        event = ContainerEvent(record.id, record.sandbox_id, kind, now_ns())
        for queue in self._subscribers:
            queue.put_nowait(event)

    # ---- sandboxes

    def _sandbox(self, sandbox_id: str) -> SandboxRecord:
        try:
            return self._sandboxes[sandbox_id]
        except KeyError:
            raise NotFoundError(f"sandbox {sandbox_id} not found") from None

    async def run_pod_sandbox(self, config: SandboxConfig) -> str:
        """Pin the pod's namespaces, write its shared files, call the network plugin, and (shared PID) start
        the pause container."""
        podfiles.check_sysctls(config)
        sandbox_id = secrets.token_hex(32)
        directory = self.run_dir / "sandboxes" / sandbox_id
        await in_thread(lambda: directory.mkdir(parents=True))
        hostname = os.uname().nodename if config.host_network else (config.hostname or config.name)
        record = SandboxRecord(id=sandbox_id, config=config, state=SandboxState.NOTREADY, created_at=now_ns(),
                               dir=str(directory), hostname=hostname,
                               cgroup_parent=config.cgroup_parent or f"{self.cgroup_root}/pod{config.uid}")
        kinds = ([] if config.host_network else ["net", "uts"]) + ([] if config.host_ipc else ["ipc"])
        record.namespaces = {kind: str(self.run_dir / f"{kind}ns" / sandbox_id) for kind in kinds}
        self._sandboxes[sandbox_id] = record
        self.store.save_sandbox(record)
        try:
            await namespaces.pin_namespaces({k: Path(p) for k, p in record.namespaces.items()}, hostname,
                                            config.sysctls)
            shm = self.run_dir / "shm" / sandbox_id
            record.shm_path = "/dev/shm" if config.host_ipc else await in_thread(lambda: podfiles.mount_shm(shm))
            if not config.host_network:
                record.network_ready = True
                self.store.save_sandbox(record)
                record.ip = await self.network.setup(sandbox_id, record.namespaces["net"], config)
            ip = record.ip
            record.files = await in_thread(lambda: podfiles.write_files(directory, config, hostname, ip))
            if config.share_process_namespace and not config.host_pid:
                record.pause_id = await self._start_pause(record)
            record.state = SandboxState.READY
            self.store.save_sandbox(record)
        except BaseException:
            with contextlib.suppress(Exception):
                await self.remove_pod_sandbox(sandbox_id)
            raise
        return sandbox_id

    async def stop_pod_sandbox(self, sandbox_id: str) -> None:
        """Kill the sandbox's containers, tear its network down and release its namespaces (idempotent)."""
        record = self._sandboxes.get(sandbox_id)
        if record is None:
            return
        members = [c for c in self._containers.values() if c.sandbox_id == sandbox_id]
        await asyncio.gather(*(self._kill(c.id) for c in members if not c.pause))
        await asyncio.gather(*(self._kill(c.id) for c in members if c.pause))
        if record.network_ready:
            await self.network.teardown(sandbox_id, record.namespaces["net"], record.config)
            record.network_ready = False
        namespaces.unpin_namespaces([Path(p) for p in record.namespaces.values()])
        podfiles.unmount_shm(record.shm_path)
        record.state = SandboxState.NOTREADY
        self.store.save_sandbox(record)

    async def remove_pod_sandbox(self, sandbox_id: str) -> None:
        """Stop the sandbox, remove its containers, its pod cgroup when empty, and its files (idempotent)."""
        record = self._sandboxes.get(sandbox_id)
        if record is None:
            return
        await self.stop_pod_sandbox(sandbox_id)
        members = [c.id for c in self._containers.values() if c.sandbox_id == sandbox_id]
        await asyncio.gather(*(self._remove(cid) for cid in members))
        if not any(s.cgroup_parent == record.cgroup_parent for s in self._sandboxes.values() if s.id != sandbox_id):
            cgroups.remove(record.cgroup_parent)
        await asyncio.to_thread(shutil.rmtree, record.dir, True)
        self.store.delete_sandbox(sandbox_id)
        self._sandboxes.pop(sandbox_id, None)

    def _sandbox_status(self, record: SandboxRecord) -> SandboxStatus:
        return SandboxStatus(id=record.id, config=record.config, state=record.state, created_at=record.created_at,
                             ip=record.ip, netns_path=record.namespaces.get("net", ""))

    async def pod_sandbox_status(self, sandbox_id: str) -> SandboxStatus:
        """The sandbox's state, IP and config."""
        return self._sandbox_status(self._sandbox(sandbox_id))

    async def list_pod_sandboxes(self, state: SandboxState | None = None) -> list[SandboxStatus]:
        """Sandboxes, oldest first, optionally in one state."""
        return [self._sandbox_status(s) for s in self._sandboxes.values() if state is None or s.state == state]

    def _context(self, record: SandboxRecord) -> SandboxContext:
        config = record.config
        kinds: dict[str, str] = {kind: path for kind, path in record.namespaces.items()}
        if record.pause_id:
            kinds["pid"] = f"/proc/{self._containers[record.pause_id].pid}/ns/pid"
        elif not config.host_pid:
            kinds["pid"] = ""
        return SandboxContext(
            hostname=record.hostname, namespaces=kinds, files=dict(record.files), shm=record.shm_path,
            sandbox_id=record.id, pod_name=config.name, pod_namespace=config.namespace,
            pod_uid=config.uid)

    async def _start_pause(self, sandbox: SandboxRecord) -> str:
        pause_id = secrets.token_hex(32)
        directory = self.run_dir / "containers" / pause_id
        record = ContainerRecord(id=pause_id, sandbox_id=sandbox.id, name="POD", attempt=0, dir=str(directory),
                                 cgroups_path=f"{sandbox.cgroup_parent}/{pause_id}", state=ContainerState.CREATED,
                                 created_at=now_ns(), pause=True, host_pid=False)
        context = self._context(sandbox)
        context.namespaces["pid"] = ""
        bundle = directory / "bundle"
        spec = orjson.dumps(pause_spec(self.pause_binary, context, record.cgroups_path))
        await in_thread(lambda: _write_pause_bundle(bundle, spec))
        self._containers[pause_id] = record
        self.store.save_container(record)
        live = self._live[pause_id] = _Live()
        try:
            null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
            try:
                record.pid, _ = await self.runc.create(pause_id, bundle, directory / "runc.log", (null, null, null))
            finally:
                os.close(null)
            self._watch(record, live)
            await self.runc.start(pause_id, directory / "runc.log", live.exited)
        except BaseException:
            await self._remove(pause_id)
            raise
        record.state = ContainerState.RUNNING
        record.started_at = now_ns()
        self.store.save_container(record)
        return pause_id

    # ---- containers

    def _container(self, container_id: str) -> ContainerRecord:
        record = self._containers.get(container_id)
        if record is None or record.pause:
            raise NotFoundError(f"container {container_id} not found")
        return record

    async def create_container(self, sandbox_id: str, config: ContainerConfig, sandbox_config: SandboxConfig) -> str:
        """Mount the rootfs, write the bundle, `runc create` with the log FIFOs; the init waits for start."""
        assert self.host is not None, "start() the runtime first"
        sandbox = self._sandbox(sandbox_id)
        if sandbox.state != SandboxState.READY:
            raise FailedPreconditionError(f"sandbox {sandbox_id} is not ready")
        profile = config.security.seccomp
        localhost = (await asyncio.to_thread(seccomp.read_profile, Path(profile.localhost_ref))
                     if profile.type == "Localhost" else None)
        container_id = secrets.token_hex(32)
        directory = self.run_dir / "containers" / container_id
        image = image_settings(config.image.config)
        log_path = ""
        if config.log_path:
            log_path = str(Path(sandbox.config.log_directory or "/") / config.log_path)
        record = ContainerRecord(
            id=container_id, sandbox_id=sandbox_id, name=config.name, attempt=config.attempt, dir=str(directory),
            cgroups_path=f"{sandbox.cgroup_parent}/{container_id}", state=ContainerState.CREATED,
            created_at=now_ns(), layer=str(self.layers_dir / container_id), image=config.image_name,
            log_path=log_path, tty=config.tty, stdin=config.stdin, stdin_once=config.stdin_once,
            stop_signal=stop_signal(image), host_pid=sandbox.config.host_pid,
            labels=dict(config.labels), annotations=dict(config.annotations))
        context = self._context(sandbox)
        if config.security.pid_target:
            context.namespaces["pid"] = f"/proc/{self._running(config.security.pid_target).pid}/ns/pid"
        self._containers[container_id] = record
        live = self._live[container_id] = _Live()
        stdio: Stdio | None = None
        try:
            await in_thread(lambda: self._write_bundle(config, context, record, localhost))
            stdio = container_stdio(directory, config.tty, config.stdin, config.stdin_once)
            live.stdin_fd = stdio.agent_stdin
            console = self.run_dir / "console" / f"{secrets.token_hex(8)}.sock" if config.tty else None
            self.store.save_container(record)
            record.pid, live.master_fd = await self.runc.create(container_id, directory / "bundle",
                                                                directory / "runc.log", stdio.container, console)
            self._watch(record, live)
            self._start_pumps(record, live)
            if config.tty and config.stdin:
                live.stdin_fd = os.dup(live.master_fd)
        except BaseException:
            if stdio is not None:
                stdio.close()
            await self._remove(container_id, announce=False)
            raise
        stdio.close()
        self.store.save_container(record)
        self._emit(record, ContainerEventType.CREATED)
        return container_id

    def _write_bundle(self, config: ContainerConfig, context: SandboxContext, record: ContainerRecord,
                      localhost: dict[str, Any] | None) -> None:
        """Mount the rootfs, write config.json (with the Localhost seccomp profile's content, if any), make the stdio
        FIFOs and the log's directory (for a worker thread)."""
        assert self.host is not None
        directory, layer = Path(record.dir), Path(record.layer)
        bundle = directory / "bundle"
        bundle.mkdir(parents=True)
        rootfs.mount_overlay(config.image.layer_dirs, layer / "upper", layer / "work", bundle / "rootfs")
        image = image_settings(config.image.config)
        user = rootfs.resolve_user(bundle / "rootfs", str(image.get("User") or ""), config.security)
        devices = rootfs.host_devices() if config.security.privileged else rootfs.requested_devices(config.devices)
        spec = build_spec(config, context, user, self.host, cgroups_path=record.cgroups_path, devices=devices,
                          seccomp_profile=localhost)
        (bundle / "config.json").write_bytes(orjson.dumps(spec))
        make_fifos(directory, config.tty, config.stdin)
        if record.log_path:
            Path(record.log_path).parent.mkdir(parents=True, exist_ok=True)

    def _start_pumps(self, record: ContainerRecord, live: _Live) -> None:
        """Copy the container's output into its log file (appending) and to attach listeners."""
        live.log = CriLogFile(Path(record.log_path), self.log_max_size, self.log_max_files) if record.log_path \
            else None
        if record.tty:
            if live.master_fd >= 0:
                live.pumps.append(Pump(os.dup(live.master_fd), "stdout", live.log, live.listeners, tty=True))
            return
        for stream, fd in open_output(Path(record.dir)):
            live.pumps.append(Pump(fd, stream, live.log, live.listeners))

    def _watch(self, record: ContainerRecord, live: _Live) -> None:
        live.watch = reaper.ProcessWatch(record.pid, lambda code: self._exited(record.id, code))
        record.pid_start = reaper.start_time(record.pid)
        record.boot_id = reaper.boot_id()

    def _exited(self, container_id: str, code: int | None) -> None:
        live = self._live.get(container_id)
        if live is not None:
            live.finishing = asyncio.create_task(self._finish(container_id, code))

    async def _finish(self, container_id: str, code: int | None) -> None:
        """Record an exit: drain the logs, tell an OOM kill, then clean runc's state, cgroups and rootfs."""
        record = self._containers[container_id]
        live = self._live[container_id]
        pending = [p.done for p in live.pumps if not p.done.done()]
        if pending:
            await asyncio.wait(pending, timeout=DRAIN_TIMEOUT)
        oom = cgroups.oom_kills(record.cgroups_path) > 0
        if code is None:
            record.exit_code, record.reason = (137, "OOMKilled") if oom else (UNKNOWN_EXIT_CODE, UNKNOWN_REASON)
            record.message = "" if oom else "the exit code was lost: the agent restarted while the container ran"
        else:
            record.exit_code = code
            record.reason = "OOMKilled" if oom else ("Completed" if code == 0 else "Error")
        record.state = ContainerState.EXITED
        record.finished_at = now_ns()
        self.store.save_container(record)
        self._emit(record, ContainerEventType.STOPPED)
        if record.pause:
            sandbox = self._sandboxes.get(record.sandbox_id)
            if sandbox is not None and sandbox.state == SandboxState.READY:
                sandbox.state = SandboxState.NOTREADY
                self.store.save_sandbox(sandbox)
        try:
            await self._clean(record)
        finally:
            for pump in live.pumps:
                pump.stop()
            if live.log is not None:
                live.log.close()
                live.log = None
            live.exited.set()

    async def _clean(self, record: ContainerRecord) -> None:
        """Remove runc's state and the cgroups (`runc delete --force`), unmount the rootfs (idempotent)."""
        if record.cleaned:
            return
        directory = Path(record.dir)
        await self.runc.delete(record.id, directory / "runc.log")
        rootfs.unmount(directory / "bundle" / "rootfs")
        record.cleaned = True
        if record.id in self._containers:
            self.store.save_container(record)

    async def _adopt(self, record: ContainerRecord) -> None:
        """Take over a container a previous instance left: watch it again (its exit code then comes from the
        process events) and resume its logs, or, when it ended meanwhile, record the exit (its code is lost) and
        clean up."""
        live = self._live[record.id] = _Live()
        if record.state == ContainerState.EXITED:
            live.exited.set()
            if not record.cleaned:
                await self._clean(record)
            return
        alive = _still_running(record)
        if alive:
            try:
                live.watch = reaper.ProcessWatch(record.pid, lambda code: self._exited(record.id, code), self._exits)
            except ProcessLookupError:
                alive = False
        if not alive:
            await self._finish(record.id, None)
            return
        self._start_pumps(record, live)
        if record.stdin and not record.tty and not record.stdin_once:
            live.stdin_fd = reopen_stdin(Path(record.dir))
        if record.tty:
            log.warning("container %s has a terminal; its output is not logged after an agent restart", record.id)

    async def start_container(self, container_id: str) -> None:
        """Let the created init exec the container's command."""
        record = self._container(container_id)
        if record.state != ContainerState.CREATED:
            raise FailedPreconditionError(f"container {container_id} is {record.state}, not created")
        record.started_at = now_ns()
        try:
            await self.runc.start(container_id, Path(record.dir) / "runc.log", self._live[container_id].exited)
        except RuncError:
            record.started_at = 0
            raise
        if record.state == ContainerState.CREATED:
            record.state = ContainerState.RUNNING
            self.store.save_container(record)
            self._emit(record, ContainerEventType.STARTED)

    async def stop_container(self, container_id: str, timeout_s: float) -> None:
        """The stop signal, then SIGKILL after timeout_s; returns once the exit is recorded."""
        record = self._container(container_id)
        live = self._live.get(container_id)
        if record.state == ContainerState.EXITED or live is None or live.watch is None:
            return
        if timeout_s > 0 and record.state == ContainerState.RUNNING:
            live.watch.send_signal(record.stop_signal)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(live.exited.wait(), timeout_s)
                return
        await self._kill(container_id)

    async def _kill(self, container_id: str) -> None:
        record = self._containers[container_id]
        live = self._live.get(container_id)
        if record.state == ContainerState.EXITED or live is None or live.watch is None:
            return
        live.watch.send_signal(signal.SIGKILL)
        if record.host_pid:
            await self.runc.kill_all(container_id, Path(record.dir) / "runc.log")
        try:
            await asyncio.wait_for(live.exited.wait(), KILL_TIMEOUT)
        except TimeoutError:
            raise FailedPreconditionError(f"container {container_id} did not die within {KILL_TIMEOUT}s") from None

    async def remove_container(self, container_id: str) -> None:
        """Kill it if needed, then remove its runc state, cgroups, rootfs, bundle and FIFOs (not its log)."""
        record = self._containers.get(container_id)
        if record is None or record.pause:
            return
        await self._remove(container_id)

    async def _remove(self, container_id: str, announce: bool = True) -> None:
        record = self._containers.get(container_id)
        if record is None:
            return
        live = self._live.get(container_id)
        if live is not None and record.state != ContainerState.EXITED and live.watch is not None:
            await self._kill(container_id)
        if live is not None and live.finishing is not None:
            with contextlib.suppress(Exception):
                await live.finishing
        await self._clean(record)
        if live is not None:
            live.close()
        self._live.pop(container_id, None)
        self._containers.pop(container_id, None)
        await asyncio.to_thread(_remove_dirs, record.dir, record.layer)
        self.store.delete_container(container_id)
        if announce:
            self._emit(record, ContainerEventType.DELETED)

    def _status(self, record: ContainerRecord) -> ContainerStatus:
        return ContainerStatus(
            id=record.id, sandbox_id=record.sandbox_id, name=record.name, attempt=record.attempt, state=record.state,
            created_at=record.created_at, started_at=record.started_at, finished_at=record.finished_at,
            exit_code=record.exit_code, reason=record.reason, message=record.message, image=record.image,
            log_path=record.log_path, pid=record.pid if record.state != ContainerState.EXITED else 0,
            labels=dict(record.labels), annotations=dict(record.annotations))

    async def container_status(self, container_id: str) -> ContainerStatus:
        """The container's state, timestamps, exit code and reason."""
        return self._status(self._container(container_id))

    async def list_containers(self, sandbox_id: str | None = None,
                              state: ContainerState | None = None) -> list[ContainerStatus]:
        """Containers, oldest first, filtered by sandbox and/or state."""
        return [self._status(r) for r in self._containers.values()
                if not r.pause and (sandbox_id is None or r.sandbox_id == sandbox_id)
                and (state is None or r.state == state)]

    async def reopen_container_log(self, container_id: str) -> None:
        """Reopen the log file at its path (after someone renamed it away)."""
        self._container(container_id)
        live = self._live.get(container_id)
        if live is None or live.log is None:
            raise FailedPreconditionError(f"container {container_id} has no open log")
        live.log.reopen()

    async def container_stats(self, container_id: str) -> ContainerStats:
        """CPU time and memory (usage, working set) from the container's cgroups."""
        record = self._container(container_id)
        if record.state != ContainerState.RUNNING:
            raise FailedPreconditionError(f"container {container_id} is not running")
        cpu, used, working_set = await asyncio.to_thread(cgroups.usage, record.cgroups_path)
        return ContainerStats(container_id, now_ns(), cpu, working_set, used)

    # ---- exec, attach, port-forward

    def _running(self, container_id: str) -> ContainerRecord:
        record = self._container(container_id)
        if record.state != ContainerState.RUNNING:
            raise FailedPreconditionError(f"container {container_id} is not running")
        return record

    def _exec_files(self, record: ContainerRecord, cmd: list[str], tty: bool) -> tuple[Path, Path]:
        directory = Path(record.dir)
        process = orjson.loads((directory / "bundle" / "config.json").read_bytes())["process"]
        name = secrets.token_hex(8)
        process_file = directory / f"exec-{name}.json"
        process_file.write_bytes(orjson.dumps(exec_process(process, cmd, tty)))
        return process_file, directory / f"exec-{name}.pid"

    async def exec_sync(self, container_id: str, cmd: list[str], timeout_s: float = 0) -> tuple[int, bytes, bytes]:
        """Run a command in the container (as its own user, with its env) and collect its output."""
        record = self._running(container_id)
        process_file, pid_file = self._exec_files(record, cmd, False)
        try:
            running = asyncio.ensure_future(spawn.run(
                self.runc.argv(Path(record.dir) / "runc.log", "exec", "--process", str(process_file), "--pid-file",
                               str(pid_file), container_id), stdout=spawn.PIPE, stderr=spawn.PIPE))
            try:
                done = await asyncio.wait_for(asyncio.shield(running), timeout_s if timeout_s > 0 else None)
            except TimeoutError:
                kill_exec(pid_file)
                await running
                raise TimeoutError(f"command {cmd} timed out after {timeout_s}s") from None
            return done.returncode, done.stdout, done.stderr
        finally:
            process_file.unlink(missing_ok=True)
            pid_file.unlink(missing_ok=True)

    async def exec(self, container_id: str, cmd: list[str], tty: bool = False, stdin: bool = False) -> StreamSession:
        """Start a command in the container and stream its input and output."""
        record = self._running(container_id)
        process_file, pid_file = self._exec_files(record, cmd, tty)
        runc_log = Path(record.dir) / "runc.log"

        def cleanup() -> None:
            process_file.unlink(missing_ok=True)
            pid_file.unlink(missing_ok=True)

        args = ["exec", "--process", str(process_file), "--pid-file", str(pid_file)]
        try:
            if not tty:
                proc = await asyncio.create_subprocess_exec(
                    *self.runc.argv(runc_log, *args, container_id),
                    stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
                return PipeExecSession(proc, pid_file, cleanup)
            console = self.run_dir / "console" / f"{secrets.token_hex(8)}.sock"
            master = await self.runc.create_process(runc_log, [*args, "--detach"], container_id, console)
            return TtyExecSession(master, int(pid_file.read_text()), cleanup)
        except BaseException:
            cleanup()
            raise

    async def attach(self, container_id: str, stdin: bool = False) -> StreamSession:
        """Listen to the container's output from now on; with stdin, write into its stdin FIFO or terminal."""
        record = self._running(container_id)
        live = self._live[container_id]
        out, err = ChunkQueue(), ChunkQueue()

        def listener(stream: str, chunk: bytes) -> None:
            (err if stream == "stderr" else out).put(chunk)

        live.listeners.append(listener)

        def detach() -> None:
            with contextlib.suppress(ValueError):
                live.listeners.remove(listener)

        def close_container_stdin() -> None:
            if record.stdin_once and not record.tty and live.stdin_fd >= 0:
                os.close(live.stdin_fd)
                live.stdin_fd = -1

        async def exit_code() -> int:
            await live.exited.wait()
            return record.exit_code

        if stdin and not record.stdin:
            raise FailedPreconditionError(f"container {container_id} was not created with stdin")
        stdin_fd = live.stdin_fd if stdin else -1
        return AttachSession(out, err, stdin_fd, live.master_fd, record.tty, close_container_stdin, exit_code,
                             detach)

    async def port_forward(self, sandbox_id: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Connect to 127.0.0.1:port in the pod's network namespace (a socket made there by a helper thread)."""
        record = self._sandbox(sandbox_id)
        netns = record.namespaces.get("net")
        if record.config.host_network:
            return await asyncio.open_connection("127.0.0.1", port)
        if record.state != SandboxState.READY or not netns:
            raise FailedPreconditionError(f"sandbox {sandbox_id} is not ready")
        sock = await namespaces.socket_in_netns(Path(netns))
        sock.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        except OSError:
            sock.close()
            raise
        return await asyncio.open_connection(sock=sock)

    # ---- orphans of host-PID containers

    async def _sweep_orphans(self) -> None:
        while True:
            await asyncio.sleep(self.orphan_sweep_s)
            sessions = [r.pid for r in self._containers.values() if r.host_pid and r.pid]
            if sessions:
                keep = [live.watch.pid for live in self._live.values() if live.watch is not None]
                try:
                    reaper.reap_orphans(sessions, keep)
                except OSError as error:
                    if error.errno != errno.ENOENT:
                        log.warning("reaping orphans failed: %s", error)

