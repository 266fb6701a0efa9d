"""A project's deliveries over the last day, as pictures drawn on the server (inline SVG: no
script, no CDN, and the pages' Content-Security-Policy stays strict).

``delivery_stats`` reads the last LAST_ATTEMPTS attempts of the project's most recent events (at
most MAX_EVENTS, from ``{p}:project:{id}:events``, one pipelined round trip) and counts them per
hour of when each attempt was made: attempts, delivered ones, retries (a failure with another
attempt scheduled) and dead letters (a failure with none), and the p50 / p99 of their latency.
What it read is kept CACHE_FOR per project and process, so pages that reload themselves, and many
people looking, cost one read a minute. ``Charts`` turns those into the polylines and bars the
template draws; the geometry is here, the template only prints it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from statistics import quantiles

from redis.asyncio import Redis

from relay.events import EventStore
from relay.models import to_ms

HOURS = 24
MAX_EVENTS = 500  # the newest events read for the pictures
LAST_ATTEMPTS = 5  # of each: a bounded cost per read, whatever the merchant's endpoint answers
CACHE_FOR = timedelta(seconds=60)
WIDTH, HEIGHT, PAD = 720, 160, 8  # the pictures' own units (SVG viewBox)
TICKS = 24  # the bottom band, for the hours' labels


@dataclass(frozen=True)
class Hour:
    start: datetime
    attempts: int
    delivered: int
    retries: int
    dead: int
    p50_ms: float | None
    p99_ms: float | None

    @property
    def success(self) -> float | None:
        return self.delivered / self.attempts if self.attempts else None


@dataclass(frozen=True)
class Seen:
    """What the pictures need of one attempt (the rest of it is not parsed)."""

    at: datetime
    failed: bool
    retried: bool
    duration_ms: int


_cache: dict[tuple[int, str], tuple[datetime, list[Hour]]] = {}


async def delivery_stats(
    redis: Redis, events: EventStore, project_id: str, *, now: datetime, hours: int = HOURS
) -> list[Hour]:
    key = (id(redis), project_id)
    cached = _cache.get(key)
    if cached is not None and now - cached[0] < CACHE_FOR:
        return cached[1]
    start = (now - timedelta(hours=hours - 1)).replace(minute=0, second=0, microsecond=0)
    ids = await redis.zrevrangebyscore(
        events.keys.project_events(project_id),
        "+inf",
        to_ms(start - timedelta(days=1)),
        start=0,
        num=MAX_EVENTS,
    )
    async with redis.pipeline(transaction=False) as pipe:
        for event_id in ids:
            pipe.lrange(events.keys.attempts(event_id), -LAST_ATTEMPTS, -1)
        logs: list[list[str]] = await pipe.execute()
    buckets: list[list[Seen]] = [[] for _ in range(hours)]
    for raws in logs:
        for raw in raws:
            seen = _seen(raw)
            index = int((seen.at - start).total_seconds() // 3600) if seen else -1
            if seen is not None and 0 <= index < hours:
                buckets[index].append(seen)
    found = [_hour(start + timedelta(hours=index), bucket) for index, bucket in enumerate(buckets)]
    if len(_cache) > 10_000:  # bounded: a process serving pages of very many projects starts over
        _cache.clear()
    _cache[key] = (now, found)
    return found


def _seen(raw: str) -> Seen | None:
    try:
        attempt = json.loads(raw)
        return Seen(
            at=datetime.fromisoformat(attempt["at"].replace("Z", "+00:00")),
            failed=attempt.get("error") is not None,
            retried=attempt.get("next_attempt_at") is not None,
            duration_ms=int(attempt.get("duration_ms") or 0),
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def _hour(start: datetime, attempts: list[Seen]) -> Hour:
    failed = [attempt for attempt in attempts if attempt.failed]
    latencies = sorted(attempt.duration_ms for attempt in attempts)
    p50 = p99 = None
    if len(latencies) == 1:
        p50 = p99 = float(latencies[0])
    elif latencies:
        cuts = quantiles(latencies, n=100, method="inclusive")
        p50, p99 = cuts[49], cuts[98]
    return Hour(
        start=start,
        attempts=len(attempts),
        delivered=len(attempts) - len(failed),
        retries=sum(1 for attempt in failed if attempt.retried),
        dead=sum(1 for attempt in failed if not attempt.retried),
        p50_ms=p50,
        p99_ms=p99,
    )


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    title: str


@dataclass(frozen=True)
class Charts:
    """What the template draws: each hour's x, and the shapes of the three pictures."""

    hours: list[Hour]
    success_line: str  # polyline points, 0-100% bottom to top
    p50_line: str
    p99_line: str
    latency_top_ms: float  # what the top of the latency picture stands for
    retry_bars: list[Bar]
    dead_bars: list[Bar]
    volume_top: int
    labels: list[tuple[float, str]]  # x and "HH:00" every 6 hours
    width: int = WIDTH
    height: int = HEIGHT

    @property
    def empty(self) -> bool:
        return not any(hour.attempts for hour in self.hours)


def charts(hours: list[Hour]) -> Charts:
    step = (WIDTH - 2 * PAD) / max(1, len(hours))
    xs = [PAD + step * (index + 0.5) for index in range(len(hours))]

    bottom = HEIGHT - PAD - TICKS

    def y(value: float, top: float) -> float:
        return round(bottom - (bottom - PAD) * (value / top if top else 0), 1)

    def line(values: list[float | None], top: float) -> str:
        return " ".join(
            f"{round(x, 1)},{y(value, top)}" for x, value in zip(xs, values, strict=True) if value is not None
        )

    latency_top = max((hour.p99_ms or 0 for hour in hours), default=0) or 1.0
    volume_top = max((hour.retries + hour.dead for hour in hours), default=0) or 1
    retry_bars, dead_bars = [], []
    for x, hour in zip(xs, hours, strict=True):
        retry_top, dead_top = y(hour.retries, volume_top), y(hour.retries + hour.dead, volume_top)
        label = hour.start.strftime("%H:00")
        retry_bars.append(
            Bar(
                x - step * 0.35,
                retry_top,
                step * 0.7,
                bottom - retry_top,
                f"{label}: {hour.retries} retries",
            )
        )
        dead_bars.append(
            Bar(
                x - step * 0.35,
                dead_top,
                step * 0.7,
                retry_top - dead_top,
                f"{label}: {hour.dead} dead-lettered",
            )
        )
    return Charts(
        hours=hours,
        success_line=line([None if hour.success is None else hour.success * 100 for hour in hours], 100),
        p50_line=line([hour.p50_ms for hour in hours], latency_top),
        p99_line=line([hour.p99_ms for hour in hours], latency_top),
        latency_top_ms=latency_top,
        retry_bars=retry_bars,
        dead_bars=dead_bars,
        volume_top=volume_top,
        labels=[(round(x, 1), hour.start.strftime("%H:00")) for x, hour in zip(xs, hours, strict=True)][::6],
    )
