"""The kubelet's per-container back-off (client-go flowcontrol.Backoff as the kubelet uses it): 10 s doubling to
5 min between restarts of a crashing container or pulls of a failing image, forgotten after 10 min of quiet."""

from __future__ import annotations

import time
from dataclasses import dataclass

INITIAL = 10.0
MAXIMUM = 300.0


@dataclass(slots=True)
class _Entry:
    delay: float
    last_update: float


class Backoff:
    """Keys are e.g. pod uid + container name; times are time.time() seconds (container finish times are wall-clock)."""

    def __init__(self, initial: float = INITIAL, maximum: float = MAXIMUM):
        self.initial = initial
        self.maximum = maximum
        self._entries: dict[str, _Entry] = {}

    def _live(self, key: str, now: float) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is not None and now - entry.last_update > 2 * self.maximum:
            del self._entries[key]
            return None
        return entry

    def remaining(self, key: str, since: float, now: float | None = None) -> float:
        """Seconds still to wait after an event at `since` (a container's exit); 0 when it may go ahead."""
        now = time.time() if now is None else now
        entry = self._live(key, now)
        if entry is None:
            return 0.0
        return max(0.0, since + entry.delay - now)

    def remaining_since_update(self, key: str, now: float | None = None) -> float:
        """Seconds still to wait after the last next() of the key (image pulls back off from the failed attempt)."""
        now = time.time() if now is None else now
        entry = self._live(key, now)
        return 0.0 if entry is None else max(0.0, entry.last_update + entry.delay - now)

    def delay(self, key: str) -> float:
        """The current back-off of a key (0 if none), for messages such as 'back-off 20s restarting ...'."""
        entry = self._entries.get(key)
        return entry.delay if entry else 0.0

    def next(self, key: str, now: float | None = None) -> None:
        """Record a restart (or pull): the first sets the initial delay, each later one doubles it up to the cap."""
        now = time.time() if now is None else now
        entry = self._live(key, now)
        if entry is None:
            self._entries[key] = _Entry(self.initial, now)
        else:
            entry.delay = min(entry.delay * 2, self.maximum)
            entry.last_update = now

    def forget_prefix(self, prefix: str) -> None:
        """Drop every key of a pod (prefix = its uid) once the pod is gone."""
        for key in [k for k in self._entries if k.startswith(prefix)]:
            del self._entries[key]
