"""Clients of the streaming server a CRI runtime names in its Exec, Attach and PortForward replies.

Both speak the channel WebSocket protocols (one channel byte before each message) that our kubelet server serves
too. Exec and attach: stdin 0, stdout 1, stderr 2, error 3 (a Status JSON telling the exit code), resize 4;
`v5.channel.k8s.io` is preferred for its close of stdin, `v4.channel.k8s.io` is what containerd 1.6 speaks (there,
the end of a terminal's input is a ^D, and a pipe's stdin cannot be closed apart from the whole session: such
sessions go over SPDY, crispdy).
Port-forward: the URL's single port on channels 0 (data) and 1 (error), the first message of each starting with
the port number, two bytes little-endian; the connection is handed over as a socketpair pumped to the WebSocket
until either side closes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import select
import socket
from collections import deque
from collections.abc import Awaitable, Callable

import aiohttp
import orjson

from kubelite.kubelet.runtime.base import RuntimeServiceError, StreamSession
from kubelite.kubelet.streaming import channels
from kubelite.kubelet.streaming.channels import ChannelCodec

log = logging.getLogger(__name__)

EXEC_PROTOCOLS = (channels.V5, channels.V4)
PORTFORWARD_PROTOCOLS = (channels.V4,)
EOT = b"\x04"
"""^D: the end of input on a terminal."""
EXEC_FAILED = 255
"""The exit code of an exec that failed without one of its own (as `runc exec` reports it)."""
READ_SIZE = 64 * 1024
HANGUP_POLL = 0.5
"""How often a half-closed port-forward connection is checked for being closed entirely."""
_TIMEOUT = aiohttp.ClientWSTimeout(ws_close=5)


class Pipe:
    """Received bytes of one output stream, read in pieces of any size; b"" once it ended."""

    def __init__(self) -> None:
        self._chunks: deque[bytes] = deque()
        self._ended = False
        self._changed = asyncio.Event()

    def feed(self, data: bytes) -> None:
        """Add received bytes (ignored once the stream ended)."""
        if data and not self._ended:
            self._chunks.append(data)
            self._changed.set()

    def end(self) -> None:
        """No more bytes: readers get what is left, then b""."""
        self._ended = True
        self._changed.set()

    async def read(self, n: int) -> bytes:
        """Up to n bytes, waiting for some; b"" at the end."""
        while not self._chunks:
            if self._ended:
                return b""
            self._changed.clear()
            await self._changed.wait()
        chunk = self._chunks.popleft()
        if len(chunk) > n:
            self._chunks.appendleft(chunk[n:])
            chunk = chunk[:n]
        return chunk


def exit_code_of(status: dict[str, object]) -> tuple[int, str]:
    """(exit code, error message) from the Status on the error channel: 0 for Success, the ExitCode cause of a
    NonZeroExitCode, else EXEC_FAILED with the Status's message."""
    if status.get("status") == "Success":
        return 0, ""
    details = status.get("details")
    if status.get("reason") == channels.NON_ZERO_EXIT and isinstance(details, dict):
        for cause in details.get("causes") or []:
            if isinstance(cause, dict) and cause.get("reason") == channels.EXIT_CODE_CAUSE:
                with contextlib.suppress(TypeError, ValueError):
                    return int(cause.get("message", "")), ""
    return EXEC_FAILED, str(status.get("message") or "the session failed")


class ChannelSession(StreamSession):
    """An exec or attach session over a channel WebSocket. A failure the runtime reports without an exit code (the
    command cannot be run) ends up on stderr (stdout with a terminal) and as exit code 255."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, tty: bool,
                 exit_code: Callable[[int], Awaitable[int]] | None = None):
        self._ws = ws
        self._codec = ChannelCodec(ws.protocol or channels.V1)
        self._tty = tty
        self._exit_code = exit_code
        self._stdout, self._stderr = Pipe(), Pipe()
        self._code = EXEC_FAILED
        self._send_lock = asyncio.Lock()
        self._reader = asyncio.create_task(self._receive())

    async def _receive(self) -> None:
        got_status = False
        try:
            async for message in self._ws:
                if message.type not in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT):
                    continue
                try:
                    channel, data = self._codec.decode(message.data)
                except channels.ProtocolError:
                    continue
                if channel == channels.STDOUT:
                    self._stdout.feed(data)
                elif channel == channels.STDERR:
                    self._stderr.feed(data)
                elif channel == channels.ERROR and data:
                    got_status = True
                    self._status(data)
        finally:
            if not got_status:
                self._code = 0 if self._ws.close_code == aiohttp.WSCloseCode.OK else EXEC_FAILED
            self._stdout.end()
            self._stderr.end()

    def _status(self, data: bytes) -> None:
        """The final Status (v4 and later) or, for older protocols, a bare error message."""
        try:
            status = orjson.loads(data) if self._codec.structured_status else None
        except orjson.JSONDecodeError:
            status = None
        if isinstance(status, dict):
            self._code, message = exit_code_of(status)
        else:
            self._code, message = EXEC_FAILED, data.decode(errors="replace")
        if message:
            (self._stdout if self._tty else self._stderr).feed(message.encode() + b"\n")

    async def _send(self, channel: int, data: bytes) -> None:
        message = self._codec.encode(channel, data)
        async with self._send_lock:
            if self._ws.closed:
                raise BrokenPipeError("the streaming session has ended")
            if isinstance(message, str):
                await self._ws.send_str(message)
            else:
                await self._ws.send_bytes(message)

    async def write_stdin(self, data: bytes) -> None:
        """Send bytes to the process's stdin (or its terminal)."""
        if data:
            await self._send(channels.STDIN, data)

    async def close_stdin(self) -> None:
        """End of input: v5's close of channel 0, else ^D on a terminal; a pipe over v4 stays open (no way to say)."""
        if self._codec.has_close:
            await self._send(channels.CLOSE, bytes((channels.STDIN,)))
        elif self._tty:
            await self._send(channels.STDIN, EOT)
        else:
            log.debug("%s cannot close stdin apart from the session", self._codec.protocol)

    async def read_stdout(self, n: int = 65536) -> bytes:
        """Output (a terminal's output with a tty); b"" at the end."""
        return await self._stdout.read(n)

    async def read_stderr(self, n: int = 65536) -> bytes:
        """Error output; b"" at the end (at once with a tty)."""
        return await self._stderr.read(n)

    async def resize(self, width: int, height: int) -> None:
        """Set the terminal's size; a no-op without a tty."""
        if self._tty:
            await self._send(channels.RESIZE, orjson.dumps({"Width": width, "Height": height}))

    async def wait(self) -> int:
        """The exit code once the session ended (for attach: the container's, when a callback tells it)."""
        await asyncio.shield(self._reader)
        if self._exit_code is not None:
            return await self._exit_code(self._code)
        return self._code

    async def close(self) -> None:
        """Close the WebSocket (the runtime ends its side of the session)."""
        await self._ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


class StreamClient:
    """One HTTP client for a runtime's streaming server, and the port-forward pumps it runs."""

    def __init__(self) -> None:
        self._http: aiohttp.ClientSession | None = None
        self._pumps: set[asyncio.Task[None]] = set()

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=30))
        return self._http

    async def _connect(self, url: str, protocols: tuple[str, ...]) -> aiohttp.ClientWebSocketResponse:
        try:
            return await self._session().ws_connect(url, protocols=protocols, max_msg_size=0, autoping=True,
                                                    timeout=_TIMEOUT)
        except aiohttp.WSServerHandshakeError as exc:
            raise RuntimeServiceError(f"the runtime's streaming server refused {url}: {exc.status} {exc.message}") \
                from None
        except aiohttp.ClientError as exc:
            raise RuntimeServiceError(f"cannot reach the runtime's streaming server at {url}: {exc}") from None

    async def session(self, url: str, tty: bool,
                      exit_code: Callable[[int], Awaitable[int]] | None = None) -> ChannelSession:
        """An exec or attach session at the URL the runtime returned."""
        return ChannelSession(await self._connect(url, EXEC_PROTOCOLS), tty, exit_code)

    async def port_forward(self, url: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A connection to the port the URL was made for: one end of a socketpair, the other pumped to the
        runtime."""
        ws = await self._connect(url, PORTFORWARD_PROTOCOLS)
        ours, theirs = socket.socketpair()
        try:
            reader, writer = await asyncio.open_unix_connection(sock=ours)
            mine_reader, mine_writer = await asyncio.open_unix_connection(sock=theirs)
        except BaseException:
            ours.close()
            theirs.close()
            await ws.close()
            raise
        task = asyncio.create_task(_pump(ws, ChannelCodec(ws.protocol or channels.V4), port, mine_reader,
                                         mine_writer))
        self._pumps.add(task)
        task.add_done_callback(self._pumps.discard)
        return reader, writer

    async def close(self) -> None:
        """End every port-forward and close the HTTP client."""
        for task in list(self._pumps):
            task.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)
        if self._http is not None:
            await self._http.close()
            self._http = None


def _hung_up(sock: socket.socket) -> bool:
    """Whether the other end of our socketpair is closed entirely, not just shut for writing (POLLHUP)."""
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLHUP)
    return any(events & select.POLLHUP for _, events in poller.poll(0))


async def _upload(ws: aiohttp.ClientWebSocketResponse, codec: ChannelCodec, reader: asyncio.StreamReader,
                  sock: socket.socket) -> None:
    """The caller's bytes to the data channel. After its end of input, the reply may still come: this returns
    only once the caller has closed the connection (the channel protocol cannot half-close)."""
    while chunk := await reader.read(READ_SIZE):
        message = codec.encode(0, chunk)
        await (ws.send_str(message) if isinstance(message, str) else ws.send_bytes(message))
    while not _hung_up(sock):  # noqa: ASYNC110 - no event tells a hang-up from a half-close: poll
        await asyncio.sleep(HANGUP_POLL)


async def _download(ws: aiohttp.ClientWebSocketResponse, codec: ChannelCodec, port: int,
                    writer: asyncio.StreamWriter) -> None:
    """The data channel to the caller, until the runtime ends the session or reports an error for the port."""
    prefixed = {0: False, 1: False}
    async for message in ws:
        if message.type not in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT):
            continue
        try:
            channel, data = codec.decode(message.data)
        except channels.ProtocolError:
            continue
        if channel in prefixed and not prefixed[channel]:
            data, prefixed[channel] = data[2:], True
        if channel == 0 and data:
            writer.write(data)
            await writer.drain()
        elif channel == 1 and data:
            log.info("port-forward to port %d failed: %s", port, data.decode(errors="replace"))
            return


async def _pump(ws: aiohttp.ClientWebSocketResponse, codec: ChannelCodec, port: int, reader: asyncio.StreamReader,
                writer: asyncio.StreamWriter) -> None:
    """Copy both ways until the caller closes the connection or the runtime ends the session, then close both."""
    tasks = {asyncio.create_task(_upload(ws, codec, reader, writer.get_extra_info("socket"))),
             asyncio.create_task(_download(ws, codec, port, writer))}
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                log.debug("port-forward to port %d ended: %s", port, task.exception())
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        writer.close()
        await ws.close()
