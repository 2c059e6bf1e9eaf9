"""Write priority in the API server: Event writes wait for the other writes to go quiet, never past the limit."""

from __future__ import annotations

import asyncio
import time

from kubelite.apiserver import requestinfo
from kubelite.apiserver.flowcontrol import WritePriority, is_low_priority, is_write

QUIET = 0.1


def info(method: str, path: str) -> requestinfo.RequestInfo | None:
    return requestinfo.parse(method, path, {})


def test_only_event_writes_are_low_priority() -> None:
    assert is_low_priority(info("POST", "/api/v1/namespaces/ns/events"))
    assert is_low_priority(info("PATCH", "/apis/events.k8s.io/v1/namespaces/ns/events/e1"))
    assert not is_low_priority(info("GET", "/api/v1/namespaces/ns/events"))
    assert not is_low_priority(info("DELETE", "/api/v1/namespaces/ns/events/e1"))
    assert not is_low_priority(info("POST", "/api/v1/namespaces/ns/pods"))
    assert is_write(info("PATCH", "/api/v1/namespaces/ns/pods/p/status"))
    assert is_write(info("POST", "/api/v1/namespaces/ns/pods/p/binding"))
    assert not is_write(info("GET", "/api/v1/pods"))
    assert not is_write(info("POST", "/api/v1/namespaces/ns/pods/p/exec")), "an exec session is no write"
    assert not is_write(info("POST", "/api/v1/namespaces/ns/pods/p/portforward"))
    assert not is_write(None)


async def _event_write_seconds(writes: WritePriority) -> float:
    started = time.monotonic()
    async with writes.turn(info("POST", "/api/v1/namespaces/ns/events")):
        return time.monotonic() - started


async def test_event_write_waits_until_writes_are_quiet() -> None:
    writes = WritePriority(quiet=QUIET, max_wait=5.0)
    assert await _event_write_seconds(writes) < QUIET / 2, "nothing else is written: no wait"

    pod_write_done = asyncio.Event()

    async def pod_write() -> None:
        async with writes.turn(info("POST", "/api/v1/namespaces/ns/pods")):
            await asyncio.sleep(0.3)
        pod_write_done.set()

    writer = asyncio.create_task(pod_write())
    await asyncio.sleep(0.01)
    waited = await _event_write_seconds(writes)
    assert pod_write_done.is_set()
    assert 0.3 + QUIET - 0.05 < waited < 2.0, waited
    await writer


async def test_reads_do_not_hold_event_writes_back() -> None:
    writes = WritePriority(quiet=QUIET, max_wait=5.0)

    async def slow_read() -> None:
        async with writes.turn(info("GET", "/api/v1/namespaces/ns/pods")):
            await asyncio.sleep(0.5)

    reader = asyncio.create_task(slow_read())
    await asyncio.sleep(0.01)
    assert await _event_write_seconds(writes) < QUIET / 2
    await reader


async def test_event_write_goes_ahead_after_max_wait_under_constant_writes() -> None:
    writes = WritePriority(quiet=QUIET, max_wait=0.4)
    stop = asyncio.Event()

    async def busy() -> None:
        while not stop.is_set():
            async with writes.turn(info("PATCH", "/api/v1/namespaces/ns/pods/p/status")):
                await asyncio.sleep(0.02)

    writer = asyncio.create_task(busy())
    await asyncio.sleep(0.01)
    try:
        waited = await _event_write_seconds(writes)
    finally:
        stop.set()
        await writer
    assert 0.35 < waited < 0.6, waited
