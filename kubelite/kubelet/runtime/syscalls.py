"""Linux system calls Python 3.11 lacks (mount, statfs, unshare, setns, prctl, sethostname), through ctypes, and the
network interface ioctls (index, flags), which cost microseconds, less than a netlink round trip."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import os
import socket
import struct

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)

CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWNET = 0x40000000
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_BIND = 0x1000
MNT_DETACH = 0x2
TMPFS_MAGIC = 0x01021994
PR_SET_CHILD_SUBREAPER = 36
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
SIOCGIFINDEX = 0x8933
IFF_UP = 0x1
IFREQ_FLAGS = "16sH22x"
IFREQ_INDEX = "16si20x"
"""struct ifreq (40 bytes): the interface name, then ifr_flags (a short) or ifr_ifindex (an int)."""


def _check(result: int, what: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")


def mount(source: str, target: str, fstype: str | None, flags: int = 0, data: str | None = None) -> None:
    """mount(2)."""
    _check(_libc.mount(source.encode(), str(target).encode(), fstype.encode() if fstype else None,
                       ctypes.c_ulong(flags), data.encode() if data else None), f"mount {target}")


def filesystem_type(path: str) -> int:
    """statfs(2)'s f_type of the filesystem holding path (TMPFS_MAGIC for a tmpfs)."""
    buf = ctypes.create_string_buffer(256)
    _check(_libc.statfs(path.encode(), buf), f"statfs {path}")
    return struct.unpack_from("l", buf)[0]


def umount(target: str, flags: int = 0) -> None:
    """umount2(2); a path that is not a mount point (EINVAL) or does not exist (ENOENT) is not an error."""
    if _libc.umount2(str(target).encode(), flags) != 0:
        code = ctypes.get_errno()
        if code not in (errno.EINVAL, errno.ENOENT):
            raise OSError(code, f"umount {target}: {os.strerror(code)}")


def unshare(flags: int) -> None:
    """unshare(2) for the calling thread."""
    _check(_libc.unshare(flags), "unshare")


def setns(fd: int, nstype: int) -> None:
    """setns(2) for the calling thread."""
    _check(_libc.setns(fd, nstype), "setns")


def sethostname(name: str) -> None:
    """sethostname(2) in the calling thread's UTS namespace."""
    raw = name.encode()
    _check(_libc.sethostname(raw, len(raw)), "sethostname")


def set_child_subreaper(on: bool = True) -> None:
    """Make orphaned descendants (a container's init once `runc create` exits) children of this process."""
    _check(_libc.prctl(PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0), "prctl(PR_SET_CHILD_SUBREAPER)")


def interface_index(sock: socket.socket, name: str) -> int | None:
    """The index of an interface in the network namespace of sock, None if it does not exist there."""
    try:
        reply = fcntl.ioctl(sock, SIOCGIFINDEX, struct.pack(IFREQ_INDEX, name.encode(), 0))
    except OSError as exc:
        if exc.errno != errno.ENODEV:
            raise
        return None
    return int(struct.unpack(IFREQ_INDEX, reply)[1])


def set_interface_up(sock: socket.socket, name: str) -> None:
    """Bring an interface of the network namespace of sock up."""
    request = struct.pack(IFREQ_FLAGS, name.encode(), 0)
    flags = struct.unpack(IFREQ_FLAGS, fcntl.ioctl(sock, SIOCGIFFLAGS, request))[1]
    fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack(IFREQ_FLAGS, name.encode(), flags | IFF_UP))
