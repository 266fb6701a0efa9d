"""When to try again: the retry schedule with jitter, and ``Retry-After`` clamped to it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from email.utils import parsedate_to_datetime

JITTER = 0.2


def next_delay(
    schedule: Sequence[float],
    attempts_made: int,
    *,
    rng: Callable[[], float],
    retry_after: float | None = None,
) -> float | None:
    """Seconds until the next attempt after ``attempts_made`` failed ones, or None when the schedule
    is spent (``len(schedule) + 1`` attempts in all). The scheduled delay gets ±20% jitter; a
    ``Retry-After`` is honoured but clamped to [scheduled, 2 x scheduled]."""
    if attempts_made < 1 or attempts_made > len(schedule):
        return None
    delay = schedule[attempts_made - 1] * (1 + JITTER * (2 * rng() - 1))
    if retry_after is not None:
        delay = min(max(retry_after, delay), 2 * delay)
    return delay


def parse_retry_after(value: str | None, *, now: datetime) -> float | None:
    """``Retry-After`` as seconds from ``now``: delta-seconds or an HTTP date; None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        return None
    return max(0.0, (moment - now).total_seconds())
