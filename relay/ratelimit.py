"""Redis-backed fixed-window limits, shared by every ingress process.

- ``PurchaseLimit``: public purchases per ``client_id`` and source address
  (``RELAY_PURCHASE_RATE_LIMIT`` a minute), under a per-client ceiling 20 times that. Counted only
  for requests that would create a purchase, and a request refused for its address does not count
  towards the ceiling: one address's flood cannot stop another address (``relay/lua/rate_limit.lua``).
- ``FailedAuth``: failed bearer-token and console logins per address; past the limit, every
  attempt from that address is refused for the rest of the window, right token or not, so the
  admin token cannot be guessed online.
"""

from __future__ import annotations

import math
from datetime import datetime

from redis.asyncio import Redis

from relay import lua
from relay.errors import TooManyRequests
from relay.schema import Keys

WINDOW = 60
CEILING = 20  # the per-client ceiling, in per-address limits
AUTH_FAILURES = 10  # failed logins per address and window


def _window(now: datetime, seconds: int) -> tuple[int, int]:
    """The window ``now`` falls in, and the seconds until the next one."""
    stamp = now.timestamp()
    window = int(stamp // seconds)
    return window, max(1, math.ceil((window + 1) * seconds - stamp))


class PurchaseLimit:
    def __init__(self, redis: Redis, *, prefix: str, limit: int, window: int = WINDOW) -> None:
        self.redis = redis
        self.keys = Keys(prefix)
        self.limit = limit
        self.window = window
        self._count = redis.register_script(lua.source("rate_limit"))

    async def hit(self, client_id: str, address: str, *, now: datetime) -> None:
        """Count one purchase by ``address`` for ``client_id``; TooManyRequests past either limit."""
        if self.limit <= 0:
            return
        window, retry_after = _window(now, self.window)
        refused = await self._count(
            keys=[
                self.keys.rate_limit(f"purchase:{client_id}:{address}", window),
                self.keys.rate_limit(f"purchase:{client_id}", window),
            ],
            args=[self.limit, self.limit * CEILING, self.window * 2],
        )
        if int(refused) == 1:
            raise TooManyRequests(
                f"more than {self.limit} purchases a minute from this address; retry in {retry_after} s",
                retry_after=retry_after,
            )
        if int(refused) == 2:
            raise TooManyRequests(
                f"more than {self.limit * CEILING} purchases a minute for this client_id; "
                f"retry in {retry_after} s",
                retry_after=retry_after,
            )


class FailedAuth:
    """Attempts with a credential, counted per address before the credential is compared (so a
    burst of parallel guesses cannot all slip past the count); a success gives its attempt back,
    so only failures add up. Past ``limit`` in a window, the address is refused."""

    def __init__(
        self, redis: Redis, *, prefix: str, limit: int = AUTH_FAILURES, window: int = WINDOW
    ) -> None:
        self.redis = redis
        self.keys = Keys(prefix)
        self.limit = limit
        self.window = window

    async def attempt(self, address: str, *, now: datetime) -> str:
        """Count one attempt by ``address``; TooManyRequests past the limit. The key returned
        gives the attempt back (``succeeded``). A refused attempt gives its count back at once: it
        compared nothing, so it is no failure, and a burst of right requests in parallel (more than
        the limit in flight) does not lock its address out for the rest of the window."""
        window, retry_after = _window(now, self.window)
        key = self.keys.rate_limit(f"auth-failed:{address}", window)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, self.window * 2)
            count, _ = await pipe.execute()
        if int(count) > self.limit:
            await self.redis.decr(key)
            raise TooManyRequests(
                f"too many failed logins from this address; retry in {retry_after} s", retry_after=retry_after
            )
        return key

    async def succeeded(self, key: str) -> None:
        await self.redis.decr(key)

    async def refuse_if_over(self, address: str, *, now: datetime) -> str:
        """TooManyRequests when ``address`` is past the limit, counting nothing: for credentials
        no burst of guesses can find (a project key's 256 bits), whose parallel right uses must not
        count against each other. The key ``failed`` counts a failure with."""
        window, retry_after = _window(now, self.window)
        key = self.keys.rate_limit(f"auth-failed:{address}", window)
        if int(await self.redis.get(key) or 0) >= self.limit:
            raise TooManyRequests(
                f"too many failed logins from this address; retry in {retry_after} s", retry_after=retry_after
            )
        return key

    async def failed(self, key: str) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, self.window * 2)
            await pipe.execute()
