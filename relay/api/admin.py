"""Admin API (bearer admin token): the dead-letter queue."""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web
from pydantic import Field

from relay.api.context import ARQ, CLOCK, EVENTS, METRICS
from relay.api.middleware import admin_only, not_found, query_int, read_model
from relay.deadletters import dead_letter_ids, dead_letter_views, replay_events
from relay.errors import InvalidInput
from relay.models import Identifier, Input

routes = web.RouteTableDef()


class ReplayIn(Input):
    event_ids: list[str] = Field(default_factory=list, max_length=10000)
    all: bool = False
    project_id: Identifier | None = None
    since: datetime | None = None


def parse_since(raw: str | None) -> datetime | None:
    if not raw:
        return None
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise InvalidInput("since must be an ISO 8601 time, e.g. 2026-05-06T10:00:00Z") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@routes.get("/api/admin/dead-letters")
@admin_only
async def list_dead_letters(request: web.Request) -> web.Response:
    events = request.app[EVENTS]
    page = await events.dead_letters(
        project_id=request.query.get("project_id") or None,
        since=parse_since(request.query.get("since")),
        limit=query_int(request, "limit", default=100, low=1, high=1000),
        cursor=request.query.get("cursor") or None,
    )
    views = await dead_letter_views(events, page.events)
    return web.json_response({"dead_letters": views, "next_cursor": page.next_cursor})


@routes.post("/api/admin/dead-letters/replay")
@admin_only
async def replay(request: web.Request) -> web.Response:
    events, arq, now = request.app[EVENTS], request.app[ARQ], request.app[CLOCK]()
    body = await read_model(request, ReplayIn)
    if body.all == bool(body.event_ids):
        raise InvalidInput('give either "event_ids": [...] or "all": true')
    if body.all:
        ids = await dead_letter_ids(events, project_id=body.project_id, since=body.since)
    else:
        ids = list(dict.fromkeys(body.event_ids))
        missing = [event_id for event_id in ids if await events.get(event_id) is None]
        if missing:
            raise not_found("event", missing[0])
    replayed = await replay_events(events, arq, ids, now=now)
    request.app[METRICS].replays.inc(replayed)
    return web.json_response({"replayed": replayed})


@routes.delete("/api/admin/dead-letters/{event_id}")
@admin_only
async def delete_dead_letter(request: web.Request) -> web.Response:
    events = request.app[EVENTS]
    event_id = request.match_info["event_id"]
    event = await events.get(event_id)
    if event is None or not await events.purge_dead_letter(event):
        raise not_found("dead letter", event_id)
    return web.json_response({"deleted": event_id})
