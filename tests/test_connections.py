"""The Redis pools' connections pack commands with hiredis: the same bytes as redis-py's own Python
packing, the same errors, on every pool the relay opens."""

from __future__ import annotations

from enum import IntEnum
from typing import Any

import pytest
from redis.asyncio.connection import Connection
from redis.exceptions import DataError

from relay.connections import HiredisPacking, open_connections
from relay.settings import Settings


class Seconds(IntEnum):
    MINUTE = 60


ARGUMENTS: list[tuple[Any, ...]] = [
    ("EVALSHA", "a" * 40, 2, "relay:purchase:item-1", "relay:outbox", "paid", 50000, -3, 0),
    ("SET", "k", 0.1, 1e20, 1 / 3, -0.0, 12345678901234567890),
    ("HSET", "k", "é", "日本", b"\x00\xff\r\n", memoryview(b"view"), "x" * 100_000),
    ("CONFIG GET", "maxmemory"),
    (b"CLIENT SETNAME", b"relay"),
    ("SET", "k", Seconds.MINUTE),  # an int subclass: hiredis refuses it, redis-py packs it
]


class Fast(HiredisPacking, Connection):
    pass


@pytest.mark.parametrize("args", ARGUMENTS)
def test_hiredis_packs_as_redis_py_does(args: tuple[Any, ...]) -> None:
    assert b"".join(Fast().pack_command(*args)) == b"".join(
        bytes(part) for part in Connection().pack_command(*args)
    )


@pytest.mark.parametrize("value", [None, True, "\udc80"])
def test_hiredis_refuses_what_redis_py_refuses(value: Any) -> None:
    with pytest.raises((DataError, UnicodeEncodeError)) as python:
        Connection().pack_command("SET", "k", value)
    with pytest.raises(python.type):
        Fast().pack_command("SET", "k", value)


def test_another_encoding_is_left_to_redis_py() -> None:
    connections = open_connections(Settings(redis_url="redis://127.0.0.1:1/0?encoding=latin-1"))
    assert not issubclass(connections.redis.connection_pool.connection_class, HiredisPacking)


async def test_every_pool_of_a_real_redis_packs_with_hiredis() -> None:
    for settings in (
        Settings(redis_url="redis://127.0.0.1:1/0"),
        Settings(redis_sentinels="127.0.0.1:1", redis_url="redis://:pw@unused/3"),
    ):
        connections = open_connections(settings)
        try:
            for pool in (connections.redis.connection_pool, connections.arq.connection_pool):
                assert issubclass(pool.connection_class, HiredisPacking), pool.connection_class
        finally:
            await connections.close()
