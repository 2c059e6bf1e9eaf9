"""Exit codes of processes that are not our children, from the kernel's process events, as root."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess

import pytest

from kubelite.kubelet.runtime import syscalls
from kubelite.kubelet.runtime.exitevents import ExitEvents
from kubelite.kubelet.runtime.reaper import ProcessWatch

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="process events need root")

UNUSED_PIDS = range(4_000_000, 4_000_450)
"""Pids above any pid_max in use here: enough of them to need more than one block of the socket filter."""


def orphan(script: str) -> int:
    """Start `script` in a subshell whose parent exits at once, so it is not our child; returns its pid."""
    syscalls.set_child_subreaper(False)
    out = subprocess.run(["sh", "-c", f"( {script} ) >/dev/null 2>&1 & echo $!"], capture_output=True, text=True,
                         check=True).stdout
    return int(out)


async def exit_code_of(pid: int, events: ExitEvents | None) -> int | None:
    """What a ProcessWatch with these events reports for pid."""
    reported: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
    ProcessWatch(pid, reported.set_result, events)
    return await asyncio.wait_for(reported, 10)


async def test_exit_code_of_a_process_that_is_not_our_child() -> None:
    pid = orphan("sleep 0.5; exit 7")
    events = ExitEvents.open([*UNUSED_PIDS, pid])
    assert events is not None
    try:
        assert await exit_code_of(pid, events) == 7
    finally:
        events.close()


async def test_a_killed_process_reports_128_plus_the_signal() -> None:
    pid = orphan("sleep 30")
    events = ExitEvents.open([pid])
    assert events is not None
    try:
        watching = asyncio.ensure_future(exit_code_of(pid, events))
        await asyncio.sleep(0.1)
        os.kill(pid, signal.SIGKILL)
        assert await watching == 128 + signal.SIGKILL
    finally:
        events.close()


async def test_only_the_given_processes_reach_the_socket() -> None:
    """The socket filter keeps the host's other processes out: a hundred exits later, nothing is queued (the
    processes run blocking, so that the event loop does not read the socket meanwhile)."""
    pid = orphan("sleep 30")
    events = ExitEvents.open([pid])
    assert events is not None
    try:
        for _ in range(100):
            subprocess.run(["true"], check=True)  # noqa: ASYNC221
        with pytest.raises(BlockingIOError):
            events._sock.recv(256)
    finally:
        events.close()
        os.kill(pid, signal.SIGKILL)


async def test_without_events_the_code_of_a_stranger_is_unknown() -> None:
    pid = orphan("sleep 0.3")
    assert await exit_code_of(pid, None) is None
