"""SPDY/3.1 framing: frames as dataclasses, their encoding, an incremental parser and header-block compression.

Header blocks are zlib streams, one per direction for the whole session, primed with the SPDY/3 dictionary and
flushed with Z_SYNC_FLUSH after every block (draft-mbelshe-httpbis-spdy-00, section 2.6.10).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

VERSION = 3
MAX_LENGTH = (1 << 24) - 1
MAX_STREAM_ID = (1 << 31) - 1
DEFAULT_WINDOW = 64 * 1024

SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE = 1, 2, 3, 4, 6, 7, 8, 9
FLAG_FIN = 0x01
FLAG_UNIDIRECTIONAL = 0x02

# RST_STREAM status codes
PROTOCOL_ERROR, INVALID_STREAM, REFUSED_STREAM, UNSUPPORTED_VERSION, CANCEL, INTERNAL_ERROR = 1, 2, 3, 4, 5, 6
FLOW_CONTROL_ERROR, STREAM_IN_USE, STREAM_ALREADY_CLOSED = 7, 8, 9
# GOAWAY status codes
GOAWAY_OK, GOAWAY_PROTOCOL_ERROR, GOAWAY_INTERNAL_ERROR = 0, 1, 2
# SETTINGS ids
SETTINGS_MAX_CONCURRENT_STREAMS, SETTINGS_INITIAL_WINDOW_SIZE = 4, 7

_DICTIONARY_WORDS = (
    "options", "head", "post", "put", "delete", "trace", "accept", "accept-charset", "accept-encoding",
    "accept-language", "accept-ranges", "age", "allow", "authorization", "cache-control", "connection",
    "content-base", "content-encoding", "content-language", "content-length", "content-location", "content-md5",
    "content-range", "content-type", "date", "etag", "expect", "expires", "from", "host", "if-match",
    "if-modified-since", "if-none-match", "if-range", "if-unmodified-since", "last-modified", "location",
    "max-forwards", "pragma", "proxy-authenticate", "proxy-authorization", "range", "referer", "retry-after",
    "server", "te", "trailer", "transfer-encoding", "upgrade", "user-agent", "vary", "via", "warning",
    "www-authenticate", "method", "get", "status", "200 OK", "version", "HTTP/1.1", "url", "public", "set-cookie",
    "keep-alive", "origin",
)
_DICTIONARY_TAIL = (
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized"
    "403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service Unavailable"
    "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT"
    "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,"
    "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
)
DICTIONARY = b"".join(struct.pack(">I", len(w)) + w.encode() for w in _DICTIONARY_WORDS) + _DICTIONARY_TAIL.encode()
"""The SPDY/3 header compression dictionary: length-prefixed common header names and values, then common text."""

Headers = dict[str, list[str]]


class SpdyError(ValueError):
    """Bytes that are not valid SPDY/3.1."""


@dataclass(slots=True)
class DataFrame:
    """Payload bytes of one stream; FIN ends the sender's half of the stream."""

    stream_id: int
    data: bytes
    flags: int = 0


@dataclass(slots=True)
class SynStream:
    """Opens a stream with its headers."""

    stream_id: int
    headers: Headers
    associated_id: int = 0
    priority: int = 0
    flags: int = 0


@dataclass(slots=True)
class SynReply:
    """Accepts a stream the peer opened."""

    stream_id: int
    headers: Headers = field(default_factory=dict)
    flags: int = 0


@dataclass(slots=True)
class RstStream:
    """Aborts a stream with a status code."""

    stream_id: int
    status: int


@dataclass(slots=True)
class Settings:
    """Session settings: (flags, id, value) entries."""

    entries: list[tuple[int, int, int]] = field(default_factory=list)
    flags: int = 0


@dataclass(slots=True)
class Ping:
    """A liveness probe the receiver echoes back unchanged."""

    ping_id: int


@dataclass(slots=True)
class GoAway:
    """The sender accepts no new streams above last_good_stream_id."""

    last_good_stream_id: int
    status: int = GOAWAY_OK


@dataclass(slots=True)
class HeadersFrame:
    """More headers for an open stream."""

    stream_id: int
    headers: Headers
    flags: int = 0


@dataclass(slots=True)
class WindowUpdate:
    """The receiver consumed delta bytes of the stream: the sender may send that many more."""

    stream_id: int
    delta: int


Frame = DataFrame | SynStream | SynReply | RstStream | Settings | Ping | GoAway | HeadersFrame | WindowUpdate


class HeaderCompressor:
    """The sending side's zlib stream for header blocks."""

    def __init__(self) -> None:
        self._zlib = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, 15, 8, zlib.Z_DEFAULT_STRATEGY,
                                      DICTIONARY)

    def compress(self, headers: Headers) -> bytes:
        """The compressed name/value block of headers (names lower-cased, multiple values NUL-joined)."""
        return self._zlib.compress(encode_header_block(headers)) + self._zlib.flush(zlib.Z_SYNC_FLUSH)


class HeaderDecompressor:
    """The receiving side's zlib stream for header blocks."""

    def __init__(self) -> None:
        self._zlib = zlib.decompressobj(15, DICTIONARY)

    def decompress(self, block: bytes) -> Headers:
        """The headers of one compressed name/value block."""
        try:
            raw = self._zlib.decompress(block)
        except zlib.error as exc:
            raise SpdyError(f"header block does not decompress: {exc}") from None
        return decode_header_block(raw)


def encode_header_block(headers: Headers) -> bytes:
    """The uncompressed name/value block: a count, then length-prefixed names and NUL-joined values."""
    parts = [struct.pack(">I", len(headers))]
    for name, values in headers.items():
        name_bytes = name.lower().encode()
        value_bytes = "\0".join(values).encode()
        parts += [struct.pack(">I", len(name_bytes)), name_bytes, struct.pack(">I", len(value_bytes)), value_bytes]
    return b"".join(parts)


def decode_header_block(raw: bytes) -> Headers:
    """Parse an uncompressed name/value block."""
    view = memoryview(raw)
    try:
        (count,), offset = struct.unpack_from(">I", view), 4
        headers: Headers = {}
        for _ in range(count):
            (length,) = struct.unpack_from(">I", view, offset)
            name = bytes(view[offset + 4:offset + 4 + length]).decode()
            offset += 4 + length
            (length,) = struct.unpack_from(">I", view, offset)
            value = bytes(view[offset + 4:offset + 4 + length]).decode()
            offset += 4 + length
            if offset > len(raw) or not name:
                raise SpdyError("truncated header block")
            if name in headers:
                raise SpdyError(f"duplicate header {name!r}")
            headers[name] = value.split("\0")
    except (struct.error, UnicodeDecodeError) as exc:
        raise SpdyError(f"malformed header block: {exc}") from None
    return headers


def _control(frame_type: int, flags: int, payload: bytes) -> bytes:
    if len(payload) > MAX_LENGTH:
        raise SpdyError("frame too large")
    return struct.pack(">HHI", 0x8000 | VERSION, frame_type, (flags << 24) | len(payload)) + payload


def encode(frame: Frame, compressor: HeaderCompressor) -> bytes:
    """The wire bytes of one frame; header blocks go through the session's compressor."""
    match frame:
        case DataFrame(stream_id, data, flags):
            if len(data) > MAX_LENGTH:
                raise SpdyError("frame too large")
            return struct.pack(">II", stream_id & MAX_STREAM_ID, (flags << 24) | len(data)) + data
        case SynStream(stream_id, headers, associated_id, priority, flags):
            body = struct.pack(">IIBB", stream_id, associated_id, (priority & 7) << 5, 0)
            return _control(SYN_STREAM, flags, body + compressor.compress(headers))
        case SynReply(stream_id, headers, flags):
            return _control(SYN_REPLY, flags, struct.pack(">I", stream_id) + compressor.compress(headers))
        case RstStream(stream_id, status):
            return _control(RST_STREAM, 0, struct.pack(">II", stream_id, status))
        case Settings(entries, flags):
            body = struct.pack(">I", len(entries)) + b"".join(
                struct.pack(">II", (f << 24) | i, v) for f, i, v in entries)
            return _control(SETTINGS, flags, body)
        case Ping(ping_id):
            return _control(PING, 0, struct.pack(">I", ping_id))
        case GoAway(last_good_stream_id, status):
            return _control(GOAWAY, 0, struct.pack(">II", last_good_stream_id, status))
        case HeadersFrame(stream_id, headers, flags):
            return _control(HEADERS, flags, struct.pack(">I", stream_id) + compressor.compress(headers))
        case WindowUpdate(stream_id, delta):
            return _control(WINDOW_UPDATE, 0, struct.pack(">II", stream_id, delta))
    raise TypeError(f"not a SPDY frame: {frame!r}")


def _need(payload: bytes, size: int, what: str) -> None:
    if len(payload) < size:
        raise SpdyError(f"{what} frame too short")


def _decode_control(frame_type: int, flags: int, payload: bytes, decompressor: HeaderDecompressor) -> Frame | None:
    if frame_type == SYN_STREAM:
        _need(payload, 10, "SYN_STREAM")
        stream_id, associated_id, priority = struct.unpack_from(">IIB", payload)
        return SynStream(stream_id & MAX_STREAM_ID, decompressor.decompress(payload[10:]),
                         associated_id & MAX_STREAM_ID, priority >> 5, flags)
    if frame_type in (SYN_REPLY, HEADERS):
        _need(payload, 4, "SYN_REPLY/HEADERS")
        (stream_id,) = struct.unpack_from(">I", payload)
        cls = SynReply if frame_type == SYN_REPLY else HeadersFrame
        return cls(stream_id & MAX_STREAM_ID, decompressor.decompress(payload[4:]), flags)
    if frame_type == RST_STREAM:
        _need(payload, 8, "RST_STREAM")
        stream_id, status = struct.unpack_from(">II", payload)
        return RstStream(stream_id & MAX_STREAM_ID, status)
    if frame_type == SETTINGS:
        _need(payload, 4, "SETTINGS")
        (count,) = struct.unpack_from(">I", payload)
        _need(payload, 4 + 8 * count, "SETTINGS")
        entries = []
        for index in range(count):
            flag_id, value = struct.unpack_from(">II", payload, 4 + 8 * index)
            entries.append((flag_id >> 24, flag_id & 0xFFFFFF, value))
        return Settings(entries, flags)
    if frame_type == PING:
        _need(payload, 4, "PING")
        return Ping(struct.unpack_from(">I", payload)[0])
    if frame_type == GOAWAY:
        _need(payload, 4, "GOAWAY")
        last = struct.unpack_from(">I", payload)[0] & MAX_STREAM_ID
        status = struct.unpack_from(">I", payload, 4)[0] if len(payload) >= 8 else GOAWAY_OK
        return GoAway(last, status)
    if frame_type == WINDOW_UPDATE:
        _need(payload, 8, "WINDOW_UPDATE")
        stream_id, delta = struct.unpack_from(">II", payload)
        return WindowUpdate(stream_id & MAX_STREAM_ID, delta & MAX_STREAM_ID)
    return None


class FrameParser:
    """Cuts a byte stream into frames, however the bytes arrive; unknown control frames are skipped."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._decompressor = HeaderDecompressor()

    def feed(self, data: bytes) -> Iterator[Frame]:
        """The frames that data completes."""
        self._buffer += data
        while len(self._buffer) >= 8:
            first, second = struct.unpack_from(">II", self._buffer)
            length = second & MAX_LENGTH
            if len(self._buffer) < 8 + length:
                return
            payload = bytes(self._buffer[8:8 + length])
            del self._buffer[:8 + length]
            flags = second >> 24
            if first & 0x80000000:
                version, frame_type = (first >> 16) & 0x7FFF, first & 0xFFFF
                if version != VERSION:
                    raise SpdyError(f"unsupported SPDY version {version}")
                frame = _decode_control(frame_type, flags, payload, self._decompressor)
                if frame is not None:
                    yield frame
            else:
                yield DataFrame(first & MAX_STREAM_ID, payload, flags)
