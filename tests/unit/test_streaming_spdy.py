"""SPDY/3.1 framing and header compression, and the server session over an in-memory transport."""

from __future__ import annotations

import asyncio
import struct
import zlib
from collections.abc import AsyncIterator

import pytest

from kubelite.kubelet.streaming import spdy
from kubelite.kubelet.streaming.spdysession import HIGH_WATER, SpdySession, SpdyStream

FRAMES: list[spdy.Frame] = [
    spdy.DataFrame(5, b"payload", spdy.FLAG_FIN),
    spdy.DataFrame(7, b""),
    spdy.SynStream(1, {"streamtype": ["data"], "port": ["8080"], "requestid": ["0"]}, 0, 3, spdy.FLAG_FIN),
    spdy.SynReply(1, {}),
    spdy.SynReply(3, {"x-multi": ["a", "b"]}, spdy.FLAG_FIN),
    spdy.RstStream(9, spdy.CANCEL),
    spdy.Settings([(0, spdy.SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20), (1, spdy.SETTINGS_MAX_CONCURRENT_STREAMS, 100)]),
    spdy.Ping(17),
    spdy.GoAway(41, spdy.GOAWAY_PROTOCOL_ERROR),
    spdy.HeadersFrame(1, {"extra": ["1"]}, spdy.FLAG_FIN),
    spdy.WindowUpdate(3, 65536),
]


def test_every_frame_round_trips_in_one_session() -> None:
    compressor = spdy.HeaderCompressor()
    wire = b"".join(spdy.encode(frame, compressor) for frame in FRAMES)
    assert list(spdy.FrameParser().feed(wire)) == FRAMES


def test_parser_reassembles_frames_from_any_split() -> None:
    compressor = spdy.HeaderCompressor()
    wire = b"".join(spdy.encode(frame, compressor) for frame in FRAMES)
    parser = spdy.FrameParser()
    parsed = [frame for byte in wire for frame in parser.feed(bytes([byte]))]
    assert parsed == FRAMES


def test_control_frame_layout() -> None:
    ping = spdy.encode(spdy.Ping(7), spdy.HeaderCompressor())
    assert ping == bytes.fromhex("80030006") + bytes.fromhex("00000004") + struct.pack(">I", 7)
    data = spdy.encode(spdy.DataFrame(3, b"ab", spdy.FLAG_FIN), spdy.HeaderCompressor())
    assert data == struct.pack(">I", 3) + bytes([1, 0, 0, 2]) + b"ab"
    rst = spdy.encode(spdy.RstStream(5, spdy.REFUSED_STREAM), spdy.HeaderCompressor())
    assert rst == bytes.fromhex("80030003") + bytes.fromhex("00000008") + struct.pack(">II", 5, 3)


def test_unknown_control_frames_are_skipped_and_wrong_versions_refused() -> None:
    unknown = struct.pack(">HHI", 0x8003, 0x00FF, 2) + b"zz"
    ping = spdy.encode(spdy.Ping(3), spdy.HeaderCompressor())
    assert list(spdy.FrameParser().feed(unknown + ping)) == [spdy.Ping(3)]
    version2 = struct.pack(">HHII", 0x8002, spdy.PING, 4, 1)
    with pytest.raises(spdy.SpdyError):
        list(spdy.FrameParser().feed(version2))
    short = struct.pack(">HHI", 0x8003, spdy.RST_STREAM, 2) + b"\0\0"
    with pytest.raises(spdy.SpdyError):
        list(spdy.FrameParser().feed(short))


def test_the_dictionary_is_spdy3s() -> None:
    assert len(spdy.DICTIONARY) == 1423
    assert spdy.DICTIONARY.startswith(b"\0\0\0\x07options\0\0\0\x04head")
    assert spdy.DICTIONARY.endswith(b"charset=iso-8859-1,utf-,*,enq=0.")
    block = spdy.HeaderCompressor().compress({"port": ["80"]})
    assert block[0] & 0x0F == 8 and block[1] & 0x20, "a zlib stream announcing a preset dictionary"
    assert struct.unpack(">I", block[2:6])[0] == zlib.adler32(spdy.DICTIONARY)


def test_header_blocks_compress_and_decompress_across_a_session() -> None:
    compressor, decompressor = spdy.HeaderCompressor(), spdy.HeaderDecompressor()
    blocks = [{"streamtype": ["error"], "port": ["8080"], "requestid": ["0"]},
              {"streamtype": ["data"], "port": ["8080"], "requestid": ["0"]}, {}, {"a": ["1", "2", ""]}]
    for headers in blocks:
        assert decompressor.decompress(compressor.compress(headers)) == headers
    fresh = spdy.HeaderDecompressor().decompress(spdy.HeaderCompressor().compress({"Upper-Case": ["x"]}))
    assert fresh == {"upper-case": ["x"]}, "SPDY header names are lower case"


def test_blocks_from_another_zlib_implementation_decode() -> None:
    foreign = zlib.compressobj(9, zlib.DEFLATED, 15, 9, zlib.Z_DEFAULT_STRATEGY, spdy.DICTIONARY)
    decompressor = spdy.HeaderDecompressor()
    for headers in ({"streamtype": ["data"]}, {"port": ["443"], "requestid": ["17"]}):
        raw = spdy.encode_header_block(headers)
        block = foreign.compress(raw) + foreign.flush(zlib.Z_SYNC_FLUSH)
        assert decompressor.decompress(block) == headers
    ours = spdy.HeaderCompressor().compress({"streamtype": ["error"]})
    assert spdy.decode_header_block(zlib.decompressobj(zdict=spdy.DICTIONARY).decompress(ours)) == {
        "streamtype": ["error"]}


def test_malformed_header_blocks() -> None:
    with pytest.raises(spdy.SpdyError):
        spdy.HeaderDecompressor().decompress(b"not zlib at all")
    with pytest.raises(spdy.SpdyError):
        spdy.decode_header_block(struct.pack(">II", 1, 10) + b"short")
    duplicate = struct.pack(">I", 2) + 2 * (struct.pack(">I", 1) + b"a" + struct.pack(">I", 1) + b"b")
    with pytest.raises(spdy.SpdyError):
        spdy.decode_header_block(duplicate)


class Peer:
    """The client side of a session: frames in, frames out, over queues."""

    def __init__(self) -> None:
        self.to_server: asyncio.Queue[bytes] = asyncio.Queue()
        self.parser = spdy.FrameParser()
        self.compressor = spdy.HeaderCompressor()
        self.received: asyncio.Queue[spdy.Frame] = asyncio.Queue()

    async def transport_send(self, data: bytes) -> None:
        for frame in self.parser.feed(data):
            self.received.put_nowait(frame)

    async def incoming(self) -> AsyncIterator[bytes]:
        while data := await self.to_server.get():
            yield data

    def send(self, *frames: spdy.Frame) -> None:
        for frame in frames:
            self.to_server.put_nowait(spdy.encode(frame, self.compressor))

    async def next(self) -> spdy.Frame:
        async with asyncio.timeout(5):
            return await self.received.get()


async def serving(peer: Peer, handler: object) -> tuple[SpdySession, asyncio.Task[None]]:
    session = SpdySession(peer.transport_send, handler)  # type: ignore[arg-type]
    return session, asyncio.create_task(session.serve(peer.incoming()))


async def test_session_replies_echoes_pings_and_delivers_data() -> None:
    peer = Peer()
    opened: list[SpdyStream] = []
    session, task = await serving(peer, opened.append)
    peer.send(spdy.SynStream(1, {"streamtype": ["data"]}), spdy.Ping(5), spdy.Ping(6),
              spdy.DataFrame(1, b"hello"), spdy.DataFrame(1, b" world", spdy.FLAG_FIN))
    assert await peer.next() == spdy.SynReply(1, {})
    assert await peer.next() == spdy.Ping(5)
    [stream] = opened
    assert stream.header("streamtype") == "data" and stream.header("missing") == ""
    assert await stream.read() + await stream.read() == b"hello world"
    assert await stream.read() == b""
    await stream.write(b"back")
    await stream.close()
    assert await peer.next() == spdy.DataFrame(1, b"back")
    assert await peer.next() == spdy.DataFrame(1, b"", spdy.FLAG_FIN)
    assert 1 not in session.streams
    peer.to_server.put_nowait(b"")
    await task
    assert peer.received.empty(), "an even (server-initiated) ping id must not be echoed"


async def test_session_refuses_bad_stream_ids_and_honours_resets() -> None:
    peer = Peer()
    opened: list[SpdyStream] = []
    session, task = await serving(peer, opened.append)
    peer.send(spdy.SynStream(2, {}), spdy.SynStream(3, {}), spdy.SynStream(3, {}), spdy.SynStream(1, {}))
    assert await peer.next() == spdy.RstStream(2, spdy.PROTOCOL_ERROR)
    assert await peer.next() == spdy.SynReply(3, {})
    assert await peer.next() == spdy.RstStream(3, spdy.STREAM_IN_USE)
    assert await peer.next() == spdy.RstStream(1, spdy.PROTOCOL_ERROR)
    [stream] = opened
    peer.send(spdy.RstStream(3, spdy.CANCEL))
    assert await stream.read() == b"" and stream.reset
    with pytest.raises(ConnectionResetError):
        await stream.write(b"late")
    peer.send(spdy.GoAway(0), spdy.SynStream(5, {}))
    assert await peer.next() == spdy.RstStream(5, spdy.REFUSED_STREAM)
    peer.to_server.put_nowait(b"")
    await task
    assert session.closed


async def test_session_grants_window_as_data_is_read_and_ends_streams_with_the_transport() -> None:
    peer = Peer()
    opened: list[SpdyStream] = []
    _, task = await serving(peer, opened.append)
    chunk = b"x" * 16384
    peer.send(spdy.SynStream(1, {}), *(spdy.DataFrame(1, chunk) for _ in range(4)))
    assert await peer.next() == spdy.SynReply(1, {})
    [stream] = opened
    for _ in range(4):
        assert await stream.read() == chunk
    assert await peer.next() == spdy.WindowUpdate(1, spdy.DEFAULT_WINDOW // 2)
    assert await peer.next() == spdy.WindowUpdate(1, spdy.DEFAULT_WINDOW // 2)
    peer.to_server.put_nowait(b"")
    await task
    assert stream.reset and await stream.read() == b""


async def test_session_stops_reading_while_a_stream_is_backed_up() -> None:
    peer = Peer()
    opened: list[SpdyStream] = []
    _, task = await serving(peer, opened.append)
    big = b"y" * (HIGH_WATER + 1)
    peer.send(spdy.SynStream(1, {}), spdy.DataFrame(1, big), spdy.Ping(9))
    assert await peer.next() == spdy.SynReply(1, {})
    await asyncio.sleep(0.1)
    assert peer.received.empty(), "the ping behind a backed-up stream must wait"
    assert await opened[0].read() == big
    assert isinstance(await peer.next(), spdy.WindowUpdate)
    assert await peer.next() == spdy.Ping(9)
    peer.to_server.put_nowait(b"")
    await task


async def test_protocol_errors_end_the_session_with_goaway() -> None:
    peer = Peer()
    _, task = await serving(peer, lambda stream: None)
    peer.send(spdy.SynStream(1, {}))
    peer.to_server.put_nowait(struct.pack(">HHII", 0x8002, spdy.PING, 4, 1))
    assert await peer.next() == spdy.SynReply(1, {})
    assert await peer.next() == spdy.GoAway(1, spdy.GOAWAY_PROTOCOL_ERROR)
    await task
