"""gRPC probes: one grpc.health.v1.Health/Check call, as the kubelet makes it, and the verdict with upstream's
messages.

The request and reply are tiny protobuf messages (HealthCheckRequest{service}, HealthCheckResponse{status}),
encoded here with the project's protowire; the call goes over a grpcchannel.Channel of its own.
"""

from __future__ import annotations

import asyncio

from kubelite.api import protowire
from kubelite.kubelet.grpcchannel import DEADLINE_EXCEEDED, INTERNAL, UNIMPLEMENTED, Channel, RpcError, frame, unframe

METHOD = "/grpc.health.v1.Health/Check"
SERVING_STATUSES = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}


def request_body(service: str) -> bytes:
    """A HealthCheckRequest: field 1 (service) as a string, left out when empty."""
    message = protowire.Writer()
    if service:
        message.string(1, service)
    return message.getvalue()


def request_message(service: str) -> bytes:
    """The HealthCheckRequest as it goes on the wire: length-prefixed."""
    return frame(request_body(service))


def reply_status(body: bytes) -> int:
    """The status (field 1) of a HealthCheckResponse; 0 (UNKNOWN) when absent."""
    try:
        status = protowire.read_message(body).get(1, [0])[-1]
    except ValueError as exc:
        raise RpcError(INTERNAL, f"malformed health response: {exc}") from None
    if not isinstance(status, int):
        raise RpcError(INTERNAL, "malformed health response: the status is not a varint")
    return status


def response_status(data: bytes) -> int:
    """The status of a length-prefixed HealthCheckResponse as it comes off the wire."""
    return reply_status(unframe(data))


async def check(host: str, port: int, authority: str, service: str, user_agent: str,
                deadline: float | None = None) -> int:
    """Call Health/Check; the serving status, or RpcError for a non-OK grpc-status; OSError when the connection
    fails."""
    channel = Channel(f"[{host}]:{port}" if ":" in host else f"{host}:{port}", user_agent, authority)
    try:
        return reply_status(await channel.unary(METHOD, request_body(service), deadline))
    finally:
        await channel.close()


async def probe(host: str, port: int, service: str, limit: float, user_agent: str) -> tuple[bool, str]:
    """A gRPC probe: (SERVING, upstream's message when not)."""
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    timeout = f"timeout: health rpc did not complete within {limit:g}s"
    try:
        async with asyncio.timeout(limit):
            status = await check(host, port, address, service, user_agent, limit)
    except TimeoutError:
        return False, timeout
    except RpcError as exc:
        if exc.code == DEADLINE_EXCEEDED:
            return False, timeout
        if exc.code == UNIMPLEMENTED:
            return False, ("error: this server does not implement the grpc health protocol "
                           f"(grpc.health.v1.Health): {exc.message}")
        return False, f"error: health rpc probe failed: {exc}"
    except OSError as exc:
        return False, f'error: failed to connect service at "{address}": {exc.strerror or exc}'
    if status != 1:
        return False, f'service unhealthy (responded with "{SERVING_STATUSES.get(status, str(status))}")'
    return True, ""
