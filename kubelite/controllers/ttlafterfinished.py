"""TTL-after-finished controller: deletes a finished Job spec.ttlSecondsAfterFinished seconds after it finished."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from kubelite.client.controller import Controller, Requeue
from kubelite.client.errors import ApiError, is_conflict, is_not_found
from kubelite.client.resources import JOBS
from kubelite.client.store import split_key

Obj = dict[str, Any]


def seconds_left(job: Obj) -> float | None:
    """Seconds until a finished Job with a TTL expires (0 or less: now); None if it has no TTL or runs."""
    ttl = (job.get("spec") or {}).get("ttlSecondsAfterFinished")
    if ttl is None or job["metadata"].get("deletionTimestamp"):
        return None
    finished = next((c.get("lastTransitionTime") for c in (job.get("status") or {}).get("conditions") or []
                     if c.get("type") in ("Complete", "Failed") and c.get("status") == "True"), None)
    if not finished:
        return None
    return ttl - (datetime.now(UTC) - datetime.fromisoformat(finished)).total_seconds()


class TTLAfterFinishedController(Controller):
    """Keys are Job keys; an unexpired Job is requeued for the moment it expires."""

    name = "ttl-after-finished"

    def setup(self) -> None:
        """Jobs."""
        self.jobs = self.watch(JOBS)

    async def reconcile(self, key: str) -> Requeue | None:
        """Delete an expired Job (checked again on a fresh copy, as its TTL may have changed), or wait for it."""
        job = self.jobs.store.get(key)
        left = seconds_left(job) if job else None
        if left is not None and left <= 0:
            namespace, name = split_key(key)
            try:
                job = await self.client.get(JOBS, name, namespace)
                left = seconds_left(job)
                if left is not None and left <= 0:
                    await self.client.delete(JOBS, name, namespace, propagation_policy="Background",
                                             preconditions={"uid": job["metadata"]["uid"]})
                    return None
            except ApiError as exc:
                if is_not_found(exc) or is_conflict(exc):
                    return None
                raise
        return Requeue(after=left) if left is not None and left > 0 else None
