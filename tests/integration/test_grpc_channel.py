"""The HTTP/2 gRPC channel against a real gRPC server (grpcio, raw-bytes handlers): framing, status codes,
deadlines, concurrency on one connection, flow control both ways, unix sockets and reconnects."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import pytest

from kubelite.kubelet.grpcchannel import (
    DEADLINE_EXCEEDED,
    NOT_FOUND,
    UNIMPLEMENTED,
    Channel,
    RpcError,
    encode_timeout,
    parse_target,
)

SERVICE = "test.Raw"


class Peers:
    """What the server saw: the peer addresses of calls (one per connection when multiplexed)."""

    def __init__(self) -> None:
        self.seen: list[str] = []


async def _echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return request


async def _big(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return bytes(range(256)) * (int(request.decode()) // 256)


async def _fail(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    await context.abort(grpc.StatusCode.NOT_FOUND, "no such thing: 100% gone\nreally")
    return b""


def _server(peers: Peers) -> grpc.aio.Server:
    async def slow(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        peers.seen.append(context.peer())
        await asyncio.sleep(float(request.decode()))
        return b"done"

    handlers = {name: grpc.unary_unary_rpc_method_handler(fn) for name, fn in
                {"Echo": _echo, "Big": _big, "Fail": _fail, "Slow": slow}.items()}
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 64 << 20),
                                      ("grpc.max_send_message_length", 64 << 20)])
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, handlers)])
    return server


@pytest.fixture
async def served():
    peers = Peers()
    server = _server(peers)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = Channel(f"127.0.0.1:{port}")
    yield channel, peers
    await channel.close()
    await server.stop(None)


async def test_echo_round_trips_bytes(served):
    channel, _ = served
    assert await channel.unary(f"/{SERVICE}/Echo", b"") == b""
    assert await channel.unary(f"/{SERVICE}/Echo", b"\x00\x01hello") == b"\x00\x01hello"


async def test_large_reply_and_request_pass_flow_control(served):
    channel, _ = served
    reply = await channel.unary(f"/{SERVICE}/Big", str(3 << 20).encode())
    assert len(reply) == 3 << 20 and reply[:3] == b"\x00\x01\x02"
    request = bytes(range(256)) * 8192
    assert await channel.unary(f"/{SERVICE}/Echo", request) == request


async def test_status_code_and_message_come_back(served):
    channel, _ = served
    with pytest.raises(RpcError) as caught:
        await channel.unary(f"/{SERVICE}/Fail", b"")
    assert caught.value.code == NOT_FOUND
    assert caught.value.message == "no such thing: 100% gone\nreally"
    with pytest.raises(RpcError) as caught:
        await channel.unary(f"/{SERVICE}/Nope", b"")
    assert caught.value.code == UNIMPLEMENTED


async def test_deadline_ends_the_call_and_the_connection_stays_usable(served):
    channel, _ = served
    started = time.monotonic()
    with pytest.raises(RpcError) as caught:
        await channel.unary(f"/{SERVICE}/Slow", b"5", deadline=0.3)
    assert caught.value.code == DEADLINE_EXCEEDED
    assert time.monotonic() - started < 2
    assert await channel.unary(f"/{SERVICE}/Echo", b"x", deadline=5) == b"x"


async def test_concurrent_calls_share_one_connection_without_waiting(served):
    channel, peers = served
    started = time.monotonic()
    replies = await asyncio.gather(*(channel.unary(f"/{SERVICE}/Slow", b"0.5") for _ in range(30)))
    assert replies == [b"done"] * 30
    assert time.monotonic() - started < 2.5
    assert len(set(peers.seen)) == 1


async def test_reconnects_after_the_server_restarts(tmp_path: Path):
    socket = tmp_path / "grpc.sock"
    channel = Channel(f"unix://{socket}")
    try:
        for _ in range(2):
            server = _server(Peers())
            server.add_insecure_port(f"unix://{socket}")
            await server.start()
            assert await channel.unary(f"/{SERVICE}/Echo", b"again") == b"again"
            await server.stop(None)
        with pytest.raises(OSError):
            await channel.unary(f"/{SERVICE}/Echo", b"gone")
    finally:
        await channel.close()


async def test_call_on_a_server_that_goes_away_mid_call_fails_with_connection_error(tmp_path: Path):
    socket = tmp_path / "grpc.sock"
    server = _server(Peers())
    server.add_insecure_port(f"unix://{socket}")
    await server.start()
    channel = Channel(f"unix://{socket}")
    try:
        call = asyncio.create_task(channel.unary(f"/{SERVICE}/Slow", b"10"))
        await asyncio.sleep(0.3)
        await server.stop(None)
        with pytest.raises((OSError, RpcError)):
            await asyncio.wait_for(call, 5)
    finally:
        await channel.close()


def test_timeout_header_and_targets():
    assert encode_timeout(0.3) == "300000u"
    assert encode_timeout(0.0000001) == "100n"
    assert encode_timeout(100) == "100000m"
    assert encode_timeout(10 ** 6) == "1000000S"
    assert parse_target("unix:///run/containerd/containerd.sock") == ("/run/containerd/containerd.sock", "", 0)
    assert parse_target("unix:relative.sock") == ("relative.sock", "", 0)
    assert parse_target("127.0.0.1:10000") == ("", "127.0.0.1", 10000)
    assert parse_target("[::1]:50051") == ("", "::1", 50051)
    with pytest.raises(ValueError):
        parse_target("nowhere")


async def test_calls_in_flight_finish_when_the_server_stops_gracefully(tmp_path: Path):
    socket = tmp_path / "grpc.sock"
    server = _server(Peers())
    server.add_insecure_port(f"unix://{socket}")
    await server.start()
    channel = Channel(f"unix://{socket}")
    try:
        assert await channel.unary(f"/{SERVICE}/Echo", b"warm") == b"warm"
        slow = asyncio.create_task(channel.unary(f"/{SERVICE}/Slow", b"0.5"))
        await asyncio.sleep(0.1)
        stopping = asyncio.create_task(server.stop(5))
        assert await asyncio.wait_for(slow, 5) == b"done"
        await stopping
        replacement = _server(Peers())
        replacement.add_insecure_port(f"unix://{socket}")
        await replacement.start()
        assert await channel.unary(f"/{SERVICE}/Echo", b"new") == b"new"
        await replacement.stop(None)
    finally:
        await channel.close()
