"""NCRONTAB schedules as Azure Functions timers use them: "sec min hour day month dow"."""

from __future__ import annotations

import calendar
from bisect import bisect_left
from dataclasses import dataclass
from datetime import datetime, timedelta

# (name, lowest, highest, names for values) for each of the six fields
_FIELDS: tuple[tuple[str, int, int, tuple[str, ...]], ...] = (
    ("second", 0, 59, ()),
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day", 1, 31, ()),
    ("month", 1, 12, tuple(m.lower() for m in calendar.month_abbr[1:])),
    ("day of week", 0, 6, ("sun", "mon", "tue", "wed", "thu", "fri", "sat")),
)
# Dates and weekdays repeat every 400 years (the Gregorian cycle): searching further is futile.
_SEARCH_YEARS = 400


@dataclass(frozen=True)
class CronSchedule:
    """The sorted allowed values of each field. Day and day of week must both match."""

    expression: str
    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: tuple[int, ...]
    months: tuple[int, ...]
    days_of_week: tuple[int, ...]

    def matches(self, t: datetime) -> bool:
        return (
            t.second in self.seconds
            and t.minute in self.minutes
            and t.hour in self.hours
            and self._day_matches(t)
        )

    def next_after(self, t: datetime) -> datetime:
        """The first time strictly after `t` (whole seconds, same tzinfo) on the schedule."""
        t = t.replace(microsecond=0) + timedelta(seconds=1)
        limit = t.year + _SEARCH_YEARS
        while t.year <= limit:
            if t.month not in self.months:
                t = _next_month(t)
            elif self._day_matches(t) and (found := self._time_on_day(t)) is not None:
                return found
            else:
                t = _next_day(t)
        raise ValueError(f"schedule {self.expression!r} has no time after {t.isoformat()}")

    def _day_matches(self, t: datetime) -> bool:
        dow = (t.weekday() + 1) % 7  # cron counts from Sunday = 0
        return t.month in self.months and t.day in self.days and dow in self.days_of_week

    def _time_on_day(self, t: datetime) -> datetime | None:
        """The first scheduled time on t's day at or after t's time of day."""
        for hour in self.hours[bisect_left(self.hours, t.hour) :]:
            later_hour = hour > t.hour
            first_minute = 0 if later_hour else t.minute
            for minute in self.minutes[bisect_left(self.minutes, first_minute) :]:
                first_second = 0 if later_hour or minute > t.minute else t.second
                i = bisect_left(self.seconds, first_second)
                if i < len(self.seconds):
                    return t.replace(hour=hour, minute=minute, second=self.seconds[i])
        return None


def _next_day(t: datetime) -> datetime:
    return (t + timedelta(days=1)).replace(hour=0, minute=0, second=0)


def _next_month(t: datetime) -> datetime:
    return t.replace(
        year=t.year + t.month // 12, month=t.month % 12 + 1, day=1, hour=0, minute=0, second=0
    )


def parse(expression: str) -> CronSchedule:
    """Parse a six-field NCRONTAB expression; raise ValueError naming the bad field."""
    parts = expression.split()
    if len(parts) != len(_FIELDS):
        raise ValueError(
            f"NCRONTAB {expression!r} must have 6 fields "
            f"(second minute hour day month day-of-week), got {len(parts)}"
        )
    values = [
        _parse_field(part, *spec, expression) for part, spec in zip(parts, _FIELDS, strict=True)
    ]
    schedule = CronSchedule(expression, *values)
    if not any(d <= _max_days(m) for m in schedule.months for d in schedule.days):
        raise ValueError(f"NCRONTAB {expression!r} names no day that exists in its months")
    return schedule


def _max_days(month: int) -> int:
    return calendar.monthrange(2000, month)[1]  # 2000 is a leap year: 29 February exists


def _parse_field(
    text: str, name: str, low: int, high: int, names: tuple[str, ...], expression: str
) -> tuple[int, ...]:
    values: set[int] = set()
    for item in text.split(","):
        try:
            values.update(_parse_item(item, low, high, names))
        except ValueError as exc:
            raise ValueError(f"NCRONTAB {expression!r}: {name} field {text!r}: {exc}") from None
    return tuple(sorted(values))


def _parse_item(item: str, low: int, high: int, names: tuple[str, ...]) -> range:
    span, _, step_text = item.partition("/")
    step = _number(step_text, names=()) if step_text else 1
    if step < 1:
        raise ValueError("step must be at least 1")
    if span == "*":
        first, last = low, high
    elif "-" in span:
        first_text, last_text = span.split("-", 1)
        first, last = _number(first_text, names, low), _number(last_text, names, low)
    else:
        first = _number(span, names, low)
        last = high if step_text else first
    if not low <= first <= last <= high:
        raise ValueError(f"{item!r} is outside {low}-{high} or runs backwards")
    return range(first, last + 1, step)


def _number(text: str, names: tuple[str, ...], offset: int = 0) -> int:
    lowered = text.strip().lower()
    if lowered in names:
        return names.index(lowered) + offset
    if not lowered.isdigit():
        raise ValueError(f"{text!r} is not a number")
    return int(lowered)
