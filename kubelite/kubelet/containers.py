"""From a pod's spec to the runtime's configs: the sandbox (identity, DNS, host namespaces, hostPorts) and each
container (command, resources as cgroup settings, security context), as the kubelet's kuberuntime does."""

from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path
from typing import Any

from kubelite.api.quantity import HUGEPAGES_PREFIX, parse_quantity
from kubelite.kubelet.envvars import ConfigError
from kubelite.kubelet.network.dnsfiles import hostname_and_domain
from kubelite.kubelet.runtime.base import (
    Capabilities,
    ContainerConfig,
    DNSConfig,
    LinuxResources,
    Mount,
    PortMapping,
    RootfsImage,
    SandboxConfig,
    SecurityContext,
    SecurityProfile,
)

Obj = dict[str, Any]
LOG_ROOT = "/var/log/pods"
CPU_PERIOD = 100_000
MIN_SHARES = 2
POD_NAME_LABEL = "io.kubernetes.pod.name"
POD_NAMESPACE_LABEL = "io.kubernetes.pod.namespace"
POD_UID_LABEL = "io.kubernetes.pod.uid"
CONTAINER_NAME_LABEL = "io.kubernetes.container.name"
INIT_LABEL = "io.kubelite.container.init"


def pod_log_dir(pod: Obj) -> str:
    meta = pod["metadata"]
    return f"{LOG_ROOT}/{meta['namespace']}_{meta['name']}_{meta['uid']}"


def sandbox_config(pod: Obj, dns: DNSConfig | None, attempt: int = 0) -> SandboxConfig:
    """The pod's sandbox: its names, log directory, host namespaces, DNS and hostPorts."""
    meta, spec = pod["metadata"], pod.get("spec") or {}
    hostname, _ = hostname_and_domain(pod)
    ports = [PortMapping(p["containerPort"], p["hostPort"], p.get("protocol", "TCP"), p.get("hostIP", ""))
             for c in spec.get("containers") or [] for p in c.get("ports") or [] if p.get("hostPort")]
    sysctls = {s["name"]: s["value"] for s in (spec.get("securityContext") or {}).get("sysctls") or []}
    privileged = any((c.get("securityContext") or {}).get("privileged")
                     for kind in ("initContainers", "containers", "ephemeralContainers") for c in spec.get(kind) or [])
    return SandboxConfig(
        name=meta["name"], namespace=meta["namespace"], uid=meta["uid"], attempt=attempt,
        hostname="" if spec.get("hostNetwork") else hostname, log_directory=pod_log_dir(pod),
        host_network=bool(spec.get("hostNetwork")), host_pid=bool(spec.get("hostPID")),
        host_ipc=bool(spec.get("hostIPC")), share_process_namespace=bool(spec.get("shareProcessNamespace")),
        dns=dns, port_mappings=ports, privileged=privileged, sysctls=sysctls,
        labels={POD_NAME_LABEL: meta["name"], POD_NAMESPACE_LABEL: meta["namespace"], POD_UID_LABEL: meta["uid"]},
        annotations=dict(meta.get("annotations") or {}))


def _quantity(resources: Obj, kind: str, name: str) -> Fraction | None:
    return parse_quantity((resources.get(kind) or {}).get(name))


def page_size(resource: str) -> str:
    """The cgroup's name for the page size of a hugepages-<size> resource: hugepages-2Mi -> 2MB, -1Gi -> 1GB."""
    size = float(parse_quantity(resource.removeprefix(HUGEPAGES_PREFIX)) or 0)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024:
            return f"{size:g}{unit}"
        size /= 1024
    return f"{size:g}PB"


def hugepage_limits(resources: Obj, page_sizes: Iterable[str]) -> dict[str, int]:
    """limits.hugepages-<size> per page size, and 0 for the node's other sizes: a container uses only the huge pages
    it asked for."""
    limits = resources.get("limits") or {}
    return {page_size(name): int(parse_quantity(limits.get(name)) or 0) for name in page_sizes}


def linux_resources(pod: Obj, container: Obj, machine_memory: int, page_sizes: Iterable[str] = ()) -> LinuxResources:
    """requests.cpu -> cpu shares, limits.cpu -> CFS quota, limits.memory -> memory limit, huge page limits, and the
    QoS class's OOM score adjustment (Burstable scaled by the memory request; the runtime clamps negatives on this
    machine). page_sizes: the node's hugepages-<size> resources."""
    resources = container.get("resources") or {}
    cpu_request = _quantity(resources, "requests", "cpu")
    cpu_limit = _quantity(resources, "limits", "cpu")
    memory_limit = _quantity(resources, "limits", "memory")
    memory_request = _quantity(resources, "requests", "memory")
    if cpu_request is None and cpu_limit is not None:
        cpu_request = cpu_limit
    shares = max(MIN_SHARES, int(cpu_request * 1024)) if cpu_request else MIN_SHARES
    quota = max(1000, int(cpu_limit * CPU_PERIOD)) if cpu_limit else 0
    qos = (pod.get("status") or {}).get("qosClass", "BestEffort")
    if qos == "Guaranteed":
        oom = -997
    elif qos == "BestEffort":
        oom = 1000
    else:
        request = int(memory_request or 0)
        oom = min(999, max(2, 1000 - (1000 * request) // max(machine_memory, 1)))
    return LinuxResources(cpu_shares=shares, cpu_quota=quota, cpu_period=CPU_PERIOD if quota else 0,
                          memory_limit_in_bytes=int(memory_limit or 0), oom_score_adj=oom,
                          hugepage_limits=hugepage_limits(resources, page_sizes))


def seccomp_profile(profile: Obj | None, seccomp_dir: Path) -> SecurityProfile:
    """A seccompProfile as the runtime's profile; a Localhost one names a file under seccomp_dir."""
    kind = (profile or {}).get("type") or "Unconfined"
    if kind != "Localhost":
        return SecurityProfile(kind)
    relative = str((profile or {}).get("localhostProfile") or "")
    if not relative or relative.startswith("/") or ".." in Path(relative).parts:
        raise ConfigError(f"localhostProfile {relative!r} must be a relative path inside {seccomp_dir}")
    return SecurityProfile("Localhost", str(seccomp_dir / relative))


def security_context(pod: Obj, container: Obj, seccomp_dir: Path) -> SecurityContext:
    """The container's security context over the pod's (runAsUser/Group, supplemental and fs groups,
    privileged, capabilities, read-only root, allowPrivilegeEscalation, seccompProfile)."""
    pod_sc = (pod.get("spec") or {}).get("securityContext") or {}
    sc = container.get("securityContext") or {}
    caps = sc.get("capabilities") or {}
    groups = [int(g) for g in pod_sc.get("supplementalGroups") or []]
    if pod_sc.get("fsGroup") is not None:
        groups.append(int(pod_sc["fsGroup"]))
    privileged = bool(sc.get("privileged"))
    return SecurityContext(
        run_as_user=sc.get("runAsUser", pod_sc.get("runAsUser")),
        run_as_group=sc.get("runAsGroup", pod_sc.get("runAsGroup")),
        supplemental_groups=groups, privileged=privileged,
        capabilities=Capabilities(add=list(caps.get("add") or []), drop=list(caps.get("drop") or [])),
        readonly_rootfs=bool(sc.get("readOnlyRootFilesystem")),
        no_new_privs=sc.get("allowPrivilegeEscalation") is False and not privileged,
        masked_paths=[] if sc.get("procMount") == "Unmasked" else None,
        seccomp=seccomp_profile(sc.get("seccompProfile") or pod_sc.get("seccompProfile"), seccomp_dir))


def run_as_non_root_error(pod: Obj, container: Obj, image: RootfsImage) -> str:
    """Why runAsNonRoot refuses this container ("" when it may run), as the kubelet verifies it."""
    pod_sc = (pod.get("spec") or {}).get("securityContext") or {}
    sc = container.get("securityContext") or {}
    if not sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")):
        return ""
    uid = sc.get("runAsUser", pod_sc.get("runAsUser"))
    if uid is None:
        config = image.config.get("config", image.config)
        user = str(config.get("User") or "").split(":")[0]
        if not user:
            return "container has runAsNonRoot and image will run as root"
        if not user.isdigit():
            return f"container has runAsNonRoot and image has non-numeric user ({user}), cannot verify user is non-root"
        uid = int(user)
    return "container's runAsUser breaks non-root policy" if int(uid) == 0 else ""


def container_config(pod: Obj, container: Obj, image: RootfsImage, attempt: int, env: dict[str, str],
                     mounts: list[Mount], machine_memory: int, seccomp_dir: Path,
                     init: bool = False, page_sizes: Iterable[str] = ()) -> ContainerConfig:
    """The runtime's ContainerConfig for one attempt of a container."""
    meta = pod["metadata"]
    return ContainerConfig(
        name=container["name"], image=image, image_name=container.get("image", ""), attempt=attempt,
        command=list(container.get("command") or []), args=list(container.get("args") or []), env=env,
        working_dir=container.get("workingDir", ""), mounts=mounts, tty=bool(container.get("tty")),
        stdin=bool(container.get("stdin")), stdin_once=bool(container.get("stdinOnce")),
        log_path=f"{container['name']}/{attempt}.log",
        resources=linux_resources(pod, container, machine_memory, page_sizes),
        security=security_context(pod, container, seccomp_dir),
        labels={POD_NAME_LABEL: meta["name"], POD_NAMESPACE_LABEL: meta["namespace"], POD_UID_LABEL: meta["uid"],
                CONTAINER_NAME_LABEL: container["name"], **({INIT_LABEL: "true"} if init else {})},
        annotations={"io.kubernetes.container.terminationMessagePath":
                     container.get("terminationMessagePath", "/dev/termination-log")})
