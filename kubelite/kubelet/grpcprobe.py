"""gRPC probes: one grpc.health.v1.Health/Check call over plaintext HTTP/2, as the kubelet makes it, and the
verdict with upstream's messages.

The request and reply are tiny protobuf messages (HealthCheckRequest{service}, HealthCheckResponse{status}),
encoded here by hand; h2 does the HTTP/2 framing and header compression.
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import unquote

import h2.config
import h2.connection
import h2.events
import h2.exceptions

from kubelite.api import protowire

METHOD = "/grpc.health.v1.Health/Check"
SERVING_STATUSES = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}
GRPC_CODES = {1: "Canceled", 2: "Unknown", 3: "InvalidArgument", 4: "DeadlineExceeded", 5: "NotFound",
              6: "AlreadyExists", 7: "PermissionDenied", 8: "ResourceExhausted", 9: "FailedPrecondition",
              10: "Aborted", 11: "OutOfRange", 12: "Unimplemented", 13: "Internal", 14: "Unavailable",
              15: "DataLoss", 16: "Unauthenticated"}
UNIMPLEMENTED = 12


class RpcError(Exception):
    """The call ended with a non-OK grpc-status."""

    def __init__(self, code: int, message: str):
        super().__init__(f"rpc error: code = {GRPC_CODES.get(code, f'Code({code})')} desc = {message}")
        self.code = code
        self.message = message


def request_message(service: str) -> bytes:
    """A length-prefixed HealthCheckRequest: field 1 (service) as a string, left out when empty."""
    message = protowire.Writer()
    if service:
        message.string(1, service)
    body = message.getvalue()
    return b"\x00" + len(body).to_bytes(4, "big") + body


def response_status(data: bytes) -> int:
    """The status (field 1) of a length-prefixed HealthCheckResponse; 0 (UNKNOWN) when absent."""
    if len(data) < 5 or data[0] != 0:
        raise RpcError(13, "malformed or compressed health response")
    try:
        status = protowire.read_message(data[5:5 + int.from_bytes(data[1:5], "big")]).get(1, [0])[-1]
    except ValueError as exc:
        raise RpcError(13, f"malformed health response: {exc}") from None
    if not isinstance(status, int):
        raise RpcError(13, "malformed health response: the status is not a varint")
    return status


async def check(host: str, port: int, authority: str, service: str, user_agent: str) -> int:
    """Call Health/Check; the serving status, or RpcError for a non-OK grpc-status; OSError when the connection
    fails. Bound it with a timeout."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        conn.initiate_connection()
        stream = conn.get_next_available_stream_id()
        conn.send_headers(stream, [(":method", "POST"), (":scheme", "http"), (":path", METHOD),
                                   (":authority", authority), ("content-type", "application/grpc"),
                                   ("te", "trailers"), ("user-agent", user_agent)])
        conn.send_data(stream, request_message(service), end_stream=True)
        writer.write(conn.data_to_send())
        data, headers = bytearray(), {}
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                raise ConnectionResetError("the server closed the connection before the health reply ended")
            try:
                events = conn.receive_data(chunk)
            except h2.exceptions.ProtocolError as exc:
                raise ConnectionError(f"not an HTTP/2 gRPC server: {exc}") from None
            for event in events:
                if isinstance(event, h2.events.DataReceived) and event.stream_id == stream:
                    data.extend(event.data)
                    conn.acknowledge_received_data(event.flow_controlled_length, stream)
                elif isinstance(event, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
                    headers.update(dict(event.headers))
                elif isinstance(event, h2.events.StreamReset) and event.stream_id == stream:
                    raise RpcError(13, f"stream reset by the server (HTTP/2 error {event.error_code})")
                elif isinstance(event, h2.events.ConnectionTerminated):
                    raise ConnectionResetError(f"the server ended the connection (HTTP/2 error {event.error_code})")
                elif isinstance(event, h2.events.StreamEnded) and event.stream_id == stream:
                    return _verdict(headers, bytes(data))
            writer.write(conn.data_to_send())
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def _verdict(headers: dict[str, str], data: bytes) -> int:
    """The serving status from a finished call's headers, trailers and message."""
    if headers.get(":status", "200") != "200":
        raise RpcError(14 if headers[":status"] in ("502", "503", "504") else 2,
                       f"unexpected HTTP status code received from server: {headers[':status']}")
    code = int(headers.get("grpc-status", "2"))
    if code != 0:
        raise RpcError(code, unquote(headers.get("grpc-message", "")))
    return response_status(data)


async def probe(host: str, port: int, service: str, limit: float, user_agent: str) -> tuple[bool, str]:
    """A gRPC probe: (SERVING, upstream's message when not)."""
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        async with asyncio.timeout(limit):
            status = await check(host, port, address, service, user_agent)
    except TimeoutError:
        return False, f"timeout: health rpc did not complete within {limit:g}s"
    except RpcError as exc:
        if exc.code == UNIMPLEMENTED:
            return False, ("error: this server does not implement the grpc health protocol "
                           f"(grpc.health.v1.Health): {exc.message}")
        return False, f"error: health rpc probe failed: {exc}"
    except OSError as exc:
        return False, f'error: failed to connect service at "{address}": {exc.strerror or exc}'
    if status != 1:
        return False, f'service unhealthy (responded with "{SERVING_STATUSES.get(status, str(status))}")'
    return True, ""
