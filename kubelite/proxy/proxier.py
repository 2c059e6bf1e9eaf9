"""The node's Service proxy (kube-proxy's nftables mode, in-process): Services and EndpointSlices from the API,
kept as one nftables table that follows every change."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from typing import Any

from kubelite.client.informer import SharedInformerFactory
from kubelite.client.resources import ENDPOINTSLICES, SERVICES
from kubelite.kubelet.network.nat import NftError, run_nft
from kubelite.proxy import model
from kubelite.proxy.conntrack import clear_stale_flows, stale_flows
from kubelite.proxy.rules import Renderer, Ruleset, delete_script, full_script, update_script

log = logging.getLogger(__name__)

DEFAULT_TABLE = "kubelite-proxy"
RETRY_MIN, RETRY_MAX = 0.5, 30.0
"""Seconds to wait before retrying a failed sync, doubling from the first to the second."""


async def cleanup(table: str = DEFAULT_TABLE) -> None:
    """Delete the proxy's table (agent `--cleanup`, shutdown, tests); nothing happens if it is absent."""
    await run_nft(delete_script(table))


class Proxier:
    """Watches Services and EndpointSlices in all namespaces; each burst of changes becomes one `nft -f`.

    At most one sync runs at a time; changes arriving during a sync cause exactly one more right after it. The
    first sync (and the one after a failure) replaces the whole table; later ones change only what differs, so
    ClientIP affinity survives. Rules are left in place when run() ends: call cleanup() to remove them.
    """

    def __init__(self, informers: SharedInformerFactory, node_name: str, cluster_cidr: str,
                 table: str = DEFAULT_TABLE):
        self.node_name = node_name
        self.cluster_cidr = str(ipaddress.ip_network(cluster_cidr, strict=False))
        self.table = table
        self.renderer = Renderer(self.cluster_cidr)
        self.informers = informers
        self.services = self.informers.informer(SERVICES)
        self.slices = self.informers.informer(ENDPOINTSLICES)
        for informer in (self.services, self.slices):
            informer.add_handlers(on_add=self._changed, on_update=lambda _old, new: self._changed(new),
                                  on_delete=self._changed)
        self._dirty = asyncio.Event()
        self._lock = asyncio.Lock()
        self.applied: Ruleset | None = None
        """What the kernel holds, as last written; None when unknown (the next sync replaces the table)."""
        self.ports: list[model.ServicePort] = []
        """The Service ports the table was last synced to."""
        self.syncs = 0
        """Successful syncs so far."""
        self.last_sync = 0.0
        """time.monotonic() at the end of the last successful sync."""

    def _changed(self, _obj: Any) -> None:
        self._dirty.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Sync until `stop` is set: first once the informers have listed, then after every change."""
        self.informers.start()
        stopping = asyncio.ensure_future(stop.wait())
        try:
            synced = asyncio.gather(self.services.wait_synced(), self.slices.wait_synced())
            await asyncio.wait({synced, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if stop.is_set():
                synced.cancel()
                return
            self._dirty.set()
            delay = RETRY_MIN
            while not stop.is_set():
                dirty = asyncio.ensure_future(self._dirty.wait())
                await asyncio.wait({dirty, stopping}, return_when=asyncio.FIRST_COMPLETED)
                dirty.cancel()
                if stop.is_set():
                    return
                self._dirty.clear()
                try:
                    await self.sync()
                    delay = RETRY_MIN
                except Exception as exc:
                    log.error("proxy sync of table %s failed; retrying in %.1fs: %s", self.table, delay, exc,
                              exc_info=not isinstance(exc, NftError))
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(asyncio.shield(stopping), delay)
                    delay = min(delay * 2, RETRY_MAX)
                    self._dirty.set()
        finally:
            stopping.cancel()

    async def sync(self) -> None:
        """Render the cached Services and slices and bring the table to match them (one sync at a time)."""
        async with self._lock:
            started = time.monotonic()
            ports = model.build(self.services.store.list(), self.slices.store.list(), self.node_name)
            ruleset = self.renderer.render(ports)
            if self.applied is None:
                script = full_script(self.table, ruleset)
            else:
                script = update_script(self.table, self.applied, ruleset)
            if script:
                self.applied = None
                await run_nft(script)
            self.applied = ruleset
            stale, self.ports = stale_flows(self.ports, ports), ports
            cleared = await clear_stale_flows(stale)
            self.syncs += 1
            self.last_sync = time.monotonic()
        log.debug("proxy sync: %d service ports, %d chains, %d script bytes, %d UDP flows cleared in %.3fs",
                  len(ports), len(ruleset.chains), len(script), cleared, self.last_sync - started)

    async def cleanup(self) -> None:
        """Delete this proxier's table; the next sync recreates it in full."""
        async with self._lock:
            self.applied = None
            await cleanup(self.table)
