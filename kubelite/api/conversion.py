"""Conversion between versions that share storage: autoscaling v1/v2 and core/events.k8s.io Events.

Objects are stored in the version they were written in and converted when read through another.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

from kubelite.api.strategy import Obj

# core/v1 Event field -> events.k8s.io/v1 Event field
EVENT_FIELDS = {
    "involvedObject": "regarding", "message": "note", "reportingComponent": "reportingController",
    "source": "deprecatedSource", "firstTimestamp": "deprecatedFirstTimestamp",
    "lastTimestamp": "deprecatedLastTimestamp", "count": "deprecatedCount",
}


def _rename(obj: Obj, names: dict[str, str], api_version: str) -> Obj:
    result = {names.get(key, key): value for key, value in obj.items()}
    result["apiVersion"] = api_version
    return result


def _core_event_to_events(obj: Obj) -> Obj:
    return _rename(obj, EVENT_FIELDS, "events.k8s.io/v1")


def _events_event_to_core(obj: Obj) -> Obj:
    return _rename(obj, {v: k for k, v in EVENT_FIELDS.items()}, "v1")


def _cpu_metric(target: int) -> Obj:
    return {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization",
                                                                        "averageUtilization": target}}}


def _hpa_v1_to_v2(obj: Obj) -> Obj:
    result = copy.deepcopy(obj)
    result["apiVersion"] = "autoscaling/v2"
    spec = result.get("spec") or {}
    target = spec.pop("targetCPUUtilizationPercentage", None)
    if target is not None:
        spec["metrics"] = [_cpu_metric(target)]
    status = result.get("status") or {}
    current = status.pop("currentCPUUtilizationPercentage", None)
    if current is not None:
        status["currentMetrics"] = [{"type": "Resource", "resource": {
            "name": "cpu", "current": {"averageUtilization": current}}}]
    return result


def _cpu_utilization(metrics: list[Obj], field: str) -> int | None:
    for metric in metrics or []:
        resource = metric.get("resource") or {}
        if metric.get("type") == "Resource" and resource.get("name") == "cpu":
            return (resource.get(field) or {}).get("averageUtilization")
    return None


def _hpa_v2_to_v1(obj: Obj) -> Obj:
    result = copy.deepcopy(obj)
    result["apiVersion"] = "autoscaling/v1"
    spec = result.get("spec") or {}
    target = _cpu_utilization(spec.pop("metrics", None) or [], "target")
    spec.pop("behavior", None)
    if target is not None:
        spec["targetCPUUtilizationPercentage"] = target
    status = result.get("status")
    if status:
        current = _cpu_utilization(status.pop("currentMetrics", None) or [], "current")
        status.pop("conditions", None)
        if current is not None:
            status["currentCPUUtilizationPercentage"] = current
    return result


CONVERTERS: dict[tuple[str, str, str], Callable[[Obj], Obj]] = {
    ("Event", "v1", "events.k8s.io/v1"): _core_event_to_events,
    ("Event", "events.k8s.io/v1", "v1"): _events_event_to_core,
    ("HorizontalPodAutoscaler", "autoscaling/v1", "autoscaling/v2"): _hpa_v1_to_v2,
    ("HorizontalPodAutoscaler", "autoscaling/v2", "autoscaling/v1"): _hpa_v2_to_v1,
}


def to_version(obj: Obj, api_version: str) -> Obj:
    """The object as `api_version` shows it (the same dict when it already is)."""
    current = obj.get("apiVersion")
    if current == api_version:
        return obj
    converter = CONVERTERS.get((obj.get("kind", ""), current or "", api_version))
    if converter is None:
        raise ValueError(f"no conversion of {obj.get('kind')} from {current} to {api_version}")
    return converter(obj)
