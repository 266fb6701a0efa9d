"""``relay.autopipeline.AutoPipelineRedis`` against a real Redis: each caller gets what a direct
call returns (or raises), concurrent commands share round trips, and a lost script is reloaded."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import ConnectionPool, Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from relay.autopipeline import AutoPipelineRedis


@pytest.fixture
async def pipelined(redis: Redis) -> AsyncIterator[AutoPipelineRedis]:
    client = AutoPipelineRedis(redis.connection_pool)
    yield client
    await client.aclose()


async def test_replies_are_parsed_as_a_direct_call_parses_them(
    redis: Redis, pipelined: AutoPipelineRedis
) -> None:
    await redis.hset("h", mapping={"a": "1", "b": "2"})
    await redis.zadd("z", {"x": 1.5, "y": 2})
    await redis.set("s", "v")

    async def both(name: str, *args: Any, **kwargs: Any) -> None:
        direct = await getattr(redis, name)(*args, **kwargs)
        assert await getattr(pipelined, name)(*args, **kwargs) == direct

    await both("hgetall", "h")
    await both("hgetall", "missing")
    await both("mget", ["s", "missing"])
    await both("zrangebyscore", "z", "-inf", "+inf", withscores=True)
    await both("zscore", "z", "x")
    await both("exists", "s", "h", "missing")


async def test_concurrent_commands_share_one_round_trip(pipelined: AutoPipelineRedis) -> None:
    keys = [f"k{n}" for n in range(50)]
    await asyncio.gather(*(pipelined.set(key, key) for key in keys))
    assert pipelined.commands.batches_sent == 1
    assert await asyncio.gather(*(pipelined.get(key) for key in keys)) == keys
    assert pipelined.commands.batches_sent == 2


async def test_a_failing_command_fails_only_its_caller(pipelined: AutoPipelineRedis) -> None:
    await pipelined.set("string", "v")
    results = await asyncio.gather(
        pipelined.get("string"), pipelined.hgetall("string"), pipelined.get("string"), return_exceptions=True
    )
    assert results[0] == results[2] == "v"
    assert isinstance(results[1], ResponseError)
    assert "WRONGTYPE" in str(results[1])


async def test_a_script_redis_lost_is_loaded_again(redis: Redis, pipelined: AutoPipelineRedis) -> None:
    script = pipelined.register_script("return redis.call('INCR', KEYS[1])")
    assert await script(keys=["n"]) == 1
    await redis.script_flush()
    assert await script(keys=["n"]) == 2


async def test_a_caller_cancelled_before_its_command_left_never_sends_it(
    redis: Redis, pipelined: AutoPipelineRedis
) -> None:
    task = asyncio.create_task(pipelined.set("cancelled", "1"))
    await asyncio.sleep(0)  # queued, not yet sent
    task.cancel()
    assert await pipelined.set("sent", "1")
    assert await redis.exists("cancelled", "sent") == 1


async def test_a_lost_connection_fails_every_caller() -> None:
    pool = ConnectionPool.from_url("redis://127.0.0.1:1", socket_connect_timeout=1)
    client = AutoPipelineRedis(pool)
    results = await asyncio.gather(client.get("a"), client.get("b"), return_exceptions=True)
    assert all(isinstance(result, RedisConnectionError) for result in results)
    await client.aclose()
    await pool.aclose()


async def test_a_call_after_aclose_works_and_leaves_no_connection_open(redis: Redis) -> None:
    client = AutoPipelineRedis(redis.connection_pool)
    assert await client.set("before", "1")
    await client.aclose()
    assert await client.get("before") == "1"  # e.g. arq's shielded finish of a cancelled job
    del client
    gc.collect()  # an open socket left behind would be a ResourceWarning, an error here


@pytest.mark.parametrize(("in_flight", "held"), [(1, True), (2, False)])
async def test_a_slow_batch_holds_the_next_only_with_one_in_flight(
    redis: Redis, in_flight: int, held: bool
) -> None:
    client = AutoPipelineRedis(redis.connection_pool, in_flight=in_flight)
    try:
        slow = asyncio.create_task(client.execute_command("BLPOP", "nothing", 0.5))  # Redis waits 0.5 s
        await asyncio.sleep(0.05)
        started = asyncio.get_running_loop().time()
        assert await client.set("k", "v") is True
        assert (asyncio.get_running_loop().time() - started > 0.3) is held
        assert await slow is None
    finally:
        await client.aclose()


async def test_aclose_waits_for_the_calls_already_made(redis: Redis) -> None:
    client = AutoPipelineRedis(redis.connection_pool, in_flight=2)
    calls = [asyncio.create_task(client.set(f"k{n}", "v")) for n in range(3)]
    await asyncio.sleep(0)  # the calls are made; their batch is due at the end of this turn
    await client.aclose()
    assert [call.done() and call.result() for call in calls] == [True] * 3
    assert client.commands.pool._in_use_connections == set()  # nothing left talking to Redis
