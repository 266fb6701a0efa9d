"""Walking a time-ordered sorted set (score: Unix ms) in pages while other clients change it (the
retention sweep deletes what export, backfill and the window replay walk).

The cursor is the last (score, member) returned, not a position: members sharing a score come back
ordered by member, so a page starts at the last score and drops what sorts up to the last member.
Deleting or adding members elsewhere cannot make the walk skip or repeat a member that stays.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from datetime import datetime

from redis.asyncio import Redis

from relay.errors import InvalidInput
from relay.models import to_ms

PAGE = 500


async def scored_members(
    redis: Redis,
    key: str,
    *,
    since: datetime | None,
    until: datetime | None,
    after: tuple[int, str] | None = None,
    page: int = PAGE,
) -> AsyncGenerator[tuple[str, int], None]:
    """(member, score) with score in [since, until], oldest first, each member once; with
    ``after`` (a (score, member) a walk returned last), only what sorts after it."""
    low: int | str = to_ms(since) if since else "-inf"
    high: int | str = to_ms(until) if until else "+inf"
    if after is not None:
        low = max(after[0], low) if isinstance(low, int) else after[0]
    while True:
        rows: list[tuple[str, float]] = []
        fresh: list[tuple[str, int]] = []
        offset = 0
        while not fresh:  # past a run of members at the cursor's score already returned
            rows = await redis.zrangebyscore(key, low, high, start=offset, num=page, withscores=True)
            offset += len(rows)
            fresh = [
                (member, int(score))
                for member, score in rows
                if after is None or (int(score), member) > after
            ]
            if len(rows) < page:
                break
        for member, score in fresh:
            yield member, score
        if len(rows) < page:
            return
        after = (fresh[-1][1], fresh[-1][0])
        low = after[0]


async def member_pages(
    redis: Redis, key: str, *, since: datetime | None, until: datetime | None, page: int = PAGE
) -> AsyncIterator[list[str]]:
    """The members of ``scored_members`` in lists of at most ``page``, for a round trip per list."""
    batch: list[str] = []
    async for member, _ in scored_members(redis, key, since=since, until=until, page=page):
        batch.append(member)
        if len(batch) == page:
            yield batch
            batch = []
    if batch:
        yield batch


async def count_between(redis: Redis, key: str, *, since: datetime | None, until: datetime | None) -> int:
    low = to_ms(since) if since else "-inf"
    high = to_ms(until) if until else "+inf"
    return int(await redis.zcount(key, low, high))


async def cursor_page(
    redis: Redis, key: str, *, since: datetime | None, limit: int, cursor: str | None
) -> tuple[list[str], str | None]:
    """One page of an API listing, oldest first: at most ``limit`` members from ``since`` after
    ``cursor``, and the cursor of the next page (None on the last). A cursor is
    ``<score>:<member>`` of the last member returned; one this did not make is InvalidInput."""
    after = _parse_cursor(cursor) if cursor else None
    rows: list[tuple[str, int]] = []
    walk = scored_members(redis, key, since=since, until=None, after=after, page=limit + 1)
    async with aclosing(walk):
        async for row in walk:
            rows.append(row)
            if len(rows) > limit:
                break
    page = rows[:limit]
    next_cursor = f"{page[-1][1]}:{page[-1][0]}" if len(rows) > limit else None
    return [member for member, _ in page], next_cursor


def _parse_cursor(cursor: str) -> tuple[int, str]:
    score, _, member = cursor.partition(":")
    if not (score.isascii() and score.isdigit() and len(score) <= 16) or not member:
        raise InvalidInput("cursor is not one this API returned")
    return int(score), member
