"""Node-pressure eviction and image garbage collection: when memory or disk runs below the eviction thresholds,
free disk by removing unused images, then evict pods in the kubelet's order (usage above requests, lower priority,
larger overage first) so the node stays healthy."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from kubelite.api.quantity import parse_quantity

log = logging.getLogger(__name__)
Obj = dict[str, Any]
CHECK_INTERVAL = 10.0


class ThresholdError(ValueError):
    """An --eviction-hard value that is not SIGNAL<QUANTITY or SIGNAL<PERCENT%."""


@dataclass
class Thresholds:
    """Hard eviction thresholds (upstream's defaults) and the image GC percentages."""

    memory_available: int = 100 * 2**20
    nodefs_available: float = 0.10
    image_gc_high_percent: int = 85
    image_gc_low_percent: int = 80


def parse_eviction_hard(text: str, base: Thresholds | None = None) -> Thresholds:
    """`memory.available<500Mi,nodefs.available<10%` over the defaults."""
    thresholds = base or Thresholds()
    for item in filter(None, (part.strip() for part in text.split(","))):
        signal, sep, value = item.partition("<")
        if not sep:
            raise ThresholdError(f"eviction threshold {item!r} is not SIGNAL<VALUE")
        if signal == "memory.available" and not value.endswith("%"):
            quantity = parse_quantity(value)
            if quantity is None:
                raise ThresholdError(f"eviction threshold {item!r}: {value!r} is not a quantity")
            thresholds.memory_available = int(quantity)
        elif signal == "nodefs.available" and value.endswith("%"):
            thresholds.nodefs_available = float(value[:-1]) / 100
        else:
            raise ThresholdError(f"eviction threshold {item!r}: use memory.available<QUANTITY or "
                                 "nodefs.available<PERCENT%")
    return thresholds


def _request(pod: Obj, resource: str) -> Fraction:
    total = Fraction(0)
    for container in (pod.get("spec") or {}).get("containers") or []:
        total += parse_quantity(((container.get("resources") or {}).get("requests") or {}).get(resource)) or 0
    return total


def rank_for_memory(pods: list[Obj], usage: dict[str, int]) -> list[Obj]:
    """Eviction order under memory pressure: pods using more than they requested first, then lower priority, then
    the largest use above the request (upstream's rankMemoryPressure)."""
    def key(pod: Obj) -> tuple[bool, int, Fraction]:
        used = usage.get(pod["metadata"]["uid"], 0)
        over = used - _request(pod, "memory")
        return (over <= 0, (pod.get("spec") or {}).get("priority", 0), -over)
    return sorted(pods, key=key)


class EvictionManager:
    """Watches the node's signals every 10 s; reclaims images first for disk, then evicts one pod per round."""

    def __init__(self, thresholds: Thresholds, signals: Callable[[], Awaitable[dict[str, float]]],
                 pods: Callable[[], list[Obj]], usage: Callable[[list[Obj]], Awaitable[dict[str, int]]],
                 collect_images: Callable[[int], Awaitable[int]],
                 evict: Callable[[Obj, str], None]):
        self.thresholds = thresholds
        self.signals = signals
        self.pods = pods
        self.usage = usage
        self.collect_images = collect_images
        self.evict = evict

    async def run(self) -> None:
        """Check and act every CHECK_INTERVAL seconds until cancelled."""
        while True:
            await asyncio.sleep(CHECK_INTERVAL)
            try:
                await self.check()
            except Exception:  # noqa: BLE001 - one bad round must not stop eviction for good
                log.exception("eviction check failed")

    async def check(self) -> None:
        """One round: image GC above its high threshold, then at most one eviction for a breached threshold."""
        signals = await self.signals()
        used_percent = 100 * (1 - signals["nodefs_available_ratio"])
        if used_percent > self.thresholds.image_gc_high_percent:
            target = int(signals["nodefs_total"] * (used_percent - self.thresholds.image_gc_low_percent) / 100)
            freed = await self.collect_images(target)
            log.info("image garbage collection freed %d bytes (wanted %d)", freed, target)
            signals = await self.signals()
        live = [p for p in self.pods() if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
                and not p["metadata"].get("deletionTimestamp")]
        if not live:
            return
        if signals["memory_available"] < self.thresholds.memory_available:
            usage = await self.usage(live)
            victim = rank_for_memory(live, usage)[0]
            used = usage.get(victim["metadata"]["uid"], 0)
            self.evict(victim, f"The node was low on resource: memory. Threshold quantity: "
                               f"{self.thresholds.memory_available}, available: "
                               f"{int(signals['memory_available'])}. Pod was using {used} bytes, request is "
                               f"{int(_request(victim, 'memory'))}.")
        elif signals["nodefs_available_ratio"] < self.thresholds.nodefs_available:
            victim = sorted(live, key=lambda p: (p.get("spec") or {}).get("priority", 0))[0]
            self.evict(victim, "The node was low on resource: ephemeral-storage. Threshold quantity: "
                               f"{self.thresholds.nodefs_available:.0%}.")
