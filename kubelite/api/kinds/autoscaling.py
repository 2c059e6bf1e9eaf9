"""autoscaling/v1 and autoscaling/v2 HorizontalPodAutoscalers (one storage, two shapes)."""

from __future__ import annotations

from typing import Any

from kubelite.api.kinds.common import columns, dig, since
from kubelite.api.names import invalid_value, path_segment_name
from kubelite.api.resource import ResourceType
from kubelite.api.strategy import AGE_COLUMN, Cause, Column, Obj, Strategy, required

DEFAULT_CPU_UTILIZATION = 80


def hpa_v1_defaults(hpa: Obj) -> None:
    """SetDefaults_HorizontalPodAutoscaler (v1): minReplicas 1."""
    hpa.setdefault("spec", {}).setdefault("minReplicas", 1)


def hpa_v2_defaults(hpa: Obj) -> None:
    """minReplicas 1; no metrics means 80% average CPU utilization."""
    spec = hpa.setdefault("spec", {})
    spec.setdefault("minReplicas", 1)
    if not spec.get("metrics"):
        spec["metrics"] = [
            {
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": DEFAULT_CPU_UTILIZATION},
                },
            }
        ]


def hpa_validate(hpa: Obj) -> list[Cause]:
    """ValidateHorizontalPodAutoscalerSpec: replica bounds and the scale target reference."""
    spec = hpa.get("spec") or {}
    causes: list[Cause] = []
    low, high = spec.get("minReplicas"), spec.get("maxReplicas", 0)
    if isinstance(low, int) and low < 1:
        causes.append(invalid_value("spec.minReplicas", low, "must be greater than or equal to 1"))
    if high < 1:
        causes.append(invalid_value("spec.maxReplicas", high, "must be greater than 0"))
    if isinstance(low, int) and high < low:
        causes.append(
            invalid_value("spec.maxReplicas", high, "must be greater than or equal to `minReplicas`")
        )
    ref = spec.get("scaleTargetRef") or {}
    for key in ("kind", "name"):
        if not ref.get(key):
            causes.append(required(f"spec.scaleTargetRef.{key}"))
        else:
            causes += [
                invalid_value(f"spec.scaleTargetRef.{key}", ref[key], m) for m in path_segment_name(ref[key])
            ]
    target = spec.get("targetCPUUtilizationPercentage")
    if isinstance(target, int) and target < 1:
        causes.append(
            invalid_value("spec.targetCPUUtilizationPercentage", target, "must be greater than or equal to 1")
        )
    return causes


def _v2_view(hpa: Obj) -> tuple[list[Obj], list[Obj]]:
    """Metric specs and statuses in the v2 shape, also for an autoscaling/v1 object."""
    spec, status = hpa.get("spec") or {}, hpa.get("status") or {}
    if "metrics" in spec or "targetCPUUtilizationPercentage" not in spec:
        return spec.get("metrics") or [], status.get("currentMetrics") or []
    metrics = [
        {
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "target": {
                    "type": "Utilization",
                    "averageUtilization": spec["targetCPUUtilizationPercentage"],
                },
            },
        }
    ]
    current = status.get("currentCPUUtilizationPercentage")
    statuses = (
        []
        if current is None
        else [{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": current}}}]
    )
    return metrics, statuses


def _format_metric(spec: Obj, status: Obj | None) -> str:
    kind = spec.get("type", "")
    source_key = {
        "External": "external",
        "Pods": "pods",
        "Object": "object",
        "Resource": "resource",
        "ContainerResource": "containerResource",
    }.get(kind)
    if source_key is None:
        return "<unknown type>"
    source = spec.get(source_key) or {}
    target = source.get("target") or {}
    current = dig(status, source_key, "current", default=None) if status else None
    prefix = f"{source.get('name', '')}: " if kind in ("Resource", "ContainerResource") else ""
    if kind == "Pods" or target.get("averageValue") is not None:
        now = (current or {}).get("averageValue") or "<unknown>"
        suffix = " (avg)" if kind in ("External", "Object") else ""
        return f"{prefix}{now}/{target.get('averageValue')}{suffix}"
    if kind in ("External", "Object"):
        now = (current or {}).get("value") or "<unknown>"
        return f"{now}/{target.get('value')}"
    utilization = (current or {}).get("averageUtilization")
    now = f"{utilization}%" if utilization is not None else "<unknown>"
    goal = f"{target['averageUtilization']}%" if target.get("averageUtilization") is not None else "<auto>"
    return f"{prefix}{now}/{goal}"


def format_targets(hpa: Obj) -> str:
    """TARGETS: 'cpu: 50%/80%', at most two metrics and then '+ N more...'."""
    specs, statuses = _v2_view(hpa)
    if not specs:
        return "<none>"
    shown = [_format_metric(spec, statuses[i] if i < len(statuses) else None) for i, spec in enumerate(specs)]
    if len(shown) > 2:
        return f"{', '.join(shown[:2])} + {len(shown) - 2} more..."
    return ", ".join(shown)


def hpa_row(hpa: Obj) -> list[Any]:
    """NAME REFERENCE TARGETS MINPODS MAXPODS REPLICAS AGE, as upstream printHorizontalPodAutoscaler."""
    spec, meta = hpa.get("spec") or {}, hpa.get("metadata") or {}
    ref = spec.get("scaleTargetRef") or {}
    low = spec.get("minReplicas")
    return [
        meta.get("name", ""),
        f"{ref.get('kind', '')}/{ref.get('name', '')}",
        format_targets(hpa),
        str(low) if low is not None else "<unset>",
        spec.get("maxReplicas", 0),
        dig(hpa, "status", "currentReplicas", default=0),
        since(meta.get("creationTimestamp")),
    ]


HPA_COLUMNS = columns(
    Column("Reference", description="scaleTargetRef points to the target resource to scale."),
    Column(
        "Targets",
        description="metrics contains the specifications for which to use to calculate the desired replica "
        "count.",
    ),
    Column("MinPods", description="minReplicas is the lower limit for the number of replicas."),
    Column("MaxPods", description="maxReplicas is the upper limit for the number of replicas."),
    Column(
        "Replicas",
        description="currentReplicas is current number of replicas of pods managed by this autoscaler.",
    ),
    AGE_COLUMN,
)


def _hpa(version: str, defaults: Any) -> ResourceType:
    return ResourceType(
        "autoscaling",
        version,
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
        True,
        Strategy(columns=HPA_COLUMNS, row=hpa_row, defaults=defaults, validate=hpa_validate),
        short_names=("hpa",),
        categories=("all",),
        subresources=("status",),
        schema=f"io.k8s.api.autoscaling.{version}.HorizontalPodAutoscaler",
        storage_group="autoscaling",
    )


RESOURCES = [_hpa("v2", hpa_v2_defaults), _hpa("v1", hpa_v1_defaults)]
