"""Admin API (bearer admin token): the dead-letter queue, replaying a window of events, and the
callbacks for unknown orders."""

from __future__ import annotations

from aiohttp import web
from pydantic import Field

from relay.api.auth import admin_only
from relay.api.context import AUDIT, OPERATIONS, STORE
from relay.api.parsing import parse_since, query_int, read_model
from relay.errors import InvalidInput
from relay.models import Identifier, Input, Instant, WebhookStatus
from relay.replay import MAX_WINDOW_REPLAY, Window

routes = web.RouteTableDef()


class ReplayIn(Input):
    event_ids: list[str] = Field(default_factory=list, max_length=10000)
    all: bool = False
    project_id: Identifier | None = None
    since: Instant | None = None


class WindowReplayIn(Input):
    project_id: Identifier
    since: Instant
    until: Instant | None = None
    webhook_status: WebhookStatus | None = None


@routes.get("/api/admin/dead-letters")
@admin_only
async def list_dead_letters(request: web.Request) -> web.Response:
    rows, next_cursor = await request.app[OPERATIONS].dead_letter_page(
        project_id=request.query.get("project_id") or None,
        since=parse_since(request.query.get("since")),
        limit=query_int(request, "limit", default=100, low=1, high=1000),
        cursor=request.query.get("cursor") or None,
    )
    views = [row.model_dump(mode="json") for row in rows]
    return web.json_response({"dead_letters": views, "next_cursor": next_cursor})


@routes.post("/api/admin/dead-letters/replay")
@admin_only
async def replay(request: web.Request) -> web.Response:
    operations = request.app[OPERATIONS]
    body = await read_model(request, ReplayIn)
    if body.all == bool(body.event_ids):
        raise InvalidInput('give either "event_ids": [...] or "all": true')
    if body.all:
        replayed = await operations.replay_dead_letters(project_id=body.project_id, since=body.since)
    else:
        await operations.require_events(body.event_ids)
        replayed = (await operations.replay(body.event_ids)).count
    return web.json_response({"replayed": replayed})


@routes.delete("/api/admin/dead-letters/{event_id}")
@admin_only
async def delete_dead_letter(request: web.Request) -> web.Response:
    event_id = request.match_info["event_id"]
    await request.app[OPERATIONS].purge_dead_letter(event_id)
    return web.json_response({"deleted": event_id})


@routes.post("/api/admin/events/replay")
@admin_only
async def replay_window(request: web.Request) -> web.Response:
    """Send again every event of a project created in [since, until], delivered ones too, with
    their own webhook-id: a merchant that lost what it received (a restored backup) gets it again."""
    body = await read_model(request, WindowReplayIn)
    if body.until is not None and body.until < body.since:
        raise InvalidInput("until is before since")
    window = Window(body.project_id, body.since, body.until, body.webhook_status)
    replayed = await request.app[OPERATIONS].replay_window(window, limit=MAX_WINDOW_REPLAY)
    return web.json_response({"replayed": replayed.count})


@routes.get("/api/admin/unmatched-callbacks")
@admin_only
async def unmatched_callbacks(request: web.Request) -> web.Response:
    """Correctly signed callbacks for orders the relay does not know (never made here, or deleted
    by retention), newest first: a bounded summary of each, the newest 1000."""
    limit = query_int(request, "limit", default=100, low=1, high=1000)
    return web.json_response({"callbacks": await request.app[STORE].unmatched(limit)})


@routes.get("/api/admin/audit")
@admin_only
async def audit_log(request: web.Request) -> web.Response:
    """Every change made through the admin token, a project's API key or the console, oldest first
    from ``since``, a page at a time (kept RELAY_RETENTION)."""
    page = await request.app[AUDIT].page(
        since=parse_since(request.query.get("since")),
        limit=query_int(request, "limit", default=100, low=1, high=1000),
        cursor=request.query.get("cursor") or None,
    )
    entries = [entry.model_dump(mode="json") for entry in page.entries]
    return web.json_response({"entries": entries, "next_cursor": page.next_cursor})
