"""The OCI runtime spec (config.json) of a container, built from its CRI config and its image's config.

Pure functions: everything read from the host or the rootfs (capability bounding set, rlimits, users, devices)
comes in as arguments, so the combination rules (Kubernetes command/args vs Entrypoint/Cmd, env, caps) are
testable without runc.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kubelite.kubelet.runtime import seccomp
from kubelite.kubelet.runtime.base import ContainerConfig, MountPropagation, SecurityContext

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CAPABILITY_NAMES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL", "CAP_SETGID",
    "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)
"""By capability number."""
DEFAULT_CAPABILITIES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID",
    "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL",
    "CAP_AUDIT_WRITE",
)
"""containerd's and Docker's default set."""
DEFAULT_MASKED_PATHS = (
    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
    "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
)
DEFAULT_READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
OCI_NAMESPACE = {"net": "network", "ipc": "ipc", "uts": "uts", "pid": "pid", "mount": "mount"}
PROPAGATION = {MountPropagation.PRIVATE: "rprivate", MountPropagation.HOST_TO_CONTAINER: "rslave",
               MountPropagation.BIDIRECTIONAL: "rshared"}
SIGNALS = {"SIGHUP": 1, "SIGINT": 2, "SIGQUIT": 3, "SIGKILL": 9, "SIGUSR1": 10, "SIGUSR2": 12, "SIGTERM": 15,
           "SIGWINCH": 28, "SIGPWR": 30}


@dataclass(slots=True)
class UserIds:
    """Who the container's process runs as."""

    uid: int = 0
    gid: int = 0
    additional_gids: list[int] = field(default_factory=list)


@dataclass(slots=True)
class HostInfo:
    """What the host allows: the agent's capability bounding set, its RLIMIT_NOFILE, swap accounting, huge page
    limits."""

    capabilities: list[str]
    nofile: tuple[int, int]
    swap_accounting: bool = False
    hugetlb: bool = False


@dataclass(slots=True)
class SandboxContext:
    """What a container takes from its pod: namespaces to join, shared files, the pod's /dev/shm."""

    hostname: str
    namespaces: dict[str, str]
    """By kind (net, ipc, uts, pid): a path to join, or "" for a new one; a kind left out is the host's."""
    files: dict[str, str] = field(default_factory=dict)
    """Container path -> host file (/etc/hostname, /etc/hosts, /etc/resolv.conf)."""
    shm: str = ""
    """Host directory bind-mounted at /dev/shm; empty: a private tmpfs."""
    sandbox_id: str = ""
    pod_name: str = ""
    pod_namespace: str = ""
    pod_uid: str = ""


def image_settings(image_config: dict[str, Any]) -> dict[str, Any]:
    """The runtime part of an OCI image config (Entrypoint, Cmd, Env, ...), whether nested under "config" or not."""
    inner = image_config.get("config")
    return inner if isinstance(inner, dict) else image_config


def process_args(command: list[str], args: list[str], image: dict[str, Any]) -> list[str]:
    """Kubernetes' rule: command replaces Entrypoint (and drops Cmd); args replace Cmd."""
    entrypoint = list(command) if command else list(image.get("Entrypoint") or [])
    cmd = list(args) if args or command else list(image.get("Cmd") or [])
    result = entrypoint + cmd
    if not result:
        raise ValueError("no command: neither the container nor its image says what to run")
    return result


def merge_env(image_env: list[str], env: dict[str, str], hostname: str) -> list[str]:
    """PATH default, HOSTNAME, then the image's variables, then the container's; later ones win."""
    merged: dict[str, str] = {}
    for item in [DEFAULT_PATH, f"HOSTNAME={hostname}", *image_env]:
        key, _, value = item.partition("=")
        merged[key] = value
    merged.update(env)
    return [f"{key}={value}" for key, value in merged.items()]


def normalize_capability(name: str) -> str:
    """NET_ADMIN, net_admin or CAP_NET_ADMIN -> CAP_NET_ADMIN; ALL stays ALL."""
    upper = name.upper()
    return upper if upper == "ALL" or upper.startswith("CAP_") else f"CAP_{upper}"


def capabilities(security: SecurityContext, bounding: list[str]) -> list[str]:
    """containerd's rule: the default set, ALL in add or drop first, then single adds and drops; within bounding."""
    if security.privileged:
        return [c for c in CAPABILITY_NAMES if c in bounding]
    add = [normalize_capability(c) for c in security.capabilities.add]
    drop = [normalize_capability(c) for c in security.capabilities.drop]
    caps = set(DEFAULT_CAPABILITIES)
    if "ALL" in add:
        caps = set(CAPABILITY_NAMES)
    if "ALL" in drop:
        caps = set()
    caps |= {c for c in add if c != "ALL"}
    caps -= set(drop)
    unknown = caps - set(CAPABILITY_NAMES)
    if unknown:
        raise ValueError(f"unknown capabilities: {sorted(unknown)}")
    return [c for c in CAPABILITY_NAMES if c in caps and c in bounding]


def stop_signal(image: dict[str, Any]) -> int:
    """The image's StopSignal (name or number), SIGTERM by default."""
    value = str(image.get("StopSignal") or "SIGTERM").upper()
    if value.isdigit():
        return int(value)
    return SIGNALS.get(value if value.startswith("SIG") else f"SIG{value}", 15)


def _base_mounts(privileged: bool) -> list[dict[str, Any]]:
    sys_mode = "rw" if privileged else "ro"
    return [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", sys_mode]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["nosuid", "noexec", "nodev", "relatime", sys_mode]},
    ]


def _mounts(config: ContainerConfig, sandbox: SandboxContext) -> list[dict[str, Any]]:
    security = config.security
    mounts = _base_mounts(security.privileged)
    user_targets = {m.container_path.rstrip("/") or "/" for m in config.mounts}
    if "/dev/shm" not in user_targets:
        if sandbox.shm:
            mounts.append({"destination": "/dev/shm", "type": "bind", "source": sandbox.shm,
                           "options": ["rbind", "rprivate", "nosuid", "nodev", "noexec"]})
        else:
            mounts.append({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
                           "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]})
    file_mode = "ro" if security.readonly_rootfs else "rw"
    for target, source in sorted(sandbox.files.items()):
        if target not in user_targets:
            mounts.append({"destination": target, "type": "bind", "source": source,
                           "options": ["rbind", "rprivate", file_mode]})
    for mount in sorted(config.mounts, key=lambda m: len(m.container_path.strip("/").split("/"))):
        if mount.propagation == MountPropagation.BIDIRECTIONAL and not security.privileged:
            raise ValueError(f"mount {mount.container_path}: bidirectional propagation needs a privileged container")
        mounts.append({"destination": mount.container_path, "type": "bind", "source": mount.host_path,
                       "options": ["rbind", PROPAGATION[mount.propagation], "ro" if mount.readonly else "rw"]})
    return mounts


def _namespaces(sandbox: SandboxContext) -> list[dict[str, str]]:
    namespaces = [{"type": "mount"}]
    for kind, path in sandbox.namespaces.items():
        namespaces.append({"type": OCI_NAMESPACE[kind], "path": path} if path else {"type": OCI_NAMESPACE[kind]})
    return namespaces


def _resources(config: ContainerConfig, host: HostInfo, device_rules: list[dict[str, Any]]) -> dict[str, Any]:
    res = config.resources
    cpu: dict[str, Any] = {}
    if res.cpu_shares:
        cpu["shares"] = res.cpu_shares
    if res.cpu_quota:
        cpu["quota"] = res.cpu_quota
    if res.cpu_period:
        cpu["period"] = res.cpu_period
    if res.cpuset_cpus:
        cpu["cpus"] = res.cpuset_cpus
    if res.cpuset_mems:
        cpu["mems"] = res.cpuset_mems
    resources: dict[str, Any] = {"devices": device_rules}
    if cpu:
        resources["cpu"] = cpu
    if res.memory_limit_in_bytes:
        memory: dict[str, Any] = {"limit": res.memory_limit_in_bytes}
        if host.swap_accounting:
            memory["swap"] = res.memory_limit_in_bytes
        resources["memory"] = memory
    if host.hugetlb and res.hugepage_limits:
        resources["hugepageLimits"] = [{"pageSize": size, "limit": limit}
                                       for size, limit in res.hugepage_limits.items()]
    return resources


def build_spec(config: ContainerConfig, sandbox: SandboxContext, user: UserIds, host: HostInfo, *,
               cgroups_path: str, devices: list[dict[str, Any]] | None = None,
               seccomp_profile: dict[str, Any] | None = None) -> dict[str, Any]:
    """The OCI runtime spec; devices are OCI linux.devices entries (all host devices for a privileged one),
    seccomp_profile the Localhost profile file's content when the container asks for one."""
    security = config.security
    image = image_settings(config.image.config)
    caps = capabilities(security, host.capabilities)
    devices = devices or []
    if security.privileged:
        device_rules: list[dict[str, Any]] = [{"allow": True, "access": "rwm"}]
    else:
        device_rules = [{"allow": False, "access": "rwm"}]
        device_rules += [{"allow": True, "type": d["type"], "major": d["major"], "minor": d["minor"],
                          "access": d.get("access", "rwm")} for d in devices]
    masked = [] if security.privileged else list(
        DEFAULT_MASKED_PATHS if security.masked_paths is None else security.masked_paths)
    readonly = [] if security.privileged else list(
        DEFAULT_READONLY_PATHS if security.readonly_paths is None else security.readonly_paths)
    propagations = {m.propagation for m in config.mounts}
    linux: dict[str, Any] = {
        "cgroupsPath": cgroups_path,
        "namespaces": _namespaces(sandbox),
        "resources": _resources(config, host, device_rules),
        "devices": [{k: v for k, v in d.items() if k != "access"} for d in devices],
        "maskedPaths": masked,
        "readonlyPaths": readonly,
    }
    if not security.privileged and security.seccomp.type == "RuntimeDefault":
        linux["seccomp"] = seccomp.runtime_default(caps)
    elif not security.privileged and security.seccomp.type == "Localhost" and seccomp_profile is not None:
        linux["seccomp"] = seccomp.localhost(seccomp_profile, caps)
    if MountPropagation.BIDIRECTIONAL in propagations:
        linux["rootfsPropagation"] = "rshared"
    elif MountPropagation.HOST_TO_CONTAINER in propagations:
        linux["rootfsPropagation"] = "rslave"
    annotations = {
        "io.kubernetes.cri.container-type": "container",
        "io.kubernetes.cri.container-name": config.name,
        "io.kubernetes.cri.sandbox-id": sandbox.sandbox_id,
        "io.kubernetes.cri.sandbox-name": sandbox.pod_name,
        "io.kubernetes.cri.sandbox-namespace": sandbox.pod_namespace,
        "io.kubernetes.cri.sandbox-uid": sandbox.pod_uid,
        "io.kubernetes.cri.image-name": config.image_name,
        **config.annotations,
    }
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": config.tty,
            "user": {"uid": user.uid, "gid": user.gid, "additionalGids": user.additional_gids},
            "args": process_args(config.command, config.args, image),
            "env": merge_env(list(image.get("Env") or []), config.env, sandbox.hostname),
            "cwd": config.working_dir or image.get("WorkingDir") or "/",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "rlimits": [{"type": "RLIMIT_NOFILE", "soft": host.nofile[0], "hard": host.nofile[1]}],
            "noNewPrivileges": security.no_new_privs and not security.privileged,
            "oomScoreAdj": max(0, min(1000, config.resources.oom_score_adj)),
        },
        "root": {"path": "rootfs", "readonly": security.readonly_rootfs},
        "mounts": _mounts(config, sandbox),
        "annotations": annotations,
        "linux": linux,
    }


def exec_process(process: dict[str, Any], cmd: list[str], tty: bool) -> dict[str, Any]:
    """The process of an exec: the container's own (user, env, caps, cwd) with another command."""
    result = dict(process, args=list(cmd), terminal=tty)
    result.pop("oomScoreAdj", None)
    if tty and not any(item.startswith("TERM=") for item in result.get("env", [])):
        result["env"] = [*result.get("env", []), "TERM=xterm"]
    return result


def pause_spec(busybox: str, sandbox: SandboxContext, cgroups_path: str) -> dict[str, Any]:
    """A pause process holding the pod's shared PID namespace and reaping its orphans: busybox's sh as PID 1."""
    script = "trap 'exit 0' TERM INT; while :; do sleep 2147483647 & wait; done"
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": ["/busybox", "sh", "-c", script],
            "env": [DEFAULT_PATH],
            "cwd": "/",
            "capabilities": {"bounding": [], "effective": [], "permitted": []},
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"]},
            {"destination": "/busybox", "type": "bind", "source": busybox, "options": ["rbind", "ro"]},
        ],
        "annotations": {"io.kubernetes.cri.container-type": "sandbox", "io.kubernetes.cri.sandbox-id":
                        sandbox.sandbox_id},
        "linux": {
            "cgroupsPath": cgroups_path,
            "namespaces": _namespaces(sandbox),
            "resources": {"devices": [{"allow": False, "access": "rwm"}], "cpu": {"shares": 2}},
            "maskedPaths": list(DEFAULT_MASKED_PATHS),
            "readonlyPaths": list(DEFAULT_READONLY_PATHS),
        },
    }
