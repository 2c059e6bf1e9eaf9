"""Bodies that arrive in pieces are read whole (aiohttp's read(n) alone returns only what is buffered)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import ClientSession, web
from aiohttp.test_utils import TestServer

from kubelite.client.bodies import read_at_most


async def _serve(limit: int) -> TestServer:
    async def echo(request: web.Request) -> web.Response:
        body = await read_at_most(request.content, limit)
        return web.json_response({"length": len(body), "head": body[:8].decode()})

    app = web.Application()
    app.router.add_post("/", echo)
    server = TestServer(app)
    await server.start_server()
    return server


async def _pieces(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part
        await asyncio.sleep(0.05)


async def test_a_body_sent_in_pieces_is_read_whole() -> None:
    server = await _serve(100)
    try:
        async with ClientSession() as session:
            async with session.post(server.make_url("/"), data=_pieces(b"first-", b"second-", b"third")) as r:
                assert await r.json() == {"length": 18, "head": "first-se"}
    finally:
        await server.close()


async def test_a_body_over_the_limit_reads_one_byte_more() -> None:
    server = await _serve(10)
    try:
        async with ClientSession() as session:
            async with session.post(server.make_url("/"), data=_pieces(b"0123456", b"789abcdef")) as r:
                assert (await r.json())["length"] == 11
            async with session.post(server.make_url("/"), data=b"") as r:
                assert (await r.json())["length"] == 0
    finally:
        await server.close()
