"""Finding a project's orders: by an id, or by filters a page at a time, newest first.

An id (``find``) is looked up directly, whatever it is: the gateway's order id, a shop payment's own
order id, or a webhook id (an event's, refunds' included). Filters (``OrderFilter``) walk the
project's orders index (``{p}:project:{id}:purchases``, by creation time) newest first from a cursor,
reading orders in batches and keeping those that match, until a page is full or SCAN_BUDGET orders
were read: a rare match deep in a long history costs pages, not one unbounded request. The cursor
``<created ms>:<order id>`` is where the next page starts (the same form ``relay.ranges`` uses).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from redis.asyncio import Redis

from relay.errors import InvalidInput
from relay.events import EventStore
from relay.models import OrderKind, Purchase, PurchaseStatus, WebhookStatus, to_ms
from relay.schema import Keys
from relay.store import Store

BATCH = 200  # orders read per round trip
SCAN_BUDGET = 5_000  # orders one page reads at most


@dataclass(frozen=True)
class OrderFilter:
    kind: OrderKind | None = None
    status: PurchaseStatus | None = None
    webhook_status: WebhookStatus | None = None
    since: datetime | None = None  # created at or after
    until: datetime | None = None  # created at or before
    buyer_email: str | None = None  # contains, any case

    def matches(self, purchase: Purchase) -> bool:
        return (
            (self.kind is None or purchase.kind is self.kind)
            and (self.since is None or purchase.created_at >= self.since)
            and (self.until is None or purchase.created_at <= self.until)
            and (self.status is None or purchase.status is self.status)
            and (self.webhook_status is None or purchase.webhook_status == self.webhook_status)
            and (self.buyer_email is None or self.buyer_email.lower() in purchase.buyer_email.lower())
        )


@dataclass(frozen=True)
class OrderPage:
    orders: list[Purchase]
    next_cursor: str | None
    scanned: int  # orders read to make this page


class OrderSearch:
    def __init__(self, redis: Redis, store: Store, events: EventStore, *, prefix: str) -> None:
        self.redis = redis
        self.store = store
        self.events = events
        self.keys = Keys(prefix)

    async def find(self, project_id: str, given: str) -> Purchase | None:
        """The project's order ``given`` names: its gateway order id, a shop payment's own order id,
        or the id of one of its webhooks; None when it names none of the project's."""
        given = given.strip()
        if not given or len(given) > 200:
            return None
        candidates = [given]
        mapped = await self.redis.get(self.keys.project_payment(project_id, given))
        if isinstance(mapped, str):
            candidates.insert(0, mapped)
        if given.startswith("evt_"):
            event = await self.events.get(given)
            if event is not None and event.project_id == project_id and event.order_id:
                candidates.insert(0, event.order_id)
        for order_id in candidates:
            purchase = await self.store.get_purchase(order_id)
            if purchase is not None and purchase.project_id == project_id:
                return purchase
        return None

    async def page(
        self, project_id: str, wanted: OrderFilter, *, limit: int, cursor: str | None
    ) -> OrderPage:
        """One page of the project's orders that match ``wanted``, newest first, from ``cursor``."""
        key = self.keys.project_purchases(project_id)
        high = to_ms(wanted.until) if wanted.until else None
        low: int | str = to_ms(wanted.since) if wanted.since else "-inf"
        after = _parse(cursor) if cursor else None
        if after is not None:
            high = after[1] if high is None else min(high, after[1])
        found: list[Purchase] = []
        scanned, offset, last = 0, 0, after
        while scanned < SCAN_BUDGET:
            rows = [
                (member, int(score))
                for member, score in await self.redis.zrevrangebyscore(
                    key, "+inf" if high is None else high, low, start=offset, num=BATCH, withscores=True
                )
            ]
            fresh = [row for row in rows if after is None or _older(row, after)]
            scanned += len(rows) - len(fresh)  # read again to get past the cursor: they count too
            for purchase, row in zip(await self._orders(fresh), fresh, strict=True):
                scanned, last = scanned + 1, row
                if purchase is not None and wanted.matches(purchase):
                    found.append(purchase)
                    if len(found) == limit:
                        return OrderPage(found, _cursor(last), scanned)
            if len(rows) < BATCH:
                return OrderPage(found, None, scanned)
            # The next batch: below the lowest score read, skipping the members at it already read
            # (equal scores come member-descending, always in the same order).
            lowest = rows[-1][1]
            at_lowest = sum(1 for _, score in rows if score == lowest)
            offset = offset + at_lowest if lowest == high else at_lowest
            high = lowest
        return OrderPage(found, _cursor(last) if last else None, scanned)

    async def _orders(self, rows: list[tuple[str, int]]) -> list[Purchase | None]:
        found = {
            purchase.order_id: purchase for purchase in await self.store.get_purchases([m for m, _ in rows])
        }
        return [found.get(member) for member, _ in rows]


def _older(row: tuple[str, int], than: tuple[str, int]) -> bool:
    """Whether ``row`` comes after ``than`` newest first (ZREVRANGEBYSCORE's order: score down,
    then member down)."""
    return (row[1], row[0]) < (than[1], than[0])


def _cursor(row: tuple[str, int]) -> str:
    return f"{row[1]}:{row[0]}"


def _parse(cursor: str) -> tuple[str, int]:
    score, _, member = cursor.partition(":")
    if not (score.isascii() and score.isdigit() and len(score) <= 16) or not member:
        raise InvalidInput("cursor is not one this page made")
    return member, int(score)
