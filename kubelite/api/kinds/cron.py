"""Checks a CronJob schedule the way the standard cron parser upstream uses would reject it."""

from __future__ import annotations

import re

_FIELDS = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    (
        "month",
        1,
        12,
        {
            m: i + 1
            for i, m in enumerate(
                ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
            )
        },
    ),
    ("day of week", 0, 6, {d: i for i, d in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}),
)
_DESCRIPTORS = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
_DURATION = re.compile(r"^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$")


def _number(text: str, names: dict[str, int]) -> int:
    if text.lower() in names:
        return names[text.lower()]
    if not text.isdigit():
        raise ValueError(f'failed to parse int from {text}: strconv.Atoi: parsing "{text}": invalid syntax')
    return int(text)


def _check_range(expr: str, low: int, high: int, names: dict[str, int]) -> None:
    span, _, step = expr.partition("/")
    if span in ("*", "?"):
        start, end = low, high
    else:
        first, dash, last = span.partition("-")
        start = _number(first, names)
        end = _number(last, names) if dash else start
    if step:
        if not step.isdigit() or int(step) <= 0:
            raise ValueError(f"step of range should be a positive number: {expr}")
        if span not in ("*", "?") and "-" not in span:
            end = high
    if start < low:
        raise ValueError(f"beginning of range ({start}) below minimum ({low}): {expr}")
    if end > high:
        raise ValueError(f"end of range ({end}) above maximum ({high}): {expr}")
    if start > end:
        raise ValueError(f"beginning of range ({start}) beyond end of range ({end}): {expr}")


def schedule_error(schedule: str) -> str | None:
    """None for a valid five-field schedule or descriptor, else the parser's complaint."""
    text = schedule.strip()
    if text.startswith("@"):
        if text in _DESCRIPTORS:
            return None
        if text.startswith("@every ") and _DURATION.match(text.removeprefix("@every ").strip()):
            return None
        return f"unrecognized descriptor: {text}"
    words = text.split()
    if len(words) != 5:
        return f"expected exactly 5 fields, found {len(words)}: {text}"
    try:
        for word, (_, low, high, names) in zip(words, _FIELDS, strict=True):
            for expr in word.split(","):
                _check_range(expr, low, high, names)
    except ValueError as error:
        return str(error)
    return None
