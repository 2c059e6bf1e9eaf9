"""Learning of container exits: a pidfd per container init, watched by the event loop.

The agent is a child subreaper, so a container's init becomes its child once `runc create` exits; its exit status
is collected with waitid(P_PIDFD) for that one process, never a waitpid(-1) that would steal asyncio's own
subprocess statuses. A process adopted from a previous agent is not our child: its exit is still seen (the pidfd
becomes readable) and its status comes from the kernel's process events (exitevents), where they can be read.
"""

from __future__ import annotations

import asyncio
import functools
import os
import signal
from collections.abc import Callable, Iterable
from pathlib import Path

from kubelite.kubelet.runtime.exitevents import ExitEvents

ExitCallback = Callable[[int | None], None]
"""Called once with the exit code (128+signal when killed), or None when it could not be learned."""


class ProcessWatch:
    """Watches one process through a pidfd and can signal it without pid-reuse races."""

    def __init__(self, pid: int, on_exit: ExitCallback, exits: ExitEvents | None = None):
        self.pid = pid
        self.fd = os.pidfd_open(pid)
        self._on_exit = on_exit
        self._exits = exits
        self._asking: asyncio.Task[int | None] | None = None
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.fd, self._ready)

    def _ready(self) -> None:
        try:
            info = os.waitid(os.P_PIDFD, self.fd, os.WEXITED | os.WNOHANG)
        except ChildProcessError:
            self.close()
            if self._exits is None:
                self._on_exit(None)
            else:
                self._asking = self._loop.create_task(self._exits.code(self.pid))
                self._asking.add_done_callback(lambda asked: asked.cancelled() or self._on_exit(asked.result()))
            return
        self.close()
        self._on_exit(None if info is None else (
            info.si_status if info.si_code == os.CLD_EXITED else 128 + info.si_status))

    def send_signal(self, sig: int) -> None:
        """Signal the process; one that already exited is not an error."""
        if self.fd < 0:
            return
        try:
            signal.pidfd_send_signal(self.fd, sig)
        except ProcessLookupError:
            pass

    def close(self) -> None:
        """Stop watching (the process is left alone)."""
        if self.fd >= 0:
            self._loop.remove_reader(self.fd)
            os.close(self.fd)
            self.fd = -1


def _stat_fields(pid: int) -> list[str]:
    """/proc/<pid>/stat after the command name: [state, ppid, pgrp, session, ...]."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2:].split()


def start_time(pid: int) -> int:
    """When the process started (clock ticks after boot); 0 when it does not exist."""
    try:
        return int(_stat_fields(pid)[19])
    except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
        return 0


@functools.cache
def boot_id() -> str:
    """This boot's id: a pid recorded in an earlier boot means nothing now."""
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def _children() -> list[int]:
    found = []
    for task in Path("/proc/self/task").iterdir():
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except FileNotFoundError:
            continue
    return found


def reap_orphans(sessions: Iterable[int], keep: Iterable[int]) -> list[int]:
    """Reap zombie children of ours that belong to the given sessions (host-PID containers' orphans, which
    the kernel hands to the subreaper), except the pids in keep (watched container inits). Returns the reaped."""
    wanted, kept = set(sessions), set(keep)
    reaped = []
    for pid in _children():
        if pid in kept:
            continue
        try:
            fields = _stat_fields(pid)
        except (FileNotFoundError, ProcessLookupError):
            continue
        if fields[0] == "Z" and int(fields[3]) in wanted:
            try:
                os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG)
            except ChildProcessError:
                continue
            reaped.append(pid)
    return reaped
