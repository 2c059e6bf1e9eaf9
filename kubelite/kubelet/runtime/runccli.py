"""The runc command line: create, start, kill, delete, exec, with runc's own errors read from its JSON log."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import orjson

from kubelite.kubelet.runtime.base import RuntimeServiceError


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
        proc = await asyncio.create_subprocess_exec(*self.argv(log, *args), stdin=asyncio.subprocess.DEVNULL,
                                                    stdout=asyncio.subprocess.DEVNULL,
                                                    stderr=asyncio.subprocess.PIPE)
        _, err = await proc.communicate()
        if proc.returncode != 0:
            raise RuncError(_last_error(log, since, err.decode(errors="replace").strip() or f"runc {args[0]} failed"))

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
        null = asyncio.subprocess.DEVNULL
        since = _log_size(log)
        with contextlib.ExitStack() as stack:
            receiving = None
            if console is not None:
                listener = stack.enter_context(console_socket(console))
                args = [*args, "--console-socket", str(console)]
                receiving = asyncio.create_task(receive_fd(listener))
            try:
                proc = await asyncio.create_subprocess_exec(
                    *self.argv(log, *args, container_id), stdin=stdio[0] if stdio else null,
                    stdout=stdio[1] if stdio else null, stderr=stdio[2] if stdio else null)
                code = await proc.wait()
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
