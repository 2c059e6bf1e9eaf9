"""Reading an HTTP body with a size cap. aiohttp's StreamReader.read(n) returns whatever is buffered (a body that
arrives in two TCP segments or TLS records would be cut short), so this reads until the end."""

from __future__ import annotations

import aiohttp


async def read_at_most(stream: aiohttp.StreamReader, limit: int) -> bytes:
    """The whole body, or its first limit + 1 bytes when it is longer (so callers can tell it was too long)."""
    body = bytearray()
    while len(body) <= limit:
        chunk = await stream.read(limit + 1 - len(body))
        if not chunk:
            break
        body += chunk
    return bytes(body)
