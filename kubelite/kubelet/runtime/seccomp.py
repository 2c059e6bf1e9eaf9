"""Seccomp profiles as the OCI spec's linux.seccomp: the runtime's default (RuntimeDefault) and localhost profiles
read from a file in the Docker/OCI JSON format.

The default profile follows the container runtimes' defaults in effect rather than by copying their allowlist:
every syscall is allowed except those that widen the kernel's attack surface without being needed by ordinary
programs (kernel keyrings, module loading, kexec, userfaultfd, io_uring, ...) and those that only make sense with a
capability the container was not given (mount, new namespaces, reboot, setting the clock, ...); denied calls fail
with EPERM. clone3 fails with ENOSYS so that libc falls back to clone, whose namespace flags a filter can see.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import orjson

from kubelite.kubelet.runtime.base import RuntimeServiceError

EPERM, ENOSYS = 1, 38
ALWAYS_DENIED = (
    "add_key", "keyctl", "request_key", "kexec_load", "kexec_file_load", "create_module", "get_kernel_syms",
    "query_module", "nfsservctl", "uselib", "ustat", "sysfs", "_sysctl", "userfaultfd", "vm86", "vm86old",
    "io_uring_setup", "io_uring_enter", "io_uring_register", "lookup_dcookie", "swapon", "swapoff",
)
DENIED_WITHOUT = {
    "CAP_SYS_ADMIN": ("mount", "umount", "umount2", "mount_setattr", "move_mount", "open_tree", "fsopen", "fsconfig",
                      "fsmount", "fspick", "pivot_root", "setns", "unshare", "quotactl", "quotactl_fd",
                      "fanotify_init", "name_to_handle_at", "setdomainname", "sethostname"),
    "CAP_DAC_READ_SEARCH": ("open_by_handle_at",),
    "CAP_SYS_BOOT": ("reboot",),
    "CAP_SYS_MODULE": ("init_module", "finit_module", "delete_module"),
    "CAP_SYS_PACCT": ("acct",),
    "CAP_SYS_PTRACE": ("kcmp", "pidfd_getfd", "process_madvise", "process_vm_readv", "process_vm_writev"),
    "CAP_SYS_RAWIO": ("iopl", "ioperm"),
    "CAP_SYS_TIME": ("settimeofday", "stime", "clock_settime", "clock_adjtime"),
    "CAP_SYS_TTY_CONFIG": ("vhangup",),
    "CAP_SYS_NICE": ("mbind", "set_mempolicy", "move_pages"),
    "CAP_SYSLOG": ("syslog",),
    "CAP_BPF": ("bpf",),
    "CAP_PERFMON": ("perf_event_open",),
}
CLONE_NAMESPACE_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000)
"""CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET: clone with any of them needs CAP_SYS_ADMIN."""
ARCHITECTURES = {"x86_64": ("SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"),
                 "aarch64": ("SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM")}
DOCKER_ARCHES = {"x86_64": ("amd64", "x86_64", "x32", "386"), "aarch64": ("arm64", "aarch64", "arm")}


class SeccompError(RuntimeServiceError):
    """A localhost profile cannot be read or understood (the container fails with CreateContainerError)."""


def _architectures() -> list[str]:
    return list(ARCHITECTURES.get(platform.machine(), ()))


def runtime_default(capabilities: list[str]) -> dict[str, Any]:
    """The RuntimeDefault profile for a container with these capabilities (CAP_* names)."""
    held = set(capabilities)
    denied = [*ALWAYS_DENIED, *(name for cap, names in DENIED_WITHOUT.items() if cap not in held for name in names)]
    syscalls: list[dict[str, Any]] = [{"names": denied, "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM},
                                      {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS}]
    if "CAP_SYS_ADMIN" not in held:
        syscalls += [{"names": ["clone"], "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM,
                      "args": [{"index": 0, "value": flag, "valueTwo": flag, "op": "SCMP_CMP_MASKED_EQ"}]}
                     for flag in CLONE_NAMESPACE_FLAGS]
    return {"defaultAction": "SCMP_ACT_ALLOW", "architectures": _architectures(), "syscalls": syscalls}


def _applies(rule: dict[str, Any], held: set[str]) -> bool:
    """Docker's includes/excludes: all included capabilities held, no excluded one; this machine's arch."""
    arches = DOCKER_ARCHES.get(platform.machine(), ())
    includes, excludes = rule.get("includes") or {}, rule.get("excludes") or {}
    if not set(includes.get("caps") or []) <= held or held & set(excludes.get("caps") or []):
        return False
    if includes.get("arches") and not set(includes["arches"]) & set(arches):
        return False
    return not set(excludes.get("arches") or []) & set(arches)


def read_profile(path: Path) -> dict[str, Any]:
    """A localhost profile file (Docker's or the OCI spec's JSON); SeccompError when it cannot be used."""
    try:
        profile = orjson.loads(path.read_bytes())
    except OSError as exc:
        raise SeccompError(f"cannot load seccomp profile {str(path)!r}: {exc.strerror}") from None
    except orjson.JSONDecodeError as exc:
        raise SeccompError(f"cannot load seccomp profile {str(path)!r}: {exc}") from None
    if not isinstance(profile, dict) or not isinstance(profile.get("defaultAction"), str):
        raise SeccompError(f"seccomp profile {str(path)!r} has no defaultAction")
    return profile


def localhost(profile: dict[str, Any], capabilities: list[str]) -> dict[str, Any]:
    """A profile read by read_profile as linux.seccomp for a container with these capabilities."""
    held = set(capabilities)
    architectures = list(profile.get("architectures") or [])
    for entry in profile.get("archMap") or []:
        if entry.get("architecture") in _architectures():
            architectures += [entry["architecture"], *(entry.get("subArchitectures") or [])]
    syscalls = []
    for rule in profile.get("syscalls") or []:
        if not _applies(rule, held):
            continue
        names = rule.get("names") or ([rule["name"]] if rule.get("name") else [])
        syscalls.append({"names": names, "action": rule.get("action", "SCMP_ACT_ALLOW"),
                         **{k: rule[k] for k in ("errnoRet", "args") if rule.get(k) is not None}})
    seccomp: dict[str, Any] = {"defaultAction": profile["defaultAction"],
                               "architectures": list(dict.fromkeys(architectures)), "syscalls": syscalls}
    if profile.get("defaultErrnoRet") is not None:
        seccomp["defaultErrnoRet"] = profile["defaultErrnoRet"]
    return seccomp
