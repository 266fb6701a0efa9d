"""Billing periods: a plan's interval added to a moment, calendar-correct.

A month is a calendar month: the same day of the next month, or that month's last day when it is
shorter (Jan 31 + 1 month = Feb 28, or 29 in a leap year); a year is twelve months (Feb 29 + 1 year
= Feb 28). Days and weeks are exact multiples of 24 hours (times are UTC, which has no DST).

``relay/lua/periods.lua`` is the same arithmetic inside Redis: the ingest script starts a first
period at the moment it was paid, and going back to Python for it would cost the round trip the one
atomic step exists to avoid. ``tests/test_periods.py`` checks that both agree.
"""

from __future__ import annotations

import calendar
from datetime import datetime, timedelta
from enum import StrEnum


class Interval(StrEnum):
    DAY = "day"
    WEEK = "week"
    MONTH = "month"
    YEAR = "year"


def add_interval(start: datetime, interval: Interval, count: int = 1) -> datetime:
    """``start`` plus ``count`` intervals."""
    match interval:
        case Interval.DAY:
            return start + timedelta(days=count)
        case Interval.WEEK:
            return start + timedelta(weeks=count)
        case Interval.MONTH:
            return add_months(start, count)
        case Interval.YEAR:
            return add_months(start, 12 * count)


def next_period_end(start: datetime, interval: Interval, count: int, anchor: datetime | None) -> datetime:
    """The end of the period starting at ``start``: ``count`` intervals on, and for months and years
    on the day of the month the subscription began (``anchor``) wherever that month has it, so a
    subscription begun on Jan 31 renews on Feb 28, then Mar 31, not on the 28th for ever after."""
    end = add_interval(start, interval, count)
    if anchor is None or interval in (Interval.DAY, Interval.WEEK):
        return end
    return end.replace(day=min(anchor.day, calendar.monthrange(end.year, end.month)[1]))


def add_months(start: datetime, months: int) -> datetime:
    """The same day ``months`` later, clamped to the last day of a shorter month."""
    total = start.year * 12 + (start.month - 1) + months
    year, month = divmod(total, 12)
    day = min(start.day, calendar.monthrange(year, month + 1)[1])
    return start.replace(year=year, month=month + 1, day=day)
