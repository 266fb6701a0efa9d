"""Dead-letter operations shared by the admin API and the CLI."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

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
