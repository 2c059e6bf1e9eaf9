"""Exec and attach over SPDY/3.1, the client side, for the streaming servers of CRI runtimes.

A runtime's streaming server also speaks the channel WebSocket protocols (cristreams), but before `v5.channel.k8s.io`
(which containerd 1.6 lacks) a WebSocket client cannot end a pipe's input without ending the session: `kubectl exec
-i ... cat` would never finish. SPDY can, as kubectl does it: the connection is upgraded (`Upgrade: SPDY/3.1`,
`X-Stream-Protocol-Version: v4.channel.k8s.io`), the client opens one stream per channel (error, stdin, stdout, stderr,
resize; header `streamtype`), half-closes stdin at the end of input, and the server writes the final Status on the
error stream before it closes the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import orjson

from kubelite.kubelet.runtime.base import RuntimeServiceError, StreamSession
from kubelite.kubelet.runtime.cristreams import EXEC_FAILED, Pipe, exit_code_of
from kubelite.kubelet.streaming import channels, spdy
from kubelite.kubelet.streaming.upgrade import PROTOCOL_HEADER, SPDY_UPGRADE

log = logging.getLogger(__name__)

PROTOCOL = channels.V4
WRITE_CHUNK = 32 * 1024
READ_SIZE = 64 * 1024
MAX_HEADER_BYTES = 64 * 1024


async def _upgrade(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to the URL and upgrade the connection to SPDY/3.1 speaking v4.channel.k8s.io."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise RuntimeServiceError(f"cannot stream from {url}: only plain-HTTP streaming servers are supported")
    try:
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port or 80, limit=READ_SIZE)
    except OSError as exc:
        raise RuntimeServiceError(f"cannot reach the runtime's streaming server at {url}: {exc}") from None
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    writer.write((f"POST {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: Upgrade\r\n"
                  f"Upgrade: {SPDY_UPGRADE}\r\n{PROTOCOL_HEADER}: {PROTOCOL}\r\n"
                  "Content-Length: 0\r\n\r\n").encode())
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError) as exc:
        writer.close()
        raise RuntimeServiceError(f"the runtime's streaming server at {url} did not upgrade: {exc}") from None
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    fields = status_line.split(" ", 2)
    if len(fields) < 2 or fields[1] != "101":
        body = b""
        with contextlib.suppress(asyncio.TimeoutError, OSError):
            body = await asyncio.wait_for(reader.read(4096), 1)
        writer.close()
        raise RuntimeServiceError(f"the runtime's streaming server refused {url}: {status_line} "
                                  f"{body.decode(errors='replace').strip()}")
    headers = {name.strip().lower(): value.strip() for name, _, value in (h.partition(":") for h in header_lines)}
    chosen = headers.get(PROTOCOL_HEADER.lower(), PROTOCOL)
    if chosen != PROTOCOL:
        writer.close()
        raise RuntimeServiceError(f"the runtime's streaming server chose {chosen!r}, not {PROTOCOL}")
    return reader, writer


class SpdySession(StreamSession):
    """An exec or attach session over SPDY streams; a failure without an exit code is reported as cristreams does
    (its message on stderr, or stdout with a terminal; exit code 255)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, stdin: bool, tty: bool,
                 exit_code: Callable[[int], Awaitable[int]] | None = None):
        self._reader = reader
        self._writer = writer
        self._tty = tty
        self._exit_code = exit_code
        self._compressor = spdy.HeaderCompressor()
        self._stdout, self._stderr = Pipe(), Pipe()
        self._status = bytearray()
        self._finished = asyncio.Event()
        self._code = EXEC_FAILED
        kinds = ["error", *(["stdin"] if stdin else []), "stdout", *([] if tty else ["stderr"]),
                 *(["resize"] if tty else [])]
        self._ids = {kind: 2 * index + 1 for index, kind in enumerate(kinds)}
        self._kinds = {stream_id: kind for kind, stream_id in self._ids.items()}
        for kind, stream_id in self._ids.items():
            self._send(spdy.SynStream(stream_id, {"streamtype": [kind]}))
        self._reading = asyncio.create_task(self._receive())

    def _send(self, frame: spdy.Frame) -> None:
        if self._writer.is_closing():
            raise BrokenPipeError("the streaming session has ended")
        self._writer.write(spdy.encode(frame, self._compressor))

    async def _receive(self) -> None:
        parser = spdy.FrameParser()
        try:
            while data := await self._reader.read(READ_SIZE):
                for frame in parser.feed(data):
                    self._handle(frame)
        except (OSError, spdy.SpdyError) as exc:
            log.debug("SPDY streaming session ended: %s", exc)
        finally:
            self._finish()

    def _handle(self, frame: spdy.Frame) -> None:
        match frame:
            case spdy.DataFrame(stream_id, data, flags):
                kind = self._kinds.get(stream_id)
                if kind == "stdout":
                    self._stdout.feed(data)
                elif kind == "stderr":
                    self._stderr.feed(data)
                elif kind == "error":
                    self._status += data
                    if flags & spdy.FLAG_FIN:
                        self._finish()
            case spdy.RstStream(stream_id, _) if self._kinds.get(stream_id) == "error":
                self._finish()
            case spdy.Ping(ping_id) if ping_id % 2 == 0:
                with contextlib.suppress(BrokenPipeError):
                    self._send(spdy.Ping(ping_id))

    def _finish(self) -> None:
        """The error stream or the connection ended: read the Status (none: the session broke off), then end the
        outputs (the Status comes last, so the outputs are complete)."""
        if self._finished.is_set():
            return
        self._finished.set()
        message = ""
        if self._status:
            try:
                status = orjson.loads(self._status)
            except orjson.JSONDecodeError:
                status = None
            if isinstance(status, dict):
                self._code, message = exit_code_of(status)
            else:
                message = self._status.decode(errors="replace")
        if message:
            (self._stdout if self._tty else self._stderr).feed(message.encode() + b"\n")
        self._stdout.end()
        self._stderr.end()

    async def write_stdin(self, data: bytes) -> None:
        """Send bytes on the stdin stream."""
        stream_id = self._ids.get("stdin")
        if stream_id is None:
            raise BrokenPipeError("the session has no stdin")
        view = memoryview(data)
        while view:
            self._send(spdy.DataFrame(stream_id, bytes(view[:WRITE_CHUNK])))
            view = view[WRITE_CHUNK:]
            await self._writer.drain()

    async def close_stdin(self) -> None:
        """Half-close the stdin stream: the end of input."""
        stream_id = self._ids.get("stdin")
        if stream_id is not None:
            self._send(spdy.DataFrame(stream_id, b"", spdy.FLAG_FIN))
            await self._writer.drain()

    async def read_stdout(self, n: int = 65536) -> bytes:
        """Output (a terminal's output with a tty); b"" at the end."""
        return await self._stdout.read(n)

    async def read_stderr(self, n: int = 65536) -> bytes:
        """Error output; b"" at the end (at once with a tty)."""
        return await self._stderr.read(n)

    async def resize(self, width: int, height: int) -> None:
        """A size message on the resize stream; a no-op without a tty."""
        stream_id = self._ids.get("resize")
        if stream_id is not None:
            self._send(spdy.DataFrame(stream_id, orjson.dumps({"Width": width, "Height": height})))
            await self._writer.drain()

    async def wait(self) -> int:
        """The exit code once the server ended the session (for attach: the container's, via the callback)."""
        await self._finished.wait()
        if self._exit_code is not None:
            return await self._exit_code(self._code)
        return self._code

    async def close(self) -> None:
        """Close the connection (the server ends its side of the session)."""
        self._writer.close()
        self._reading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reading
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()


async def open_session(url: str, stdin: bool, tty: bool,
                       exit_code: Callable[[int], Awaitable[int]] | None = None) -> SpdySession:
    """An exec or attach session at the URL a runtime returned, its streams matching the request's stdin and tty
    (stdout always; stderr without a tty)."""
    reader, writer = await _upgrade(url)
    return SpdySession(reader, writer, stdin, tty, exit_code)
