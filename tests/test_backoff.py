"""workers/backoff.py: the retry schedule, its ±20% jitter, and Retry-After."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from workers.backoff import next_delay, parse_retry_after

SCHEDULE = (5.0, 300.0, 1800.0)
NOW = datetime(2026, 5, 6, 10, 0, tzinfo=UTC)


def low() -> float:
    return 0.0


def middle() -> float:
    return 0.5


def high() -> float:
    return 1.0


@pytest.mark.parametrize(
    ("attempts_made", "rng", "expected"),
    [
        (1, middle, 5.0),
        (1, low, 4.0),
        (1, high, 6.0),
        (2, middle, 300.0),
        (2, low, 240.0),
        (2, high, 360.0),
        (3, middle, 1800.0),
        (3, low, 1440.0),
        (3, high, 2160.0),
    ],
)
def test_next_delay_follows_schedule_with_jitter(
    attempts_made: int, rng: Callable[[], float], expected: float
) -> None:
    assert next_delay(SCHEDULE, attempts_made, rng=rng) == pytest.approx(expected)


@pytest.mark.parametrize("attempts_made", [len(SCHEDULE) + 1, len(SCHEDULE) + 5, 0, -1])
def test_next_delay_is_none_outside_the_schedule(attempts_made: int) -> None:
    assert next_delay(SCHEDULE, attempts_made, rng=middle) is None


def test_schedule_allows_len_plus_one_attempts_in_all() -> None:
    attempts = 1  # the first attempt is not scheduled by backoff
    while next_delay(SCHEDULE, attempts, rng=middle) is not None:
        attempts += 1
    assert attempts == len(SCHEDULE) + 1


def test_empty_schedule_means_one_attempt() -> None:
    assert next_delay((), 1, rng=middle) is None


@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [
        (0.0, 300.0),  # sooner than scheduled: the schedule wins
        (10.0, 300.0),
        (300.0, 300.0),
        (450.0, 450.0),  # inside the window: honoured
        (600.0, 600.0),
        (601.0, 600.0),  # later than 2x scheduled: clamped
        (86400.0, 600.0),
        (float("inf"), 600.0),
    ],
)
def test_retry_after_is_clamped_to_one_to_two_times_scheduled(retry_after: float, expected: float) -> None:
    assert next_delay(SCHEDULE, 2, rng=middle, retry_after=retry_after) == pytest.approx(expected)


def test_retry_after_does_not_revive_a_spent_schedule() -> None:
    assert next_delay(SCHEDULE, len(SCHEDULE) + 1, rng=middle, retry_after=10.0) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        (" 120 ", 120.0),
        ("0", 0.0),
        ("Wed, 06 May 2026 10:02:00 GMT", 120.0),
        ("Wed, 06 May 2026 10:00:00 GMT", 0.0),
        ("Wed, 06 May 2026 09:00:00 GMT", 0.0),  # in the past
        ("Tue, 05 May 2026 10:00:00 GMT", 0.0),
    ],
)
def test_parse_retry_after(value: str, expected: float) -> None:
    assert parse_retry_after(value, now=NOW) == pytest.approx(expected)


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "   ",
        "garbage",
        "-5",
        "1.5",
        "12 seconds",
        "Thu, 99 Foo 2026",
        "Wed, 06 May 2026 10:02:00 -0000",  # no usable zone
        "²",  # str.isdigit() is true for superscripts, float() refuses them
    ],
)
def test_parse_retry_after_rejects_garbage(value: str | None) -> None:
    assert parse_retry_after(value, now=NOW) is None
