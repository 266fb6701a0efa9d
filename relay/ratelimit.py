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
from datetime import datetime, timedelta

from redis.asyncio import Redis

from relay import lua
from relay.errors import TooManyRequests
from relay.schema import Keys

WINDOW = 60
CEILING = 20  # the per-client ceiling, in per-address limits
LINK_FAILURES = 30  # refused portal links a minute from one address (merchants reload old ones)
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
    """Failed credentials, counted per address in a window; past ``limit`` the address is refused,
    right credentials included.

    A credential is compared first (locally, in constant time), then judged here: a wrong one
    counts a failure; a right one counts nothing and is refused only when its address is past the
    limit. So right requests in parallel, however many, never count against each other, and a
    guesser gains nothing from a burst: a guess that happens to be right is refused like a wrong
    one once the failures counted before it reach the limit, so about ``limit`` guesses a window can
    ever succeed, however many are in flight."""

    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str,
        limit: int = AUTH_FAILURES,
        window: int = WINDOW,
        subject: str = "auth-failed",
    ) -> None:
        self.redis = redis
        self.keys = Keys(prefix)
        self.limit = limit
        self.window = window
        self.subject = subject  # what is counted: bearer tokens and logins, or portal links

    async def judge(self, address: str, *, right: bool, now: datetime) -> bool:
        """``right``, unless ``address`` is past the limit (TooManyRequests). A wrong credential is
        counted first, so the one that reaches the limit is itself refused."""
        window, retry_after = _window(now, self.window)
        key = self.keys.rate_limit(f"{self.subject}:{address}", window)
        if right:
            over = int(await self.redis.get(key) or 0) >= self.limit
        else:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.incr(key)
                pipe.expire(key, self.window * 2)
                count, _ = await pipe.execute()
            over = int(count) > self.limit
        if over:
            what = "logins" if self.subject == "auth-failed" else "links"
            raise TooManyRequests(
                f"too many failed {what} from this address; retry in {retry_after} s", retry_after=retry_after
            )
        return right


class Cooldown:
    """At most one action of a kind per subject every so often (a project's test events, its bulk
    replays from the portal): the first claim in the period wins, the rest are refused."""

    def __init__(self, redis: Redis, *, prefix: str) -> None:
        self.redis = redis
        self.keys = Keys(prefix)

    async def claim(self, action: str, subject: str, *, every: timedelta) -> None:
        """Claim ``action`` for ``subject`` now, else TooManyRequests (one was claimed less than
        ``every`` ago)."""
        key = self.keys.cooldown(action, subject)
        if not await self.redis.set(key, "1", nx=True, px=int(every.total_seconds() * 1000)):
            wait = max(1, round(every.total_seconds()))
            raise TooManyRequests(f"one {action} every {wait} s; try again in a moment", retry_after=wait)
