"""The channel WebSocket protocols of exec, attach and port-forward: one channel byte before each message.

`channel.k8s.io` and its versions carry raw bytes after the channel byte; the `base64.` variants send text
messages whose first character is the channel digit and the rest base64. v5 adds channel 255: a message
`[255, N]` closes channel N (for stdin: end of input).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

STDIN, STDOUT, STDERR, ERROR, RESIZE = 0, 1, 2, 3, 4
CLOSE = 255

V5 = "v5.channel.k8s.io"
V4 = "v4.channel.k8s.io"
V4_BASE64 = "v4.base64.channel.k8s.io"
V1 = "channel.k8s.io"
V1_BASE64 = "base64.channel.k8s.io"
REMOTECOMMAND_PROTOCOLS = (V5, V4, V4_BASE64, V1, V1_BASE64)
"""What exec and attach speak, best first."""
PORTFORWARD_PROTOCOLS = (V4, V4_BASE64, "")
"""What the channel port-forward speaks ("" when the client names no subprotocol)."""
SPDY_TUNNEL = "SPDY/3.1+portforward.k8s.io"
"""Port-forward as SPDY/3.1 frames inside binary WebSocket messages (KEP-4006), what kubectl >= 1.31 asks for."""

NON_ZERO_EXIT = "NonZeroExitCode"
EXIT_CODE_CAUSE = "ExitCode"


class ProtocolError(ValueError):
    """A message that does not follow the channel protocol."""


def offered_protocols(header: str) -> list[str]:
    """The subprotocols of a Sec-WebSocket-Protocol header, in the client's order."""
    return [p.strip() for p in header.split(",") if p.strip()]


def choose(offered: Sequence[str], supported: Iterable[str]) -> str | None:
    """The first offered subprotocol the server supports (as upstream's handshake); "" when none was offered."""
    allowed = tuple(supported)
    for protocol in offered or [""]:
        if protocol in allowed:
            return protocol
    return None


@dataclass(frozen=True, slots=True)
class ChannelCodec:
    """Encodes and decodes channel messages for one negotiated subprotocol."""

    protocol: str

    @property
    def text(self) -> bool:
        """Whether messages are base64 text rather than binary."""
        return "base64" in self.protocol

    @property
    def has_close(self) -> bool:
        """Whether the v5 close signal exists."""
        return self.protocol == V5

    @property
    def structured_status(self) -> bool:
        """Whether the error channel carries a JSON Status (v4 and later) rather than plain text."""
        return self.protocol in (V5, V4, V4_BASE64)

    def encode(self, channel: int, data: bytes) -> bytes | str:
        """One message carrying data on channel."""
        if self.text:
            return chr(ord("0") + channel) + base64.b64encode(data).decode()
        return bytes((channel,)) + data

    def decode(self, message: bytes | str) -> tuple[int, bytes]:
        """The channel and payload of a received message."""
        if isinstance(message, str):
            if not message:
                raise ProtocolError("empty message")
            try:
                return ord(message[0]) - ord("0"), base64.b64decode(message[1:], validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ProtocolError(f"invalid base64 message: {exc}") from None
        if not message:
            raise ProtocolError("empty message")
        return message[0], bytes(message[1:])


def success_status() -> dict[str, Any]:
    """The Status written on the error channel when the command succeeded."""
    return {"metadata": {}, "status": "Success"}


def exit_code_status(code: int) -> dict[str, Any]:
    """The Status for a command that exited non-zero; kubectl exits with the same code."""
    return {"metadata": {}, "status": "Failure",
            "message": f"command terminated with non-zero exit code: exit status {code}",
            "reason": NON_ZERO_EXIT,
            "details": {"causes": [{"reason": EXIT_CODE_CAUSE, "message": str(code)}]}}


def error_status(message: str) -> dict[str, Any]:
    """The Status for a session that failed on the node's side (InternalError, as the kubelet reports it)."""
    return {"metadata": {}, "status": "Failure", "message": f"Internal error occurred: {message}",
            "reason": "InternalError", "details": {"causes": [{"message": message}]}, "code": 500}


def status_payload(codec: ChannelCodec, status: dict[str, Any]) -> bytes:
    """What goes on the error channel: the JSON Status, or for pre-v4 protocols the bare failure message."""
    if codec.structured_status:
        return orjson.dumps(status)
    return b"" if status.get("status") == "Success" else str(status.get("message", "")).encode()


def parse_resize(data: bytes) -> tuple[int, int]:
    """Width and height of a resize message `{"Width": 80, "Height": 24}`."""
    try:
        size = orjson.loads(data)
        width, height = int(size["Width"]), int(size["Height"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ProtocolError(f"invalid resize message: {exc}") from None
    if not (0 <= width <= 0xFFFF and 0 <= height <= 0xFFFF):
        raise ProtocolError(f"terminal size out of range: {width}x{height}")
    return width, height


def port_prefix(port: int) -> bytes:
    """The first message of each port-forward channel: the port, 16-bit little-endian."""
    return port.to_bytes(2, "little")
