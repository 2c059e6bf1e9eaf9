"""Rate limiters: a token bucket (client QPS, queue-wide limit) and per-item exponential backoff."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol


class TokenBucket:
    """Go's rate.Limiter: `burst` tokens, refilled at `qps` per second; a reservation may go into debt."""

    def __init__(self, qps: float, burst: int, clock: Callable[[], float] = time.monotonic):
        if qps <= 0 or burst < 1:
            raise ValueError("a token bucket needs qps > 0 and burst >= 1")
        self.qps = qps
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._last = clock()

    def reserve(self) -> float:
        """Take one token now and return how long to wait before using it (0 when one was available)."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.qps)
        self._last = now
        self._tokens -= 1
        return 0.0 if self._tokens >= 0 else -self._tokens / self.qps

    async def wait(self) -> None:
        """Wait for a token: what every API request does first, as client-go's rate limiter."""
        delay = self.reserve()
        if delay > 0:
            await asyncio.sleep(delay)


class RateLimiter(Protocol):
    """How long an item waits before its next retry (client-go's workqueue.RateLimiter)."""

    def when(self, item: str) -> float:
        """The delay before the item's next attempt; counts as one more failure."""
        ...

    def forget(self, item: str) -> None:
        """The item succeeded: its next failure starts from the shortest delay again."""
        ...

    def num_requeues(self, item: str) -> int:
        """Failures counted for the item since it was last forgotten."""
        ...


class ItemExponentialLimiter:
    """Per-item backoff: base * 2^failures, capped; forget() starts the item over."""

    def __init__(self, base: float = 0.005, cap: float = 1000.0):
        self.base = base
        self.cap = cap
        self._failures: dict[str, int] = {}

    def when(self, item: str) -> float:
        failures = self._failures.get(item, 0)
        self._failures[item] = failures + 1
        if failures >= 64:
            return self.cap
        return min(self.base * 2**failures, self.cap)

    def forget(self, item: str) -> None:
        self._failures.pop(item, None)

    def num_requeues(self, item: str) -> int:
        return self._failures.get(item, 0)


class BucketLimiter:
    """An overall limit shared by all items: each retry takes a token from one bucket."""

    def __init__(self, qps: float = 10.0, burst: int = 100):
        self.bucket = TokenBucket(qps, burst)

    def when(self, item: str) -> float:
        return self.bucket.reserve()

    def forget(self, item: str) -> None:
        """Nothing to forget: the bucket has no per-item state."""

    def num_requeues(self, item: str) -> int:
        return 0


class MaxOfLimiter:
    """The longest wait of several limiters, so both per-item and overall limits hold."""

    def __init__(self, *limiters: RateLimiter):
        self.limiters = limiters

    def when(self, item: str) -> float:
        return max(limiter.when(item) for limiter in self.limiters)

    def forget(self, item: str) -> None:
        for limiter in self.limiters:
            limiter.forget(item)

    def num_requeues(self, item: str) -> int:
        return max(limiter.num_requeues(item) for limiter in self.limiters)


def default_controller_limiter() -> MaxOfLimiter:
    """client-go's DefaultControllerRateLimiter: 5 ms doubling to 1000 s per item, 10 qps / 100 burst overall."""
    return MaxOfLimiter(ItemExponentialLimiter(0.005, 1000.0), BucketLimiter(10.0, 100))
