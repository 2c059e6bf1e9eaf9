"""Exit statuses of processes that are not our children, from the kernel's process events connector (cn_proc).

A container adopted from a previous agent is no longer the agent's child, so waitid() cannot read its status; but the
kernel announces every process exit, with its wait status, on a netlink connector socket. A socket filter lets
through only the exits of the given processes, so the socket stays quiet (no wake-up for the host's other
processes). The event can come a moment after the pidfd woke us (the kernel sends it late in the exit), so a reader
waits briefly for it.
Needs root in the host's namespaces; elsewhere open() returns None and those statuses stay lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import socket
import struct
from collections.abc import Iterable

from kubelite.kubelet.network.netlink import HEADER_SIZE, NLMSG_DONE, message

log = logging.getLogger(__name__)

NETLINK_CONNECTOR = 11
CN_IDX_PROC = CN_VAL_PROC = 1
PROC_CN_MCAST_LISTEN, PROC_CN_MCAST_IGNORE = 1, 2
PROC_EVENT_EXIT = 0x80000000
SO_ATTACH_FILTER = 26

_CN_MSG = struct.Struct("=IIIIHH")
_EVENT = struct.Struct("=IIQ")
_EXIT = struct.Struct("=iiII")
WHAT_AT = HEADER_SIZE + _CN_MSG.size
"""Where proc_event.what is in a message (the filter sees it from the netlink header on)."""
PID_AT = WHAT_AT + _EVENT.size
"""Where exit.process_pid is."""

_LD_W_ABS, _JEQ_K, _JA, _RET_K = 0x20, 0x15, 0x05, 0x06
"""Classic BPF: load a word at an offset, jump if equal, jump, return (how many bytes to keep, 0 drops)."""
GRACE = 1.0
"""How long code() waits for the event of a process whose pidfd said it ended."""
_BLOCK = 200
"""Pids compared per block: a conditional jump reaches at most 255 instructions ahead."""


def _as_loaded(value: int) -> int:
    """A 32-bit host-order field as a classic BPF absolute load sees it (network byte order)."""
    return int.from_bytes(struct.pack("=I", value), "big")


def _filter(pids: Iterable[int]) -> list[tuple[int, int, int, int]]:
    """Accept an exit event of one of pids (process_pid, so thread exits other than the leader's are dropped)."""
    accept, drop = 0xFFFF, 0
    program = [(_LD_W_ABS, 0, 0, WHAT_AT), (_JEQ_K, 1, 0, _as_loaded(PROC_EVENT_EXIT)), (_RET_K, 0, 0, drop),
               (_LD_W_ABS, 0, 0, PID_AT)]
    ordered = sorted(set(pids))
    for start in range(0, len(ordered), _BLOCK):
        block = ordered[start:start + _BLOCK]
        program += [(_JEQ_K, len(block) - i, 0, _as_loaded(pid)) for i, pid in enumerate(block)]
        program += [(_JA, 0, 0, 1), (_RET_K, 0, 0, accept)]
    program.append((_RET_K, 0, 0, drop))
    return program


def _attach(sock: socket.socket, program: list[tuple[int, int, int, int]]) -> None:
    code = b"".join(struct.pack("=HBBI", *instruction) for instruction in program)
    buffer = ctypes.create_string_buffer(code, len(code))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, struct.pack("HP", len(program), ctypes.addressof(buffer)))


def _control(sock: socket.socket, operation: int) -> None:
    """Start (LISTEN) or stop (IGNORE) the kernel's process events; it counts its listeners."""
    op = struct.pack("=I", operation)
    sock.send(message(NLMSG_DONE, 0, _CN_MSG.pack(CN_IDX_PROC, CN_VAL_PROC, 0, 0, len(op), 0) + op))


def _wait_status_code(status: int) -> int:
    """A wait status as the runtime reports it: the exit code, or 128 + the signal that killed the process."""
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code


class ExitEvents:
    """The exit statuses of a fixed set of processes, as the kernel announces them."""

    def __init__(self, sock: socket.socket, pids: Iterable[int]):
        self._sock = sock
        self._pids = set(pids)
        self._codes: dict[int, int] = {}
        self._waiters: dict[int, asyncio.Future[None]] = {}
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), self._drain)

    @classmethod
    def open(cls, pids: Iterable[int]) -> ExitEvents | None:
        """Listen for the exits of pids; None (with a log line) where process events cannot be read."""
        pids = list(pids)
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC,
                                 NETLINK_CONNECTOR)
        except OSError as error:
            log.warning("no process events (%s): adopted containers' exit codes will be unknown", error)
            return None
        try:
            _attach(sock, _filter(pids))
            sock.bind((0, CN_IDX_PROC))
            _control(sock, PROC_CN_MCAST_LISTEN)
        except OSError as error:
            sock.close()
            log.warning("no process events (%s): adopted containers' exit codes will be unknown", error)
            return None
        return cls(sock, pids)

    async def code(self, pid: int, grace: float = GRACE) -> int | None:
        """The exit code of pid (128 + signal when killed), which ended; None when no event came within grace."""
        if pid not in self._codes:
            waiter = self._waiters[pid] = self._loop.create_future()
            try:
                await asyncio.wait([waiter], timeout=grace)
            finally:
                del self._waiters[pid]
        return self._codes.pop(pid, None)

    def _drain(self) -> None:
        while True:
            try:
                data = self._sock.recv(256)
            except BlockingIOError:
                return
            except OSError as error:
                log.warning("reading process events failed: %s", error)
                return
            if len(data) < PID_AT + _EXIT.size or _EVENT.unpack_from(data, WHAT_AT)[0] != PROC_EVENT_EXIT:
                continue
            pid, _tgid, status, _signal = _EXIT.unpack_from(data, PID_AT)
            if pid in self._pids:
                self._codes[pid] = _wait_status_code(status)
                waiter = self._waiters.get(pid)
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)

    def close(self) -> None:
        """Stop listening."""
        if self._sock.fileno() >= 0:
            self._loop.remove_reader(self._sock.fileno())
            with contextlib.suppress(OSError):
                _control(self._sock, PROC_CN_MCAST_IGNORE)
            self._sock.close()
