#!/usr/bin/env python3
"""The image pull figure: a ~5 MB gzip image (busybox plus random data) pushed to a local docker-registry, then
pulled cold (empty store: download, verify, unpack) and warm (everything present). The issue wants a cold pull under
1 s. Prints one JSON line.

Usage: bench/image_pull_bench.py [--size-mb 5] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import uvloop

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kubelite.kubelet.images import ImageStore  # noqa: E402
from tests import images as built  # noqa: E402
from tests.registry import start_registry, stop_registry  # noqa: E402


async def timed_pulls(store_root: Path, ref: str) -> tuple[float, float]:
    """Seconds for a cold pull into an empty store, then for a warm pull of the same image."""
    async with ImageStore(store_root) as store:
        start = time.perf_counter()
        await store.pull(ref)
        cold = time.perf_counter() - start
        start = time.perf_counter()
        await store.pull(ref)
        return cold, time.perf_counter() - start


def summary(values: list[float]) -> dict[str, float]:
    """min, median and max, rounded."""
    return {"min": round(min(values), 4), "median": round(statistics.median(values), 4), "max": round(max(values), 4)}


def main() -> None:
    """Start a registry, push the image, pull it cold and warm --runs times, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=5.0, help="Compressed image size to reach.")
    parser.add_argument("--runs", type=int, default=5, help="Cold pulls, each into a new empty store.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        registry = start_registry(work / "registry")
        try:
            filler = int(args.size_mb * 1_000_000) - len(built.busybox_layer().blob)
            image = built.busybox_image([built.file("data/random.bin", os.urandom(max(filler, 0)))])
            built.push(registry.url, "bench/busybox", "v1", image)
            ref = f"{registry.host}/bench/busybox:v1"
            results = [uvloop.run(timed_pulls(work / f"store-{run}", ref)) for run in range(args.runs)]
        finally:
            stop_registry(registry)
    cold, warm = [r[0] for r in results], [r[1] for r in results]
    print(json.dumps({
        "image_bytes": image.size, "layers": len(image.layers), "runs": args.runs,
        "cold_pull_s": summary(cold), "warm_pull_s": summary(warm),
        "cold_pull_mb_per_s": round(image.size / 1e6 / statistics.median(cold), 1),
        "under_1s": max(cold) < 1.0,
    }))


if __name__ == "__main__":
    main()
