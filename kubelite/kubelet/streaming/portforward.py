"""Port-forward: TCP connections into the pod, carried by SPDY streams or by channel WebSocket messages.

SPDY (what kubectl speaks, tunnelled in WebSocket messages or over an upgraded connection): for each local
connection kubectl opens an error stream and a data stream carrying headers `streamtype`, `port` and
`requestid`; the pair is bridged to one connection to the pod's port. The channel protocol (what the Python
client speaks) forwards the `ports` of the query, channels 2i (data) and 2i+1 (error) for the i-th port.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterable, Awaitable, Callable
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from kubelite.kubelet.streaming import channels, spdy
from kubelite.kubelet.streaming.channels import ChannelCodec
from kubelite.kubelet.streaming.remotecommand import ChannelSocket
from kubelite.kubelet.streaming.spdysession import Send, SpdySession, SpdyStream, StreamReset

log = logging.getLogger(__name__)

Connect = Callable[[int], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]
"""Opens a TCP connection to a port of the pod."""
STREAM_CREATION_TIMEOUT = 30.0
"""Seconds a data or error stream waits for its partner before both are reset (as the kubelet does)."""
READ_SIZE = 64 * 1024


class PortError(ValueError):
    """A port that is not a number in 1..65535."""


def parse_port(value: str) -> int:
    """A port number from a header or query value."""
    try:
        port = int(value)
    except ValueError:
        raise PortError(f'unable to parse "{value}" as a port: invalid syntax') from None
    if not 0 < port < 65536:
        raise PortError(f'port "{value}" must be > 0 and < 65536')
    return port


def parse_ports(values: list[str]) -> list[int]:
    """The ports of the `ports` query parameters, each possibly comma-separated."""
    ports = [parse_port(p) for value in values for p in value.split(",")]
    if not ports:
        raise PortError('query parameter "ports" is required')
    return ports


@dataclass
class _Pair:
    data: SpdyStream | None = None
    error: SpdyStream | None = None


class SpdyPortForward:
    """One SPDY port-forward session: pairs streams by request id and bridges each pair to the pod."""

    def __init__(self, connect: Connect, pod: str, uid: str):
        self.connect = connect
        self.pod = pod
        self.uid = uid
        self._pairs: dict[str, _Pair] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def serve(self, send: Send, incoming: AsyncIterable[bytes]) -> None:
        """Run the session until the transport ends, then wind down every forwarded connection."""
        session = SpdySession(send, self._on_stream)
        try:
            await session.serve(incoming)
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_stream(self, stream: SpdyStream) -> None:
        kind = stream.header("streamtype")
        if kind not in ("data", "error"):
            self._spawn(stream.abort(spdy.PROTOCOL_ERROR))
            return
        request_id = stream.header("requestid") or str(stream.id if kind == "error" else stream.id - 2)
        pair = self._pairs.setdefault(request_id, _Pair())
        if getattr(pair, kind) is not None:
            self._spawn(stream.abort(spdy.PROTOCOL_ERROR))
            return
        setattr(pair, kind, stream)
        if pair.data is not None and pair.error is not None:
            del self._pairs[request_id]
            self._spawn(self._forward(pair.data, pair.error))
        else:
            self._spawn(self._expire(request_id, pair))

    async def _expire(self, request_id: str, pair: _Pair) -> None:
        await asyncio.sleep(STREAM_CREATION_TIMEOUT)
        if self._pairs.get(request_id) is pair:
            del self._pairs[request_id]
            for stream in (pair.data, pair.error):
                if stream is not None:
                    await stream.abort()

    async def _forward(self, data: SpdyStream, error: SpdyStream) -> None:
        port_header = data.header("port")
        try:
            port = parse_port(port_header)
            reader, writer = await self.connect(port)
        except Exception as exc:  # noqa: BLE001 - whatever fails is reported on the error stream
            await self._fail(error, data, f"error forwarding port {port_header} to pod {self.pod}, "
                                          f"uid {self.uid}: {exc}")
            return
        try:
            await _bridge(data, reader, writer)
        except OSError as exc:
            await self._fail(error, data, f"error forwarding port {port} to pod {self.pod}, uid {self.uid}: {exc}")
            return
        finally:
            writer.close()
        await error.close()

    @staticmethod
    async def _fail(error: SpdyStream, data: SpdyStream, message: str) -> None:
        with contextlib.suppress(StreamReset):
            await error.write(message.encode())
        await error.close()
        await data.close()


async def _bridge(data: SpdyStream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy both ways until the pod closes its side (or kubectl resets the stream)."""

    async def to_pod() -> None:
        while chunk := await data.read():
            writer.write(chunk)
            await writer.drain()
        if data.reset:
            writer.transport.abort()
        elif writer.can_write_eof():
            writer.write_eof()

    upload = asyncio.create_task(to_pod())
    try:
        while chunk := await reader.read(READ_SIZE):
            await data.write(chunk)
        await data.close()
    except StreamReset:
        pass
    finally:
        upload.cancel()
        with contextlib.suppress(asyncio.CancelledError, OSError):
            await upload


async def serve_channels(ws: web.WebSocketResponse, codec: ChannelCodec, ports: list[int], connect: Connect,
                         pod: str, uid: str) -> None:
    """The channel port-forward over a prepared WebSocket: one connection per requested port."""
    sock = ChannelSocket(ws, codec)
    inboxes: list[asyncio.Queue[bytes]] = [asyncio.Queue() for _ in ports]
    for index, port in enumerate(ports):
        await sock.send(2 * index, channels.port_prefix(port))
        await sock.send(2 * index + 1, channels.port_prefix(port))

    async def forward(index: int, port: int) -> None:
        try:
            reader, writer = await connect(port)
        except Exception as exc:  # noqa: BLE001 - reported on the port's error channel
            await sock.send(2 * index + 1, f"error forwarding port {port} to pod {pod}, uid {uid}: {exc}".encode())
            return

        async def to_pod() -> None:
            while chunk := await inboxes[index].get():
                writer.write(chunk)
                await writer.drain()

        upload = asyncio.create_task(to_pod())
        try:
            while chunk := await reader.read(READ_SIZE):
                await sock.send(2 * index, chunk)
        finally:
            upload.cancel()
            writer.close()

    async def receive() -> None:
        async for message in ws:
            if message.type not in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT):
                continue
            try:
                channel, data = codec.decode(message.data)
            except channels.ProtocolError:
                continue
            if channel % 2 == 0 and channel // 2 < len(ports) and data:
                inboxes[channel // 2].put_nowait(data)

    receiver = asyncio.create_task(receive())
    forwards = asyncio.gather(*(forward(i, p) for i, p in enumerate(ports)), return_exceptions=True)
    try:
        await asyncio.wait({receiver, forwards}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        receiver.cancel()
        forwards.cancel()
        await asyncio.gather(receiver, forwards, return_exceptions=True)
        with contextlib.suppress(ConnectionResetError):
            await ws.close()
