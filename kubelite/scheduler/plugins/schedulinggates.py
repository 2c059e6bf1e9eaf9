"""SchedulingGates: pods with spec.schedulingGates wait outside activeQ until the gates are removed."""

from __future__ import annotations

from typing import Any

from kubelite.scheduler.framework import (
    UNSCHEDULED_POD,
    ActionType,
    ClusterEvent,
    EventRegistration,
    PreEnqueuePlugin,
    Status,
    unresolvable,
)
from kubelite.scheduler.podinfo import PodInfo


def _gates(pod: dict[str, Any] | None) -> list[str]:
    return [g.get("name", "") for g in ((pod or {}).get("spec") or {}).get("schedulingGates") or []]


class SchedulingGates(PreEnqueuePlugin):
    """PreEnqueue: reject while any scheduling gate remains."""

    name = "SchedulingGates"

    def pre_enqueue(self, pod: PodInfo) -> Status | None:
        gates = _gates(pod.pod)
        if not gates:
            return None
        return unresolvable(f"waiting for scheduling gates: [{' '.join(gates)}]")

    def events_to_register(self) -> list[EventRegistration]:
        def gates_removed(pod: PodInfo, old: dict[str, Any] | None, new: dict[str, Any] | None) -> bool:
            return new is not None and new["metadata"].get("uid") == pod.uid and not _gates(new)
        return [(ClusterEvent(UNSCHEDULED_POD, ActionType.UPDATE_POD_SCHEDULING_GATES), gates_removed)]
