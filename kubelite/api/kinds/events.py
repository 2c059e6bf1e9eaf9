"""Events of core/v1 and events.k8s.io/v1 (one storage, two shapes): field selectors and the table."""

from __future__ import annotations

from typing import Any

from kubelite.api.kinds.common import since
from kubelite.api.resource import ResourceType
from kubelite.api.strategy import NAME_COLUMN, Column, Obj, Strategy


def _core_view(event: Obj) -> Obj:
    """The core/v1 field names of an event of either API."""
    if "involvedObject" in event or "regarding" not in event and "note" not in event:
        return event
    return {
        "metadata": event.get("metadata") or {},
        "involvedObject": event.get("regarding") or {},
        "reason": event.get("reason", ""),
        "message": event.get("note", ""),
        "type": event.get("type", ""),
        "source": event.get("deprecatedSource") or {},
        "firstTimestamp": event.get("deprecatedFirstTimestamp"),
        "lastTimestamp": event.get("deprecatedLastTimestamp"),
        "count": event.get("deprecatedCount", 0),
        "eventTime": event.get("eventTime"),
        "series": event.get("series"),
        "reportingComponent": event.get("reportingController", ""),
        "reportingInstance": event.get("reportingInstance", ""),
    }


def event_fields(event: Obj) -> dict[str, str]:
    """involvedObject.*, reason, reportingComponent, source and type, as upstream selects events."""
    view = _core_view(event)
    involved = view.get("involvedObject") or {}
    fields = {
        f"involvedObject.{key}": str(involved.get(key, ""))
        for key in ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath")
    }
    fields.update(
        {
            "reason": view.get("reason", ""),
            "reportingComponent": view.get("reportingComponent", ""),
            "source": (view.get("source") or {}).get("component", ""),
            "type": view.get("type", ""),
        }
    )
    return fields


EVENT_COLUMNS = [
    Column(
        "Last Seen", description="The time at which the most recent occurrence of this event was recorded."
    ),
    Column(
        "Type", description="Type of this event (Normal, Warning), new types could be added in the future"
    ),
    Column(
        "Reason",
        description="This should be a short, machine understandable string that gives the reason "
        "for the transition into the object's current status.",
    ),
    Column("Object", description="The object that this event is about."),
    Column("Subobject", priority=1, description="The field of the object that this event is about."),
    Column("Source", priority=1, description="The component reporting this event."),
    Column("Message", description="A human-readable description of the status of this operation."),
    Column("First Seen", priority=1, description="The time at which the event was first recorded."),
    Column("Count", priority=1, description="The number of times this event has occurred."),
    Column("Name", priority=1, format="name", description=NAME_COLUMN.description),
]


def event_row(event: Obj) -> list[Any]:
    """LAST SEEN TYPE REASON OBJECT SUBOBJECT SOURCE MESSAGE FIRST SEEN COUNT NAME, as upstream printEvent."""
    view = _core_view(event)
    first = since(view.get("firstTimestamp") or view.get("eventTime"))
    last = since(view["lastTimestamp"]) if view.get("lastTimestamp") else first
    count = view.get("count") or 1
    series = view.get("series")
    if series:
        last, count = since(series.get("lastObservedTime")), series.get("count", 0)
    involved = view.get("involvedObject") or {}
    kind = involved.get("kind", "").lower()
    target = f"{kind}/{involved['name']}" if involved.get("name") else kind
    source = view.get("source") or {}
    component = source.get("component") or view.get("reportingComponent", "")
    host = source.get("host") or view.get("reportingInstance", "")
    return [
        last,
        view.get("type", ""),
        view.get("reason", ""),
        target,
        involved.get("fieldPath", ""),
        f"{component}, {host}" if host else component,
        (view.get("message") or "").strip(),
        first,
        count,
        (view.get("metadata") or {}).get("name", ""),
    ]


EVENT_STRATEGY = Strategy(
    has_status=False, columns=EVENT_COLUMNS, row=event_row, selectable_fields=event_fields
)

RESOURCES = [
    ResourceType(
        "events.k8s.io",
        "v1",
        "Event",
        "events",
        True,
        EVENT_STRATEGY,
        short_names=("ev",),
        schema="io.k8s.api.events.v1.Event",
        storage_group="",
    )
]
