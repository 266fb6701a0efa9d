"""relay/runner.py close_worker: whatever stops arq's close() short of on_shutdown (Redis away, or
the stop cancelling it), the worker's on_shutdown still runs, so its HTTP session and Redis
batches are closed."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from workers.lifetime import close_worker


class StoppedShort:
    """An arq worker whose close() raises ``error`` before reaching on_shutdown."""

    def __init__(self, error: BaseException) -> None:
        self.error = error
        self.ctx: dict[str, Any] = {}
        self.shut = 0

    async def on_shutdown(self, ctx: dict[str, Any]) -> None:
        self.shut += 1

    async def close(self) -> None:
        raise self.error


async def test_a_close_cut_short_by_redis_still_shuts_down() -> None:
    worker = StoppedShort(RedisConnectionError("gone"))
    await close_worker(worker)  # type: ignore[arg-type]
    assert worker.shut == 1


async def test_a_cancelled_close_still_shuts_down_and_stays_cancelled() -> None:
    worker = StoppedShort(asyncio.CancelledError())
    with pytest.raises(asyncio.CancelledError):
        await close_worker(worker)  # type: ignore[arg-type]
    assert worker.shut == 1
