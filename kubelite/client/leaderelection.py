"""Leader election on a coordination.k8s.io/v1 Lease, with client-go's timing and optimistic concurrency."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import math
import random
import socket
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from kubelite.client.errors import CONNECTION_ERRORS, ApiError, is_conflict, is_not_found
from kubelite.client.resources import LEASES
from kubelite.client.rest import ApiClient
from kubelite.client.timestamps import now_micro_time

log = logging.getLogger(__name__)

Obj = dict[str, Any]
JITTER = 1.2
"""Candidates retry every retry_period plus up to 1.2 times as much again (client-go's JitterFactor)."""
EXPIRY_MARGIN = 0.05
"""A candidate also tries this long after the holder's lease should have run out, rather than a jitter later."""


def default_identity() -> str:
    """hostname_uuid, as kube-controller-manager and kube-scheduler name themselves."""
    return f"{socket.gethostname()}_{uuid.uuid4()}"


@dataclass
class LeaderElectionConfig:
    """Which Lease, who we are, and the timing (Kubernetes' defaults: 15 s, 10 s, 2 s)."""

    name: str
    namespace: str = "kube-system"
    identity: str = field(default_factory=default_identity)
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    release_on_cancel: bool = True

    def __post_init__(self) -> None:
        if not self.lease_duration > self.renew_deadline > self.retry_period * JITTER > 0:
            raise ValueError("need lease_duration > renew_deadline > retry_period * 1.2 > 0")


class LeaderElector:
    """One candidate: campaigns for the Lease, renews it while leading, releases it on a clean stop."""

    def __init__(self, client: ApiClient, config: LeaderElectionConfig):
        self.client = client
        self.config = config
        self._observed: Obj | None = None
        self._observed_spec: Obj | None = None
        self._observed_at = 0.0

    @property
    def leader(self) -> str:
        """The holder identity last seen on the Lease ("" if none)."""
        return (self._observed_spec or {}).get("holderIdentity") or ""

    @property
    def is_leader(self) -> bool:
        """Whether the Lease, as last seen, names us as holder."""
        return self.leader == self.config.identity

    async def run(self, on_started_leading: Callable[[], Awaitable[None]],
                  on_stopped_leading: Callable[[], None] | None = None) -> None:
        """Wait to lead, run on_started_leading while renewing; return when leadership is lost or it ends."""
        await self._acquire()
        log.info("%s became leader of lease %s/%s", self.config.identity, self.config.namespace, self.config.name)
        leading = asyncio.create_task(on_started_leading(), name=f"leading-{self.config.name}")
        renewing = asyncio.create_task(self._renew_loop(), name=f"renewing-{self.config.name}")
        try:
            await asyncio.wait({leading, renewing}, return_when=asyncio.FIRST_COMPLETED)
            if leading.done():
                leading.result()
        finally:
            for task in (leading, renewing):
                task.cancel()
            await asyncio.gather(leading, renewing, return_exceptions=True)
            if self.config.release_on_cancel:
                await self._release()
            if on_stopped_leading is not None:
                on_stopped_leading()

    async def _acquire(self) -> None:
        """Try every retry_period (with jitter), and again the moment the holder's lease runs out, until ours."""
        while True:
            if await self._try_acquire_or_renew():
                return
            delay = self.config.retry_period * (1 + random.random() * JITTER)
            if self._observed_spec:
                delay = min(delay, self._expires_in(self._observed_spec) + EXPIRY_MARGIN)
            await asyncio.sleep(delay)

    async def _renew(self) -> bool:
        """Try every retry_period until one renewal succeeds or renew_deadline passes."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.config.renew_deadline):
                while True:
                    if await self._try_acquire_or_renew():
                        return True
                    await asyncio.sleep(self.config.retry_period)
        return False

    async def _renew_loop(self) -> None:
        """Renew every retry_period; give up (lose leadership) when no renewal succeeds within renew_deadline."""
        while True:
            if not await self._renew():
                log.warning("%s failed to renew lease %s/%s within %ss; leadership lost", self.config.identity,
                            self.config.namespace, self.config.name, self.config.renew_deadline)
                return
            await asyncio.sleep(self.config.retry_period)

    def _observe(self, lease: Obj) -> None:
        """Remember the Lease; a changed spec restarts the clock of its expiry (local time, immune to skew)."""
        spec = lease.get("spec") or {}
        if spec != self._observed_spec:
            self._observed_spec = copy.deepcopy(spec)
            self._observed_at = asyncio.get_running_loop().time()
        self._observed = lease

    def _expires_in(self, spec: Obj) -> float:
        """Seconds until the observed lease runs out (negative once it has), by our own clock."""
        duration = spec.get("leaseDurationSeconds") or self.config.lease_duration
        return self._observed_at + duration - asyncio.get_running_loop().time()

    def _expired(self, spec: Obj) -> bool:
        return self._expires_in(spec) <= 0

    async def _try_acquire_or_renew(self) -> bool:
        """One attempt: create the Lease, renew ours, or take one whose holder stopped renewing."""
        cfg = self.config
        now = now_micro_time()
        record = {"holderIdentity": cfg.identity, "leaseDurationSeconds": math.ceil(cfg.lease_duration),
                  "acquireTime": now, "renewTime": now, "leaseTransitions": 0}
        try:
            try:
                lease = await self.client.get(LEASES, cfg.name, cfg.namespace)
            except ApiError as exc:
                if not is_not_found(exc):
                    raise
                self._observe(await self.client.create(LEASES, {
                    "apiVersion": LEASES.api_version, "kind": "Lease",
                    "metadata": {"name": cfg.name, "namespace": cfg.namespace}, "spec": record}))
                return True
            self._observe(lease)
            spec = lease.get("spec") or {}
            holder = spec.get("holderIdentity") or ""
            if holder and holder != cfg.identity and not self._expired(spec):
                return False
            if holder == cfg.identity:
                record["acquireTime"] = spec.get("acquireTime") or now
                record["leaseTransitions"] = spec.get("leaseTransitions") or 0
            else:
                record["leaseTransitions"] = (spec.get("leaseTransitions") or 0) + 1
            self._observe(await self.client.update(LEASES, {**lease, "spec": {**spec, **record}}))
            return True
        except (ApiError, *CONNECTION_ERRORS) as exc:
            log.info("%s: lease %s/%s not acquired or renewed: %s", cfg.identity, cfg.namespace, cfg.name, exc)
            return False

    async def _release(self) -> None:
        """Hand the Lease back (empty holder, 1 s duration) so a successor need not wait out our lease."""
        cfg = self.config
        try:
            async with asyncio.timeout(cfg.renew_deadline):
                while self._observed is not None and self.is_leader:
                    try:
                        await self._write_release(self._observed)
                    except ApiError as exc:
                        if not is_conflict(exc):
                            raise
                        # A renewal cancelled in flight may have landed: re-read, release if still ours.
                        self._observe(await self.client.get(LEASES, cfg.name, cfg.namespace))
        except (ApiError, *CONNECTION_ERRORS) as exc:
            log.warning("%s: could not release lease %s/%s: %s", cfg.identity, cfg.namespace, cfg.name, exc)

    async def _write_release(self, lease: Obj) -> None:
        now = now_micro_time()
        spec = {**(lease.get("spec") or {}), "holderIdentity": "", "leaseDurationSeconds": 1,
                "acquireTime": now, "renewTime": now}
        self._observe(await self.client.update(LEASES, {**lease, "spec": spec}))
