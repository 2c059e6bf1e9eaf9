"""HTTP connection helpers for streaming: raw upgrades (`Upgrade: SPDY/3.1`) and noticing a client that left.

aiohttp only takes over connections for WebSocket; for the legacy SPDY upgrade of older kubectl the handler
answers 101 itself, then reads the connection's bytes through a parser it installs on the protocol.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Mapping

from aiohttp import web

SPDY_UPGRADE = "SPDY/3.1"
PROTOCOL_HEADER = "X-Stream-Protocol-Version"


def is_spdy_upgrade(request: web.Request) -> bool:
    """Whether the request asks for the legacy SPDY/3.1 upgrade."""
    connection = [t.strip().lower() for t in request.headers.get("Connection", "").split(",")]
    return "upgrade" in connection and request.headers.get("Upgrade", "").lower() == SPDY_UPGRADE.lower()


def is_websocket(request: web.Request) -> bool:
    """Whether the request asks for a WebSocket upgrade."""
    connection = [t.strip().lower() for t in request.headers.get("Connection", "").split(",")]
    return "upgrade" in connection and request.headers.get("Upgrade", "").lower() == "websocket"


async def until_disconnected(request: web.Request, interval: float = 1.0) -> None:
    """Return once the client's connection is closed (aiohttp has no event for it, nor cancels the handler)."""
    while True:
        if request.transport is None or request.transport.is_closing():
            return
        await asyncio.sleep(interval)


async def while_connected(request: web.Request, work: Awaitable[None]) -> None:
    """Run work until it ends or the client goes away (a follow that writes nothing would never notice)."""
    task = asyncio.ensure_future(work)
    watch = asyncio.create_task(until_disconnected(request))
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not task.done():
            task.cancel()
        await asyncio.gather(task, watch, return_exceptions=True)
    if not task.cancelled():
        task.result()


def stream_protocols(request: web.Request) -> list[str]:
    """The X-Stream-Protocol-Version values a SPDY client offers, in its order (repeated or comma-separated)."""
    return [p.strip() for value in request.headers.getall(PROTOCOL_HEADER, []) for p in value.split(",") if p.strip()]


class _Feeder:
    """Stands in for aiohttp's payload parser: queues the raw bytes that arrive after the upgrade."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self.queue.put_nowait(bytes(data))
        return False, b""

    def feed_eof(self) -> None:
        self.queue.put_nowait(b"")


class RawConnection:
    """An upgraded connection: read() the client's bytes (b"" at the end), write() raw bytes back."""

    def __init__(self, request: web.Request, response: web.StreamResponse, feeder: _Feeder):
        self.request = request
        self.response = response
        self._feeder = feeder
        self._eof = False

    async def read(self) -> bytes:
        """The next bytes from the client; b"" once it closed the connection."""
        if self._eof:
            return b""
        data = await self._feeder.queue.get()
        self._eof = not data
        return data

    async def chunks(self) -> AsyncIterator[bytes]:
        """Everything the client sends, until it closes."""
        while data := await self.read():
            yield data

    async def write(self, data: bytes) -> None:
        """Send raw bytes, waiting while the client is slow to read."""
        await self.response.write(data)

    def close(self) -> None:
        """Close the connection once the handler returns."""
        self.request.protocol.force_close()
        if self.request.transport is not None:
            self.request.transport.close()


async def accept(request: web.Request, headers: Mapping[str, str]) -> RawConnection:
    """Answer 101 Switching Protocols with headers and take the connection over."""
    response = web.StreamResponse(status=101, headers={"Connection": "Upgrade", **headers})
    await response.prepare(request)
    feeder = _Feeder()
    request.protocol.set_parser(feeder)  # type: ignore[arg-type]
    return RawConnection(request, response, feeder)
