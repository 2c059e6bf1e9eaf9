"""The kubelet's /metrics/resource: the stats summary's CPU and memory as upstream's stable Prometheus metrics (what
metrics-server and Prometheus scrape, directly or through the API server's nodes/NAME/proxy)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

Obj = dict[str, Any]
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

FAMILIES = (
    ("container_cpu_usage_seconds_total", "counter", "Cumulative cpu time consumed by the container in core-seconds"),
    ("container_memory_working_set_bytes", "gauge", "Current working set of the container in bytes"),
    ("container_start_time_seconds", "gauge", "Start time of the container since unix epoch in seconds"),
    ("node_cpu_usage_seconds_total", "counter", "Cumulative cpu time consumed by the node in core-seconds"),
    ("node_memory_working_set_bytes", "gauge", "Current working set of the node in bytes"),
    ("pod_cpu_usage_seconds_total", "counter", "Cumulative cpu time consumed by the pod in core-seconds"),
    ("pod_memory_working_set_bytes", "gauge", "Current working set of the pod in bytes"),
    ("resource_scrape_error", "gauge", "1 if there was an error while getting container metrics, 0 otherwise"),
)


def _labels(**values: str) -> str:
    """A label set, values escaped for the text format."""
    escaped = (value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"') for value in values.values())
    return "{" + ",".join(f'{key}="{value}"' for key, value in zip(values, escaped, strict=True)) + "}"


def _cpu_seconds(stats: Obj) -> float | None:
    value = (stats.get("cpu") or {}).get("usageCoreNanoSeconds")
    return None if value is None else value / 1e9


def _working_set(stats: Obj) -> int | None:
    return (stats.get("memory") or {}).get("workingSetBytes")


def render(summary: Obj) -> str:
    """The text exposition of a stats summary."""
    samples: dict[str, list[str]] = {name: [] for name, _, _ in FAMILIES}

    def add(name: str, labels: str, value: float | int | None) -> None:
        if value is not None:
            samples[name].append(f"{name}{labels} {value}")

    node = summary.get("node") or {}
    add("node_cpu_usage_seconds_total", "", _cpu_seconds(node))
    add("node_memory_working_set_bytes", "", _working_set(node))
    for pod in summary.get("pods") or []:
        ref = pod.get("podRef") or {}
        pod_labels = {"namespace": ref.get("namespace", ""), "pod": ref.get("name", "")}
        add("pod_cpu_usage_seconds_total", _labels(**pod_labels), _cpu_seconds(pod))
        add("pod_memory_working_set_bytes", _labels(**pod_labels), _working_set(pod))
        for container in pod.get("containers") or []:
            labels = _labels(container=container.get("name", ""), **pod_labels)
            add("container_cpu_usage_seconds_total", labels, _cpu_seconds(container))
            add("container_memory_working_set_bytes", labels, _working_set(container))
            started = container.get("startTime")
            add("container_start_time_seconds", labels,
                datetime.fromisoformat(started).timestamp() if started else None)
    add("resource_scrape_error", "", 0)
    lines = []
    for name, kind, help_text in FAMILIES:
        lines += [f"# HELP {name} [STABLE] {help_text}", f"# TYPE {name} {kind}", *samples[name]]
    return "\n".join(lines) + "\n"
