"""relay/batching.py Coalescer on a real Redis, and relay/logs.py TurnWriter: work gathered per
event-loop turn, with every caller still getting its own reply, error, or line."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from relay.batching import Coalescer
from relay.logs import TurnWriter


class CountingPipelines:
    """Counts the pipelines a Coalescer sends through ``redis``."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.sent = 0

    def pipeline(self, **options: Any) -> Any:
        self.sent += 1
        return self.redis.pipeline(**options)


async def test_concurrent_commands_share_pipelines_and_get_their_own_replies(redis: Redis) -> None:
    counting = CountingPipelines(redis)
    batch = Coalescer(counting, max_batch=64)  # type: ignore[arg-type]
    replies = await asyncio.gather(*(batch.execute("INCRBY", f"n:{i % 7}", i) for i in range(200)))
    assert counting.sent == 4  # 200 commands issued in one turn, at most 64 per pipeline
    totals = {key: int(await redis.get(f"n:{key}")) for key in range(7)}
    assert totals == {key: sum(i for i in range(200) if i % 7 == key) for key in range(7)}
    # every reply is the counter's value after that caller's own INCRBY
    assert sorted(replies)[-1] == max(totals.values())
    assert all(isinstance(reply, int) for reply in replies)


async def test_one_callers_error_is_its_own(redis: Redis) -> None:
    await redis.rpush("a-list", "x")
    batch = Coalescer(redis)
    results = await asyncio.gather(
        batch.execute("SET", "fine", "1"),
        batch.execute("INCR", "a-list"),  # WRONGTYPE
        batch.execute("GET", "fine"),
        return_exceptions=True,
    )
    assert results[0] is True
    assert isinstance(results[1], ResponseError)
    assert results[2] == "1"


async def test_a_script_redis_has_forgotten_is_loaded_again(redis: Redis) -> None:
    script = redis.register_script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    batch = Coalescer(redis)
    assert await batch.script(script, ["s"], [2]) == 2
    await redis.script_flush()
    assert await asyncio.gather(*(batch.script(script, ["s"], [1]) for _ in range(3))) == [3, 4, 5]


async def test_a_dead_connection_fails_every_caller() -> None:
    dead = Redis(host="127.0.0.1", port=1, socket_connect_timeout=1)
    batch = Coalescer(dead)
    results = await asyncio.gather(*(batch.execute("GET", "k") for _ in range(5)), return_exceptions=True)
    assert [type(result) for result in results] == [RedisConnectionError] * 5
    await dead.aclose()


async def test_a_cancelled_caller_does_not_disturb_the_others(redis: Redis) -> None:
    batch = Coalescer(redis)
    doomed = asyncio.create_task(batch.execute("SET", "doomed", "1"))
    kept = asyncio.create_task(batch.execute("SET", "kept", "1"))
    await asyncio.sleep(0)
    doomed.cancel()
    assert await kept is True
    with pytest.raises(asyncio.CancelledError):
        await doomed
    assert await redis.get("kept") == "1"


class CountingFile(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


async def test_lines_of_one_turn_are_written_together_in_order() -> None:
    out = CountingFile()
    writer = TurnWriter(out)
    for n in range(5):
        writer.msg(f"line {n}")
    assert out.getvalue() == ""  # not yet: at the end of this turn
    await asyncio.sleep(0)
    writer.info("next turn")
    await asyncio.sleep(0)
    assert out.getvalue().splitlines() == [f"line {n}" for n in range(5)] + ["next turn"]
    assert out.writes == 2


def test_outside_an_event_loop_a_line_is_written_at_once() -> None:
    out = CountingFile()
    TurnWriter(out).msg("now")
    assert out.getvalue() == "now\n"
