"""``relay export``: orders with their events and attempt logs as JSON lines, for archiving what
retention is about to delete.

One line per order, oldest first within each project::

    {"order": {...the purchase as the API shows it...},
     "events": [{...the event record, its exact body as sent..., "attempts": [...]}]}

The events are the order's paid event and then its refunds' (``*.refunded``).

Streaming: orders are read a page at a time (``relay.ranges``) and written as they come, so the
memory used does not depend on the size of the window. The window applies to the order's creation
(the relay's own record time).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from relay.events import EventStore
from relay.models import Purchase
from relay.ranges import count_between, member_pages
from relay.store import Store


async def order_count(
    store: Store, project_ids: list[str], *, since: datetime, until: datetime | None
) -> int:
    """How many orders the export will write (for a progress bar)."""
    total = 0
    for project_id in project_ids:
        key = store.keys.project_purchases(project_id)
        total += await count_between(store.redis, key, since=since, until=until)
    return total


async def export_orders(
    store: Store, events: EventStore, project_ids: list[str], *, since: datetime, until: datetime | None
) -> AsyncIterator[dict[str, Any]]:
    """Each order of ``project_ids`` created in [since, until], with its events and attempts."""
    for project_id in project_ids:
        key = store.keys.project_purchases(project_id)
        async for page in member_pages(store.redis, key, since=since, until=until):
            for line in await _lines(store, events, page):
                yield line


async def _lines(store: Store, events: EventStore, order_ids: list[str]) -> list[dict[str, Any]]:
    """The export lines of one page of orders, in three round trips (an order deleted meanwhile is
    skipped)."""
    purchases = await store.get_purchases(order_ids)
    event_ids = [event_id for purchase in purchases for event_id in _event_ids(purchase)]
    records = {record.id: record for record in await events.get_many(event_ids)}
    logs = await events.attempts(event_ids)
    lines = []
    for purchase in purchases:
        exported = []
        for record in filter(None, (records.get(event_id) for event_id in _event_ids(purchase))):
            attempts = [attempt.model_dump(mode="json") for attempt in logs.get(record.id, [])]
            exported.append(record.model_dump(mode="json") | {"attempts": attempts})
        order = purchase.model_dump(mode="json", exclude={"refund_event_ids"})
        lines.append({"order": order, "events": exported})
    return lines


def _event_ids(purchase: Purchase) -> list[str]:
    """The order's events: its paid event, then its refunds'."""
    return ([purchase.event_id] if purchase.event_id else []) + sorted(purchase.refund_event_ids)
