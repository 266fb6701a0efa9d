"""Dead-letter operations shared by the admin API, the console and the CLI."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from arq.connections import ArqRedis

from relay.domain import resend
from relay.events import EventStore, last_attempts
from relay.models import EventRecord

PAGE = 500


async def all_dead_letters(
    events: EventStore, *, project_id: str | None, since: datetime | None
) -> AsyncIterator[EventRecord]:
    cursor = None
    while True:
        page = await events.dead_letters(project_id=project_id, since=since, limit=PAGE, cursor=cursor)
        for event in page.events:
            yield event
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


async def dead_letter_ids(events: EventStore, *, project_id: str | None, since: datetime | None) -> list[str]:
    return [event.id async for event in all_dead_letters(events, project_id=project_id, since=since)]


async def replay_events(events: EventStore, arq: ArqRedis, event_ids: list[str], *, now: datetime) -> int:
    """Send each event again (same ``webhook-id``, fresh retry budget); how many were sent."""
    for event_id in event_ids:
        await resend(events, arq, event_id, now=now)
    return len(event_ids)


async def dead_letter_views(events: EventStore, records: list[EventRecord]) -> list[dict[str, Any]]:
    last = await last_attempts(events, [event.id for event in records])
    views = []
    for event in records:
        attempt = last.get(event.id)
        views.append(
            {
                "event_id": event.id,
                "project_id": event.project_id,
                "order_id": event.order_id,
                "item_id": event.item_id,
                "attempts": event.attempts,
                "created_at": event.model_dump(mode="json")["created_at"],
                "dead_at": event.model_dump(mode="json")["dead_at"],
                "last_attempt": attempt.model_dump(mode="json") if attempt else None,
            }
        )
    return views
