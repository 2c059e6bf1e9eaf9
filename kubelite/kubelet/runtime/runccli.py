"""The runc command line: create, start, kill, delete, exec, with runc's own errors read from its JSON log.

Starting a created container needs no runc process: `runc start` only opens the container's exec FIFO, which the
waiting init writes one byte to before it execs the command, and removes the FIFO (from then on runc reports the
container running). The agent does the same itself and falls back to `runc start` where the FIFO is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import orjson

from kubelite.kubelet.runtime import spawn
from kubelite.kubelet.runtime.base import RuntimeServiceError

EXEC_FIFO = "exec.fifo"
"""In runc's state directory of a created container (libcontainer's execFifoFilename)."""


class RuncError(RuntimeServiceError):
    """runc failed; the message is runc's own."""


def find_runc() -> str:
    """runc on PATH, else Debian's /usr/sbin/runc."""
    return shutil.which("runc") or "/usr/sbin/runc"


def _log_size(log: Path) -> int:
    try:
        return log.stat().st_size
    except FileNotFoundError:
        return 0


def _last_error(log: Path, since: int, fallback: str) -> str:
    """The last error runc logged after offset since (earlier calls for the container logged before it)."""
    try:
        with open(log, "rb") as f:
            f.seek(since)
            lines = f.read().splitlines()
    except FileNotFoundError:
        return fallback
    for line in reversed(lines):
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if entry.get("level") in ("error", "fatal"):
            return str(entry.get("msg", fallback))
    return fallback


async def _read_exec_fifo(fd: int, exited: asyncio.Event) -> bool:
    """Read an exec FIFO (opened non-blocking) to its end: whether the init wrote its byte. Until a writer
    comes, a FIFO never polls readable; an init that dies first never comes, hence the race with exited."""
    loop = asyncio.get_running_loop()
    received = bytearray()
    ended: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        try:
            chunk = os.read(fd, 64)
        except BlockingIOError:
            return
        received.extend(chunk)
        if not chunk and not ended.done():
            ended.set_result(None)

    loop.add_reader(fd, readable)
    waiting = asyncio.ensure_future(exited.wait())
    try:
        await asyncio.wait([ended, waiting], return_when=asyncio.FIRST_COMPLETED)
    finally:
        loop.remove_reader(fd)
        waiting.cancel()
    if not ended.done():
        with contextlib.suppress(BlockingIOError):
            received.extend(os.read(fd, 64))
    return bool(received)


async def receive_fd(listener: socket.socket) -> int:
    """Accept one connection on a console socket and return the file descriptor it sends (a pty master)."""
    loop = asyncio.get_running_loop()
    conn, _ = await loop.sock_accept(listener)
    with conn:
        readable: asyncio.Future[None] = loop.create_future()
        loop.add_reader(conn.fileno(), lambda: readable.done() or readable.set_result(None))
        try:
            await readable
        finally:
            loop.remove_reader(conn.fileno())
        _msg, fds, _flags, _addr = socket.recv_fds(conn, 4096, 1)
    if not fds:
        raise RuncError("runc sent no terminal over the console socket")
    return fds[0]


@contextlib.contextmanager
def console_socket(path: Path) -> Iterator[socket.socket]:
    """A listening unix socket runc connects to with --console-socket; removed afterwards."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(str(path))
        listener.listen(1)
        listener.setblocking(False)
        yield listener
    finally:
        listener.close()
        path.unlink(missing_ok=True)


class Runc:
    """One runc binary with one state root; each call logs to the container's own runc.log."""

    def __init__(self, binary: str, root: Path):
        self.binary = binary
        self.root = root

    def argv(self, log: Path, *args: str) -> list[str]:
        """The command line of a runc call."""
        return [self.binary, "--root", str(self.root), "--log", str(log), "--log-format", "json", *args]

    async def run(self, log: Path, *args: str) -> None:
        """Run a runc command to its end; RuncError with runc's message when it fails."""
        since = _log_size(log)
        done = await spawn.run(self.argv(log, *args), stderr=spawn.PIPE)
        if done.returncode != 0:
            raise RuncError(_last_error(log, since, done.stderr.decode(errors="replace").strip()
                                        or f"runc {args[0]} failed"))

    async def start(self, container_id: str, log: Path, exited: asyncio.Event) -> None:
        """What `runc start` does (see the module docstring); exited is set once the container's init is gone.

        Returns once the init let go of the FIFO, i.e. exec'd the command; RuncError when it died before."""
        fifo = self.root / container_id / EXEC_FIFO
        try:
            fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            await self.run(log, "start", container_id)
            return
        try:
            released = await _read_exec_fifo(fd, exited)
        finally:
            os.close(fd)
        if not released:
            raise RuncError("container process is already dead")
        fifo.unlink(missing_ok=True)

    async def create(self, container_id: str, bundle: Path, log: Path, stdio: tuple[int, int, int],
                     console: Path | None = None) -> tuple[int, int]:
        """`runc create` with the given stdio (inherited by the container's init); returns (init pid, pty master
        or -1). With console, the container gets a terminal whose master arrives over that socket."""
        pid_file = bundle / "init.pid"
        args = ["create", "--bundle", str(bundle), "--pid-file", str(pid_file)]
        master = await self.create_process(log, args, container_id, console, stdio)
        return int(pid_file.read_text()), master

    async def create_process(self, log: Path, args: list[str], container_id: str, console: Path | None = None,
                             stdio: tuple[int, int, int] | None = None) -> int:
        """Run a runc command that leaves a process behind (create, exec --detach); returns the pty master runc
        sends over the console socket, or -1 without one."""
        since = _log_size(log)
        with contextlib.ExitStack() as stack:
            receiving = None
            if console is not None:
                listener = stack.enter_context(console_socket(console))
                args = [*args, "--console-socket", str(console)]
                receiving = asyncio.create_task(receive_fd(listener))
            try:
                stdin, stdout, stderr = stdio or (spawn.DEVNULL, spawn.DEVNULL, spawn.DEVNULL)
                code = (await spawn.run(self.argv(log, *args, container_id), stdin, stdout, stderr)).returncode
                if code != 0:
                    raise RuncError(_last_error(log, since, f"runc {args[0]} exited with {code}"))
                master = await asyncio.wait_for(receiving, 10) if receiving is not None else -1
            finally:
                if receiving is not None and not receiving.done():
                    receiving.cancel()
        return master

    async def delete(self, container_id: str, log: Path) -> None:
        """`runc delete --force`: kill what is left, remove runc's state and the container's cgroups; idempotent."""
        try:
            await self.run(log, "delete", "--force", container_id)
        except RuncError as error:
            if "does not exist" not in str(error):
                raise

    async def kill_all(self, container_id: str, log: Path, sig: str = "KILL") -> None:
        """Signal every process of the container (its cgroup), not just its init."""
        with contextlib.suppress(RuncError):
            await self.run(log, "kill", "--all", container_id, sig)
