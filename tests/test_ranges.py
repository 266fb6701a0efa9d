"""relay/ranges.py: walking a time-ordered sorted set a page at a time returns each member once, in
order, however many share a score, and while other members are deleted or added meanwhile (the
retention sweep runs beside export, backfill and the window replay)."""

from __future__ import annotations

import random

import pytest

from relay.ranges import scored_members
from tests.helpers import Backend

KEY = "t:walk"


async def walk(stores: Backend, page: int) -> list[str]:
    return [
        member async for member, _ in scored_members(stores.redis, KEY, since=None, until=None, page=page)
    ]


@pytest.mark.parametrize("seed", range(20))
async def test_each_member_comes_once_in_order_whatever_the_ties(stores: Backend, seed: int) -> None:
    rng = random.Random(seed)
    members = {f"m{number:03d}": rng.choice([1, 1, 1, 2, 3, 5, 5]) for number in range(rng.randint(0, 60))}
    if members:
        await stores.redis.zadd(KEY, members)
    assert await walk(stores, page=rng.randint(1, 7)) == await stores.redis.zrange(KEY, 0, -1)


async def test_deleting_a_member_already_returned_skips_no_other(stores: Backend) -> None:
    await stores.redis.zadd(KEY, {"a": 1, "b": 1, "c": 1, "d": 2})
    seen = []
    async for member, _ in scored_members(stores.redis, KEY, since=None, until=None, page=2):
        seen.append(member)
        if member == "b":  # between the pages: the sweep deletes one the walk has passed
            await stores.redis.zrem(KEY, "a")
    assert seen == ["a", "b", "c", "d"]


async def test_a_member_added_behind_the_walk_does_not_repeat_one(stores: Backend) -> None:
    await stores.redis.zadd(KEY, {"b": 1, "c": 1, "d": 1})
    seen = []
    async for member, _ in scored_members(stores.redis, KEY, since=None, until=None, page=2):
        seen.append(member)
        if member == "c":
            await stores.redis.zadd(KEY, {"a": 1})  # sorts before the cursor: not seen, nothing twice
    assert seen == ["b", "c", "d"]
