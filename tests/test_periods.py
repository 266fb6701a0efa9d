"""Billing periods: ``relay.periods.add_interval`` (Python) and ``add_interval`` / ``iso_ms`` of
``relay/lua/lib/periods.lua`` (inside Redis, on each backend) agree on every day of 2023-2025, for
every interval and counts 1..13, and both are calendar-correct on the cases a month makes hard."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from relay import lua
from relay.models import iso_z, to_ms
from relay.periods import Interval, add_interval, next_period_end
from tests.helpers import Backend

ONE = "\nreturn add_interval(ARGV[1], ARGV[2], tonumber(ARGV[3]))"
# Every moment in ARGV[3..] plus each count 1..ARGV[2] of the interval ARGV[1], then its iso_ms:
# one round trip for a year of days instead of one for each.
MANY = """
local found = {}
for i = 3, #ARGV do
  for count = 1, tonumber(ARGV[2]) do
    found[#found + 1] = add_interval(ARGV[i], ARGV[1], count)
  end
  found[#found + 1] = iso_ms(ARGV[i])
end
return found
"""
COUNTS = 13


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def every_day(first_year: int, last_year: int) -> list[datetime]:
    """Each day from Jan 1 of ``first_year`` to Dec 31 of ``last_year``, at a time of day that
    moves through the whole day (midnight and 23:59:59 included)."""
    start, days = utc(first_year, 1, 1), []
    day = 0
    while (moment := start + timedelta(days=day)).year <= last_year:
        seconds = 0 if day % 5 == 0 else 86399 if day % 5 == 1 else (day * 7919) % 86400
        days.append(moment + timedelta(seconds=seconds))
        day += 1
    return days


async def lua_add(stores: Backend, start: str, interval: str, count: str | int) -> str:
    return str(await stores.redis.eval(lua.library("periods") + ONE, 0, start, interval, str(count)))  # type: ignore[misc]


def python_add(start: str, interval: Interval, count: int) -> str:
    return iso_z(add_interval(datetime.fromisoformat(start), interval, count))


@pytest.mark.parametrize("interval", list(Interval))
async def test_lua_and_python_agree_on_every_day_of_three_years(stores: Backend, interval: Interval) -> None:
    days = every_day(2023, 2025)
    assert len(days) == 365 + 366 + 365
    moments = [iso_z(day) for day in days]
    found = await stores.redis.eval(  # type: ignore[misc]
        lua.library("periods") + MANY, 0, interval.value, str(COUNTS), *moments
    )
    expected: list[str | int] = []
    for day in days:
        expected += [iso_z(add_interval(day, interval, count)) for count in range(1, COUNTS + 1)]
        expected.append(to_ms(day))
    mismatches = [
        (moments[index // (COUNTS + 1)], index % (COUNTS + 1) + 1, lua_value, python_value)
        for index, (lua_value, python_value) in enumerate(zip(found, expected, strict=True))
        if lua_value != python_value
    ]
    assert mismatches == []


# start, interval, count, end: the cases a calendar month makes hard, by hand
NAMED = [
    ("2023-01-31T10:00:00Z", Interval.MONTH, 1, "2023-02-28T10:00:00Z"),
    ("2024-01-31T10:00:00Z", Interval.MONTH, 1, "2024-02-29T10:00:00Z"),
    ("2024-01-30T00:00:00Z", Interval.MONTH, 1, "2024-02-29T00:00:00Z"),
    ("2024-01-29T00:00:00Z", Interval.MONTH, 1, "2024-02-29T00:00:00Z"),
    ("2024-01-31T23:59:59Z", Interval.MONTH, 2, "2024-03-31T23:59:59Z"),
    ("2024-03-31T08:30:00Z", Interval.MONTH, 1, "2024-04-30T08:30:00Z"),
    ("2024-05-31T08:30:00Z", Interval.MONTH, 4, "2024-09-30T08:30:00Z"),
    ("2024-02-29T12:00:00Z", Interval.YEAR, 1, "2025-02-28T12:00:00Z"),
    ("2024-02-29T12:00:00Z", Interval.YEAR, 4, "2028-02-29T12:00:00Z"),
    ("2024-02-29T12:00:00Z", Interval.MONTH, 12, "2025-02-28T12:00:00Z"),
    ("2023-12-31T23:59:59Z", Interval.MONTH, 1, "2024-01-31T23:59:59Z"),
    ("2023-12-31T00:00:00Z", Interval.MONTH, 2, "2024-02-29T00:00:00Z"),
    ("2024-12-31T00:00:00Z", Interval.MONTH, 2, "2025-02-28T00:00:00Z"),
    ("2023-12-15T06:00:00Z", Interval.MONTH, 13, "2025-01-15T06:00:00Z"),
    ("2023-11-30T06:00:00Z", Interval.MONTH, 3, "2024-02-29T06:00:00Z"),
    ("2023-12-31T23:59:59Z", Interval.DAY, 1, "2024-01-01T23:59:59Z"),
    ("2024-12-31T00:00:00Z", Interval.DAY, 1, "2025-01-01T00:00:00Z"),
    ("2024-02-28T00:00:00Z", Interval.DAY, 1, "2024-02-29T00:00:00Z"),
    ("2023-02-28T00:00:00Z", Interval.DAY, 1, "2023-03-01T00:00:00Z"),
    ("2023-12-28T18:00:00Z", Interval.WEEK, 1, "2024-01-04T18:00:00Z"),
    ("2024-02-26T18:00:00Z", Interval.WEEK, 1, "2024-03-04T18:00:00Z"),
    ("2099-12-31T00:00:00Z", Interval.YEAR, 1, "2100-12-31T00:00:00Z"),
    ("2100-01-31T00:00:00Z", Interval.MONTH, 1, "2100-02-28T00:00:00Z"),  # 2100 is no leap year
    ("2000-01-31T00:00:00Z", Interval.MONTH, 1, "2000-02-29T00:00:00Z"),  # 2000 is one
    ("2023-06-15T10:00:00Z", Interval.DAY, 365, "2024-06-14T10:00:00Z"),
    ("2023-06-15T10:00:00Z", Interval.WEEK, 52, "2024-06-13T10:00:00Z"),
]


@pytest.mark.parametrize(("start", "interval", "count", "end"), NAMED)
async def test_named_cases(stores: Backend, start: str, interval: Interval, count: int, end: str) -> None:
    assert python_add(start, interval, count) == end
    assert await lua_add(stores, start, interval.value, count) == end


async def test_a_count_decoded_as_a_float_gives_the_same_period(stores: Backend) -> None:
    """The ingest script reads the count from the order's JSON doc, where a Lua with integers
    and floats (the embedded store's) may decode it as 1.0: the period must not change."""
    assert await lua_add(stores, "2024-01-31T10:00:00Z", "month", "1.0") == "2024-02-29T10:00:00Z"
    assert await lua_add(stores, "2024-12-31T10:00:00Z", "week", "1.0") == "2025-01-07T10:00:00Z"
    assert await lua_add(stores, "2024-02-29T10:00:00Z", "year", "1.0") == "2025-02-28T10:00:00Z"


@pytest.mark.parametrize(
    "moment",
    [utc(1970, 1, 1), utc(2024, 2, 29, 23, 59, 59), utc(2038, 1, 19, 3, 14, 8), utc(2100, 3, 1, 0, 0, 1)],
)
async def test_iso_ms_is_unix_milliseconds(stores: Backend, moment: datetime) -> None:
    script = lua.library("periods") + "\nreturn iso_ms(ARGV[1])"
    assert await stores.redis.eval(script, 0, iso_z(moment)) == to_ms(moment)  # type: ignore[misc]


def test_python_keeps_the_time_of_day_and_the_timezone() -> None:
    start = utc(2024, 1, 31, 13, 45, 7)
    for interval in Interval:
        end = add_interval(start, interval, 1)
        assert (end.hour, end.minute, end.second, end.tzinfo) == (13, 45, 7, UTC)
    assert add_interval(start, Interval.MONTH) == utc(2024, 2, 29, 13, 45, 7)


def test_months_and_years_renew_on_the_day_the_subscription_began() -> None:
    """Each period starts where the last ended; its end comes back to the anchor's day where the
    month has it: no drift to the 28th after one February."""
    anchor = datetime(2027, 1, 31, 9, 0, tzinfo=UTC)
    ends, start = [], anchor
    for _ in range(4):
        start = next_period_end(start, Interval.MONTH, 1, anchor)
        ends.append(start.date().isoformat())
    assert ends == ["2027-02-28", "2027-03-31", "2027-04-30", "2027-05-31"]
    leap = datetime(2024, 2, 29, tzinfo=UTC)
    ends, start = [], leap
    for _ in range(4):
        start = next_period_end(start, Interval.YEAR, 1, leap)
        ends.append(start.date().isoformat())
    assert ends == ["2025-02-28", "2026-02-28", "2027-02-28", "2028-02-29"]
    week = datetime(2027, 1, 31, tzinfo=UTC)
    assert next_period_end(week, Interval.WEEK, 2, week) == week + timedelta(weeks=2)
