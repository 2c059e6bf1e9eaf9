"""Exec and attach: a runtime StreamSession bridged to stdin/stdout/stderr/error/resize over a channel WebSocket
or over SPDY streams (older kubectl).

The session ends when the output streams end (and, for exec, the process exited): the final Status goes on the
error channel and the WebSocket closes normally, which is how kubectl learns the exit code. A client that goes
away ends the session (an exec'd process is killed, an attach detaches).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterable, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from kubelite.kubelet.runtime.base import StreamSession
from kubelite.kubelet.streaming import channels
from kubelite.kubelet.streaming.channels import ChannelCodec
from kubelite.kubelet.streaming.spdysession import Send, SpdySession, SpdyStream, StreamReset

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StreamOptions:
    """Which streams the client asked for (query stdin/stdout/stderr/tty = 1 or true)."""

    stdin: bool = False
    stdout: bool = False
    stderr: bool = False
    tty: bool = False

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> StreamOptions:
        """Parse the query; stderr is dropped with a tty (the terminal merges it into stdout), as upstream does."""

        def flag(name: str) -> bool:
            return query.get(name, "") in ("1", "true", "True")

        tty = flag("tty")
        return cls(stdin=flag("stdin"), stdout=flag("stdout"), stderr=flag("stderr") and not tty, tty=tty)

    @property
    def any(self) -> bool:
        """Whether at least one of stdin, stdout, stderr was asked for."""
        return self.stdin or self.stdout or self.stderr


class ChannelSocket:
    """A prepared channel WebSocket: sends to channels; sends never overlap."""

    def __init__(self, ws: web.WebSocketResponse, codec: ChannelCodec):
        self.ws = ws
        self.codec = codec
        self._lock = asyncio.Lock()

    async def send(self, channel: int, data: bytes) -> None:
        """One message on a channel."""
        message = self.codec.encode(channel, data)
        async with self._lock:
            if isinstance(message, str):
                await self.ws.send_str(message)
            else:
                await self.ws.send_bytes(message)


async def _pump(read: Callable[[], Awaitable[bytes]], sock: ChannelSocket, channel: int, forward: bool) -> None:
    """Copy one output stream to its channel until it ends (read and dropped when the client did not ask for it)."""
    while chunk := await read():
        if forward:
            await sock.send(channel, chunk)


async def _receive(sock: ChannelSocket, session: StreamSession, options: StreamOptions) -> None:
    """Client messages: stdin data, the v5 close of stdin, terminal resizes; returns when the client is gone."""
    stdin_open = options.stdin
    async for message in sock.ws:
        if message.type not in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT):
            continue
        try:
            channel, data = sock.codec.decode(message.data)
            if channel == channels.STDIN and stdin_open and data:
                await session.write_stdin(data)
            elif channel == channels.RESIZE and options.tty:
                await session.resize(*channels.parse_resize(data))
            elif channel == channels.CLOSE and sock.codec.has_close and data[:1] == bytes((channels.STDIN,)):
                if stdin_open:
                    stdin_open = False
                    await session.close_stdin()
        except channels.ProtocolError as exc:
            log.debug("ignoring a bad channel message: %s", exc)
        except (BrokenPipeError, ConnectionResetError, ValueError, OSError) as exc:
            log.debug("stdin of the session is gone: %s", exc)
            stdin_open = False


async def serve(ws: web.WebSocketResponse, codec: ChannelCodec, options: StreamOptions,
                start: Callable[[], Awaitable[StreamSession]], exec_: bool) -> None:
    """Run one exec (exec_=True) or attach session over a prepared WebSocket, then send its Status and close."""
    sock = ChannelSocket(ws, codec)
    first = channels.STDOUT if options.stdout else channels.STDERR if options.stderr else channels.ERROR
    await sock.send(first, b"")
    try:
        session = await start()
    except Exception as exc:  # noqa: BLE001 - any runtime failure is reported to the client as a Status
        what = "executing command in" if exec_ else "attaching to"
        await _finish(sock, channels.error_status(f"error {what} container: {exc}"))
        return
    receiver = asyncio.create_task(_receive(sock, session, options))
    outputs = asyncio.gather(_pump(session.read_stdout, sock, channels.STDOUT, options.stdout),
                             _pump(session.read_stderr, sock, channels.STDERR, options.stderr))
    try:
        done, _ = await asyncio.wait({receiver, outputs}, return_when=asyncio.FIRST_COMPLETED)
        if outputs not in done:
            return
        outputs.result()
        status = channels.success_status()
        if exec_:
            code = await session.wait()
            if code != 0:
                status = channels.exit_code_status(code)
        await _finish(sock, status)
    except ConnectionResetError as exc:
        log.debug("client of the session went away: %s", exc)
    finally:
        receiver.cancel()
        outputs.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.gather(receiver, outputs, return_exceptions=True)
        await session.close()


async def _finish(sock: ChannelSocket, status: dict[str, Any]) -> None:
    """Write the final Status on the error channel and close the WebSocket normally."""
    payload = channels.status_payload(sock.codec, status)
    with contextlib.suppress(ConnectionResetError):
        if payload:
            await sock.send(channels.ERROR, payload)
        await sock.ws.close()


SPDY_PROTOCOLS = (channels.V5, channels.V4, "v3.channel.k8s.io", "v2.channel.k8s.io", channels.V1)
"""What exec and attach speak over the legacy SPDY upgrade (v5 behaves as v4 there)."""
STREAM_CREATION_TIMEOUT = 30.0


class _SpdyStreams:
    """Collects the streams a SPDY exec client opens, by their streamtype header."""

    def __init__(self, expected: int):
        self.by_type: dict[str, SpdyStream] = {}
        self.expected = expected
        self.ready = asyncio.Event()

    def add(self, stream: SpdyStream) -> None:
        kind = stream.header("streamtype")
        if kind in ("error", "stdin", "stdout", "stderr", "resize") and kind not in self.by_type:
            self.by_type[kind] = stream
            if len(self.by_type) >= self.expected:
                self.ready.set()


async def _spdy_resizes(stream: SpdyStream, session: StreamSession) -> None:
    """Resize events: JSON objects one after another on the resize stream."""
    decoder = json.JSONDecoder()
    buffer = ""
    while chunk := await stream.read():
        buffer += chunk.decode(errors="replace")
        while buffer.strip():
            try:
                size, end = decoder.raw_decode(buffer.lstrip())
            except json.JSONDecodeError:
                break
            buffer = buffer.lstrip()[end:]
            with contextlib.suppress(channels.ProtocolError, OSError):
                await session.resize(*channels.parse_resize(json.dumps(size).encode()))


async def _spdy_stdin(stream: SpdyStream, session: StreamSession) -> None:
    """Client input until it half-closes the stdin stream, then end of input for the process."""
    with contextlib.suppress(BrokenPipeError, ConnectionResetError, ValueError, OSError):
        while chunk := await stream.read():
            await session.write_stdin(chunk)
        await session.close_stdin()


async def _spdy_pump(read: Callable[[], Awaitable[bytes]], stream: SpdyStream | None) -> None:
    while chunk := await read():
        if stream is not None:
            await stream.write(chunk)


async def serve_spdy(send: Send, incoming: AsyncIterable[bytes], protocol: str, options: StreamOptions,
                     start: Callable[[], Awaitable[StreamSession]], exec_: bool) -> None:
    """Run one exec or attach session for a legacy SPDY client: wait for its streams, bridge them, send the Status."""
    resizable = options.tty and protocol in (channels.V5, channels.V4, "v3.channel.k8s.io")
    streams = _SpdyStreams(1 + options.stdin + options.stdout + options.stderr + resizable)
    spdy_session = SpdySession(send, streams.add)
    serving = asyncio.create_task(spdy_session.serve(incoming))
    try:
        async with asyncio.timeout(STREAM_CREATION_TIMEOUT):
            ready = asyncio.create_task(streams.ready.wait())
            await asyncio.wait({ready, serving}, return_when=asyncio.FIRST_COMPLETED)
            ready.cancel()
        if not streams.ready.is_set():
            return
        await _run_spdy(streams.by_type, ChannelCodec(protocol), start, exec_)
    except TimeoutError:
        log.info("SPDY client did not open its streams in time")
    finally:
        await spdy_session.go_away()
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)


async def _run_spdy(by_type: dict[str, SpdyStream], codec: ChannelCodec,
                    start: Callable[[], Awaitable[StreamSession]], exec_: bool) -> None:
    error = by_type["error"]
    try:
        session = await start()
    except Exception as exc:  # noqa: BLE001 - any runtime failure is reported to the client as a Status
        what = "executing command in" if exec_ else "attaching to"
        await _spdy_finish(by_type, codec, channels.error_status(f"error {what} container: {exc}"))
        return
    helpers = [asyncio.create_task(_spdy_stdin(by_type["stdin"], session))] if "stdin" in by_type else []
    if "resize" in by_type:
        helpers.append(asyncio.create_task(_spdy_resizes(by_type["resize"], session)))
    try:
        await asyncio.gather(_spdy_pump(session.read_stdout, by_type.get("stdout")),
                             _spdy_pump(session.read_stderr, by_type.get("stderr")))
        status = channels.success_status()
        if exec_ and (code := await session.wait()) != 0:
            status = channels.exit_code_status(code)
        await _spdy_finish(by_type, codec, status)
    except StreamReset:
        log.debug("SPDY client of stream %d went away", error.id)
    finally:
        for helper in helpers:
            helper.cancel()
        await asyncio.gather(*helpers, return_exceptions=True)
        await session.close()


async def _spdy_finish(by_type: dict[str, SpdyStream], codec: ChannelCodec, status: dict[str, Any]) -> None:
    """The Status on the error stream, then every stream half-closed."""
    payload = channels.status_payload(codec, status)
    with contextlib.suppress(StreamReset):
        if payload:
            await by_type["error"].write(payload)
    for stream in by_type.values():
        await stream.close()
