"""Run control-plane components as child processes: restart a crashed one, stop all on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time
from dataclasses import dataclass

log = logging.getLogger(__name__)

RESTART_BACKOFF_MAX = 30.0
STOP_GRACE = 10.0


@dataclass
class Component:
    """One supervised process: a `kubelite` subcommand with its arguments."""

    name: str
    args: list[str]


async def _run_one(component: Component, stopping: asyncio.Event) -> None:
    backoff = 1.0
    while not stopping.is_set():
        started = time.monotonic()
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "kubelite", *component.args)
        log.info("started %s (pid %d)", component.name, proc.pid)
        waiter = asyncio.ensure_future(proc.wait())
        stopper = asyncio.ensure_future(stopping.wait())
        await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if stopping.is_set():
            stopper.cancel()
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(waiter, STOP_GRACE)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await waiter
            log.info("stopped %s", component.name)
            return
        stopper.cancel()
        code = waiter.result()
        backoff = 1.0 if time.monotonic() - started > 60 else min(backoff * 2, RESTART_BACKOFF_MAX)
        log.error("%s exited with code %s; restarting in %.0fs", component.name, code, backoff)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), backoff)


async def supervise(components: list[Component]) -> None:
    """Run every component until SIGTERM or SIGINT, then stop them all cleanly."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await asyncio.gather(*(_run_one(c, stopping) for c in components))
