"""A container's root filesystem (overlayfs over the image layers) and what is read from it or from the host.

Users and groups come from the rootfs's /etc/passwd and /etc/group (never following a link out of it);
device nodes from the host's /dev.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from kubelite.kubelet.runtime import syscalls
from kubelite.kubelet.runtime.base import Device, SecurityContext
from kubelite.kubelet.runtime.bundle import UserIds

MOUNT_DATA_MAX = 4095


def mount_overlay(layer_dirs: list[Path], upper: Path, work: Path, target: Path) -> None:
    """Mount the layers (bottom-first, as images list them) read-only under a writable upper directory."""
    if not layer_dirs:
        raise ValueError("an image needs at least one layer")
    upper.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    target.mkdir(parents=True, exist_ok=True)
    lower = ":".join(str(d) for d in reversed(layer_dirs))
    data = f"lowerdir={lower},upperdir={upper},workdir={work}"
    if len(data) > MOUNT_DATA_MAX:
        raise ValueError(f"too many image layers for one overlay mount ({len(layer_dirs)})")
    syscalls.mount("overlay", str(target), "overlay", 0, data)


def unmount(target: Path) -> None:
    """Detach a mount (idempotent: nothing mounted there is fine)."""
    syscalls.umount(str(target), syscalls.MNT_DETACH)


def read_in_root(root: Path, relative: str) -> str:
    """A text file inside root, or "" when missing or when its path leads out of root through a link."""
    path = root / relative.lstrip("/")
    real = os.path.realpath(path)
    if os.path.commonpath([real, os.path.realpath(root)]) != os.path.realpath(root):
        return ""
    try:
        return Path(real).read_text(errors="replace")
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return ""


def _entries(text: str) -> list[list[str]]:
    return [line.split(":") for line in text.splitlines() if line and not line.startswith("#")]


def resolve_user(root: Path, image_user: str, security: SecurityContext) -> UserIds:
    """containerd's rules: runAsUser/runAsUsername over the image's User, runAsGroup over the primary group,
    /etc/group memberships and supplementalGroups as additional groups."""
    passwd = [e for e in _entries(read_in_root(root, "/etc/passwd")) if len(e) >= 4]
    groups = [e for e in _entries(read_in_root(root, "/etc/group")) if len(e) >= 3]
    user_part, _, group_part = (image_user or "").partition(":")
    if security.run_as_user is not None:
        user_part = str(security.run_as_user)
    elif security.run_as_username:
        user_part = security.run_as_username
    uid, gid, username = 0, 0, ""
    if user_part.isdigit():
        uid = int(user_part)
        match = next((e for e in passwd if e[2] == user_part), None)
    elif user_part:
        match = next((e for e in passwd if e[0] == user_part), None)
        if match is None:
            raise ValueError(f"user {user_part!r} not found in the image's /etc/passwd")
        uid = int(match[2])
    else:
        match = next((e for e in passwd if e[2] == "0"), None)
    if match is not None:
        username, gid = match[0], int(match[3]) if match[3].isdigit() else 0
    if security.run_as_group is not None:
        gid = security.run_as_group
    elif group_part.isdigit():
        gid = int(group_part)
    elif group_part:
        found = next((e for e in groups if e[0] == group_part), None)
        if found is None:
            raise ValueError(f"group {group_part!r} not found in the image's /etc/group")
        gid = int(found[2])
    additional = [gid]
    if username:
        additional += [int(e[2]) for e in groups if e[2].isdigit() and len(e) > 3 and username in e[3].split(",")]
    additional += security.supplemental_groups
    return UserIds(uid, gid, list(dict.fromkeys(additional)))


def device_entry(host_path: str, container_path: str = "", access: str = "rwm") -> dict:
    """An OCI linux.devices entry (plus its cgroup access) for a host device node."""
    info = os.stat(host_path)
    if stat.S_ISCHR(info.st_mode):
        kind = "c"
    elif stat.S_ISBLK(info.st_mode):
        kind = "b"
    else:
        raise ValueError(f"{host_path} is not a device")
    return {"path": container_path or host_path, "type": kind, "major": os.major(info.st_rdev),
            "minor": os.minor(info.st_rdev), "fileMode": stat.S_IMODE(info.st_mode), "uid": info.st_uid,
            "gid": info.st_gid, "access": access}


def requested_devices(devices: list[Device]) -> list[dict]:
    """OCI device entries for the devices a container asks for."""
    return [device_entry(d.host_path, d.container_path, d.permissions) for d in devices]


def host_devices() -> list[dict]:
    """Every device node of the host's /dev (not /dev/pts, /dev/shm, /dev/mqueue), for privileged containers."""
    found = []
    for directory, dirs, files in os.walk("/dev"):
        dirs[:] = [d for d in dirs if os.path.join(directory, d) not in ("/dev/pts", "/dev/shm", "/dev/mqueue")]
        for name in files:
            path = os.path.join(directory, name)
            if path in ("/dev/console", "/dev/ptmx") or os.path.islink(path):
                continue
            try:
                found.append(device_entry(path))
            except (ValueError, OSError):
                continue
    return found
