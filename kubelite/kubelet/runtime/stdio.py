"""A container's stdin, stdout and stderr: FIFOs that outlive the agent, or /dev/null.

stdout and stderr are FIFOs the container holds open read-write: with itself as a reader, its writes never
fail with SIGPIPE while no agent reads (a restart), only block once the enlarged pipe is full. stdin is a FIFO
the agent writes to; without stdinOnce the container holds it read-write too, so it never sees end of file.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from dataclasses import dataclass, field
from pathlib import Path

F_SETPIPE_SZ = 1031
PIPE_SIZE = 1 << 20
STREAMS = ("stdout", "stderr")


@dataclass
class Stdio:
    """The descriptors for `runc create` (closed once the container holds them) and the agent's stdin writer."""

    container: tuple[int, int, int]
    agent_stdin: int = -1
    to_close: list[int] = field(default_factory=list)

    def close(self) -> None:
        """Close the container's side in the agent."""
        for fd in self.to_close:
            os.close(fd)
        self.to_close.clear()


def make_fifo(path: Path) -> None:
    """Create a FIFO unless it exists."""
    with contextlib.suppress(FileExistsError):
        os.mkfifo(path, 0o600)


def open_fifo(path: Path, flags: int) -> int:
    """Open (creating it first) a FIFO, close-on-exec."""
    make_fifo(path)
    return os.open(path, flags | os.O_CLOEXEC)


def make_fifos(directory: Path, tty: bool, stdin: bool) -> None:
    """Create the FIFOs container_stdio opens (file creation, which may block: for a worker thread)."""
    if not tty:
        for stream in (*STREAMS, "stdin") if stdin else STREAMS:
            make_fifo(directory / stream)


def container_stdio(directory: Path, tty: bool, stdin: bool, stdin_once: bool) -> Stdio:
    """The container's stdio; with a terminal all three are /dev/null (runc gives it the pty instead)."""
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    if tty:
        return Stdio((null, null, null), to_close=[null])
    out, err = (open_fifo(directory / stream, os.O_RDWR) for stream in STREAMS)
    for fd in (out, err):
        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_SIZE)
    if not stdin:
        return Stdio((null, out, err), to_close=[null, out, err])
    writer = open_fifo(directory / "stdin", os.O_RDWR | os.O_NONBLOCK)
    reader = open_fifo(directory / "stdin", os.O_RDONLY if stdin_once else os.O_RDWR)
    return Stdio((reader, out, err), agent_stdin=writer, to_close=[null, out, err, reader])


def open_output(directory: Path) -> list[tuple[str, int]]:
    """The agent's non-blocking read ends of stdout and stderr (again after a restart)."""
    return [(stream, os.open(directory / stream, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)) for stream in STREAMS]


def reopen_stdin(directory: Path) -> int:
    """The agent's stdin writer after a restart, or -1 when the container has no stdin FIFO."""
    try:
        return os.open(directory / "stdin", os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return -1
