"""The scheduling queue: activeQ (QueueSort order), backoffQ (per-pod exponential backoff) and unschedulable pods."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from kubelite.scheduler.framework import ClusterEvent, EventRegistration, Nominator, Status
from kubelite.scheduler.podinfo import PodInfo, QueuedPodInfo

log = logging.getLogger(__name__)

Obj = dict[str, Any]
Less = Callable[[QueuedPodInfo, QueuedPodInfo], bool]
PreEnqueue = Callable[[PodInfo], Status | None]
DEFAULT_INITIAL_BACKOFF = 1.0
DEFAULT_MAX_BACKOFF = 10.0
MAX_UNSCHEDULABLE_DURATION = 60.0
"""An unschedulable pod is retried after this long even if no cluster event moved it."""
_IGNORED_META = ("resourceVersion", "generation", "managedFields", "finalizers")


class _Entry:
    """An activeQ heap entry: ordered by the QueueSort plugin, lazily removed."""

    __slots__ = ("qpi", "less", "removed")

    def __init__(self, qpi: QueuedPodInfo, less: Less):
        self.qpi = qpi
        self.less = less
        self.removed = False

    def __lt__(self, other: _Entry) -> bool:
        return self.less(self.qpi, other.qpi)


def pod_updated(old: Obj, new: Obj) -> bool:
    """isPodUpdated: anything but status, resourceVersion, generation, managedFields and finalizers changed."""
    if old.get("spec") != new.get("spec"):
        return True
    old_meta, new_meta = old.get("metadata") or {}, new.get("metadata") or {}
    keys = (set(old_meta) | set(new_meta)).difference(_IGNORED_META)
    return any(old_meta.get(k) != new_meta.get(k) for k in keys)


class SchedulingQueue:
    """PriorityQueue: pending pods move activeQ -> (scheduling) -> backoffQ or unschedulable -> activeQ."""

    def __init__(self, less: Less, *, pre_enqueue: Mapping[str, PreEnqueue] | None = None,
                 registrations: Mapping[str, Mapping[str, list[EventRegistration]]] | None = None,
                 nominator: Nominator | None = None, initial_backoff: float = DEFAULT_INITIAL_BACKOFF,
                 max_backoff: float = DEFAULT_MAX_BACKOFF,
                 max_unschedulable_duration: float = MAX_UNSCHEDULABLE_DURATION,
                 clock: Callable[[], float] = time.monotonic):
        self.less = less
        self.pre_enqueue = dict(pre_enqueue or {})
        """Per profile (schedulerName): its PreEnqueue plugins as one callable."""
        self.registrations = {name: dict(regs) for name, regs in (registrations or {}).items()}
        """Per profile: plugin name -> the cluster events (and hints) it registered."""
        self.nominator = nominator or Nominator()
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.max_unschedulable_duration = max_unschedulable_duration
        self.clock = clock
        self._active: list[_Entry] = []
        self._active_keys: dict[str, _Entry] = {}
        self._backoff: list[tuple[float, int, str]] = []
        self._backoff_pods: dict[str, QueuedPodInfo] = {}
        self._seq = itertools.count()
        self.unschedulable: dict[str, QueuedPodInfo] = {}
        self.in_flight: dict[str, QueuedPodInfo] = {}
        self.scheduling_cycle = 0
        self.move_request_cycle = -1
        self._wakeup = asyncio.Event()

    def __len__(self) -> int:
        return len(self._active_keys) + len(self._backoff_pods) + len(self.unschedulable)

    def active_keys(self) -> list[str]:
        return list(self._active_keys)

    def backoff_keys(self) -> list[str]:
        return list(self._backoff_pods)

    def contains(self, key: str) -> bool:
        return key in self._active_keys or key in self._backoff_pods or key in self.unschedulable

    # Backoff.

    def backoff_duration(self, qpi: QueuedPodInfo) -> float:
        """initial * 2^(attempts-1), capped at the maximum."""
        duration = self.initial_backoff
        for _ in range(1, qpi.attempts):
            duration *= 2
            if duration >= self.max_backoff:
                return self.max_backoff
        return duration

    def backoff_expiry(self, qpi: QueuedPodInfo) -> float:
        return qpi.timestamp + self.backoff_duration(qpi)

    def is_backing_off(self, qpi: QueuedPodInfo) -> bool:
        return qpi.attempts > 0 and self.backoff_expiry(qpi) > self.clock()

    # Internal moves.

    def _push_active(self, qpi: QueuedPodInfo) -> None:
        entry = _Entry(qpi, self.less)
        self._active_keys[qpi.key] = entry
        heapq.heappush(self._active, entry)
        self._wakeup.set()

    def _push_backoff(self, qpi: QueuedPodInfo) -> None:
        qpi.backoff_expiry = self.backoff_expiry(qpi)
        self._backoff_pods[qpi.key] = qpi
        heapq.heappush(self._backoff, (qpi.backoff_expiry, next(self._seq), qpi.key))

    def _requeue(self, qpi: QueuedPodInfo) -> None:
        """To backoffQ while still backing off, else activeQ."""
        if self.is_backing_off(qpi):
            self._push_backoff(qpi)
        else:
            self._push_active(qpi)

    def _remove(self, key: str) -> QueuedPodInfo | None:
        entry = self._active_keys.pop(key, None)
        if entry is not None:
            entry.removed = True
            return entry.qpi
        qpi = self._backoff_pods.pop(key, None)
        if qpi is not None:
            return qpi
        return self.unschedulable.pop(key, None)

    def _gate(self, qpi: QueuedPodInfo) -> bool:
        """Run PreEnqueue; a rejected pod waits (gated) in the unschedulable pods."""
        check = self.pre_enqueue.get(qpi.pod_info.scheduler_name)
        status = check(qpi.pod_info) if check is not None else None
        qpi.gated = status is not None
        if status is not None:
            qpi.unschedulable_plugins = {status.plugin}
            self.unschedulable[qpi.key] = qpi
        return qpi.gated

    # Informer-driven changes.

    def add(self, pod: PodInfo) -> None:
        """A new pending pod."""
        if self.contains(pod.key) or pod.key in self.in_flight:
            self.update(pod.pod, pod)
            return
        qpi = QueuedPodInfo(pod, self.clock())
        self.nominator.add(pod)
        if not self._gate(qpi):
            self._push_active(qpi)

    def update(self, old: Obj, new: PodInfo) -> None:
        """A pending pod changed: refresh it where it is; an unschedulable one with a real change moves."""
        self.nominator.update(new)
        key = new.key
        entry = self._active_keys.get(key)
        if entry is not None:
            entry.qpi.pod_info = new
            return
        qpi = self._backoff_pods.get(key)
        if qpi is not None:
            qpi.pod_info = new
            return
        qpi = self.unschedulable.get(key)
        if qpi is not None:
            updated = pod_updated(old, new.pod)
            qpi.pod_info = new
            if not updated:
                return
            del self.unschedulable[key]
            if qpi.gated:
                if not self._gate(qpi):
                    self._push_active(qpi)
                return
            self._requeue(qpi)
            return
        in_flight = self.in_flight.get(key)
        if in_flight is not None:
            in_flight.pod_info = new
            return
        self.add(new)

    def delete(self, key: str, uid: str) -> None:
        """A pending pod was deleted (or got bound)."""
        self.nominator.delete(uid)
        self._remove(key)

    # The scheduling loop.

    async def pop(self) -> QueuedPodInfo:
        """The next pod to schedule (highest by QueueSort), waiting while activeQ is empty."""
        while True:
            while self._active:
                entry = heapq.heappop(self._active)
                if entry.removed:
                    continue
                qpi = entry.qpi
                del self._active_keys[qpi.key]
                qpi.attempts += 1
                if qpi.initial_attempt_timestamp is None:
                    qpi.initial_attempt_timestamp = self.clock()
                self.scheduling_cycle += 1
                self.in_flight[qpi.key] = qpi
                return qpi
            self._wakeup.clear()
            await self._wakeup.wait()

    def done(self, key: str) -> None:
        """The pod's scheduling attempt is over (bound, or back in the queue)."""
        self.in_flight.pop(key, None)

    def add_unschedulable_if_not_present(self, qpi: QueuedPodInfo, cycle: int) -> None:
        """A failed attempt: unschedulable, or backoffQ if a move request came meanwhile or nothing rejected it."""
        self.in_flight.pop(qpi.key, None)
        if self.contains(qpi.key):
            return
        qpi.timestamp = self.clock()
        if self.move_request_cycle >= cycle or not qpi.unschedulable_plugins:
            self._requeue(qpi)
        else:
            self.unschedulable[qpi.key] = qpi

    # Cluster events.

    def move_all(self, event: ClusterEvent, old: Obj | None = None, new: Obj | None = None,
                 pre_check: Callable[[PodInfo], bool] | None = None) -> int:
        """MoveAllToActiveOrBackoffQueue: requeue unschedulable pods the event may help; returns how many."""
        self.move_request_cycle = self.scheduling_cycle
        moved = [qpi for qpi in self.unschedulable.values()
                 if not qpi.gated and (pre_check is None or pre_check(qpi.pod_info))
                 and self._may_help(qpi, event, old, new)]
        for qpi in moved:
            del self.unschedulable[qpi.key]
            self._requeue(qpi)
        return len(moved)

    def _may_help(self, qpi: QueuedPodInfo, event: ClusterEvent, old: Obj | None, new: Obj | None) -> bool:
        """True when a plugin that rejected the pod registered the event and its hint (if any) says queue."""
        if not qpi.unschedulable_plugins:
            return True
        registrations = self.registrations.get(qpi.pod_info.scheduler_name, {})
        for plugin in qpi.unschedulable_plugins:
            registered_events = registrations.get(plugin)
            if registered_events is None:
                return True  # a plugin that registered nothing may be helped by anything
            for registered, hint in registered_events:
                if not registered.matches(event):
                    continue
                if hint is None:
                    return True
                try:
                    if hint(qpi.pod_info, old, new):
                        return True
                except Exception:
                    log.exception("queueing hint of %s failed; requeueing %s", plugin, qpi.key)
                    return True
        return False

    def flush(self) -> None:
        """Move pods whose backoff ended to activeQ, and pods unschedulable for too long back to the queue."""
        now = self.clock()
        while self._backoff and self._backoff[0][0] <= now:
            _, _, key = heapq.heappop(self._backoff)
            qpi = self._backoff_pods.get(key)
            if qpi is not None and qpi.backoff_expiry <= now:
                del self._backoff_pods[key]
                self._push_active(qpi)
        stale = [qpi for qpi in self.unschedulable.values()
                 if not qpi.gated and now - qpi.timestamp > self.max_unschedulable_duration]
        for qpi in stale:
            del self.unschedulable[qpi.key]
            self._requeue(qpi)
