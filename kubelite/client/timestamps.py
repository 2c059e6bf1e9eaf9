"""Kubernetes timestamp formats: metav1.Time (seconds) and metav1.MicroTime (microseconds), always UTC."""

from __future__ import annotations

from datetime import UTC, datetime

TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def format_time(moment: datetime) -> str:
    """An aware datetime as metav1.Time, e.g. 2026-01-02T03:04:05Z."""
    return moment.astimezone(UTC).strftime(TIME_FORMAT)


def parse_time(value: str | None) -> datetime | None:
    """A metav1.Time (or MicroTime) string as an aware datetime; None when absent."""
    return datetime.fromisoformat(value) if value else None


def now_time() -> str:
    """The current metav1.Time."""
    return datetime.now(UTC).strftime(TIME_FORMAT)


def time_at(seconds: float) -> str:
    """The metav1.Time of a moment in seconds since the epoch."""
    return datetime.fromtimestamp(seconds, UTC).strftime(TIME_FORMAT)


def now_micro_time() -> str:
    """The current metav1.MicroTime, e.g. 2026-01-02T03:04:05.000000Z."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
