"""The server side of a SPDY/3.1 session over any byte transport: a WebSocket tunnel or an upgraded connection.

The peer (kubectl's spdystream) opens streams with SYN_STREAM; each is answered with SYN_REPLY at once and handed
to a callback. Received data is buffered per stream; the transport is read no further while a stream holds more
than HIGH_WATER unread bytes. Like spdystream the session does not hold back its own sends for the peer's window
(spdystream sends no WINDOW_UPDATE), but it grants the peer more window as data is consumed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterable, Awaitable, Callable

from kubelite.kubelet.streaming import spdy

log = logging.getLogger(__name__)

HIGH_WATER = 1 << 20
"""Unread bytes of one stream past which the session stops reading the transport."""
WRITE_CHUNK = 32 * 1024
"""Largest DATA frame the session sends."""

Send = Callable[[bytes], Awaitable[None]]


class StreamReset(ConnectionResetError):
    """The stream was reset (or its session ended) before the write."""


class SpdyStream:
    """One stream the peer opened: read what it sends, write DATA frames back, half-close or reset."""

    def __init__(self, session: SpdySession, stream_id: int, headers: spdy.Headers):
        self.session = session
        self.id = stream_id
        self.headers = headers
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._unacknowledged = 0
        self._changed = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self.remote_closed = False
        self.local_closed = False
        self.reset = False

    def header(self, name: str) -> str:
        """The first value of a header the stream was opened with, or ""."""
        return (self.headers.get(name.lower()) or [""])[0]

    async def read(self) -> bytes:
        """The next chunk the peer sent; b"" once it half-closed or the stream was reset."""
        while not self._chunks:
            if self.remote_closed or self.reset:
                return b""
            self._changed.clear()
            await self._changed.wait()
        chunk = self._chunks.popleft()
        self._buffered -= len(chunk)
        if self._buffered <= HIGH_WATER // 2:
            self._drained.set()
        self._unacknowledged += len(chunk)
        if self._unacknowledged >= spdy.DEFAULT_WINDOW // 2 and not self.reset and not self.remote_closed:
            delta, self._unacknowledged = self._unacknowledged, 0
            with contextlib.suppress(ConnectionError):
                await self.session.send(spdy.WindowUpdate(self.id, delta))
        return chunk

    async def write(self, data: bytes) -> None:
        """Send data on the stream; StreamReset if it was reset or already half-closed by this side."""
        view = memoryview(data)
        while view:
            if self.reset or self.local_closed:
                raise StreamReset(f"stream {self.id} is closed")
            piece, view = bytes(view[:WRITE_CHUNK]), view[WRITE_CHUNK:]
            await self.session.send(spdy.DataFrame(self.id, piece))

    async def close(self) -> None:
        """Half-close: an empty DATA frame with FIN (no-op if already closed or reset)."""
        if self.local_closed or self.reset:
            return
        self.local_closed = True
        with contextlib.suppress(ConnectionError):
            await self.session.send(spdy.DataFrame(self.id, b"", spdy.FLAG_FIN))
        self.session.forget_if_done(self)

    async def abort(self, status: int = spdy.CANCEL) -> None:
        """Reset the stream (RST_STREAM), dropping what is unread."""
        if self.reset:
            return
        self._mark_reset()
        with contextlib.suppress(ConnectionError):
            await self.session.send(spdy.RstStream(self.id, status))
        self.session.forget_if_done(self)

    async def wait_drained(self) -> None:
        """Until the reader has consumed enough of the buffer (or the stream ended)."""
        await self._drained.wait()

    @property
    def buffered(self) -> int:
        """Bytes received and not read yet."""
        return self._buffered

    def receive(self, data: bytes, fin: bool) -> None:
        """Data (and maybe FIN) from the peer."""
        if self.reset or self.remote_closed:
            return
        if data:
            self._chunks.append(data)
            self._buffered += len(data)
            if self._buffered > HIGH_WATER:
                self._drained.clear()
        if fin:
            self.remote_closed = True
        self._changed.set()

    def _mark_reset(self) -> None:
        self.reset = True
        self._chunks.clear()
        self._buffered = 0
        self._drained.set()
        self._changed.set()

    def peer_reset(self) -> None:
        """The peer reset the stream, or the session ended."""
        self._mark_reset()


class SpdySession:
    """Reads frames from a transport, keeps the streams, answers pings; sends frames one at a time, in order."""

    def __init__(self, send: Send, on_stream: Callable[[SpdyStream], None]):
        self._send = send
        self._on_stream = on_stream
        self._compressor = spdy.HeaderCompressor()
        self._lock = asyncio.Lock()
        self.streams: dict[int, SpdyStream] = {}
        self._last_peer_stream = 0
        self.going_away = False
        self.closed = False

    async def send(self, frame: spdy.Frame) -> None:
        """Encode (compressing headers in send order) and send one frame."""
        async with self._lock:
            if self.closed:
                raise StreamReset("the SPDY session has ended")
            try:
                await self._send(spdy.encode(frame, self._compressor))
            except ConnectionError as exc:
                self.closed = True
                raise StreamReset(f"the SPDY transport is gone: {exc}") from exc

    def forget_if_done(self, stream: SpdyStream) -> None:
        """Drop a stream once both sides have closed it or it was reset."""
        if stream.reset or (stream.local_closed and stream.remote_closed):
            self.streams.pop(stream.id, None)

    async def serve(self, incoming: AsyncIterable[bytes]) -> None:
        """Process the peer's frames until the transport ends; then every stream reads as reset."""
        parser = spdy.FrameParser()
        try:
            async for data in incoming:
                for frame in parser.feed(data):
                    await self._handle(frame)
                for stream in [s for s in self.streams.values() if s.buffered > HIGH_WATER]:
                    await stream.wait_drained()
        except spdy.SpdyError as exc:
            log.warning("SPDY protocol error: %s", exc)
            with contextlib.suppress(ConnectionError):
                await self.send(spdy.GoAway(self._last_peer_stream, spdy.GOAWAY_PROTOCOL_ERROR))
        finally:
            self.closed = True
            for stream in list(self.streams.values()):
                stream.peer_reset()
            self.streams.clear()

    async def go_away(self) -> None:
        """Tell the peer no more streams will be accepted."""
        if not self.going_away:
            self.going_away = True
            with contextlib.suppress(ConnectionError):
                await self.send(spdy.GoAway(self._last_peer_stream))

    async def _handle(self, frame: spdy.Frame) -> None:
        match frame:
            case spdy.DataFrame(stream_id, data, flags):
                stream = self.streams.get(stream_id)
                if stream is not None:
                    stream.receive(data, bool(flags & spdy.FLAG_FIN))
                    self.forget_if_done(stream)
            case spdy.SynStream(stream_id, headers, _, _, flags):
                await self._open(stream_id, headers, flags)
            case spdy.RstStream(stream_id, _):
                stream = self.streams.pop(stream_id, None)
                if stream is not None:
                    stream.peer_reset()
            case spdy.Ping(ping_id) if ping_id % 2 == 1:
                await self.send(spdy.Ping(ping_id))
            case spdy.GoAway():
                self.going_away = True
            case spdy.HeadersFrame(stream_id, _, flags) if flags & spdy.FLAG_FIN:
                stream = self.streams.get(stream_id)
                if stream is not None:
                    stream.receive(b"", True)
                    self.forget_if_done(stream)

    async def _open(self, stream_id: int, headers: spdy.Headers, flags: int) -> None:
        if stream_id in self.streams:
            await self.send(spdy.RstStream(stream_id, spdy.STREAM_IN_USE))
            return
        if stream_id % 2 == 0 or stream_id <= self._last_peer_stream:
            await self.send(spdy.RstStream(stream_id, spdy.PROTOCOL_ERROR))
            return
        self._last_peer_stream = stream_id
        if self.going_away:
            await self.send(spdy.RstStream(stream_id, spdy.REFUSED_STREAM))
            return
        stream = SpdyStream(self, stream_id, headers)
        self.streams[stream_id] = stream
        if flags & spdy.FLAG_FIN:
            stream.remote_closed = True
        await self.send(spdy.SynReply(stream_id))
        self._on_stream(stream)
