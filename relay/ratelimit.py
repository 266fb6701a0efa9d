"""A Redis-backed fixed-window rate limit, shared by every ingress process."""

from __future__ import annotations

import math
from datetime import datetime

from redis.asyncio import Redis

from relay.errors import TooManyRequests
from relay.schema import Keys


class RateLimit:
    def __init__(self, redis: Redis, *, prefix: str, limit: int, window: int = 60) -> None:
        self.redis = redis
        self.keys = Keys(prefix)
        self.limit = limit
        self.window = window

    async def hit(self, subject: str, *, now: datetime) -> None:
        """Count one request by ``subject``; raise TooManyRequests past ``limit`` per window."""
        if self.limit <= 0:
            return
        stamp = now.timestamp()
        window = int(stamp // self.window)
        key = self.keys.rate_limit(subject, window)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, self.window * 2)
            count, _ = await pipe.execute()
        if int(count) > self.limit:
            retry_after = max(1, math.ceil((window + 1) * self.window - stamp))
            raise TooManyRequests(
                f"more than {self.limit} requests in {self.window} s; retry in {retry_after} s",
                retry_after=retry_after,
            )
