"""Walking a time-ordered sorted set (score: Unix ms) in pages, without ``OFFSET`` costs growing
with the position: each page starts at the last score seen, skipping the members already returned
at that score (members sharing a score come back in the same order, by member)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime

from redis.asyncio import Redis

from relay.models import to_ms

PAGE = 500


async def scored_members(
    redis: Redis, key: str, *, since: datetime | None, until: datetime | None, page: int = PAGE
) -> AsyncIterator[tuple[str, int]]:
    """(member, score) with score in [since, until], oldest first."""
    low: int | str = to_ms(since) if since else "-inf"
    high: int | str = to_ms(until) if until else "+inf"
    skip = 0
    while True:
        rows = await redis.zrangebyscore(key, low, high, start=skip, num=page, withscores=True)
        for member, score in rows:
            yield member, int(score)
        if len(rows) < page:
            return
        last = int(rows[-1][1])
        tied = sum(1 for _, score in rows if int(score) == last)
        skip = skip + tied if last == low else tied
        low = last


async def count_between(redis: Redis, key: str, *, since: datetime | None, until: datetime | None) -> int:
    low = to_ms(since) if since else "-inf"
    high = to_ms(until) if until else "+inf"
    return int(await redis.zcount(key, low, high))
