"""The CRI-shaped runtime interface the kubelet talks to: RuntimeService verbs as async methods over dataclasses."""

from __future__ import annotations

import abc
import asyncio
import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable


class SandboxState(enum.StrEnum):
    """CRI PodSandboxState."""

    READY = "SANDBOX_READY"
    NOTREADY = "SANDBOX_NOTREADY"


class ContainerState(enum.StrEnum):
    """CRI ContainerState."""

    CREATED = "CONTAINER_CREATED"
    RUNNING = "CONTAINER_RUNNING"
    EXITED = "CONTAINER_EXITED"
    UNKNOWN = "CONTAINER_UNKNOWN"


class MountPropagation(enum.StrEnum):
    """CRI MountPropagation: private, host-to-container (rslave) or bidirectional (rshared)."""

    PRIVATE = "PROPAGATION_PRIVATE"
    HOST_TO_CONTAINER = "PROPAGATION_HOST_TO_CONTAINER"
    BIDIRECTIONAL = "PROPAGATION_BIDIRECTIONAL"


class ContainerEventType(enum.StrEnum):
    """CRI ContainerEventType, as GetContainerEvents streams them for the evented PLEG."""

    CREATED = "CONTAINER_CREATED_EVENT"
    STARTED = "CONTAINER_STARTED_EVENT"
    STOPPED = "CONTAINER_STOPPED_EVENT"
    DELETED = "CONTAINER_DELETED_EVENT"


class RuntimeServiceError(Exception):
    """A runtime call failed (CRI's Unknown/Internal)."""


class NotFoundError(RuntimeServiceError, KeyError):
    """No sandbox or container with that id (CRI's NotFound)."""


class FailedPreconditionError(RuntimeServiceError):
    """The object is not in a state that allows the call, e.g. starting a running container."""


@runtime_checkable
class RootfsImage(Protocol):
    """An unpacked image as the image store hands it over: layer directories bottom-first and its OCI config.

    `config` is the OCI image configuration document; its `config` member (Entrypoint, Cmd, Env, WorkingDir, User,
    StopSignal) is read, or the dict itself when it holds those keys directly.
    """

    layer_dirs: list[Path]
    config: dict[str, Any]


@dataclass(slots=True)
class PortMapping:
    """A hostPort: traffic to host_ip:host_port goes to the pod's container_port."""

    container_port: int
    host_port: int = 0
    protocol: str = "TCP"
    host_ip: str = ""


@dataclass(slots=True)
class DNSConfig:
    """What the pod's /etc/resolv.conf says."""

    servers: list[str] = field(default_factory=list)
    searches: list[str] = field(default_factory=list)
    options: list[str] = field(default_factory=list)


@dataclass(slots=True)
class SandboxConfig:
    """CRI PodSandboxConfig: the pod's identity and what its containers share."""

    name: str
    namespace: str
    uid: str
    attempt: int = 0
    hostname: str = ""
    log_directory: str = ""
    """Where container logs go: /var/log/pods/<namespace>_<name>_<uid>."""
    host_network: bool = False
    host_pid: bool = False
    host_ipc: bool = False
    share_process_namespace: bool = False
    """One PID namespace for all containers of the pod (NamespaceMode POD), held by a pause process."""
    dns: DNSConfig | None = None
    """None: the host's /etc/resolv.conf."""
    port_mappings: list[PortMapping] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    cgroup_parent: str = ""
    """The pod's cgroup (cgroupfs path); empty: /kubelite/pod<uid>."""
    privileged: bool = False
    """Some container of the pod is privileged (CRI runtimes then make the sandbox privileged too)."""
    sysctls: dict[str, str] = field(default_factory=dict)
    """Namespaced sysctls (net.*, kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.*) set in the pod's namespaces."""


@dataclass(slots=True)
class SandboxStatus:
    """CRI PodSandboxStatus: the sandbox's config, state and network."""

    id: str
    config: SandboxConfig
    state: SandboxState
    created_at: int
    """Nanoseconds since the epoch."""
    ip: str = ""
    netns_path: str = ""


@dataclass(slots=True)
class Mount:
    """A host path bind-mounted into the container."""

    host_path: str
    container_path: str
    readonly: bool = False
    propagation: MountPropagation = MountPropagation.PRIVATE


@dataclass(slots=True)
class Device:
    """A host device node made available in the container."""

    host_path: str
    container_path: str = ""
    permissions: str = "rwm"


@dataclass(slots=True)
class LinuxResources:
    """CRI LinuxContainerResources; zero means unset."""

    cpu_shares: int = 0
    cpu_quota: int = 0
    cpu_period: int = 0
    memory_limit_in_bytes: int = 0
    oom_score_adj: int = 0
    cpuset_cpus: str = ""
    cpuset_mems: str = ""
    hugepage_limits: dict[str, int] = field(default_factory=dict)
    """Bytes of huge pages by page size (2MB, 1GB)."""


@dataclass(slots=True)
class Capabilities:
    """Capabilities to add to or drop from the default set; names with or without CAP_, or ALL."""

    add: list[str] = field(default_factory=list)
    drop: list[str] = field(default_factory=list)


@dataclass(slots=True)
class SecurityProfile:
    """CRI SecurityProfile: Unconfined, RuntimeDefault, or Localhost with the profile file's path."""

    type: str = "Unconfined"
    localhost_ref: str = ""


@dataclass(slots=True)
class SecurityContext:
    """CRI LinuxContainerSecurityContext (no SELinux or AppArmor profiles)."""

    run_as_user: int | None = None
    run_as_username: str = ""
    run_as_group: int | None = None
    supplemental_groups: list[int] = field(default_factory=list)
    privileged: bool = False
    capabilities: Capabilities = field(default_factory=Capabilities)
    readonly_rootfs: bool = False
    no_new_privs: bool = False
    masked_paths: list[str] | None = None
    """None: the runtime's defaults (/proc/kcore, ...); [] unmasks everything (procMount Unmasked)."""
    readonly_paths: list[str] | None = None
    seccomp: SecurityProfile = field(default_factory=SecurityProfile)
    pid_target: str = ""
    """The id of a container whose PID namespace this one joins (NamespaceMode TARGET: an ephemeral container with
    a targetContainerName)."""


@dataclass(slots=True)
class ContainerConfig:
    """CRI ContainerConfig with the image handed over unpacked."""

    name: str
    image: RootfsImage
    image_name: str = ""
    """The image reference the pod asked for, reported back in ContainerStatus.image."""
    attempt: int = 0
    command: list[str] = field(default_factory=list)
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    working_dir: str = ""
    mounts: list[Mount] = field(default_factory=list)
    devices: list[Device] = field(default_factory=list)
    tty: bool = False
    stdin: bool = False
    stdin_once: bool = False
    log_path: str = ""
    """Relative to the sandbox's log_directory, e.g. c/0.log; empty: no log file."""
    resources: LinuxResources = field(default_factory=LinuxResources)
    security: SecurityContext = field(default_factory=SecurityContext)
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class ContainerStatus:
    """CRI ContainerStatus; timestamps in nanoseconds since the epoch, 0 when not reached."""

    id: str
    sandbox_id: str
    name: str
    attempt: int
    state: ContainerState
    created_at: int
    started_at: int = 0
    finished_at: int = 0
    exit_code: int = 0
    reason: str = ""
    """Completed, Error, OOMKilled, or Unknown when the exit code was lost (the agent restarted meanwhile)."""
    message: str = ""
    image: str = ""
    log_path: str = ""
    """Absolute path of the container's log file, empty when it has none."""
    pid: int = 0
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class ContainerStats:
    """CRI ContainerStats from the container's cgroups, for /stats/summary."""

    container_id: str
    timestamp: int
    cpu_usage_core_nanoseconds: int
    memory_working_set_bytes: int
    memory_usage_bytes: int


@dataclass(slots=True)
class ContainerEvent:
    """A container's lifecycle change, so the kubelet learns of exits at once (like the evented PLEG)."""

    container_id: str
    sandbox_id: str
    type: ContainerEventType
    timestamp: int


@dataclass(slots=True)
class RuntimeVersion:
    """What the node reports as containerRuntimeVersion: <name>://<version>."""

    name: str
    version: str


class StreamSession(abc.ABC):
    """A running exec or attach: stdin to write, stdout/stderr to read (b"" at EOF), a tty to resize."""

    @abc.abstractmethod
    async def write_stdin(self, data: bytes) -> None:
        """Send bytes to the process's stdin (or its terminal)."""

    @abc.abstractmethod
    async def close_stdin(self) -> None:
        """Signal end of input: close the pipe, or send ^D to a terminal."""

    @abc.abstractmethod
    async def read_stdout(self, n: int = 65536) -> bytes:
        """Up to n bytes of output (a terminal's output for tty sessions); b"" at end."""

    @abc.abstractmethod
    async def read_stderr(self, n: int = 65536) -> bytes:
        """Up to n bytes of error output; always b"" for tty sessions (the terminal merges both)."""

    @abc.abstractmethod
    async def resize(self, width: int, height: int) -> None:
        """Set the terminal size (columns, rows); no-op without a tty."""

    @abc.abstractmethod
    async def wait(self) -> int:
        """The exit code: of the exec'd process, or of the container for attach."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Detach and release the session's resources; an exec'd process still running is killed."""


class NetworkPlugin(Protocol):
    """Gives a pod's network namespace its interfaces and address; a host-network pod never reaches it."""

    async def setup(self, sandbox_id: str, netns_path: str, config: SandboxConfig) -> str:
        """Plumb the namespace (lo is already up) and return the pod's IP."""
        ...

    async def teardown(self, sandbox_id: str, netns_path: str, config: SandboxConfig) -> None:
        """Release what setup allocated; idempotent."""
        ...


class LoopbackNetwork:
    """A network plugin that adds nothing: a pod has only its loopback (tests, or a node without a pod network)."""

    async def setup(self, sandbox_id: str, netns_path: str, config: SandboxConfig) -> str:
        """No interfaces beyond lo, hence no pod IP."""
        return ""

    async def teardown(self, sandbox_id: str, netns_path: str, config: SandboxConfig) -> None:
        """Nothing to release."""


class RuntimeService(abc.ABC):
    """The CRI RuntimeService verbs the kubelet needs, async, on dataclasses instead of protobuf."""

    @abc.abstractmethod
    async def start(self) -> None:
        """Load what a previous instance left (sandboxes, running containers) before serving calls."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop watching and copying; containers keep running for the next instance to adopt."""

    @abc.abstractmethod
    async def version(self) -> RuntimeVersion:
        """The runtime's name and version."""

    @abc.abstractmethod
    async def run_pod_sandbox(self, config: SandboxConfig) -> str:
        """Create the pod's shared namespaces and network; return the sandbox id."""

    @abc.abstractmethod
    async def stop_pod_sandbox(self, sandbox_id: str) -> None:
        """Kill the sandbox's containers and release its network (idempotent)."""

    @abc.abstractmethod
    async def remove_pod_sandbox(self, sandbox_id: str) -> None:
        """Stop the sandbox if needed and remove it with its containers (idempotent)."""

    @abc.abstractmethod
    async def pod_sandbox_status(self, sandbox_id: str) -> SandboxStatus:
        """The sandbox's status, or NotFoundError."""

    @abc.abstractmethod
    async def list_pod_sandboxes(self, state: SandboxState | None = None) -> list[SandboxStatus]:
        """Every sandbox, or those in the given state."""

    @abc.abstractmethod
    async def create_container(self, sandbox_id: str, config: ContainerConfig, sandbox_config: SandboxConfig) -> str:
        """Create (not start) a container in a ready sandbox; return its id."""

    @abc.abstractmethod
    async def start_container(self, container_id: str) -> None:
        """Start a created container."""

    @abc.abstractmethod
    async def stop_container(self, container_id: str, timeout_s: float) -> None:
        """Send the stop signal (SIGTERM unless the image says otherwise), SIGKILL after timeout_s; wait for exit."""

    @abc.abstractmethod
    async def remove_container(self, container_id: str) -> None:
        """Kill the container if it runs and remove everything of it but its log (idempotent)."""

    @abc.abstractmethod
    async def container_status(self, container_id: str) -> ContainerStatus:
        """The container's status, or NotFoundError."""

    @abc.abstractmethod
    async def list_containers(self, sandbox_id: str | None = None,
                              state: ContainerState | None = None) -> list[ContainerStatus]:
        """Containers, optionally only of one sandbox and/or in one state."""

    @abc.abstractmethod
    async def reopen_container_log(self, container_id: str) -> None:
        """Reopen the log file (after someone rotated it by renaming)."""

    @abc.abstractmethod
    async def exec_sync(self, container_id: str, cmd: list[str], timeout_s: float = 0) -> tuple[int, bytes, bytes]:
        """Run cmd in the container and return (exit code, stdout, stderr); TimeoutError after timeout_s (> 0)."""

    @abc.abstractmethod
    async def exec(self, container_id: str, cmd: list[str], tty: bool = False, stdin: bool = False) -> StreamSession:
        """Start cmd in the container and return its stream session."""

    @abc.abstractmethod
    async def attach(self, container_id: str, stdin: bool = False) -> StreamSession:
        """Attach to the running container's main process: its output from now on and, if it has one, its stdin."""

    @abc.abstractmethod
    async def port_forward(self, sandbox_id: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A TCP connection to 127.0.0.1:port inside the pod's network namespace."""

    @abc.abstractmethod
    async def container_stats(self, container_id: str) -> ContainerStats:
        """CPU and memory usage of the container from its cgroups."""

    @abc.abstractmethod
    def subscribe_events(self) -> asyncio.Queue[ContainerEvent]:
        """A queue that receives every container event from now on, until unsubscribe_events."""

    @abc.abstractmethod
    def unsubscribe_events(self, queue: asyncio.Queue[ContainerEvent]) -> None:
        """Stop feeding a queue from subscribe_events."""
