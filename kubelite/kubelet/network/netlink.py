"""Netlink on a plain blocking socket: messages, attributes, requests with acknowledgement, and dumps.

Just the wire format (netlink(7)); rtnl.py and the proxy's conntrack speak their families over it. A request
costs a few microseconds of struct packing, and importing this costs nothing like a full netlink library.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass

NETLINK_ROUTE = 0
NETLINK_NETFILTER = 12
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_DUMP = 0x300
NLM_F_REPLACE = 0x100
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLA_F_NESTED = 0x8000
NLA_TYPE_MASK = 0x3FFF
_HEADER = struct.Struct("=IHHII")
HEADER_SIZE = _HEADER.size
_ATTR = struct.Struct("=HH")
_RECV_BUFFER = 1 << 16


class NetlinkError(OSError):
    """The kernel refused a request; `code` is its errno."""

    @property
    def code(self) -> int:
        return self.errno or 0


def _align(size: int) -> int:
    return (size + 3) & ~3


def message(kind: int, flags: int, body: bytes, seq: int = 0) -> bytes:
    """One message: the netlink header (kind, flags, sequence number), then body."""
    return _HEADER.pack(_HEADER.size + len(body), kind, flags, seq, 0) + body


def attr(kind: int, payload: bytes) -> bytes:
    """One attribute (type, payload), padded to four bytes."""
    size = _ATTR.size + len(payload)
    return _ATTR.pack(size, kind) + payload + b"\0" * (_align(size) - size)


def nested(kind: int, *attrs: bytes) -> bytes:
    """An attribute holding attributes."""
    return attr(kind | NLA_F_NESTED, b"".join(attrs))


def u8(kind: int, value: int) -> bytes:
    return attr(kind, struct.pack("=B", value))


def u32(kind: int, value: int) -> bytes:
    return attr(kind, struct.pack("=I", value))


def be16(kind: int, value: int) -> bytes:
    return attr(kind, struct.pack("!H", value))


def string(kind: int, value: str) -> bytes:
    return attr(kind, value.encode() + b"\0")


def parse_attrs(data: bytes | memoryview, offset: int = 0) -> dict[int, bytes]:
    """The attributes from offset on, by type (flags masked off); for a repeated type the last one wins. A malformed
    or truncated attribute ends the parse."""
    found: dict[int, bytes] = {}
    view = memoryview(data)
    while offset + _ATTR.size <= len(view):
        size, kind = _ATTR.unpack_from(view, offset)
        if size < _ATTR.size or offset + size > len(view):
            break
        found[kind & NLA_TYPE_MASK] = bytes(view[offset + _ATTR.size:offset + size])
        offset += _align(size)
    return found


def read_u32(value: bytes) -> int:
    return int(struct.unpack("=I", value[:4])[0])


def read_be16(value: bytes) -> int:
    return int(struct.unpack("!H", value[:2])[0])


def read_string(value: bytes) -> str:
    return value.split(b"\0", 1)[0].decode()


@dataclass(frozen=True, slots=True)
class Message:
    """A message from the kernel: its type and its payload after the netlink header."""

    kind: int
    payload: bytes


class NetlinkSocket:
    """A netlink socket of one protocol in the calling thread's network namespace; blocking, for worker threads."""

    def __init__(self, protocol: int = NETLINK_ROUTE):
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, protocol)
        try:
            self._sock.bind((0, 0))
        except BaseException:
            self._sock.close()
            raise
        self._seq = 0

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> NetlinkSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, kind: int, flags: int, body: bytes) -> int:
        self._seq += 1
        self._sock.send(message(kind, flags | NLM_F_REQUEST, body, self._seq))
        return self._seq

    def _replies(self, seq: int) -> Iterator[Message]:
        """Messages answering request seq, up to its ACK or end of dump; raises NetlinkError on an error reply."""
        while True:
            data = self._sock.recv(_RECV_BUFFER)
            offset = 0
            while offset + _HEADER.size <= len(data):
                size, kind, _, msg_seq, _ = _HEADER.unpack_from(data, offset)
                if size < _HEADER.size:
                    raise NetlinkError(errno.EBADMSG, "malformed netlink message")
                payload = data[offset + _HEADER.size:offset + size]
                offset += _align(size)
                if msg_seq != seq:
                    continue
                if kind in (NLMSG_ERROR, NLMSG_DONE):
                    code = -struct.unpack_from("=i", payload)[0] if len(payload) >= 4 else 0
                    if code > 0:
                        raise NetlinkError(code, os.strerror(code))
                    return
                yield Message(kind, payload)

    def request(self, kind: int, body: bytes, flags: int = 0) -> list[Message]:
        """Send a request and wait for its acknowledgement; returns what came before it (a get's answer)."""
        return list(self._replies(self._send(kind, flags | NLM_F_ACK, body)))

    def dump(self, kind: int, body: bytes) -> list[Message]:
        """Every object a dump request returns."""
        return list(self._replies(self._send(kind, NLM_F_DUMP, body)))
