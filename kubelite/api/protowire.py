"""Protocol buffers wire format: a Writer that builds messages and a reader that walks their fields.

Generic and schema-less: the caller knows the field numbers. A nested message is written between
`begin` and `end`; its length is filled in at `end`, so nothing is copied until `getvalue` joins once.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

VARINT = 0
I64 = 1
LEN = 2
I32 = 5

_SMALL = tuple(bytes((i,)) for i in range(128))
_DOUBLE = struct.Struct("<d")
_FIXED64 = struct.Struct("<Q")
_FIXED32 = struct.Struct("<I")
_MASK64 = (1 << 64) - 1
_TAGS: dict[int, bytes] = {}

Mark = tuple[int, int, int]
"""Where an open nested message starts: (field number, placeholder chunk index, size before it)."""


def encode_varint(value: int) -> bytes:
    """The base-128 varint of a value; negative values as 64-bit two's complement (ten bytes)."""
    if 0 <= value < 128:
        return _SMALL[value]
    value &= _MASK64
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def tag(field: int, wire_type: int) -> bytes:
    """The key that opens a field: its number and wire type, as a varint (cached)."""
    key = field << 3 | wire_type
    found = _TAGS.get(key)
    if found is None:
        if field < 1:
            raise ValueError(f"invalid field number {field}")
        found = _TAGS[key] = encode_varint(key)
    return found


class Writer:
    """Builds one message as a list of chunks, joined once by `getvalue`."""

    __slots__ = ("_chunks", "_size")

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._size = 0

    def __len__(self) -> int:
        """The number of bytes written so far."""
        return self._size

    def varint(self, field: int, value: int) -> None:
        """A varint field (uint64, enum); negative values as int64 does."""
        chunk = tag(field, VARINT) + encode_varint(value)
        self._chunks.append(chunk)
        self._size += len(chunk)

    def int64(self, field: int, value: int) -> None:
        """An int64 field (two's complement varint)."""
        self.varint(field, value)

    def boolean(self, field: int, value: bool) -> None:
        """A bool field."""
        self.varint(field, 1 if value else 0)

    def double(self, field: int, value: float) -> None:
        """A double field (little-endian fixed64)."""
        chunk = tag(field, I64) + _DOUBLE.pack(value)
        self._chunks.append(chunk)
        self._size += len(chunk)

    def length_delimited(self, field: int, value: bytes) -> None:
        """A length-delimited bytes field (also an already encoded nested message)."""
        head = tag(field, LEN) + encode_varint(len(value))
        self._chunks += (head, value)
        self._size += len(head) + len(value)

    def string(self, field: int, value: str) -> None:
        """A string field, UTF-8 encoded."""
        self.length_delimited(field, value.encode())

    def begin(self, field: int) -> Mark:
        """Open a nested message at `field`; write its fields, then pass the mark to `end`."""
        self._chunks.append(b"")
        return field, len(self._chunks) - 1, self._size

    def end(self, mark: Mark) -> None:
        """Close a nested message: its key and length go in front of the fields written since `begin`."""
        field, index, start = mark
        head = tag(field, LEN) + encode_varint(self._size - start)
        self._chunks[index] = head
        self._size += len(head)

    def getvalue(self) -> bytes:
        """The encoded message."""
        return b"".join(self._chunks)


def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """Decode the varint at `pos`: (unsigned value, position after it)."""
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise ValueError("varint longer than ten bytes")


def read_fields(data: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """Walk a message: (field number, wire type, value); varint and fixed values as unsigned ints, LEN as bytes."""
    pos, size = 0, len(data)
    while pos < size:
        key, pos = read_varint(data, pos)
        field, wire_type = key >> 3, key & 7
        if field == 0:
            raise ValueError("field number 0")
        value: int | bytes
        if wire_type == VARINT:
            value, pos = read_varint(data, pos)
        elif wire_type == LEN:
            length, pos = read_varint(data, pos)
            if pos + length > size:
                raise ValueError(f"field {field} runs past the end of the message")
            value = bytes(data[pos:pos + length])
            pos += length
        elif wire_type in (I64, I32):
            width = 8 if wire_type == I64 else 4
            if pos + width > size:
                raise ValueError(f"field {field} runs past the end of the message")
            value = (_FIXED64 if wire_type == I64 else _FIXED32).unpack_from(data, pos)[0]
            pos += width
        else:
            raise ValueError(f"unsupported wire type {wire_type} (field {field})")
        yield field, wire_type, value


def read_message(data: bytes) -> dict[int, list[int | bytes]]:
    """Every field of a message by number, repeated values in wire order."""
    fields: dict[int, list[int | bytes]] = {}
    for field, _, value in read_fields(data):
        fields.setdefault(field, []).append(value)
    return fields


def as_int64(value: int) -> int:
    """A decoded varint or fixed64 read as a signed int64."""
    value &= _MASK64
    return value - (1 << 64) if value >= 1 << 63 else value


def as_double(value: int) -> float:
    """A decoded fixed64 read as a double."""
    return _DOUBLE.unpack(_FIXED64.pack(value))[0]
