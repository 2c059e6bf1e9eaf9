"""What a pod's containers share besides namespaces: hostname, hosts and resolv.conf files, a /dev/shm tmpfs,
and the check that its sysctls stay inside its own namespaces."""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

from kubelite.kubelet.runtime import syscalls
from kubelite.kubelet.runtime.base import SandboxConfig

SHM_SIZE = "65536k"
NET_SYSCTL = re.compile(r"^net[./]")
IPC_SYSCTL = re.compile(r"^(kernel[./](shm|msg|sem)|fs[./]mqueue[./])")
DEFAULT_HOSTS = ("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\n"
                 "fe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n")


def check_sysctls(config: SandboxConfig) -> None:
    """Only namespaced sysctls, and only in namespaces of the pod's own: anything else would change the host."""
    for name in config.sysctls:
        if NET_SYSCTL.match(name):
            if config.host_network:
                raise ValueError(f"sysctl {name} is not allowed with the host network")
        elif IPC_SYSCTL.match(name):
            if config.host_ipc:
                raise ValueError(f"sysctl {name} is not allowed with the host IPC namespace")
        else:
            raise ValueError(f"sysctl {name} is not namespaced")


def resolv_conf(config: SandboxConfig) -> str:
    """The pod's resolv.conf: from its DNS config, else the host's."""
    if config.dns is None:
        try:
            return Path("/etc/resolv.conf").read_text()
        except FileNotFoundError:
            return ""
    lines = [f"search {' '.join(config.dns.searches)}"] if config.dns.searches else []
    lines += [f"nameserver {server}" for server in config.dns.servers]
    lines += [f"options {' '.join(config.dns.options)}"] if config.dns.options else []
    return "\n".join(lines) + "\n"


def hosts_file(config: SandboxConfig, hostname: str, ip: str) -> str:
    """The pod's /etc/hosts: the host's with the host network, else localhost entries and the pod's own name."""
    if config.host_network:
        return Path("/etc/hosts").read_text()
    return DEFAULT_HOSTS + (f"{ip}\t{hostname}\n" if ip else "")


def write_files(directory: Path, config: SandboxConfig, hostname: str, ip: str) -> dict[str, str]:
    """Write hostname, hosts and resolv.conf; return them by the container path they are mounted at."""
    files = {"/etc/hostname": (directory / "hostname", hostname + "\n"),
             "/etc/hosts": (directory / "hosts", hosts_file(config, hostname, ip)),
             "/etc/resolv.conf": (directory / "resolv.conf", resolv_conf(config))}
    for path, content in files.values():
        path.write_text(content)
    return {target: str(path) for target, (path, _) in files.items()}


def mount_shm(path: Path) -> str:
    """A tmpfs for the pod's /dev/shm, shared by its containers like its IPC namespace."""
    path.mkdir(parents=True, exist_ok=True)
    syscalls.mount("shm", str(path), "tmpfs", syscalls.MS_NOSUID | syscalls.MS_NODEV | syscalls.MS_NOEXEC,
                   f"mode=1777,size={SHM_SIZE}")
    return str(path)


def unmount_shm(path: str) -> None:
    """Unmount and remove the pod's /dev/shm (idempotent; the host's own is left alone)."""
    if path and path != "/dev/shm":
        syscalls.umount(path, syscalls.MNT_DETACH)
        with contextlib.suppress(FileNotFoundError):
            os.rmdir(path)
