"""NCRONTAB parsing and next occurrences, checked against a brute-force reference."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lightsout.host import CronSchedule, parse_ncrontab


def reference_next(s: CronSchedule, after: datetime) -> datetime:
    """Walk day by day, then through the sorted times of the first matching day."""
    day = after.replace(hour=0, minute=0, second=0, microsecond=0)
    for _ in range(366 * 400):
        dow = (day.weekday() + 1) % 7
        if day.month in s.months and day.day in s.days and dow in s.days_of_week:
            for h in s.hours:
                for m in s.minutes:
                    for sec in s.seconds:
                        t = day.replace(hour=h, minute=m, second=sec)
                        if t > after:
                            return t
        day += timedelta(days=1)
    raise AssertionError("no occurrence")


def field(low: int, high: int) -> st.SearchStrategy[str]:
    number = st.integers(low, high)
    single = number.map(str)
    ranged = st.tuples(number, number).map(lambda p: f"{min(p)}-{max(p)}")
    stepped = st.tuples(st.sampled_from(["*", f"{low}-{high}"]), st.integers(1, high - low + 1))
    items = st.one_of(st.just("*"), single, ranged, stepped.map(lambda p: f"{p[0]}/{p[1]}"))
    return st.lists(items, min_size=1, max_size=3).map(",".join)


expressions = st.tuples(
    field(0, 59), field(0, 59), field(0, 23), field(1, 28), field(1, 12), field(0, 6)
).map(" ".join)
instants = st.datetimes(datetime(2000, 1, 1), datetime(2090, 1, 1)).map(
    lambda d: d.replace(tzinfo=UTC)
)


@settings(max_examples=300, deadline=None)
@given(expressions, instants)
def test_next_after_matches_reference(expression: str, after: datetime) -> None:
    schedule = parse_ncrontab(expression)
    found = schedule.next_after(after)
    assert found > after
    assert found.tzinfo is UTC
    assert schedule.matches(found)
    assert found == reference_next(schedule, after.replace(microsecond=0))


@settings(max_examples=100, deadline=None)
@given(expressions, instants)
def test_occurrences_increase_and_none_is_skipped(expression: str, after: datetime) -> None:
    schedule = parse_ncrontab(expression)
    first = schedule.next_after(after)
    second = schedule.next_after(first)
    assert second > first
    assert schedule.next_after(second - timedelta(seconds=1)) == second


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("0 */5 * * * *", "2024-01-01T00:03:10", "2024-01-01T00:05:00"),
        ("*/15 * * * * *", "2024-01-01T00:00:59", "2024-01-01T00:01:00"),
        ("0 30 9 * * Mon-Fri", "2024-01-05T10:00:00", "2024-01-08T09:30:00"),
        ("0 0 0 29 Feb *", "2024-03-01T00:00:00", "2028-02-29T00:00:00"),
        ("0 0 12 1 * 1", "2024-01-01T13:00:00", "2024-04-01T12:00:00"),  # day AND weekday
        ("5,10 0 0 1 jan,JUL *", "2024-01-01T00:00:05", "2024-01-01T00:00:10"),
        ("0 0 0 13 2 5", "2015-02-14T00:00:00", "2026-02-13T00:00:00"),  # 11 years on
        ("0 0 0 29 2 1", "2016-03-01T00:00:00", "2044-02-29T00:00:00"),  # 28 years on
    ],
)
def test_examples(expression: str, after: str, expected: str) -> None:
    start = datetime.fromisoformat(after).replace(tzinfo=UTC)
    assert parse_ncrontab(expression).next_after(start).isoformat() == f"{expected}+00:00"


@pytest.mark.parametrize(
    "expression",
    [
        "* * * * *",
        "60 * * * * *",
        "* * 24 * * *",
        "* * * 0 * *",
        "* * * * 13 *",
        "* * * * * 7",
        "*/0 * * * * *",
        "5-1 * * * * *",
        "x * * * * *",
        "0 0 0 31 2 *",
        "0 0 0 30 feb *",
    ],
)
def test_bad_expressions(expression: str) -> None:
    with pytest.raises(ValueError, match="NCRONTAB"):
        parse_ncrontab(expression)
