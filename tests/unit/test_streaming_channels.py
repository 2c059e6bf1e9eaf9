"""The channel WebSocket protocols of exec, attach and port-forward: framing, negotiation, statuses, resizes."""

from __future__ import annotations

import orjson
import pytest
from multidict import MultiDict

from kubelite.kubelet.streaming import channels
from kubelite.kubelet.streaming.channels import ChannelCodec
from kubelite.kubelet.streaming.remotecommand import StreamOptions


def test_binary_framing_round_trip() -> None:
    codec = ChannelCodec(channels.V5)
    message = codec.encode(channels.STDOUT, b"\x00hello\xff")
    assert message == b"\x01\x00hello\xff"
    assert codec.decode(message) == (channels.STDOUT, b"\x00hello\xff")
    assert codec.decode(bytes([channels.CLOSE, channels.STDIN])) == (channels.CLOSE, bytes([channels.STDIN]))
    assert codec.decode(b"\x02") == (channels.STDERR, b"")


def test_base64_framing_round_trip() -> None:
    codec = ChannelCodec(channels.V4_BASE64)
    assert codec.text and not codec.has_close
    message = codec.encode(channels.STDIN, b"foo\n")
    assert message == "0Zm9vCg=="
    assert codec.decode(message) == (channels.STDIN, b"foo\n")
    with pytest.raises(channels.ProtocolError):
        codec.decode("1not base64!")


def test_empty_messages_are_protocol_errors() -> None:
    for codec, empty in ((ChannelCodec(channels.V4), b""), (ChannelCodec(channels.V1_BASE64), "")):
        with pytest.raises(channels.ProtocolError):
            codec.decode(empty)


def test_negotiation_takes_the_clients_first_supported_protocol() -> None:
    offered = channels.offered_protocols(" v9.channel.k8s.io, v4.channel.k8s.io,v5.channel.k8s.io ")
    assert offered == ["v9.channel.k8s.io", channels.V4, channels.V5]
    assert channels.choose(offered, channels.REMOTECOMMAND_PROTOCOLS) == channels.V4
    assert channels.choose([channels.V5, channels.V4], channels.PORTFORWARD_PROTOCOLS) == channels.V4
    assert channels.choose([], channels.PORTFORWARD_PROTOCOLS) == ""
    assert channels.choose([], channels.REMOTECOMMAND_PROTOCOLS) is None
    assert channels.choose(["nonsense"], channels.REMOTECOMMAND_PROTOCOLS) is None


def test_only_v5_has_the_close_signal_and_v4_up_structured_status() -> None:
    assert ChannelCodec(channels.V5).has_close
    assert not any(ChannelCodec(p).has_close for p in (channels.V4, channels.V4_BASE64, channels.V1))
    assert all(ChannelCodec(p).structured_status for p in (channels.V5, channels.V4, channels.V4_BASE64))
    assert not ChannelCodec(channels.V1).structured_status


def test_statuses_as_kubectl_decodes_them() -> None:
    v4 = ChannelCodec(channels.V4)
    assert orjson.loads(channels.status_payload(v4, channels.success_status())) == {"metadata": {},
                                                                                    "status": "Success"}
    failure = orjson.loads(channels.status_payload(v4, channels.exit_code_status(42)))
    assert failure["status"] == "Failure" and failure["reason"] == "NonZeroExitCode"
    assert failure["details"]["causes"] == [{"reason": "ExitCode", "message": "42"}]
    internal = channels.error_status("no such file")
    assert (internal["reason"], internal["code"]) == ("InternalError", 500)
    assert internal["message"] == "Internal error occurred: no such file"
    v1 = ChannelCodec(channels.V1)
    assert channels.status_payload(v1, channels.success_status()) == b""
    assert channels.status_payload(v1, internal) == b"Internal error occurred: no such file"


def test_resize_messages() -> None:
    assert channels.parse_resize(b'{"Width":120,"Height":40}') == (120, 40)
    for bad in (b"", b"{}", b'{"Width":"x","Height":1}', b'{"Width":-1,"Height":1}', b'{"Width":70000,"Height":1}',
                b"[1, 2]"):
        with pytest.raises(channels.ProtocolError):
            channels.parse_resize(bad)


def test_port_prefix_is_little_endian() -> None:
    assert channels.port_prefix(8080) == bytes([0x90, 0x1F])
    assert channels.port_prefix(1) == b"\x01\x00"


def test_stream_options_from_the_query() -> None:
    options = StreamOptions.from_query(MultiDict(stdin="1", stdout="true", stderr="1", tty="1"))
    assert options == StreamOptions(stdin=True, stdout=True, stderr=False, tty=True)
    assert StreamOptions.from_query(MultiDict(stderr="1")).any
    assert not StreamOptions.from_query(MultiDict(stdout="0", stdin="false")).any
