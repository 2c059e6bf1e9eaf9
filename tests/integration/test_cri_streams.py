"""The CRI streaming clients against the kubelet's own server side of the same protocols (streaming.remotecommand
and streaming.portforward) on loopback: v5 and v4 channel WebSocket and SPDY exec sessions, exit codes, failures,
port-forward."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from kubelite.kubelet.runtime import crispdy
from kubelite.kubelet.runtime.base import RuntimeServiceError, StreamSession
from kubelite.kubelet.runtime.cristreams import EXEC_FAILED, StreamClient, exit_code_of
from kubelite.kubelet.streaming import channels, portforward, remotecommand, upgrade
from kubelite.kubelet.streaming.channels import ChannelCodec


class Cat(StreamSession):
    """A process that copies stdin to stdout, says "bye" on stderr at the end and exits with `code`; with a tty,
    input is echoed and a ^D ends it."""

    def __init__(self, code: int = 0, tty: bool = False):
        self.code = code
        self.tty = tty
        self.out: asyncio.Queue[bytes] = asyncio.Queue()
        self.err: asyncio.Queue[bytes] = asyncio.Queue()
        self.sizes: list[tuple[int, int]] = []

    async def write_stdin(self, data: bytes) -> None:
        if self.tty and b"\x04" in data:
            await self.out.put(data.split(b"\x04")[0])
            await self.close_stdin()
            return
        await self.out.put(data)

    async def close_stdin(self) -> None:
        await self.out.put(b"")
        await self.err.put(b"" if self.tty else b"bye")
        await self.err.put(b"")

    async def read_stdout(self, n: int = 65536) -> bytes:
        return await self.out.get()

    async def read_stderr(self, n: int = 65536) -> bytes:
        return await self.err.get()

    async def resize(self, width: int, height: int) -> None:
        self.sizes.append((width, height))

    async def wait(self) -> int:
        return self.code

    async def close(self) -> None:
        """Nothing to release."""


def exec_app(protocols: tuple[str, ...], start: Callable[[], Awaitable[StreamSession]], tty: bool = False
             ) -> web.Application:
    """A streaming server offering these subprotocols for one exec session."""

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=protocols)
        await ws.prepare(request)
        options = remotecommand.StreamOptions(stdin=True, stdout=True, stderr=not tty, tty=tty)
        await remotecommand.serve(ws, ChannelCodec(ws.ws_protocol or channels.V1), options, start, True)
        return ws

    app = web.Application()
    app.router.add_get("/exec/{token}", handler)
    return app


def spdy_app(start: Callable[[], Awaitable[StreamSession]], tty: bool = False) -> web.Application:
    """A streaming server taking the SPDY/3.1 upgrade for one exec session, as the kubelet's server does."""

    async def handler(request: web.Request) -> web.StreamResponse:
        assert upgrade.is_spdy_upgrade(request)
        assert upgrade.stream_protocols(request) == [channels.V4]
        conn = await upgrade.accept(request, {"Upgrade": upgrade.SPDY_UPGRADE, upgrade.PROTOCOL_HEADER: channels.V4})
        options = remotecommand.StreamOptions(stdin=True, stdout=True, stderr=not tty, tty=tty)
        try:
            await remotecommand.serve_spdy(conn.write, conn.chunks(), channels.V4, options, start, True)
        finally:
            conn.close()
        return conn.response

    app = web.Application()
    app.router.add_post("/exec/{token}", handler)
    return app


async def serve(app: web.Application) -> AsyncIterator[str]:
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url(""))
    finally:
        await server.close()


@pytest.fixture
async def client() -> AsyncIterator[StreamClient]:
    streams = StreamClient()
    yield streams
    await streams.close()


async def read_all(read: Callable[[], Awaitable[bytes]]) -> bytes:
    out = b""
    async with asyncio.timeout(5):
        while chunk := await read():
            out += chunk
    return out


@pytest.mark.parametrize("protocol", [channels.V5, channels.V4])
async def test_exec_session_streams_and_tells_the_exit_code(client: StreamClient, protocol: str):
    cat = Cat(code=3)

    async def start() -> StreamSession:
        return cat

    async for base in serve(exec_app((protocol,), start)):
        session = await client.session(f"{base}/exec/t", tty=False)
        await session.write_stdin(b"hello ")
        await session.write_stdin(b"world")
        received = b""
        async with asyncio.timeout(5):
            while len(received) < 11:
                received += await session.read_stdout()
        assert received == b"hello world"
        if protocol == channels.V5:
            await session.close_stdin()
        else:
            await cat.close_stdin()
        assert await read_all(session.read_stdout) == b""
        assert await read_all(session.read_stderr) == b"bye"
        assert await session.wait() == 3
        await session.close()


async def test_spdy_session_closes_stdin_by_half_closing_its_stream():
    cat = Cat(code=4)

    async def start() -> StreamSession:
        return cat

    async for base in serve(spdy_app(start)):
        session = await crispdy.open_session(f"{base}/exec/t", stdin=True, tty=False)
        await session.write_stdin(b"through SPDY ")
        await session.write_stdin(b"y" * 100_000)
        await session.close_stdin()
        assert await read_all(session.read_stdout) == b"through SPDY " + b"y" * 100_000
        assert await read_all(session.read_stderr) == b"bye"
        assert await session.wait() == 4
        await session.close()


async def test_spdy_session_that_fails_to_start_and_a_refused_upgrade():
    async def start() -> StreamSession:
        raise RuntimeError("container not running")

    async for base in serve(spdy_app(start)):
        session = await crispdy.open_session(f"{base}/exec/t", stdin=True, tty=False)
        assert await read_all(session.read_stdout) == b""
        assert b"container not running" in await read_all(session.read_stderr)
        assert await session.wait() == EXEC_FAILED
        await session.close()
        with pytest.raises(RuntimeServiceError, match="404"):
            await crispdy.open_session(f"{base}/nowhere", stdin=True, tty=False)


async def test_tty_session_resizes_and_ends_input_with_ctrl_d(client: StreamClient):
    cat = Cat(tty=True)

    async def start() -> StreamSession:
        return cat

    async for base in serve(exec_app((channels.V4,), start, tty=True)):
        session = await client.session(f"{base}/exec/t", tty=True)
        await session.resize(120, 40)
        await session.write_stdin(b"typed")
        await session.close_stdin()
        assert await read_all(session.read_stdout) == b"typed"
        assert await session.read_stderr() == b""
        assert await session.wait() == 0
        assert cat.sizes == [(120, 40)]
        await session.close()


async def test_a_session_that_fails_to_start_reports_on_stderr(client: StreamClient):
    async def start() -> StreamSession:
        raise RuntimeError('exec: "nope": executable file not found in $PATH')

    async for base in serve(exec_app((channels.V4,), start)):
        session = await client.session(f"{base}/exec/t", tty=False)
        assert await read_all(session.read_stdout) == b""
        assert b'"nope": executable file not found' in await read_all(session.read_stderr)
        assert await session.wait() == EXEC_FAILED
        await session.close()


async def test_refused_upgrade_is_a_runtime_error(client: StreamClient):
    async for base in serve(web.Application()):
        with pytest.raises(RuntimeServiceError):
            await client.session(f"{base}/exec/missing", tty=False)


def test_exit_codes_from_statuses():
    assert exit_code_of(channels.success_status()) == (0, "")
    assert exit_code_of(channels.exit_code_status(42)) == (42, "")
    assert exit_code_of(channels.error_status("boom")) == (EXEC_FAILED, "Internal error occurred: boom")


async def test_port_forward_carries_a_connection_both_ways(client: StreamClient):
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"ready\n")
        while data := await reader.read(65536):
            writer.write(data.upper())
            await writer.drain()
        writer.close()

    target = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = target.sockets[0].getsockname()[1]

    async def connect(wanted: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", wanted)

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=(channels.V4,))
        await ws.prepare(request)
        await portforward.serve_channels(ws, ChannelCodec(ws.ws_protocol or channels.V4), [port], connect, "p", "u")
        return ws

    app = web.Application()
    app.router.add_get("/portforward/{token}", handler)
    try:
        async for base in serve(app):
            reader, writer = await client.port_forward(f"{base}/portforward/t", port)
            async with asyncio.timeout(5):
                assert await reader.readline() == b"ready\n"
                big = b"x" * 200_000 + b"\n"
                writer.write(big)
                await writer.drain()
                assert await reader.readexactly(len(big)) == big.upper()
                writer.write(b"last\n")
                writer.write_eof()
                assert await reader.readexactly(5) == b"LAST\n"
            writer.close()
    finally:
        target.close()
        await target.wait_closed()
