"""Two priority levels for writes: Event writes yield to every other write.

Events are best-effort, supplemental records (Kubernetes keeps them apart for the same reason: their own TTL, often
their own etcd). Under a burst they were half of all writes — four per started pod, against one create, one binding
and one status — and their cost delayed the writes that start pods. So an Event write waits until no other write
is being served and none has ended for QUIET seconds, but never longer than MAX_WAIT: Events land a little later
under load and at once otherwise, and nothing else waits for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from kubelite.apiserver.requestinfo import RequestInfo

QUIET = 0.2
MAX_WAIT = 2.0
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})
LOW_PRIORITY_VERBS = frozenset({"create", "update", "patch"})
STREAMS = frozenset({"exec", "attach", "portforward", "proxy"})
"""Subresources that connect to a pod or node rather than write: a POST may stay open for a whole session."""


def is_write(info: RequestInfo | None) -> bool:
    """A request that changes stored objects (subresources too, but not the streams to pods and nodes)."""
    return info is not None and info.verb in WRITE_VERBS and info.subresource not in STREAMS


def is_low_priority(info: RequestInfo | None) -> bool:
    """A write of an Event (core/v1 or events.k8s.io)."""
    return info is not None and info.resource == "events" and info.verb in LOW_PRIORITY_VERBS


class WritePriority:
    """Counts the writes being served and tells low-priority writes when the others have gone quiet."""

    def __init__(self, quiet: float = QUIET, max_wait: float = MAX_WAIT):
        self.quiet = quiet
        self.max_wait = max_wait
        self._in_flight = 0
        self._last_done = 0.0
        self._idle = asyncio.Event()
        self._idle.set()

    @contextlib.asynccontextmanager
    async def turn(self, info: RequestInfo | None) -> AsyncIterator[None]:
        """Around serving a request: an Event write first waits its turn, other writes are counted."""
        if is_low_priority(info):
            await self.yield_to_writes()
            yield
            return
        if not is_write(info):
            yield
            return
        self._in_flight += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._in_flight -= 1
            self._last_done = time.monotonic()
            if not self._in_flight:
                self._idle.set()

    async def yield_to_writes(self) -> None:
        """Return once the other writes have been quiet for `quiet` seconds, or after `max_wait` at most."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.max_wait):
                while True:
                    await self._idle.wait()
                    left = self._last_done + self.quiet - time.monotonic()
                    if left <= 0:
                        return
                    await asyncio.sleep(left)
