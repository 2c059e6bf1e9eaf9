"""PrioritySort: higher pod priority first, then the earlier queued."""

from __future__ import annotations

from kubelite.scheduler.framework import QueueSortPlugin
from kubelite.scheduler.podinfo import QueuedPodInfo


class PrioritySort(QueueSortPlugin):
    """QueueSort by spec.priority (descending), then by the time the pod entered the queue."""

    name = "PrioritySort"

    def less(self, a: QueuedPodInfo, b: QueuedPodInfo) -> bool:
        p1, p2 = a.pod_info.priority, b.pod_info.priority
        return p1 > p2 or (p1 == p2 and a.timestamp < b.timestamp)
