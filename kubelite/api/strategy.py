"""Per-kind behaviour on top of the generic resource machinery.

A built-in kind is its upstream schema plus a Strategy: defaults, validation beyond the
schema, the spec/status split, the fields a field selector may use, and table columns.
A CustomResourceDefinition gets the plain Strategy (plus its declared printer columns).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

Obj = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Cause:
    """One field error, as a Status cause: reason is FieldValueRequired, FieldValueInvalid, ..."""

    field: str
    reason: str
    message: str

    def as_dict(self) -> dict[str, str]:
        """The StatusCause: its message without the field in front (upstream's ErrorBody; kubectl prints
        "field: message" itself)."""
        message = self.message.removeprefix(f"{self.field}: ") if self.field else self.message
        return {"reason": self.reason, "message": message, "field": self.field}


def required(path: str) -> Cause:
    return Cause(path, "FieldValueRequired", f"{path}: Required value")


def invalid(path: str, value: Any, detail: str) -> Cause:
    shown = value if isinstance(value, int | float) else f'"{value}"'
    return Cause(path, "FieldValueInvalid", f"{path}: Invalid value: {shown}: {detail}")


def unsupported(path: str, value: Any, allowed: list[str]) -> Cause:
    choices = ", ".join(f'"{a}"' for a in allowed)
    return Cause(path, "FieldValueNotSupported",
                 f'{path}: Unsupported value: "{value}": supported values: {choices}')


def forbidden(path: str, detail: str) -> Cause:
    return Cause(path, "FieldValueForbidden", f"{path}: Forbidden: {detail}")


def duplicate(path: str, value: Any) -> Cause:
    return Cause(path, "FieldValueDuplicate", f'{path}: Duplicate value: "{value}"')


@dataclass(frozen=True, slots=True)
class Column:
    """A Table column definition (meta.k8s.io/v1 TableColumnDefinition)."""

    name: str
    type: str = "string"
    format: str = ""
    description: str = ""
    priority: int = 0  # 0: always shown; 1: only with -o wide

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "format": self.format,
                "description": self.description, "priority": self.priority}


NAME_COLUMN = Column("Name", format="name", description="Name must be unique within a namespace.")
AGE_COLUMN = Column("Age", description="CreationTimestamp is a timestamp representing the server "
                    "time when this object was created.")


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def human_duration(seconds: float) -> str:
    """Kubernetes' short human duration (duration.HumanDuration): 5s, 3m2s, 4h, 2d3h, 3y."""
    s = int(seconds)
    if s < 0:
        return "<invalid>"
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if m < 180:
        return f"{m}m"
    h = s // 3600
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if h < 48:
        return f"{h}h"
    if h < 24 * 8:
        return f"{h // 24}d{h % 24}h" if h % 24 else f"{h // 24}d"
    if h < 24 * 365 * 2:
        return f"{h // 24}d"
    if h < 24 * 365 * 8:
        y = h // (24 * 365)
        d = (h // 24) % 365
        return f"{y}y{d}d" if d else f"{y}y"
    return f"{h // (24 * 365)}y"


def age(obj: Obj, now: datetime | None = None) -> str:
    created = parse_time(obj.get("metadata", {}).get("creationTimestamp"))
    if created is None:
        return "<unknown>"
    now = now or datetime.now(UTC)
    return human_duration((now - created).total_seconds())


def basic_row(obj: Obj) -> list[Any]:
    return [obj.get("metadata", {}).get("name", ""), age(obj)]


@dataclass
class Strategy:
    """The behaviour of one kind that the schema alone does not give.

    Hooks mutate the object in place (defaults) or return field causes (validation); the
    generic machinery calls them in this order: create -> prepare_create, defaults, validate, validate_create;
    update -> prepare_update, defaults, validate, validate_update.
    """

    has_status: bool = True
    """True when the kind has a status subresource: status is then written only through it."""
    status_on_create: bool = False
    """Keep the status a client sends at create (Nodes: the kubelet registers with its status)."""
    columns: list[Column] = field(default_factory=lambda: [NAME_COLUMN, AGE_COLUMN])
    row: Callable[[Obj], list[Any]] = basic_row
    """Cells for one object, in the order of `columns`."""
    selectable_fields: Callable[[Obj], dict[str, str]] | None = None
    """Extra field-selector fields beyond metadata.name and metadata.namespace."""
    defaults: Callable[[Obj], None] | None = None
    validate: Callable[[Obj], list[Cause]] | None = None
    validate_update: Callable[[Obj, Obj], list[Cause]] | None = None
    """Immutable fields and other transition rules, given (new, old)."""
    validate_create: Callable[[Obj], list[Cause]] | None = None
    """What only a create may not carry (a pod's ephemeral containers)."""
    prepare_create: Callable[[Obj], None] | None = None
    """Reset fields a client may not set at create (for example status of most kinds)."""
    prepare_update: Callable[[Obj, Obj], None] | None = None
    """Carry over fields a client may not change on update, given (new, old)."""

    def fields(self, obj: Obj) -> dict[str, str]:
        meta = obj.get("metadata", {})
        result = {"metadata.name": meta.get("name", ""), "metadata.namespace": meta.get("namespace", "")}
        if self.selectable_fields is not None:
            result.update(self.selectable_fields(obj))
        return result
