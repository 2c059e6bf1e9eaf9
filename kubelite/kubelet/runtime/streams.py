"""Exec and attach sessions: the StreamSession behind `kubectl exec` and `kubectl attach`.

Non-tty exec talks to `runc exec` through pipes; tty exec through the pty master runc sends over the console
socket. Attach listens to the container's output pumps and writes into its stdin FIFO (or terminal).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import signal
import struct
import termios
from collections.abc import Awaitable, Callable
from pathlib import Path

from kubelite.kubelet.runtime.base import StreamSession
from kubelite.kubelet.runtime.reaper import ProcessWatch

HIGH_WATER = 1 << 20
UNKNOWN_EXIT_CODE = 255
EOT = b"\x04"


def set_window_size(fd: int, width: int, height: int) -> None:
    """TIOCSWINSZ on a terminal."""
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))


async def write_all(fd: int, data: bytes) -> None:
    """Write everything to a non-blocking descriptor, waiting for room when it is full."""
    loop = asyncio.get_running_loop()
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            room: asyncio.Future[None] = loop.create_future()
            loop.add_writer(fd, lambda done=room: done.done() or done.set_result(None))
            try:
                await room
            finally:
                loop.remove_writer(fd)


class FdReader:
    """Buffers what a non-blocking descriptor yields; b"" at end of file or EIO (a pty whose slave closed)."""

    def __init__(self, fd: int):
        self.fd = fd
        self._buffer = bytearray()
        self._eof = False
        self._changed = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        os.set_blocking(fd, False)
        self._loop.add_reader(fd, self._readable)
        self._reading = True

    def _readable(self) -> None:
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return
        except OSError as error:
            if error.errno != errno.EIO:
                raise
            data = b""
        if data:
            self._buffer += data
            if len(self._buffer) >= HIGH_WATER:
                self._pause()
        else:
            self._eof = True
            self._pause()
        self._changed.set()

    def _pause(self) -> None:
        if self._reading:
            self._loop.remove_reader(self.fd)
            self._reading = False

    async def read(self, n: int) -> bytes:
        """Up to n bytes; b"" at the end."""
        while not self._buffer and not self._eof:
            self._changed.clear()
            await self._changed.wait()
        data = bytes(self._buffer[:n])
        del self._buffer[:n]
        if not self._eof and not self._reading and len(self._buffer) < HIGH_WATER and self.fd >= 0:
            self._loop.add_reader(self.fd, self._readable)
            self._reading = True
        return data

    def close(self) -> None:
        """Stop reading (the descriptor is the owner's to close)."""
        self._pause()
        self._eof = True
        self._changed.set()


class ChunkQueue:
    """Output chunks handed over by a pump, read back in pieces of at most n bytes."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[bytes] = asyncio.Queue()
        self._rest = b""
        self._eof = False

    def put(self, chunk: bytes) -> None:
        """A chunk of output, or b"" for the end."""
        self._queue.put_nowait(chunk)

    async def read(self, n: int) -> bytes:
        """Up to n bytes; b"" at the end."""
        if not self._rest and not self._eof:
            self._rest = await self._queue.get()
            self._eof = not self._rest
        data, self._rest = self._rest[:n], self._rest[n:]
        return data


class PipeExecSession(StreamSession):
    """`runc exec` without a terminal: stdin, stdout and stderr are pipes to it."""

    def __init__(self, proc: asyncio.subprocess.Process, pid_file: Path, cleanup: Callable[[], None]):
        self.proc = proc
        self.pid_file = pid_file
        self._cleanup = cleanup

    async def write_stdin(self, data: bytes) -> None:
        """Write to the process's stdin."""
        if self.proc.stdin is None:
            raise ValueError("the session has no stdin")
        self.proc.stdin.write(data)
        await self.proc.stdin.drain()

    async def close_stdin(self) -> None:
        """Close the process's stdin."""
        if self.proc.stdin is not None:
            self.proc.stdin.close()

    async def read_stdout(self, n: int = 65536) -> bytes:
        """The process's output."""
        assert self.proc.stdout is not None
        return await self.proc.stdout.read(n)

    async def read_stderr(self, n: int = 65536) -> bytes:
        """The process's error output."""
        assert self.proc.stderr is not None
        return await self.proc.stderr.read(n)

    async def resize(self, width: int, height: int) -> None:
        """No terminal: nothing to resize."""

    async def wait(self) -> int:
        """runc exec's exit code: the process's own (128+signal when killed)."""
        code = await self.proc.wait()
        self._cleanup()
        return code

    async def close(self) -> None:
        """Kill the exec'd process if it still runs and wait for runc."""
        if self.proc.returncode is None:
            kill_exec(self.pid_file)
        await self.wait()


class TtyExecSession(StreamSession):
    """`runc exec --detach` with a terminal: the process is our child (runc leaves it to the subreaper), watched
    through a pidfd; all input and output go through the pty master."""

    def __init__(self, master: int, pid: int, cleanup: Callable[[], None]):
        self.master = master
        self.reader = FdReader(master)
        self._exit: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._cleanup = cleanup
        self.watch = ProcessWatch(pid, self._exited)

    def _exited(self, code: int | None) -> None:
        if not self._exit.done():
            self._exit.set_result(UNKNOWN_EXIT_CODE if code is None else code)

    async def write_stdin(self, data: bytes) -> None:
        """Type into the terminal."""
        await write_all(self.master, data)

    async def close_stdin(self) -> None:
        """A terminal cannot be half-closed: send ^D, as a user would."""
        await write_all(self.master, EOT)

    async def read_stdout(self, n: int = 65536) -> bytes:
        """What the terminal shows."""
        return await self.reader.read(n)

    async def read_stderr(self, n: int = 65536) -> bytes:
        """Always empty: the terminal merges both streams."""
        return b""

    async def resize(self, width: int, height: int) -> None:
        """Resize the terminal (the process gets SIGWINCH)."""
        set_window_size(self.master, width, height)

    async def wait(self) -> int:
        """The exec'd process's exit code (its output stays readable until close)."""
        return await asyncio.shield(self._exit)

    async def close(self) -> None:
        """Kill the exec'd process if it still runs, then release the terminal."""
        if not self._exit.done():
            self.watch.send_signal(signal.SIGKILL)
        await self.wait()
        if self.master >= 0:
            self.reader.close()
            os.close(self.master)
            self.master = -1
            self._cleanup()


def kill_exec(pid_file: Path) -> None:
    """SIGKILL the process runc exec started (killing runc alone would leave it running)."""
    with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
        os.kill(int(pid_file.read_text()), signal.SIGKILL)


class AttachSession(StreamSession):
    """Attached to a running container: its output from now on, its stdin FIFO or terminal, its exit code."""

    def __init__(self, stdout: ChunkQueue, stderr: ChunkQueue, stdin_fd: int, master: int, tty: bool,
                 close_container_stdin: Callable[[], None], exit_code: Callable[[], Awaitable[int]],
                 detach: Callable[[], None]):
        self._stdout = stdout
        self._stderr = stderr
        self._stdin_fd = stdin_fd
        self._master = master
        self._tty = tty
        self._close_container_stdin = close_container_stdin
        self._exit_code = exit_code
        self._detach = detach

    async def write_stdin(self, data: bytes) -> None:
        """Write to the container's stdin."""
        if self._stdin_fd < 0:
            raise ValueError("the container has no stdin open for attaching")
        await write_all(self._stdin_fd, data)

    async def close_stdin(self) -> None:
        """End of input: ^D to a terminal; for stdinOnce containers, close their stdin for good."""
        if self._tty and self._stdin_fd >= 0:
            await write_all(self._stdin_fd, EOT)
        self._close_container_stdin()
        self._stdin_fd = -1

    async def read_stdout(self, n: int = 65536) -> bytes:
        """The container's output since attaching."""
        return await self._stdout.read(n)

    async def read_stderr(self, n: int = 65536) -> bytes:
        """The container's error output since attaching (empty with a terminal)."""
        return await self._stderr.read(n)

    async def resize(self, width: int, height: int) -> None:
        """Resize the container's terminal."""
        if self._master >= 0:
            set_window_size(self._master, width, height)

    async def wait(self) -> int:
        """The container's exit code."""
        return await self._exit_code()

    async def close(self) -> None:
        """Detach; the container keeps running."""
        self._detach()
        self._stdout.put(b"")
        self._stderr.put(b"")
