"""Pod namespaces held by bind mounts (CRI-O's "pinns" idea): no pause process is needed to keep them alive.

A fresh thread unshares the network, IPC and UTS namespaces (allowed per thread), sets the hostname, brings up lo,
writes the pod's namespaced sysctls, and bind-mounts /proc/thread-self/ns/<kind> onto a file; the thread then
ends and the namespaces live on as long as the mounts do. Containers join them by path.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from kubelite.kubelet.runtime import syscalls

T = TypeVar("T")

KIND_FLAGS = {"net": syscalls.CLONE_NEWNET, "ipc": syscalls.CLONE_NEWIPC, "uts": syscalls.CLONE_NEWUTS}


async def in_fresh_thread(fn: Callable[[], T]) -> T:
    """Run fn in a new thread that ends afterwards, so namespace changes never leak into a pooled thread."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def deliver(result: T | None, error: BaseException | None) -> None:
        if done.cancelled():
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        try:
            result = fn()
        except BaseException as error:  # noqa: BLE001 - handed to the awaiting task
            loop.call_soon_threadsafe(deliver, None, error)
        else:
            loop.call_soon_threadsafe(deliver, result, None)

    threading.Thread(target=run, name="kubelite-ns", daemon=True).start()
    return await done


def _loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        syscalls.set_interface_up(sock, "lo")


def sysctl_path(name: str) -> Path:
    """/proc/sys/... for a sysctl name in dotted (net.ipv4.ip_forward) or slashed form."""
    if "/" in name:
        return Path("/proc/sys") / name.strip("/")
    return Path("/proc/sys") / name.replace(".", "/")


def _pin(targets: dict[str, Path], hostname: str, sysctls: dict[str, str]) -> None:
    flags = 0
    for kind in targets:
        flags |= KIND_FLAGS[kind]
    syscalls.unshare(flags)
    if "uts" in targets and hostname:
        syscalls.sethostname(hostname)
    if "net" in targets:
        _loopback_up()
    for name, value in sysctls.items():
        sysctl_path(name).write_text(value)
    for kind, path in targets.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
        syscalls.mount(f"/proc/thread-self/ns/{kind}", str(path), None, syscalls.MS_BIND)


async def pin_namespaces(targets: dict[str, Path], hostname: str = "", sysctls: dict[str, str] | None = None) -> None:
    """Create new namespaces of the given kinds (net, ipc, uts) and bind-mount each onto its path."""
    try:
        await in_fresh_thread(lambda: _pin(targets, hostname, sysctls or {}))
    except BaseException:
        unpin_namespaces(list(targets.values()))
        raise


def unpin_namespaces(paths: list[Path]) -> None:
    """Unmount and delete namespace files; a namespace dies once nothing else holds it (idempotent)."""
    for path in paths:
        syscalls.umount(str(path), syscalls.MNT_DETACH)
        path.unlink(missing_ok=True)


def is_pinned(path: Path) -> bool:
    """Whether a namespace is still mounted at path (an nsfs file, not the empty placeholder)."""
    try:
        return os.stat(path).st_dev != os.stat(path.parent).st_dev
    except FileNotFoundError:
        return False


def _socket_in(netns: Path, family: int, kind: int) -> socket.socket:
    fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
    try:
        syscalls.setns(fd, syscalls.CLONE_NEWNET)
    finally:
        os.close(fd)
    return socket.socket(family, kind)


async def socket_in_netns(netns: Path, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM) -> socket.socket:
    """A socket created inside a network namespace; it stays there whatever thread uses it later."""
    return await in_fresh_thread(lambda: _socket_in(netns, family, kind))
