"""Helpers the kinds share: nested access, label selectors, table cells, common field checks."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from kubelite.api.names import (
    go_repr,
    invalid_shown,
    invalid_value,
    is_label_value,
    is_qualified_name,
    required_because,
    validate_labels,
)
from kubelite.api.strategy import NAME_COLUMN, Cause, Column, Obj, human_duration, parse_time

IMMUTABLE = "field is immutable"
NON_NEGATIVE = "must be greater than or equal to 0"


def dig(obj: Any, *keys: str | int, default: Any = None) -> Any:
    """obj[k1][k2]... or default when any step is missing or null."""
    for key in keys:
        if isinstance(obj, dict):
            obj = obj.get(key)  # type: ignore[arg-type]
        elif isinstance(obj, list) and isinstance(key, int) and -len(obj) <= key < len(obj):
            obj = obj[key]
        else:
            return default
        if obj is None:
            return default
    return obj


def child(obj: Obj, key: str) -> Obj:
    """obj[key] as a dict, created when missing (for defaulting nested structs)."""
    value = obj.get(key)
    if not isinstance(value, dict):
        value = obj[key] = {}
    return value


def since(timestamp: str | None) -> str:
    """Upstream translateTimestampSince: '<unknown>' for a missing time, else a short duration."""
    when = parse_time(timestamp)
    if when is None:
        return "<unknown>"
    return human_duration((datetime.now(UTC) - when).total_seconds())


def seconds_between(start: str | None, end: str | None) -> float:
    """Seconds from one timestamp to another (0 when either is missing)."""
    first, last = parse_time(start), parse_time(end)
    return (last - first).total_seconds() if first and last else 0.0


def go_selector_repr(selector: Any) -> str:
    """A LabelSelector as Go's %#v prints it in field errors."""
    if not isinstance(selector, dict):
        return "null"
    labels = selector.get("matchLabels")
    shown = go_repr(labels) if labels else "map[string]string(nil)"
    exprs = selector.get("matchExpressions")
    if exprs:
        parts = [
            f"v1.LabelSelectorRequirement{{Key:{json.dumps(e.get('key', ''))}, "
            f"Operator:{json.dumps(e.get('operator', ''))}, Values:{go_repr(e.get('values') or [])}}}"
            for e in exprs
        ]
        shown_exprs = "[]v1.LabelSelectorRequirement{" + ", ".join(parts) + "}"
    else:
        shown_exprs = "[]v1.LabelSelectorRequirement(nil)"
    return f"v1.LabelSelector{{MatchLabels:{shown}, MatchExpressions:{shown_exprs}}}"


def _requirements(selector: Obj) -> list[tuple[str, str, list[str]]]:
    reqs = [(k, "=", [str(v)]) for k, v in (selector.get("matchLabels") or {}).items()]
    reqs += [
        (e.get("key", ""), e.get("operator", ""), sorted(e.get("values") or []))
        for e in selector.get("matchExpressions") or []
    ]
    return sorted(reqs, key=lambda r: r[0])


def selector_matches(selector: Any, labels: Any) -> bool:
    """Whether a LabelSelector selects these labels (a null selector selects nothing)."""
    if not isinstance(selector, dict):
        return False
    labels = labels or {}
    for key, op, values in _requirements(selector):
        present = key in labels
        if op == "=" and labels.get(key) != values[0]:
            return False
        if (
            op == "In"
            and (not present or labels[key] not in values)
            or op == "NotIn"
            and present
            and labels[key] in values
            or op == "Exists"
            and not present
            or op == "DoesNotExist"
            and present
        ):
            return False
    return True


def format_selector(selector: Any) -> str:
    """LabelSelectorAsSelector(...).String(): 'app=web,tier in (a,b)'; '' when empty or null."""
    if not isinstance(selector, dict):
        return ""
    words = {
        "=": "{k}={v}",
        "In": "{k} in ({vs})",
        "NotIn": "{k} notin ({vs})",
        "Exists": "{k}",
        "DoesNotExist": "!{k}",
    }
    return ",".join(
        words.get(op, "{k}").format(k=k, v=vs[0] if vs else "", vs=",".join(vs))
        for k, op, vs in _requirements(selector)
    )


def format_label_selector(selector: Any) -> str:
    """metav1.FormatLabelSelector: like format_selector, '<none>' when it selects by nothing."""
    return format_selector(selector) or "<none>"


def format_labels(labels: Any) -> str:
    """labels.FormatLabels: sorted 'k=v' pairs, '<none>' when there are none."""
    return ",".join(f"{k}={labels[k]}" for k in sorted(labels)) if labels else "<none>"


def container_cells(containers: Any) -> tuple[str, str]:
    """Comma-separated container names and images, as the wide CONTAINERS and IMAGES columns."""
    containers = containers or []
    return (",".join(c.get("name", "") for c in containers), ",".join(c.get("image", "") for c in containers))


def columns(*extra: Column) -> list[Column]:
    """Name first, then the kind's own columns."""
    return [NAME_COLUMN, *extra]


CREATED_AT_COLUMNS = columns(
    Column(
        "Created At",
        type="date",
        description="CreationTimestamp is a timestamp representing the server time when this object was "
        "created.",
    )
)


def created_at_row(obj: Obj) -> list[Any]:
    """The default table of upstream (DefaultTableConvertor): NAME and CREATED AT."""
    meta = obj.get("metadata", {})
    when = parse_time(meta.get("creationTimestamp"))
    return [meta.get("name", ""), when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if when else ""]


def immutable(new: Any, old: Any, path: str, shown: str | None = None) -> list[Cause]:
    """ValidateImmutableField: 'field is immutable' when the value changed."""
    if new == old:
        return []
    return [
        invalid_shown(path, shown, IMMUTABLE) if shown is not None else invalid_value(path, new, IMMUTABLE)
    ]


def non_negative(value: Any, path: str) -> list[Cause]:
    """ValidateNonnegativeField: 'must be greater than or equal to 0'."""
    if isinstance(value, int) and not isinstance(value, bool) and value < 0:
        return [invalid_value(path, value, NON_NEGATIVE)]
    return []


def validate_label_selector(selector: Obj, path: str) -> list[Cause]:
    """metav1 ValidateLabelSelector: valid keys and values, operators with the right values."""
    causes = validate_labels(selector.get("matchLabels"), f"{path}.matchLabels")
    for i, expr in enumerate(selector.get("matchExpressions") or []):
        at = f"{path}.matchExpressions[{i}]"
        op, values = expr.get("operator", ""), expr.get("values") or []
        if op in ("In", "NotIn") and not values:
            causes.append(
                required_because(f"{at}.values", "must be specified when `operator` is 'In' or 'NotIn'")
            )
        elif op in ("Exists", "DoesNotExist") and values:
            causes.append(
                Cause(
                    f"{at}.values",
                    "FieldValueForbidden",
                    f"{at}.values: Forbidden: may not be specified when `operator` is 'Exists' or "
                    "'DoesNotExist'",
                )
            )
        elif op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            causes.append(invalid_value(f"{at}.operator", op, "not a valid selector operator"))
        causes += [
            invalid_value(f"{at}.key", expr.get("key", ""), m) for m in is_qualified_name(expr.get("key", ""))
        ]
        causes += [
            invalid_value(f"{at}.values[{j}]", v, m) for j, v in enumerate(values) for m in is_label_value(v)
        ]
    return causes


def validate_int_or_percent(value: Any, path: str, at_most_100: bool = False) -> list[Cause]:
    """ValidatePositiveIntOrPercent (and IsNotMoreThan100Percent): '25%' or a non-negative integer."""
    if isinstance(value, str):
        if not re.fullmatch("[0-9]+%", value):
            return [
                invalid_value(
                    path,
                    value,
                    "a valid percent string must be a numeric string followed by an "
                    "ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')",
                )
            ]
        if at_most_100 and int(value[:-1]) > 100:
            return [invalid_shown(path, value, "must not be greater than 100%")]
        return []
    return non_negative(value, path)
