"""Node-pressure eviction's pure parts: thresholds as the kubelet parses them, the memory ranking, one round."""

from __future__ import annotations

from typing import Any

import pytest

from kubelite.kubelet.eviction import EvictionManager, ThresholdError, Thresholds, parse_eviction_hard, rank_for_memory


def pod(uid: str, request: str | None = None, priority: int = 0) -> dict[str, Any]:
    resources = {"requests": {"memory": request}} if request else {}
    return {"metadata": {"uid": uid, "name": uid}, "spec": {"priority": priority, "containers": [
        {"name": "c", "resources": resources}]}, "status": {"phase": "Running"}}


def test_thresholds_parse_over_the_defaults() -> None:
    parsed = parse_eviction_hard("memory.available<1Gi, nodefs.available<15%")
    assert parsed.memory_available == 2**30 and parsed.nodefs_available == 0.15
    assert parse_eviction_hard("").memory_available == Thresholds().memory_available
    for bad in ("memory.available>1Gi", "memory.available<lots", "pid.available<10", "nodefs.available<5Gi"):
        with pytest.raises(ThresholdError):
            parse_eviction_hard(bad)


def test_memory_ranking_follows_the_kubelet() -> None:
    within = pod("within", "100Mi")
    over_low = pod("over-low", "10Mi", priority=-10)
    over_high = pod("over-high", "10Mi", priority=100)
    best_effort_big = pod("big")
    usage = {"within": 50 * 2**20, "over-low": 20 * 2**20, "over-high": 500 * 2**20, "big": 300 * 2**20}
    ranked = [p["metadata"]["uid"] for p in rank_for_memory([within, over_high, best_effort_big, over_low], usage)]
    assert ranked == ["over-low", "big", "over-high", "within"]


async def test_a_round_collects_images_then_evicts_one_pod() -> None:
    evicted: list[tuple[str, str]] = []
    collected: list[int] = []
    signals = {"memory_available": 50 * 2**20, "nodefs_total": 1000, "nodefs_available_ratio": 0.10}

    async def read() -> dict[str, float]:
        return signals

    async def usage(pods: list[dict]) -> dict[str, int]:
        return {"a": 10, "b": 99}

    async def collect(target: int) -> int:
        collected.append(target)
        return target

    def evict(victim: dict, message: str) -> None:
        evicted.append((victim["metadata"]["uid"], message))

    manager = EvictionManager(Thresholds(), read, lambda: [pod("a"), pod("b")], usage, collect, evict)
    await manager.check()
    assert collected == [100], "image GC down from 90 % used to the 80 % low mark"
    assert [uid for uid, _ in evicted] == ["b"] and "low on resource: memory" in evicted[0][1]
    signals["memory_available"] = 2**30
    evicted.clear()
    await manager.check()
    assert evicted == []
