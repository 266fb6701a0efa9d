"""How long the relay keeps what it writes, and the sweep that lets it go.

Nothing the relay writes stays in Redis for ever. A purchase still pending ``purchase_expiry``
after it was made becomes expired (``relay/lua/expire.lua``). An order is *finished* when its
event is delivered or had no endpoint, or when it ended failed, expired or refunded without a
payment; it is deleted with its event and attempt log ``retention`` after it finished, or
``dead_letter_retention`` after its event was dead-lettered (unless replayed or purged first). The
operator's own alerts follow the same rule as events of their own.

Every script that finishes a record puts it on one schedule, ``{p}:retention`` (a sorted set:
``o:{order id}`` or ``e:{event id}`` -> when it is deleted), and every script that un-finishes it
(a replay, a late settlement) takes it off, in the same atomic step. The sweep then takes what is
due, a bounded batch at a time, and ``relay/lua/delete_finished.lua`` checks each again and deletes
it together with every index entry that points at it: no scan of the keyspace, ever.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

import structlog
from redis.asyncio import Redis

from relay import lua
from relay.models import iso_ms, to_ms
from relay.ranges import member_pages
from relay.schema import Keys

log = structlog.get_logger("relay.retention")

BATCH = 500  # records one script run takes: a bounded pause of Redis (about a millisecond or two)
MAX_BATCHES = 20  # batches one sweep runs of each kind; the rest waits for the next sweep


def _ms(stored: str | None) -> int:
    """A stored ISO 8601 time as Unix ms (0 when absent)."""
    return to_ms(datetime.fromisoformat(stored)) if stored else 0


class Progress(Protocol):
    def update(self, n_steps: int) -> None: ...


@dataclass(frozen=True)
class Lifetimes:
    """RELAY_RETENTION, RELAY_DEAD_LETTER_RETENTION, RELAY_PURCHASE_EXPIRY,
    RELAY_ENDPOINT_DISABLE_AFTER, RELAY_RENEWAL_NOTICE and RELAY_SUBSCRIPTION_GRACE
    (``relay.settings``), with their defaults."""

    retention: timedelta = timedelta(days=30)
    dead_letter_retention: timedelta = timedelta(days=90)
    purchase_expiry: timedelta = timedelta(hours=24)
    endpoint_disable_after: timedelta = timedelta(days=5)
    renewal_notice: timedelta = timedelta(days=3)
    subscription_grace: timedelta = timedelta(days=3)


DEFAULT_LIFETIMES = Lifetimes()


@dataclass(frozen=True)
class Swept:
    expired: int = 0
    deleted_orders: int = 0
    deleted_alerts: int = 0
    deleted_subscriptions: int = 0


class Retention:
    def __init__(self, redis: Redis, *, prefix: str, lifetimes: Lifetimes) -> None:
        self.redis = redis
        self.keys = Keys(prefix)
        self.lifetimes = lifetimes
        self._expire = redis.register_script(lua.source("expire"))
        self._delete = redis.register_script(lua.source("delete_finished"))
        self._backfill = redis.register_script(lua.source("backfill"))

    async def expire(self, *, now: datetime, limit: int = BATCH) -> tuple[int, int]:
        """Expire the purchases due by ``now``, at most ``limit``: (entries taken, expired)."""
        taken, expired = await self._expire(
            keys=[self.keys.expiry, self.keys.retention],
            args=[
                self.keys.purchase(""),
                to_ms(now),
                iso_ms(now),
                limit,
                to_ms(now + self.lifetimes.retention),
            ],
        )
        return int(taken), int(expired)

    async def delete_due(self, *, now: datetime, limit: int = BATCH) -> tuple[int, int, int, int]:
        """Delete what is due by ``now``, at most ``limit`` entries: (taken, orders, events of
        their own, subscriptions)."""
        taken, orders, alerts, subscriptions = await self._delete(
            keys=[
                self.keys.retention,
                self.keys.outbox,
                self.keys.dead_letters,
                self.keys.expiry,
                self.keys.stats,
            ],
            args=[self.keys.prefix + ":", to_ms(now), limit],
        )
        return int(taken), int(orders), int(alerts), int(subscriptions)

    async def sweep(self, *, now: datetime) -> Swept:
        """Expire, then delete, in batches until nothing is due or MAX_BATCHES of each ran."""
        expired = orders = alerts = subscriptions = 0
        for _ in range(MAX_BATCHES):
            taken, count = await self.expire(now=now)
            expired += count
            if taken < BATCH:
                break
        for _ in range(MAX_BATCHES):
            taken, deleted, deleted_alerts, deleted_subscriptions = await self.delete_due(now=now)
            orders, alerts = orders + deleted, alerts + deleted_alerts
            subscriptions += deleted_subscriptions
            if taken < BATCH:
                break
        if expired or orders or alerts or subscriptions:
            log.info(
                "retention_swept",
                expired=expired,
                deleted_orders=orders,
                deleted_alerts=alerts,
                deleted_subscriptions=subscriptions,
            )
        return Swept(expired, orders, alerts, subscriptions)

    async def backfill(self, project_id: str, order_ids: list[str], *, now: datetime) -> tuple[int, int]:
        """Put a page of a project's orders stored before retention existed on the schedules, and
        their events in the project's events (backfill.lua): (put on the expiry schedule, put on
        the retention schedule)."""
        if not order_ids:
            return 0, 0
        async with self.redis.pipeline(transaction=False) as pipe:
            for order_id in order_ids:
                pipe.hget(self.keys.purchase(order_id), "event_id")
            event_ids = [event_id or "" for event_id in await pipe.execute()]
        async with self.redis.pipeline(transaction=False) as pipe:
            for event_id in event_ids:
                pipe.hget(self.keys.event(event_id or "-"), "created_at")
            created = [_ms(when) for when in await pipe.execute()]
        triples = [part for row in zip(order_ids, event_ids, created, strict=True) for part in row]
        lifetimes = self.lifetimes
        expiring, retained = await self._backfill(
            keys=[
                self.keys.expiry,
                self.keys.retention,
                self.keys.project_purchases(project_id),
                self.keys.project_events(project_id),
            ],
            args=[
                self.keys.prefix + ":",
                to_ms(now + lifetimes.retention),
                to_ms(now + lifetimes.dead_letter_retention),
                int(lifetimes.purchase_expiry.total_seconds() * 1000),
                *triples,
            ],
        )
        return int(expiring), int(retained)

    async def backfill_all(
        self, project_ids: list[str], *, clock: Callable[[], datetime], progress: Progress | None = None
    ) -> tuple[int, int, int]:
        """Backfill every order of ``project_ids``, a page at a time, then recount the gauge:
        (put on the expiry schedule, on the retention schedule, orders stored)."""
        expiring = retained = 0
        for project_id in project_ids:
            key = self.keys.project_purchases(project_id)
            async for page in member_pages(self.redis, key, since=None, until=None, page=BATCH):
                done = await self.backfill(project_id, page, now=clock())
                expiring, retained = expiring + done[0], retained + done[1]
                if progress is not None:
                    progress.update(len(page))
        return expiring, retained, await self.recount(project_ids)

    async def stored_orders(self, project_ids: list[str]) -> int:
        """The orders the projects' indexes hold."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for project_id in project_ids:
                pipe.zcard(self.keys.project_purchases(project_id))
            counts = await pipe.execute()
        return sum(int(count) for count in counts)

    async def recount(self, project_ids: list[str]) -> int:
        """Set the stored-orders gauge to the orders the projects' indexes hold (after a backfill:
        orders stored before the gauge existed were never counted)."""
        total = await self.stored_orders(project_ids)
        await self.redis.hset(self.keys.stats, "orders", str(total))  # type: ignore[misc]
        return total
