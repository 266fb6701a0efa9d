"""The operator console's pages: log in, projects with their endpoints' health, plans and recent
subscriptions, orders of every kind (items, shop payments, subscription periods) with their attempts
and refunds, dead letters, callbacks for unknown orders.

Reads and actions go through the same use cases as the API (``relay.replay.Operations``): "Retry"
and "Replay" are ``retry-webhook`` and the dead-letter replay, so the event keeps its
``webhook-id``. Every POST answers with a redirect (303) to a page, which shows the outcome as a
one-line notice. Routes are relative to the console's mount point, ``/console``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from urllib.parse import urlencode

import structlog
from aiohttp import web

from relay.api.auth import admin_token_accepted, audit_target
from relay.api.clients import client_address
from relay.api.context import AUDIT, CLOCK, EVENTS, OPERATIONS, PORTAL_LINKS, SESSIONS, SETTINGS, STORE
from relay.api.parsing import parse_project_id, parse_since, parse_time, parse_webhook_status, query_int
from relay.charts import charts, delivery_stats
from relay.console.middleware import (
    LOGIN,
    current_session,
    local_path,
    operator_page,
    render,
    see_other,
    session_cookie,
)
from relay.console.paths import ConsolePaths
from relay.errors import InvalidInput, not_found
from relay.models import Attempt, EventKind, EventRecord, OrderKind, Project, PurchaseStatus, WebhookStatus
from relay.search import OrderFilter, OrderPage
from relay.sessions import SESSION_TTL, Session
from relay.store import Store
from relay.templating import static_text

log = structlog.get_logger("relay.console")
routes = web.RouteTableDef()

DEAD_LETTER_PAGE = 100
PROJECTS_PAGE = 100
AUDIT_PAGE = 200  # audit entries one console page shows
UNMATCHED_PAGE = 200
SUBSCRIPTIONS_PAGE = 100


@routes.get("/console.css")
async def stylesheet(request: web.Request) -> web.Response:
    return web.Response(text=static_text("console.css"), content_type="text/css")


@routes.get("/")
async def trailing_slash(request: web.Request) -> web.StreamResponse:
    return see_other("/console")


# --- session ------------------------------------------------------------------------------------


@routes.get("/login")
async def login_form(request: web.Request) -> web.StreamResponse:
    if await current_session(request) is not None:
        return see_other("/console")
    return await render(request, "login.html", session=None, error=None)


@routes.post("/login")
async def login(request: web.Request) -> web.StreamResponse:
    address = client_address(request, request.config_dict[SETTINGS].trusted_proxies)
    token = (await request.post()).get("token")
    if not isinstance(token, str) or not token.strip():
        return await _refused(request, address)
    # Past the limit of failures: 429 from this address, right token or not.
    if not await admin_token_accepted(request, token.strip(), address=address):
        return await _refused(request, address)
    sessions = request.config_dict[SESSIONS]
    previous = await current_session(request)
    if previous is not None:
        await sessions.delete(previous)
    session = await sessions.create(now=request.config_dict[CLOCK]())
    log.info("console_login", outcome="ok", remote=address)
    response = see_other("/console")
    name, path, secure = session_cookie(request)
    response.set_cookie(
        name,
        session.id,
        path=path,
        max_age=int(SESSION_TTL.total_seconds()),
        httponly=True,
        samesite="Strict",
        secure=secure,
    )
    return response


async def _refused(request: web.Request, address: str) -> web.StreamResponse:
    log.warning("console_login", outcome="refused", remote=address)
    return await render(request, "login.html", session=None, status=401, error="That is not the admin token.")


@routes.post("/logout")
@operator_page
async def logout(request: web.Request, session: Session) -> web.StreamResponse:
    await request.config_dict[SESSIONS].delete(session)
    response = see_other(LOGIN)
    name, path, secure = session_cookie(request)
    response.del_cookie(name, path=path, httponly=True, samesite="Strict", secure=secure)
    return response


# --- projects and purchases ----------------------------------------------------------------------


async def _projects(store: Store) -> list[Project]:
    projects = [await store.get_project(project_id) for project_id in await store.project_ids()]
    return sorted((p for p in projects if p is not None), key=lambda p: (p.name.lower(), p.id))


@routes.get("")
@operator_page
async def projects_page(request: web.Request, session: Session) -> web.StreamResponse:
    """Every project, oldest first, PROJECTS_PAGE at a time."""
    projects, next_cursor = await request.config_dict[STORE].project_page(
        limit=PROJECTS_PAGE, cursor=request.query.get("cursor") or None
    )
    dead = await request.config_dict[EVENTS].dead_letter_counts([project.id for project in projects])
    next_url = f"/console?{urlencode({'cursor': next_cursor})}" if next_cursor else None
    return await render(
        request, "projects.html", session=session, projects=projects, dead=dead, next_url=next_url
    )


ORDER_FILTERS = ("q", "kind", "status", "webhook_status", "since", "until")
DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


def _choice(kind: type[StrEnum], name: str, raw: str | None) -> Any:
    if not raw:
        return None
    try:
        return kind(raw)
    except ValueError:
        raise InvalidInput(f"{name} must be one of: {', '.join(choice.value for choice in kind)}") from None


def order_filter(request: web.Request) -> tuple[str, OrderFilter]:
    """The search box (an id, or a buyer's email) and the filters of the orders' table."""
    query = request.query
    q = query.get("q", "").strip()
    until = query.get("until", "").strip()
    end = parse_time(until, name="until") if until else None
    if end is not None and DAY.fullmatch(until):  # a day given alone: to its end
        end += timedelta(days=1) - timedelta(milliseconds=1)
    wanted = OrderFilter(
        kind=_choice(OrderKind, "kind", query.get("kind")),
        status=_choice(PurchaseStatus, "status", query.get("status")),
        webhook_status=parse_webhook_status(query.get("webhook_status")),
        since=parse_since(query.get("since")),
        until=end,
        buyer_email=q if "@" in q else None,
    )
    return q, wanted


async def project_context(request: web.Request, project: Project) -> dict[str, Any]:
    """What a project's page shows, in the console and in the portal: its endpoints, its orders
    (found by id or email, filtered, a page at a time from ``?cursor``), plans, subscriptions and
    items. While an order on the page waits for its webhook, the page reloads itself."""
    operations = request.config_dict[OPERATIONS]
    limit = query_int(request, "limit", default=100, low=1, high=1000)
    q, wanted = order_filter(request)
    found = await operations.search.find(project.id, q) if q and wanted.buyer_email is None else None
    if found is not None:
        page = OrderPage([found] if wanted.matches(found) else [], None, 1)
    else:
        if q and wanted.buyer_email is None:  # no order's or webhook's id: part of a buyer's email
            wanted = replace(wanted, buyer_email=q)
        page = await operations.search.page(
            project.id, wanted, limit=limit, cursor=request.query.get("cursor") or None
        )
    filters = {name: request.query.get(name, "").strip() for name in ORDER_FILTERS}
    waiting = {WebhookStatus.PENDING}  # in flight now (a retry may wait hours for its turn)
    hours = await delivery_stats(
        request.config_dict[STORE].redis,
        request.config_dict[EVENTS],
        project.id,
        now=request.config_dict[CLOCK](),
    )
    return {
        "project": project,
        "charts": charts(hours),
        "items": await request.config_dict[STORE].list_items(project.id),
        "endpoints": await operations.endpoint_health(project.id),
        "disable_after": request.config_dict[SETTINGS].endpoint_disable_after,
        "purchases": page.orders,
        "scanned": page.scanned,
        "next_query": urlencode(
            {**{k: v for k, v in filters.items() if v}, "limit": limit, "cursor": page.next_cursor}
        )
        if page.next_cursor
        else None,
        "filters": filters,
        "filtered": any(filters.values()) or bool(request.query.get("cursor")),
        "refresh": any(purchase.webhook_status in waiting for purchase in page.orders),
        "plans": await operations.plans(project.id),
        "subscriptions": await operations.recent_subscriptions(project.id, limit=SUBSCRIPTIONS_PAGE),
        "subscriptions_page": SUBSCRIPTIONS_PAGE,
        "webhook_status": filters["webhook_status"],
        "statuses": [choice.value for choice in WebhookStatus],
        "kinds": [choice.value for choice in OrderKind],
        "order_statuses": [choice.value for choice in PurchaseStatus],
        "limit": limit,
        "here": request.path_qs,
    }


async def order_context(request: web.Request, project: Project) -> dict[str, Any]:
    """What the page of an order (``{order_id}``) shows, in the console and in the portal: the
    order, its event and attempt log, and its refunds with their last attempts."""
    operations, events = request.config_dict[OPERATIONS], request.config_dict[EVENTS]
    purchase = await operations.purchase(project.id, request.match_info["order_id"])
    event = await events.get(purchase.event_id) if purchase.event_id else None
    refunds = await operations.refunds(purchase)
    logs = await events.attempts([purchase.event_id] if purchase.event_id else [])
    last = await events.last_attempts([refund.id for refund in refunds])
    return {
        "project": project,
        "purchase": purchase,
        "event": event,
        "attempts": logs.get(purchase.event_id or "", []),
        "refunds": [refund_row(refund, last.get(refund.id)) for refund in refunds],
        "here": request.path_qs,
    }


async def event_context(request: web.Request, project: Project) -> dict[str, Any]:
    """An event of the project (``{event_id}``: a test event) and its attempt log; another
    project's is a 404."""
    events, event_id = request.config_dict[EVENTS], request.match_info["event_id"]
    event = await events.get(event_id)
    if event is None or event.project_id != project.id or event.kind is not EventKind.MERCHANT:
        raise not_found("event", event_id)
    return {"project": project, "event": event, "attempts": (await events.attempts([event.id]))[event.id]}


ProjectContext = Callable[[web.Request, Project], Awaitable[dict[str, Any]]]


async def _project_view(
    request: web.Request, session: Session, name: str, context: ProjectContext
) -> web.Response:
    project = await request.config_dict[OPERATIONS].project(request.match_info["project_id"])
    shown = await context(request, project)
    return await render(request, name, session=session, paths=ConsolePaths(project.id), **shown)


@routes.get("/projects/{project_id}")
@operator_page
async def project_page(request: web.Request, session: Session) -> web.StreamResponse:
    return await _project_view(request, session, "project.html", project_context)


@routes.get("/projects/{project_id}/purchases/{order_id}")
@operator_page
async def purchase_page(request: web.Request, session: Session) -> web.StreamResponse:
    return await _project_view(request, session, "purchase.html", order_context)


@routes.get("/projects/{project_id}/events/{event_id}")
@operator_page
async def event_page(request: web.Request, session: Session) -> web.StreamResponse:
    return await _project_view(request, session, "event.html", event_context)


@routes.post("/projects/{project_id}/test-event")
@operator_page
async def send_test_event(request: web.Request, session: Session) -> web.StreamResponse:
    project_id = request.match_info["project_id"]
    event = await request.config_dict[OPERATIONS].send_test(project_id)
    audit_target(request, event_id=event.id)
    log.info("console_test_event", project_id=project_id, event_id=event.id)
    return see_other(ConsolePaths(project_id).event(event.id))


@routes.post("/projects/{project_id}/portal")
@operator_page
async def open_portal(request: web.Request, session: Session) -> web.StreamResponse:
    """A new portal link of the project, opened (the operator sees what its merchant sees)."""
    project = await request.config_dict[OPERATIONS].project(request.match_info["project_id"])
    link = await request.config_dict[PORTAL_LINKS].issue(project.id, now=request.config_dict[CLOCK]())
    audit_target(request, link_id=link.id)
    log.info("console_portal_link", project_id=project.id, link_id=link.id)
    return see_other(link.path)


@dataclass(frozen=True)
class RefundRow:
    """A refund an order sent, as its page shows it: the event, and what its body says."""

    event: EventRecord
    amount: int | None
    refunded_at: str | None
    reason: str | None
    last_attempt: Attempt | None


def refund_row(event: EventRecord, last_attempt: Attempt | None) -> RefundRow:
    try:
        body = json.loads(event.body)
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}

    def text(name: str) -> str | None:
        value = body.get(name)
        return value if isinstance(value, str) else None

    amount = body.get("refund_amount")
    return RefundRow(
        event=event,
        amount=amount if isinstance(amount, int) else None,
        refunded_at=text("refunded_at"),
        reason=text("reason"),
        last_attempt=last_attempt,
    )


@routes.post("/projects/{project_id}/purchases/{order_id}/retry")
@operator_page
async def retry_purchase(request: web.Request, session: Session) -> web.StreamResponse:
    operations = request.config_dict[OPERATIONS]
    project = await operations.project(request.match_info["project_id"])
    purchase = await operations.retry_purchase(project.id, request.match_info["order_id"])
    log.info("console_retry", order_id=purchase.order_id, event_id=purchase.event_id)
    await request.config_dict[SESSIONS].flash(session, f"Webhook of {purchase.order_id} queued again.")
    back = local_path((await request.post()).get("back"), default=ConsolePaths(project.id).project)
    return see_other(back)


@routes.post("/projects/{project_id}/endpoints/enable")
@operator_page
async def enable_endpoint(request: web.Request, session: Session) -> web.StreamResponse:
    project_id = request.match_info["project_id"]
    url = _text((await request.post()).get("url"))
    health = await request.config_dict[OPERATIONS].enable_endpoint(project_id, url)
    log.info("console_enable_endpoint", project_id=project_id)
    await request.config_dict[SESSIONS].flash(
        session, f"Endpoint {health.url} enabled. Replay its dead letters to send what it missed."
    )
    return see_other(ConsolePaths(project_id).project)


@routes.get("/unmatched")
@operator_page
async def unmatched_page(request: web.Request, session: Session) -> web.StreamResponse:
    callbacks = await request.config_dict[STORE].unmatched(UNMATCHED_PAGE)
    return await render(request, "unmatched.html", session=session, callbacks=callbacks)


# --- dead letters ---------------------------------------------------------------------------------


def _dead_letter_filter(values: dict[str, str]) -> tuple[str | None, datetime | None]:
    return parse_project_id(values.get("project_id")), parse_since(values.get("since"))


def _dead_letters_url(values: dict[str, str], *, cursor: str | None = None) -> str:
    query = {name: values[name] for name in ("project_id", "since") if values.get(name)}
    if cursor:
        query["cursor"] = cursor
    return "/console/dead-letters" + (f"?{urlencode(query)}" if query else "")


def _text(value: object) -> str:
    """A submitted form field's text ("" for a missing or file field)."""
    return value.strip() if isinstance(value, str) else ""


@routes.get("/dead-letters")
@operator_page
async def dead_letters_page(request: web.Request, session: Session) -> web.StreamResponse:
    operations = request.config_dict[OPERATIONS]
    values = {name: request.query.get(name, "").strip() for name in ("project_id", "since")}
    project_id, since = _dead_letter_filter(values)
    rows, next_cursor = await operations.dead_letter_page(
        project_id=project_id, since=since, limit=DEAD_LETTER_PAGE, cursor=request.query.get("cursor") or None
    )
    projects = await _projects(request.config_dict[STORE])
    return await render(
        request,
        "dead_letters.html",
        session=session,
        rows=rows,
        total=await request.config_dict[EVENTS].dead_letter_count(project_id=project_id, since=since),
        projects=projects,
        names={project.id: project.name for project in projects},
        filter=values,
        next_url=_dead_letters_url(values, cursor=next_cursor) if next_cursor else None,
        here=request.path_qs,
    )


@routes.post("/dead-letters/{event_id}/replay")
@operator_page
async def replay_one(request: web.Request, session: Session) -> web.StreamResponse:
    event = await request.config_dict[OPERATIONS].resend(request.match_info["event_id"])
    log.info("console_replay", event_id=event.id, order_id=event.order_id)
    await request.config_dict[SESSIONS].flash(session, f"Dead letter {event.id} ({event.order_id}) replayed.")
    return see_other(local_path((await request.post()).get("back"), default="/console/dead-letters"))


@routes.post("/dead-letters/replay-all")
@operator_page
async def replay_all(request: web.Request, session: Session) -> web.StreamResponse:
    form = await request.post()
    values = {name: _text(form.get(name)) for name in ("project_id", "since")}
    project_id, since = _dead_letter_filter(values)
    replayed = await request.config_dict[OPERATIONS].replay_dead_letters(project_id=project_id, since=since)
    log.info("console_replay_all", replayed=replayed, project_id=project_id)
    noun = "dead letter" if replayed == 1 else "dead letters"
    await request.config_dict[SESSIONS].flash(session, f"Replayed {replayed} {noun}.")
    return see_other(_dead_letters_url(values))


@routes.get("/audit")
@operator_page
async def audit_page(request: web.Request, session: Session) -> web.StreamResponse:
    """The audit log, a page at a time from ``since`` (``cursor`` for the next)."""
    page = await request.config_dict[AUDIT].page(
        since=parse_since(request.query.get("since")),
        limit=AUDIT_PAGE,
        cursor=request.query.get("cursor") or None,
    )
    return await render(
        request, "audit.html", session=session, entries=page.entries, next_cursor=page.next_cursor
    )
