"""The controllers' work queue: deduplicated keys, one worker per key at a time, delayed and rate-limited adds."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

from kubelite.client.ratelimit import RateLimiter, default_controller_limiter


class WorkQueue:
    """client-go's rate-limiting work queue on asyncio: each key queued once, never held by two workers."""

    # A key added while a worker holds it stays in _dirty only, and is queued again by done().

    def __init__(self, rate_limiter: RateLimiter | None = None):
        self.rate_limiter = rate_limiter or default_controller_limiter()
        self._queue: deque[str] = deque()
        self._dirty: set[str] = set()
        self._processing: set[str] = set()
        self._waiting: dict[str, tuple[float, asyncio.TimerHandle]] = {}
        self._getters: deque[asyncio.Future[None]] = deque()
        self._shutting_down = False

    def __len__(self) -> int:
        """Keys ready to be handed out (not those delayed or being processed)."""
        return len(self._queue)

    @property
    def shutting_down(self) -> bool:
        """Whether shutdown() was called."""
        return self._shutting_down

    def add(self, key: str) -> None:
        """Queue a key now, unless it is already queued; ignored after shutdown."""
        if self._shutting_down or key in self._dirty:
            return
        self._dirty.add(key)
        if key not in self._processing:
            self._queue.append(key)
            self._wake_one()

    def add_after(self, key: str, delay: float) -> None:
        """Queue a key after `delay` seconds; a pending earlier time for the same key wins."""
        if self._shutting_down:
            return
        if delay <= 0:
            self.add(key)
            return
        loop = asyncio.get_running_loop()
        when = loop.time() + delay
        pending = self._waiting.get(key)
        if pending is not None:
            if pending[0] <= when:
                return
            pending[1].cancel()
        self._waiting[key] = (when, loop.call_at(when, self._ready, key))

    def add_rate_limited(self, key: str) -> None:
        """Queue a key after its rate limiter's delay (per-key exponential backoff, overall bucket)."""
        self.add_after(key, self.rate_limiter.when(key))

    def forget(self, key: str) -> None:
        """Reset the key's backoff: call after it was processed successfully."""
        self.rate_limiter.forget(key)

    def num_requeues(self, key: str) -> int:
        """How many rate-limited retries the key has had since it was last forgotten."""
        return self.rate_limiter.num_requeues(key)

    async def get(self) -> str | None:
        """The next key, marked as processing until done(); None once the queue is shut down."""
        while not self._queue:
            if self._shutting_down:
                return None
            waiter = asyncio.get_running_loop().create_future()
            self._getters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                with contextlib.suppress(ValueError):
                    self._getters.remove(waiter)
                if waiter.done() and not waiter.cancelled():
                    self._wake_one()
                raise
        if self._shutting_down:
            return None
        key = self._queue.popleft()
        self._processing.add(key)
        self._dirty.discard(key)
        return key

    def done(self, key: str) -> None:
        """A worker finished the key; if it was added meanwhile, queue it again."""
        self._processing.discard(key)
        if key in self._dirty:
            self._queue.append(key)
            self._wake_one()

    def shutdown(self) -> None:
        """Stop accepting keys, drop delayed ones and make every get() return None."""
        self._shutting_down = True
        for _, handle in self._waiting.values():
            handle.cancel()
        self._waiting.clear()
        while self._getters:
            waiter = self._getters.popleft()
            if not waiter.done():
                waiter.set_result(None)

    def _ready(self, key: str) -> None:
        self._waiting.pop(key, None)
        self.add(key)

    def _wake_one(self) -> None:
        while self._getters:
            waiter = self._getters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
