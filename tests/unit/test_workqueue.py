"""The work queue and its rate limiters: dedupe, one worker per key, delays and backoff."""

from __future__ import annotations

import asyncio

import pytest

from kubelite.client.ratelimit import (
    BucketLimiter,
    ItemExponentialLimiter,
    MaxOfLimiter,
    TokenBucket,
    default_controller_limiter,
)
from kubelite.client.workqueue import WorkQueue


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def _get(queue: WorkQueue) -> str | None:
    async with asyncio.timeout(1.0):
        return await queue.get()


async def test_duplicate_adds_collapse_into_one_key() -> None:
    queue = WorkQueue()
    for key in ("a", "b", "a", "a", "b", "c"):
        queue.add(key)
    assert len(queue) == 3
    assert [await _get(queue) for _ in range(3)] == ["a", "b", "c"]
    assert len(queue) == 0


async def test_key_being_processed_is_not_handed_out_again_until_done() -> None:
    queue = WorkQueue()
    queue.add("a")
    assert await _get(queue) == "a"
    queue.add("a")
    queue.add("a")
    assert len(queue) == 0, "a key held by a worker must not be queued for another worker"
    second = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0.02)
    assert not second.done()
    queue.done("a")
    assert await asyncio.wait_for(second, 1) == "a", "re-added while processing: processed again after done"
    queue.done("a")
    assert len(queue) == 0


async def test_concurrent_workers_never_share_a_key() -> None:
    queue = WorkQueue()
    active: set[str] = set()
    processed: list[str] = []
    overlap: list[str] = []

    async def worker() -> None:
        while (key := await queue.get()) is not None:
            if key in active:
                overlap.append(key)
            active.add(key)
            await asyncio.sleep(0.005)
            processed.append(key)
            active.discard(key)
            queue.done(key)

    workers = [asyncio.create_task(worker()) for _ in range(4)]
    for round_ in range(20):
        for key in ("x", "y"):
            queue.add(key)
        await asyncio.sleep(0.002 * (round_ % 3))
    await asyncio.sleep(0.1)
    queue.shutdown()
    await asyncio.wait_for(asyncio.gather(*workers), 2)
    assert not overlap
    assert {"x", "y"} <= set(processed)


async def test_add_after_delays_and_earliest_time_wins() -> None:
    queue = WorkQueue()
    loop = asyncio.get_running_loop()
    started = loop.time()
    queue.add_after("late", 0.2)
    queue.add_after("late", 0.05)
    queue.add_after("late", 0.5)
    assert len(queue) == 0
    assert await _get(queue) == "late"
    assert 0.04 <= loop.time() - started < 0.19
    queue.done("late")
    await asyncio.sleep(0.25)
    assert len(queue) == 0, "the superseded later time must not add the key again"


async def test_rate_limited_adds_back_off_exponentially_until_forgotten() -> None:
    queue = WorkQueue(ItemExponentialLimiter(0.01, 1.0))
    loop = asyncio.get_running_loop()
    delays = []
    for _ in range(4):
        started = loop.time()
        queue.add_rate_limited("k")
        assert await _get(queue) == "k"
        delays.append(loop.time() - started)
        queue.done("k")
    assert queue.num_requeues("k") == 4
    assert delays[0] < 0.05 and delays[3] >= 0.075
    queue.forget("k")
    assert queue.num_requeues("k") == 0


def test_item_exponential_limiter_doubles_from_5ms_to_1000s() -> None:
    limiter = default_controller_limiter()
    delays = [limiter.when("k") for _ in range(30)]
    assert delays[:4] == pytest.approx([0.005, 0.01, 0.02, 0.04])
    assert delays[-1] == 1000.0
    assert limiter.when("other") == pytest.approx(0.005), "backoff is per key"
    limiter.forget("k")
    assert limiter.when("k") == pytest.approx(0.005)
    exponential = ItemExponentialLimiter()
    for _ in range(200):
        exponential.when("huge")
    assert exponential.when("huge") == 1000.0


def test_token_bucket_allows_burst_then_qps() -> None:
    clock = FakeClock()
    bucket = TokenBucket(10, 3, clock)
    assert [bucket.reserve() for _ in range(3)] == [0, 0, 0]
    assert bucket.reserve() == pytest.approx(0.1)
    assert bucket.reserve() == pytest.approx(0.2), "reservations queue up behind each other"
    clock.now = 10.0
    assert [bucket.reserve() for _ in range(3)] == [0, 0, 0], "refills up to the burst, no further"
    assert bucket.reserve() > 0
    with pytest.raises(ValueError):
        TokenBucket(0, 1)


def test_overall_bucket_limits_retries_of_many_keys() -> None:
    limiter = MaxOfLimiter(ItemExponentialLimiter(0.005, 1000.0), BucketLimiter(10.0, 100))
    delays = [limiter.when(f"key-{i}") for i in range(110)]
    assert max(delays[:100]) == pytest.approx(0.005)
    assert delays[109] == pytest.approx(1.0, abs=0.05), "after the burst of 100, 10 per second"


async def test_shutdown_wakes_getters_and_ignores_new_keys() -> None:
    queue = WorkQueue()
    waiting = [asyncio.ensure_future(queue.get()) for _ in range(3)]
    await asyncio.sleep(0)
    queue.add_after("later", 0.05)
    queue.shutdown()
    assert await asyncio.wait_for(asyncio.gather(*waiting), 1) == [None, None, None]
    queue.add("a")
    queue.add_rate_limited("b")
    assert len(queue) == 0
    assert await _get(queue) is None
    await asyncio.sleep(0.08)
    assert len(queue) == 0, "delayed keys are dropped on shutdown"


async def test_cancelled_getter_does_not_swallow_a_key() -> None:
    queue = WorkQueue()
    first = asyncio.ensure_future(queue.get())
    second = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    queue.add("a")
    first.cancel()
    assert await asyncio.wait_for(second, 1) == "a"
