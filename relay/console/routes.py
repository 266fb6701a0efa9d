"""The operator console's pages: log in, projects, purchases and their attempts, dead letters.

Reads go through the same store as the API; "Retry" and "Replay" call ``relay.domain.resend``
exactly as ``retry-webhook`` and the dead-letter replay do, so the event keeps its ``webhook-id``.
Every POST answers with a redirect (303) to a page, which shows the outcome as a one-line notice.
"""

from __future__ import annotations

import re
from datetime import datetime
from urllib.parse import urlencode

import structlog
from aiohttp import web

from relay.api.admin import parse_since
from relay.api.builder import parse_webhook_status
from relay.api.context import ARQ, CLOCK, EVENTS, METRICS, SETTINGS, STORE
from relay.api.middleware import admin_token_matches, not_found, query_int
from relay.console.pages import (
    CONSOLE,
    LOGIN,
    current_session,
    local_path,
    operator_page,
    public_page,
    render,
    see_other,
    sessions,
)
from relay.console.sessions import COOKIE, COOKIE_PATH, SESSION_TTL, Session
from relay.deadletters import dead_letter_ids, dead_letter_views, replay_events
from relay.domain import resend
from relay.errors import Conflict, InvalidInput
from relay.events import EventStore
from relay.models import ID_PATTERN, Project, Purchase, WebhookStatus
from relay.store import Store, to_ms

log = structlog.get_logger("relay.console")
routes = web.RouteTableDef()

DEAD_LETTER_PAGE = 100


@routes.get("/console/console.css")
@public_page
async def stylesheet(request: web.Request) -> web.Response:
    return web.Response(text=request.app[CONSOLE].css, content_type="text/css")


# --- session ------------------------------------------------------------------------------------


@routes.get(LOGIN)
@public_page
async def login_form(request: web.Request) -> web.StreamResponse:
    if await current_session(request) is not None:
        return see_other("/console")
    return await render(request, "login.html", session=None, error=None)


@routes.post(LOGIN)
@public_page
async def login(request: web.Request) -> web.StreamResponse:
    token = (await request.post()).get("token")
    if not isinstance(token, str) or not admin_token_matches(request.app[SETTINGS], token.strip()):
        log.warning("console_login", outcome="refused", remote=request.remote)
        return await render(
            request, "login.html", session=None, status=401, error="That is not the admin token."
        )
    store = sessions(request)
    previous = await current_session(request)
    if previous is not None:
        await store.delete(previous)
    session = await store.create(now=request.app[CLOCK]())
    log.info("console_login", outcome="ok", remote=request.remote)
    response = see_other("/console")
    response.set_cookie(
        COOKIE,
        session.id,
        path=COOKIE_PATH,
        max_age=int(SESSION_TTL.total_seconds()),
        httponly=True,
        samesite="Strict",
        secure=_https(request),
    )
    return response


def _https(request: web.Request) -> bool:
    """Whether the browser reached the console over https: directly, or through a TLS-terminating
    proxy in front of a relay whose RELAY_PUBLIC_BASE_URL is https."""
    return request.secure or request.app[SETTINGS].public_base_url.startswith("https://")


@routes.post("/console/logout")
@operator_page
async def logout(request: web.Request, session: Session) -> web.StreamResponse:
    await sessions(request).delete(session)
    response = see_other(LOGIN)
    response.del_cookie(COOKIE, path=COOKIE_PATH, httponly=True, samesite="Strict", secure=_https(request))
    return response


# --- projects and purchases ----------------------------------------------------------------------


async def _projects(store: Store) -> list[Project]:
    projects = [await store.get_project(project_id) for project_id in await store.project_ids()]
    return sorted((p for p in projects if p is not None), key=lambda p: (p.name.lower(), p.id))


async def _project(store: Store, project_id: str) -> Project:
    project = await store.get_project(project_id)
    if project is None:
        raise not_found("project", project_id)
    return project


async def _purchase(store: Store, project_id: str, order_id: str) -> Purchase:
    purchase = await store.get_purchase(order_id)
    if purchase is None or purchase.project_id != project_id:
        raise not_found("purchase", order_id)
    return purchase


async def _dead_letter_counts(events: EventStore, project_ids: list[str]) -> dict[str, int]:
    async with events.redis.pipeline(transaction=False) as pipe:
        for project_id in project_ids:
            pipe.zcard(events.keys.project_dead_letters(project_id))
        counts = await pipe.execute()
    return dict(zip(project_ids, (int(count) for count in counts), strict=True))


@routes.get("/console")
@operator_page
async def projects_page(request: web.Request, session: Session) -> web.StreamResponse:
    projects = await _projects(request.app[STORE])
    dead = await _dead_letter_counts(request.app[EVENTS], [project.id for project in projects])
    return await render(request, "projects.html", session=session, projects=projects, dead=dead)


@routes.get("/console/projects/{project_id}")
@operator_page
async def project_page(request: web.Request, session: Session) -> web.StreamResponse:
    store = request.app[STORE]
    project = await _project(store, request.match_info["project_id"])
    status = parse_webhook_status(request.query.get("webhook_status"))
    limit = query_int(request, "limit", default=100, low=1, high=1000)
    purchases = await store.list_purchases(project.id, webhook_status=status, limit=limit)
    return await render(
        request,
        "project.html",
        session=session,
        project=project,
        items=await store.list_items(project.id),
        purchases=purchases,
        webhook_status=status.value if status else "",
        statuses=[choice.value for choice in WebhookStatus],
        limit=limit,
        here=request.path_qs,
    )


@routes.get("/console/projects/{project_id}/purchases/{order_id}")
@operator_page
async def purchase_page(request: web.Request, session: Session) -> web.StreamResponse:
    store, events = request.app[STORE], request.app[EVENTS]
    project = await _project(store, request.match_info["project_id"])
    purchase = await _purchase(store, project.id, request.match_info["order_id"])
    event = await events.get(purchase.event_id) if purchase.event_id else None
    logs = await events.attempts([purchase.event_id]) if purchase.event_id else {}
    return await render(
        request,
        "purchase.html",
        session=session,
        project=project,
        purchase=purchase,
        event=event,
        attempts=logs.get(purchase.event_id or "", []),
        here=request.path_qs,
    )


@routes.post("/console/projects/{project_id}/purchases/{order_id}/retry")
@operator_page
async def retry_purchase(request: web.Request, session: Session) -> web.StreamResponse:
    store = request.app[STORE]
    project = await _project(store, request.match_info["project_id"])
    purchase = await _purchase(store, project.id, request.match_info["order_id"])
    if purchase.event_id is None:
        raise Conflict(f"purchase {purchase.order_id} is {purchase.status.value}; it has no webhook to send")
    await resend(request.app[EVENTS], request.app[ARQ], purchase.event_id, now=request.app[CLOCK]())
    request.app[METRICS].replays.inc()
    log.info("console_retry", order_id=purchase.order_id, event_id=purchase.event_id)
    await sessions(request).flash(session, f"Webhook of {purchase.order_id} queued again.")
    back = local_path((await request.post()).get("back"), default=f"/console/projects/{project.id}")
    return see_other(back)


# --- dead letters ---------------------------------------------------------------------------------


def _dead_letter_filter(values: dict[str, str]) -> tuple[str | None, datetime | None]:
    project_id = values.get("project_id", "").strip() or None
    if project_id is not None and not re.fullmatch(ID_PATTERN, project_id):
        raise InvalidInput("project_id is not a project id")
    return project_id, parse_since(values.get("since", "").strip() or None)


def _dead_letters_url(values: dict[str, str], *, cursor: str | None = None) -> str:
    query = {name: values[name] for name in ("project_id", "since") if values.get(name)}
    if cursor:
        query["cursor"] = cursor
    return "/console/dead-letters" + (f"?{urlencode(query)}" if query else "")


def _text(value: object) -> str:
    """A submitted form field's text ("" for a missing or file field)."""
    return value.strip() if isinstance(value, str) else ""


async def _dead_letter_total(events: EventStore, project_id: str | None, since: datetime | None) -> int:
    key = events.keys.project_dead_letters(project_id) if project_id else events.keys.dead_letters
    return int(await events.redis.zcount(key, to_ms(since) if since else 0, "+inf"))


@routes.get("/console/dead-letters")
@operator_page
async def dead_letters_page(request: web.Request, session: Session) -> web.StreamResponse:
    events = request.app[EVENTS]
    values = {name: request.query.get(name, "").strip() for name in ("project_id", "since")}
    project_id, since = _dead_letter_filter(values)
    cursor = request.query.get("cursor") or None
    page = await events.dead_letters(
        project_id=project_id, since=since, limit=DEAD_LETTER_PAGE, cursor=cursor
    )
    next_url = _dead_letters_url(values, cursor=page.next_cursor) if page.next_cursor else None
    projects = await _projects(request.app[STORE])
    return await render(
        request,
        "dead_letters.html",
        session=session,
        rows=await dead_letter_views(events, page.events),
        total=await _dead_letter_total(events, project_id, since),
        projects=projects,
        names={project.id: project.name for project in projects},
        filter=values,
        next_url=next_url,
        here=request.path_qs,
    )


@routes.post("/console/dead-letters/{event_id}/replay")
@operator_page
async def replay_one(request: web.Request, session: Session) -> web.StreamResponse:
    event = await resend(
        request.app[EVENTS], request.app[ARQ], request.match_info["event_id"], now=request.app[CLOCK]()
    )
    request.app[METRICS].replays.inc()
    log.info("console_replay", event_id=event.id, order_id=event.order_id)
    await sessions(request).flash(session, f"Dead letter {event.id} ({event.order_id}) replayed.")
    return see_other(local_path((await request.post()).get("back"), default="/console/dead-letters"))


@routes.post("/console/dead-letters/replay-all")
@operator_page
async def replay_all(request: web.Request, session: Session) -> web.StreamResponse:
    events, arq, now = request.app[EVENTS], request.app[ARQ], request.app[CLOCK]()
    form = await request.post()
    values = {name: _text(form.get(name)) for name in ("project_id", "since")}
    project_id, since = _dead_letter_filter(values)
    ids = await dead_letter_ids(events, project_id=project_id, since=since)
    request.app[METRICS].replays.inc(await replay_events(events, arq, ids, now=now))
    log.info("console_replay_all", replayed=len(ids), project_id=project_id)
    noun = "dead letter" if len(ids) == 1 else "dead letters"
    await sessions(request).flash(session, f"Replayed {len(ids)} {noun}.")
    return see_other(_dead_letters_url(values))


# Last: any other /console path is an HTML 404, not the API's JSON one.
@routes.route("*", "/console/{tail:.*}")
@public_page
async def no_such_page(request: web.Request) -> web.StreamResponse:
    if request.path == "/console/" and request.method == "GET":
        return see_other("/console")
    raise not_found("page", request.path)
