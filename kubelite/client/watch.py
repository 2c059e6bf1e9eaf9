"""Decode a watch stream: newline-delimited JSON events arriving in arbitrary chunks."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

import orjson

from kubelite.client.errors import error_from_status

Obj = dict[str, Any]


async def decode_events(chunks: AsyncIterable[bytes]) -> AsyncIterator[tuple[str, Obj]]:
    """Yield (type, object) per line; an ERROR event raises its Status (GoneError for 410)."""
    # A last line without its newline is a stream cut mid-event: it is dropped, since the caller
    # resumes from the last resourceVersion it saw and so receives that event again.
    parts: list[bytes] = []
    async for chunk in chunks:
        parts.append(chunk)
        if b"\n" not in chunk:
            continue
        lines = b"".join(parts).split(b"\n")
        parts = [lines.pop()]
        for line in lines:
            if line.strip():
                yield _event(line)


def _event(line: bytes) -> tuple[str, Obj]:
    event = orjson.loads(line)
    type_, obj = event.get("type", ""), event.get("object") or {}
    if type_ == "ERROR":
        raise error_from_status(obj)
    return type_, obj
