"""CronJob schedules as upstream's standard cron parser reads them: five fields or a descriptor, @every N, an
optional TZ= prefix; the API validates with it and the CronJob controller computes activations with it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_MONTHS = {m: i + 1 for i, m in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split())}
_DAYS = {d: i for i, d in enumerate("sun mon tue wed thu fri sat".split())}
_FIELDS = ((0, 59, {}), (0, 23, {}), (1, 31, {}), (1, 12, _MONTHS), (0, 6, _DAYS))
_DESCRIPTORS = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
                "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *"}
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True)
class Schedule:
    """A parsed cron schedule: allowed minutes, hours, days, months and weekdays in a zone, or a fixed interval."""

    minutes: frozenset[int] = frozenset()
    hours: frozenset[int] = frozenset()
    days: frozenset[int] = frozenset()
    months: frozenset[int] = frozenset()
    weekdays: frozenset[int] = frozenset()
    any_day: bool = False
    """Day of month or day of week was '*' (then both must match; otherwise either may)."""
    zone: tzinfo = UTC
    every: float = 0.0

    def next(self, after: datetime) -> datetime | None:
        """The first activation strictly after `after` (None if there is none within five years)."""
        if self.every:
            return after.replace(microsecond=0) + timedelta(seconds=self.every)
        wall = (after.astimezone(self.zone).replace(second=0, microsecond=0, tzinfo=None) + timedelta(minutes=1))
        limit = wall.year + 5
        while wall.year <= limit:
            if wall.month not in self.months:
                wall = (wall.replace(day=1, hour=0, minute=0) + timedelta(days=32)).replace(day=1)
            elif not self.day_matches(wall):
                wall = wall.replace(hour=0, minute=0) + timedelta(days=1)
            elif wall.hour not in self.hours:
                wall = wall.replace(minute=0) + timedelta(hours=1)
            elif wall.minute not in self.minutes:
                wall += timedelta(minutes=1)
            else:
                return wall.replace(tzinfo=self.zone).astimezone(UTC)
        return None

    def day_matches(self, wall: datetime) -> bool:
        """Day of month and day of week: both when either is '*', else either."""
        in_month, in_week = wall.day in self.days, wall.isoweekday() % 7 in self.weekdays
        return in_month and in_week if self.any_day else in_month or in_week


def _number(text: str, names: dict[str, int]) -> int:
    if text.lower() in names:
        return names[text.lower()]
    if not text.isdigit():
        raise ValueError(f'failed to parse int from {text}: strconv.Atoi: parsing "{text}": invalid syntax')
    return int(text)


def _field(text: str, low: int, high: int, names: dict[str, int]) -> tuple[frozenset[int], bool]:
    """One field's values, and whether it was a plain '*' or '?'."""
    values: set[int] = set()
    star = False
    for part in text.split(","):
        span, _, step_text = part.partition("/")
        step = _number(step_text, {}) if step_text else 1
        if step_text and step <= 0:
            raise ValueError(f"step of range should be a positive number: {part}")
        if span in ("*", "?"):
            start, end = low, high
            star = star or step == 1
        else:
            first, dash, last = span.partition("-")
            start = _number(first, names)
            end = _number(last, names) if dash else (high if step_text else start)
        if start < low:
            raise ValueError(f"beginning of range ({start}) below minimum ({low}): {part}")
        if end > high:
            raise ValueError(f"end of range ({end}) above maximum ({high}): {part}")
        if start > end:
            raise ValueError(f"beginning of range ({start}) beyond end of range ({end}): {part}")
        values.update(range(start, end + 1, step))
    return frozenset(values), star


def parse_schedule(text: str, zone: tzinfo) -> Schedule:
    """cron.ParseStandard: five fields or a descriptor (@daily, @every 1h30m), an optional TZ=/CRON_TZ= prefix."""
    text = text.strip()
    if text.startswith(("TZ=", "CRON_TZ=")):
        prefix, _, text = text.partition(" ")
        zone = ZoneInfo(prefix.partition("=")[2])
        text = text.strip()
    if text.startswith("@every "):
        duration = text.removeprefix("@every ").strip()
        if not duration or _DURATION.sub("", duration):
            raise ValueError(f"failed to parse duration {text}: invalid duration {duration}")
        seconds = sum(float(n) * _UNITS[u] for n, u in _DURATION.findall(duration))
        return Schedule(zone=zone, every=max(float(int(seconds)), 1.0))
    text = _DESCRIPTORS.get(text, text)
    if text.startswith("@"):
        raise ValueError(f"unrecognized descriptor: {text}")
    words = text.split()
    if len(words) != 5:
        raise ValueError(f"expected exactly 5 fields, found {len(words)}: {text}")
    (minutes, _), (hours, _), (days, any_dom), (months, _), (weekdays, any_dow) = (
        _field(word, *spec) for word, spec in zip(words, _FIELDS, strict=True))
    return Schedule(minutes, hours, days, months, weekdays, any_dom or any_dow, zone)


def schedule_error(schedule: str) -> str | None:
    """None for a schedule the parser accepts, else its complaint (what the API answers with a 422)."""
    try:
        parse_schedule(schedule, UTC)
    except (ValueError, ZoneInfoNotFoundError) as error:
        return str(error)
    return None
