"""The merchant portal: one project's webhooks, for its merchant, behind a signed link
(``relay.portal``) and nothing else.

Mounted at ``/portal``; every page and form is under the link's token, ``/portal/{token}/...``,
and ``portal_page`` opens the link before anything: an edited, expired or revoked one is a 403
(and counts against its address, as a wrong API key does). Every id in the path is looked up
within the link's project, so another project's order, event or dead letter is a 404 whatever the
merchant edits. State-changing forms carry the link's CSRF token; each answers with a redirect
(303) to a page whose notice is one of ``NOTICES`` (a fixed text: a link cannot make the page say
something else). Rotating the secret answers with the page that shows the new secret, once.

The pages are the console's templates (``relay/templates/parts``, ``purchase.html``,
``event.html``) in the portal's frame (``portal_base.html``), filled by the same functions
(``relay.console.pages.project_context`` and the rest) and acting through the same use cases
(``relay.replay.Operations``). Every change is audited as ``portal:{link id}``.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import structlog
from aiohttp import web

from relay.api.auth import audit_target, audited
from relay.api.builder import change_project, check_target
from relay.api.clients import client_address, limit_key
from relay.api.context import (
    CLOCK,
    EVENTS,
    FAILED_LINKS,
    OPERATIONS,
    PORTAL_LINKS,
    SETTINGS,
    STORE,
    TEMPLATES,
)
from relay.api.parsing import parse, parse_time, parse_webhook_status
from relay.console.middleware import SAFE_METHODS, see_other
from relay.console.pages import event_context, order_context, project_context
from relay.console.paths import PortalPaths
from relay.errors import Forbidden, InvalidInput, not_found
from relay.models import EventKind, Item, Project
from relay.portal import PortalLink
from relay.replay import MAX_WINDOW_REPLAY, Window
from relay.templating import static_text

log = structlog.get_logger("relay.portal")
routes = web.RouteTableDef()

DEAD_LETTER_PAGE = 100
# A window replay or "replay all" from the portal: one per project a minute, at most
# MAX_WINDOW_REPLAY events each, so a link cannot turn the relay into a flood of webhooks.
BULK_REPLAY_EVERY = timedelta(minutes=1)
REFUSED = "this portal link is wrong, expired or revoked; ask for a new one"
NOTICES = {
    "retried": "The webhook was queued again.",
    "replayed": "The dead letter was sent again.",
    "replayed-all": "Every dead letter was sent again.",
    "window": "The window's events were queued again.",
    "webhook-url": "The webhook URL was saved.",
    "enabled": "The endpoint was enabled. Replay its dead letters to send what it missed.",
}

SEGMENT = re.compile(r"[A-Za-z0-9._~%-]+")  # a path segment a back link may have

PortalHandler = Callable[[web.Request, PortalLink, Project], Awaitable[web.StreamResponse]]


def portal_page(handler: PortalHandler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def opened(request: web.Request) -> web.StreamResponse:
        links, now = request.config_dict[PORTAL_LINKS], request.config_dict[CLOCK]()
        link = await links.open(request.match_info["token"], now=now)
        if link is None:
            address = client_address(request, request.config_dict[SETTINGS].trusted_proxies)
            failures = request.config_dict[FAILED_LINKS]
            await failures.judge(limit_key(address), right=False, now=now)
            raise Forbidden(REFUSED)
        changing = request.method not in SAFE_METHODS
        if changing and not await links.csrf_matches(link, (await request.post()).get("csrf_token")):
            raise Forbidden("the form's CSRF token is missing or wrong; reload the page and try again")
        project = await request.config_dict[OPERATIONS].project(link.project_id)
        response = await handler(request, link, project)
        await audited(request, response, actor=f"portal:{link.id}", project_id=link.project_id)
        return response

    return opened


async def render(
    request: web.Request, link: PortalLink, name: str, *, status: int = 200, **context: Any
) -> web.Response:
    done = request.query.get("done", "")
    template = request.config_dict[TEMPLATES].get_template(name)
    body = template.render(
        context
        | {
            "layout": "portal_base.html",
            "paths": PortalPaths(link.token),
            "link": link,
            "session": None,
            "show_project": False,
            "csrf_token": await request.config_dict[PORTAL_LINKS].csrf_token(link),
            "flash": NOTICES.get(done),
        }
    )
    return web.Response(text=body, status=status, content_type="text/html")


def done(link: PortalLink, notice: str, *, back: object = None) -> web.Response:
    """The redirect after a POST: to ``back`` when it is a page of this link, else the overview."""
    paths = PortalPaths(link.token)
    page = back if isinstance(back, str) and _within(paths, back) else paths.project
    page = page.partition("?")[0]
    return see_other(f"{page}?done={notice}")


def _within(paths: PortalPaths, page: str) -> bool:
    """Whether ``page`` (its path) is one of this link's pages: plain path characters only, no
    empty or dot segments."""
    path = page.partition("?")[0]
    if path != paths.project and not path.startswith(paths.project + "/"):
        return False
    segments = path.removeprefix(paths.project + "/").split("/") if path != paths.project else []
    return all(SEGMENT.fullmatch(part) and part not in {".", ".."} for part in segments)


def _text(value: object) -> str:
    return value.strip() if isinstance(value, str) else ""


@routes.get("/portal.css")
async def stylesheet(request: web.Request) -> web.Response:
    return web.Response(text=static_text("console.css"), content_type="text/css")


@routes.get("/{token}")
@portal_page
async def overview(request: web.Request, link: PortalLink, project: Project) -> web.StreamResponse:
    operations = request.config_dict[OPERATIONS]
    rows, _ = await operations.dead_letter_page(
        project_id=project.id, since=None, limit=DEAD_LETTER_PAGE, cursor=None
    )
    dead_total = await request.config_dict[EVENTS].dead_letter_count(project_id=project.id)
    context = await project_context(request, project)
    return await render(
        request,
        link,
        "portal.html",
        **context,
        rows=rows,
        dead_total=dead_total,
        dead_page=DEAD_LETTER_PAGE,
        max_window=MAX_WINDOW_REPLAY,
    )


@routes.get("/{token}/orders/{order_id}")
@portal_page
async def order_page(request: web.Request, link: PortalLink, project: Project) -> web.StreamResponse:
    return await render(request, link, "purchase.html", **await order_context(request, project))


@routes.get("/{token}/events/{event_id}")
@portal_page
async def event_page(request: web.Request, link: PortalLink, project: Project) -> web.StreamResponse:
    return await render(request, link, "event.html", **await event_context(request, project))


@routes.post("/{token}/orders/{order_id}/retry")
@portal_page
async def retry(request: web.Request, link: PortalLink, project: Project) -> web.StreamResponse:
    purchase = await request.config_dict[OPERATIONS].retry_purchase(
        project.id, request.match_info["order_id"]
    )
    log.info("portal_retry", link_id=link.id, order_id=purchase.order_id)
    return done(link, "retried", back=(await request.post()).get("back"))


@routes.post("/{token}/dead-letters/{event_id}/replay")
@portal_page
async def replay_one(request: web.Request, link: PortalLink, project: Project) -> web.StreamResponse:
    event_id = request.match_info["event_id"]
    event = await request.config_dict[EVENTS].get(event_id)
    if event is None or event.project_id != project.id or event.kind is not EventKind.MERCHANT:
        raise not_found("dead letter", event_id)
    await request.config_dict[OPERATIONS].resend(event.id)
    log.info("portal_replay", link_id=link.id, event_id=event.id)
    return done(link, "replayed", back=(await request.post()).get("back"))


@routes.post("/{token}/dead-letters/replay-all")
@portal_page
async def replay_all(request: web.Request, link: PortalLink, project: Project) -> web.StreamResponse:
    operations = request.config_dict[OPERATIONS]
    await operations.cooldowns.claim("bulk replay", project.id, every=BULK_REPLAY_EVERY)
    replayed = await operations.replay_dead_letters(
        project_id=project.id, since=None, limit=MAX_WINDOW_REPLAY
    )
    log.info("portal_replay_all", link_id=link.id, replayed=replayed)
    return done(link, "replayed-all")


@routes.post("/{token}/replay")
@portal_page
async def replay_window(request: web.Request, link: PortalLink, project: Project) -> web.StreamResponse:
    """Send again every event of the project created in [since, until] (only those in
    ``webhook_status`` when one is chosen), as ``POST /api/admin/events/replay`` does."""
    form = await request.post()
    since, until = _text(form.get("since")), _text(form.get("until"))
    if not since:
        raise InvalidInput("since: give the start of the window, e.g. 2026-05-06T10:00:00Z")
    window = Window(
        project_id=project.id,
        since=parse_time(since),
        until=parse_time(until, name="until") if until else None,
        webhook_status=parse_webhook_status(_text(form.get("webhook_status")) or None),
    )
    if window.until is not None and window.until < window.since:
        raise InvalidInput("until is before since")
    operations = request.config_dict[OPERATIONS]
    await operations.cooldowns.claim("bulk replay", project.id, every=BULK_REPLAY_EVERY)
    replayed = await operations.replay_window(window, limit=MAX_WINDOW_REPLAY)
    log.info("portal_replay_window", link_id=link.id, replayed=replayed.count)
    return done(link, "window")


@routes.post("/{token}/webhook-url")
@portal_page
async def set_webhook_url(request: web.Request, link: PortalLink, project: Project) -> web.StreamResponse:
    url = _text((await request.post()).get("webhook_url")) or None
    await change_project(request, project.id, {"webhook_url": url})
    log.info("portal_webhook_url", link_id=link.id)
    return done(link, "webhook-url")


@routes.post("/{token}/{kind:items|plans}/{entry_id}/webhook-url")
@portal_page
async def set_catalogue_url(request: web.Request, link: PortalLink, project: Project) -> web.StreamResponse:
    """An item's or plan's own webhook URL (empty: its events go to the project's)."""
    store, kind, entry_id = (
        request.config_dict[STORE],
        request.match_info["kind"],
        request.match_info["entry_id"],
    )
    entry = await (store.get_item(entry_id) if kind == "items" else store.get_plan(entry_id))
    if entry is None or entry.project_id != project.id:
        raise not_found(kind.removesuffix("s"), entry_id)
    url = _text((await request.post()).get("webhook_url")) or None
    changed = parse(
        type(entry), entry.model_dump() | {"webhook_url": url, "updated_at": request.config_dict[CLOCK]()}
    )
    check_target(request.config_dict[SETTINGS], changed.webhook_url)
    if isinstance(changed, Item):
        await store.put_item(changed, set_stock=False)  # the live count is the purchases'
    else:
        await store.put_plan(changed)
    log.info("portal_catalogue_url", link_id=link.id, kind=kind, entry_id=entry_id)
    return done(link, "webhook-url")


@routes.post("/{token}/endpoints/enable")
@portal_page
async def enable_endpoint(request: web.Request, link: PortalLink, project: Project) -> web.StreamResponse:
    await request.config_dict[OPERATIONS].enable_endpoint(
        project.id, _text((await request.post()).get("url"))
    )
    return done(link, "enabled")


@routes.post("/{token}/secret/rotate")
@portal_page
async def rotate_secret(request: web.Request, link: PortalLink, project: Project) -> web.StreamResponse:
    """The new secret, shown on this answer only (never in a URL, never stored in the page's
    address: reloading does not show it again)."""
    rotated = await request.config_dict[OPERATIONS].rotate_secret(project.id)
    log.info("portal_rotate_secret", link_id=link.id)
    return await render(
        request,
        link,
        "portal_secret.html",
        project=rotated,
        secret=rotated.webhook_secret,
        previous_expires_at=rotated.previous_secrets[0].expires_at,
    )


@routes.post("/{token}/test-event")
@portal_page
async def send_test_event(request: web.Request, link: PortalLink, project: Project) -> web.StreamResponse:
    event = await request.config_dict[OPERATIONS].send_test(project.id)
    audit_target(request, event_id=event.id)
    log.info("portal_test_event", link_id=link.id, event_id=event.id)
    return see_other(PortalPaths(link.token).event(event.id))
