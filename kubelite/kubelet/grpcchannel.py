"""A small gRPC client for unary calls over plaintext HTTP/2 (h2 does the framing and header compression).

One connection per channel, to `unix:///path` or `host:port`; concurrent calls are concurrent streams of it, so no
call waits behind another. Each call may carry a deadline (the `grpc-timeout` header and a local timeout). A
non-OK grpc-status becomes RpcError; a failed or lost connection is an OSError (ConnectionError) and the next call
connects again. Flow control both ways: replies of any size are acknowledged as they arrive, and requests are sent
no faster than the server's windows allow.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from dataclasses import dataclass, field
from urllib.parse import unquote

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

GRPC_CODES = {0: "OK", 1: "Canceled", 2: "Unknown", 3: "InvalidArgument", 4: "DeadlineExceeded", 5: "NotFound",
              6: "AlreadyExists", 7: "PermissionDenied", 8: "ResourceExhausted", 9: "FailedPrecondition",
              10: "Aborted", 11: "OutOfRange", 12: "Unimplemented", 13: "Internal", 14: "Unavailable",
              15: "DataLoss", 16: "Unauthenticated"}
OK, UNKNOWN, DEADLINE_EXCEEDED, NOT_FOUND = 0, 2, 4, 5
FAILED_PRECONDITION, UNIMPLEMENTED, INTERNAL, UNAVAILABLE = 9, 12, 13, 14
HTTP_TO_GRPC = {"400": INTERNAL, "401": 16, "403": 7, "404": UNIMPLEMENTED, "429": UNAVAILABLE, "502": UNAVAILABLE,
                "503": UNAVAILABLE, "504": UNAVAILABLE}
"""The gRPC code of a reply that is not HTTP 200, as grpc-go maps it."""
WINDOW = 4 << 20
"""What each stream (and, 4 times over, the connection) may have in flight towards us."""
READ_SIZE = 256 * 1024
DEFAULT_USER_AGENT = "kubelite-grpc/1"


class RpcError(Exception):
    """A call ended with a non-OK grpc-status (or a reply that is not gRPC): the code and the server's message."""

    def __init__(self, code: int, message: str):
        super().__init__(f"rpc error: code = {GRPC_CODES.get(code, f'Code({code})')} desc = {message}")
        self.code = code
        self.message = message


class _Refused(Exception):
    """The server did not process the stream (GOAWAY past it, or REFUSED_STREAM): safe to send again."""


def frame(message: bytes) -> bytes:
    """A message as gRPC sends it: uncompressed flag, 4-byte big-endian length, the bytes."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


def unframe(data: bytes) -> bytes:
    """The single message of a unary reply body; RpcError(Internal) when it is missing, truncated or compressed."""
    if len(data) < 5:
        raise RpcError(INTERNAL, "the reply carries no message")
    if data[0] != 0:
        raise RpcError(INTERNAL, "the reply is compressed, which was not asked for")
    size = int.from_bytes(data[1:5], "big")
    if len(data) < 5 + size:
        raise RpcError(INTERNAL, f"the reply message is truncated ({len(data) - 5} of {size} bytes)")
    return bytes(data[5:5 + size])


def encode_timeout(seconds: float) -> str:
    """A grpc-timeout header value: at most 8 digits and a unit, rounded up to the finest unit that fits."""
    for unit, per_second in (("n", 1e9), ("u", 1e6), ("m", 1e3), ("S", 1.0), ("M", 1 / 60), ("H", 1 / 3600)):
        value = max(1, math.ceil(seconds * per_second))
        if value < 100_000_000:
            return f"{value}{unit}"
    return "99999999H"


def parse_target(target: str) -> tuple[str, str, int]:
    """(unix socket path, "", 0) for `unix:///path` or `unix:path`, else ("", host, port) for `host:port`."""
    if target.startswith("unix://"):
        return target[len("unix://"):], "", 0
    if target.startswith("unix:"):
        return target[len("unix:"):], "", 0
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"gRPC target {target!r} is neither unix:///path nor host:port")
    return "", host.strip("[]"), int(port)


class _StateMachine(h2.connection.H2ConnectionStateMachine):
    """h2's connection state machine, except that a GOAWAY leaves a client connection open: h2 would reject every
    later frame, but the streams up to the GOAWAY's last stream id still get their replies (a graceful stop)."""

    _transitions = {
        **h2.connection.H2ConnectionStateMachine._transitions,
        (h2.connection.ConnectionState.CLIENT_OPEN, h2.connection.ConnectionInputs.RECV_GOAWAY):
            (None, h2.connection.ConnectionState.CLIENT_OPEN),
    }


@dataclass
class _Stream:
    """One call's reply as it arrives: headers and trailers together, the body, and its end."""

    headers: dict[str, str] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)
    done: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    def finish(self, error: BaseException | None = None) -> None:
        if not self.done.done():
            if error is None:
                self.done.set_result(None)
            else:
                self.done.set_exception(error)


class _Connection:
    """One HTTP/2 connection: a reader task dispatches frames to the streams; writes happen as h2 produces them."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader = reader
        self.writer = writer
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.h2.state_machine = _StateMachine()
        self.streams: dict[int, _Stream] = {}
        self.closed = False
        self.draining = False
        self.error: BaseException | None = None
        self._changed = asyncio.Event()
        """Set when a window grows, a stream closes or the connection ends: what blocked senders wait for."""
        self.h2.initiate_connection()
        self.h2.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: WINDOW,
                                 h2.settings.SettingCodes.ENABLE_PUSH: 0})
        self.h2.increment_flow_control_window(4 * WINDOW - self.h2.inbound_flow_control_window)
        self.flush()
        self._task = asyncio.create_task(self._read())

    @property
    def usable(self) -> bool:
        """Whether new calls may start here."""
        return not self.closed and not self.draining

    def flush(self) -> None:
        """Write whatever h2 has queued."""
        data = self.h2.data_to_send()
        if data and not self.closed:
            self.writer.write(data)

    async def open(self, headers: list[tuple[str, str]]) -> tuple[int, _Stream]:
        """Start a stream (waiting while the server's stream limit is reached)."""
        while self.h2.open_outbound_streams >= self.h2.remote_settings.max_concurrent_streams:
            await self._wait_change()
        if self.draining:
            raise _Refused()
        stream_id = self.h2.get_next_available_stream_id()
        stream = self.streams[stream_id] = _Stream()
        self.h2.send_headers(stream_id, headers)
        self.flush()
        return stream_id, stream

    async def send(self, stream_id: int, data: bytes) -> None:
        """Send the request body and end the stream, within the flow-control windows; stops quietly when the server
        has already ended or reset the stream (its reply says why)."""
        view = memoryview(data)
        while True:
            stream = self.streams.get(stream_id)
            if stream is None or stream.done.done():
                return
            size = min(self.h2.local_flow_control_window(stream_id), self.h2.max_outbound_frame_size, len(view))
            if size == 0 and view:
                await self._wait_change()
                continue
            try:
                self.h2.send_data(stream_id, bytes(view[:size]), end_stream=size == len(view))
            except h2.exceptions.StreamClosedError:
                return
            self.flush()
            view = view[size:]
            if not view:
                break
            await self.writer.drain()
        await self.writer.drain()

    def cancel(self, stream_id: int) -> None:
        """Abandon a call: reset its stream (CANCEL) if it is still open."""
        self.streams.pop(stream_id, None)
        if not self.closed:
            with contextlib.suppress(h2.exceptions.H2Error):
                self.h2.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
            self.flush()

    async def _wait_change(self) -> None:
        if self.closed:
            raise self.error or ConnectionResetError("the gRPC connection is closed")
        self._changed.clear()
        await self._changed.wait()
        if self.closed:
            raise self.error or ConnectionResetError("the gRPC connection is closed")

    async def _read(self) -> None:
        error: BaseException = ConnectionResetError("the gRPC server closed the connection")
        try:
            while chunk := await self.reader.read(READ_SIZE):
                try:
                    events = self.h2.receive_data(chunk)
                except h2.exceptions.H2Error as exc:
                    error = ConnectionError(f"HTTP/2 error (not a gRPC server?): {exc}")
                    break
                for event in events:
                    self._dispatch(event)
                self.flush()
        except OSError as exc:
            error = exc
        finally:
            self._end(error)

    def _dispatch(self, event: h2.events.Event) -> None:
        stream = self.streams.get(getattr(event, "stream_id", 0) or 0)
        match event:
            case h2.events.ResponseReceived() | h2.events.TrailersReceived() if stream is not None:
                stream.headers.update(dict(event.headers))  # type: ignore[arg-type]
            case h2.events.DataReceived():
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                if stream is not None:
                    stream.body += event.data
            case h2.events.StreamEnded() if stream is not None:
                stream.finish()
            case h2.events.StreamReset() if stream is not None:
                if event.error_code == h2.errors.ErrorCodes.REFUSED_STREAM:
                    stream.finish(_Refused())
                else:
                    stream.finish(RpcError(UNAVAILABLE if event.error_code == 0 else INTERNAL,
                                           f"stream reset by the server (HTTP/2 error {event.error_code})"))
            case h2.events.ConnectionTerminated():
                self.draining = True
                last = event.last_stream_id if event.last_stream_id is not None else 0
                for stream_id, other in self.streams.items():
                    if stream_id > last:
                        other.finish(_Refused())
        if isinstance(event, (h2.events.WindowUpdated, h2.events.RemoteSettingsChanged, h2.events.StreamEnded,
                              h2.events.StreamReset, h2.events.ConnectionTerminated)):
            self._changed.set()

    def _end(self, error: BaseException) -> None:
        self.closed = True
        self.error = error
        for stream in self.streams.values():
            stream.finish(ConnectionResetError(str(error)))
        self._changed.set()
        self.writer.close()

    async def close(self) -> None:
        """Tell the server goodbye, close the socket and fail what is still waiting."""
        if not self.closed:
            with contextlib.suppress(h2.exceptions.H2Error):
                self.h2.close_connection()
            self.flush()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


class Channel:
    """A gRPC channel to one target: unary calls share one HTTP/2 connection, made on first use and again after it
    dropped."""

    def __init__(self, target: str, user_agent: str = DEFAULT_USER_AGENT, authority: str = ""):
        self.target = target
        self.path, self.host, self.port = parse_target(target)
        self.authority = authority or ("localhost" if self.path else target)
        self.user_agent = user_agent
        self._connection: _Connection | None = None
        self._retired: set[_Connection] = set()
        """Connections the server is winding down (GOAWAY): their calls end there, new ones go elsewhere."""
        self._connecting = asyncio.Lock()
        self._closed = False

    async def unary(self, method: str, request: bytes, deadline: float | None = None) -> bytes:
        """Call `/package.Service/Method` with a serialized request; the serialized reply. RpcError for a non-OK
        status (DeadlineExceeded once `deadline` seconds pass), OSError when the connection fails."""
        headers = [(":method", "POST"), (":scheme", "http"), (":path", method), (":authority", self.authority),
                   ("content-type", "application/grpc"), ("te", "trailers"), ("user-agent", self.user_agent)]
        if deadline is not None:
            headers.append(("grpc-timeout", encode_timeout(deadline)))
        body = frame(request)
        try:
            async with asyncio.timeout(deadline):
                for _ in range(3):
                    try:
                        return await self._call(headers, body)
                    except _Refused:
                        continue
                raise RpcError(UNAVAILABLE, "the server refused the call repeatedly")
        except TimeoutError:
            raise RpcError(DEADLINE_EXCEEDED, "context deadline exceeded") from None

    async def _call(self, headers: list[tuple[str, str]], body: bytes) -> bytes:
        connection = await self._connect()
        stream_id, stream = await connection.open(headers)
        try:
            await connection.send(stream_id, body)
            await stream.done
        except BaseException:
            connection.cancel(stream_id)
            raise
        connection.streams.pop(stream_id, None)
        return _reply(stream.headers, bytes(stream.body))

    async def _connect(self) -> _Connection:
        async with self._connecting:
            if self._closed:
                raise ConnectionError(f"the gRPC channel to {self.target} is closed")
            if self._connection is None or not self._connection.usable:
                if self._connection is not None:
                    self._retired.add(self._connection)
                    self._connection = None
                for old in [c for c in self._retired if c.closed or not c.streams]:
                    self._retired.discard(old)
                    await old.close()
                if self.path:
                    reader, writer = await asyncio.open_unix_connection(self.path, limit=READ_SIZE)
                else:
                    reader, writer = await asyncio.open_connection(self.host, self.port, limit=READ_SIZE)
                self._connection = _Connection(reader, writer)
            return self._connection

    async def close(self) -> None:
        """Close the connection; calls still waiting fail with ConnectionError."""
        self._closed = True
        async with self._connecting:
            for connection in [self._connection, *self._retired]:
                if connection is not None:
                    await connection.close()
            self._connection = None
            self._retired.clear()


def _reply(headers: dict[str, str], body: bytes) -> bytes:
    """The reply message of a finished call, or the RpcError its status says."""
    status = headers.get(":status", "")
    if status != "200":
        raise RpcError(HTTP_TO_GRPC.get(status, UNKNOWN), f"unexpected HTTP status code received from server: "
                                                          f"{status or 'none'}")
    if "grpc-status" not in headers:
        raise RpcError(INTERNAL, "server closed the stream without sending trailers")
    try:
        code = int(headers["grpc-status"])
    except ValueError:
        raise RpcError(UNKNOWN, f"malformed grpc-status {headers['grpc-status']!r}") from None
    if code != OK:
        raise RpcError(code, unquote(headers.get("grpc-message", "")))
    return unframe(body)
