"""The kubelet's gRPC probe against a real gRPC server (grpcio's standard health service) on loopback."""

from __future__ import annotations

import asyncio
import socket

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from kubelite.kubelet import grpcprobe

AGENT = "kube-probe/1.33"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
async def server():
    """A gRPC server with the health service: "" and "app" SERVING, "down" NOT_SERVING."""
    srv = grpc.aio.server()
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, srv)
    port = srv.add_insecure_port("127.0.0.1:0")
    await srv.start()
    await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    await servicer.set("app", health_pb2.HealthCheckResponse.SERVING)
    await servicer.set("down", health_pb2.HealthCheckResponse.NOT_SERVING)
    yield port
    await srv.stop(None)


async def test_serving_service_passes(server):
    assert await grpcprobe.probe("127.0.0.1", server, "", 2, AGENT) == (True, "")
    assert await grpcprobe.probe("127.0.0.1", server, "app", 2, AGENT) == (True, "")


async def test_not_serving_fails_with_upstreams_message(server):
    assert await grpcprobe.probe("127.0.0.1", server, "down", 2, AGENT) == (
        False, 'service unhealthy (responded with "NOT_SERVING")')


async def test_unknown_service_is_the_servers_rpc_error(server):
    ok, message = await grpcprobe.probe("127.0.0.1", server, "nope", 2, AGENT)
    assert not ok
    assert message == "error: health rpc probe failed: rpc error: code = NotFound desc = "


async def test_server_without_health_service_is_named_as_such():
    srv = grpc.aio.server()
    port = srv.add_insecure_port("127.0.0.1:0")
    await srv.start()
    try:
        ok, message = await grpcprobe.probe("127.0.0.1", port, "", 2, AGENT)
    finally:
        await srv.stop(None)
    assert not ok
    assert message == ("error: this server does not implement the grpc health protocol (grpc.health.v1.Health): "
                       "Method not found!")


async def test_nothing_listening_fails_to_connect():
    port = free_port()
    ok, message = await grpcprobe.probe("127.0.0.1", port, "", 2, AGENT)
    assert not ok
    assert message.startswith(f'error: failed to connect service at "127.0.0.1:{port}":')


async def test_silent_server_times_out():
    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    silent = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    try:
        assert await grpcprobe.probe("127.0.0.1", port, "", 0.3, AGENT) == (
            False, "timeout: health rpc did not complete within 0.3s")
    finally:
        silent.close()


async def test_http1_server_is_not_mistaken_for_healthy():
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    http1 = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = http1.sockets[0].getsockname()[1]
    try:
        ok, message = await grpcprobe.probe("127.0.0.1", port, "", 2, AGENT)
    finally:
        http1.close()
    assert not ok
    assert message.startswith("error: ")


def test_messages_encode_and_decode_as_protobuf():
    assert grpcprobe.request_message("") == b"\x00\x00\x00\x00\x00"
    assert grpcprobe.request_message("app") == b"\x00\x00\x00\x00\x05\x0a\x03app"
    serving = health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING).SerializeToString()
    assert grpcprobe.response_status(b"\x00" + len(serving).to_bytes(4, "big") + serving) == 1
    assert grpcprobe.response_status(b"\x00\x00\x00\x00\x00") == 0
    parsed = health_pb2.HealthCheckRequest.FromString(grpcprobe.request_message("a" * 200)[5:])
    assert parsed.service == "a" * 200
