"""The console's edge: sessions, CSRF checks, rendering, security headers and HTML error pages.

Console handlers are wrapped by ``public_page`` (the login form) or ``operator_page`` (everything
else). The wrappers turn errors into a small HTML page, where the API's middleware would answer
JSON, and give every console response the same security headers. ``operator_page`` also requires a
session (a GET without one is sent to the login form, anything else is refused) and, on every
state-changing request, the session's CSRF token in the form, compared in constant time.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import jinja2
import structlog
from aiohttp import web

from relay.api.context import SETTINGS, STORE
from relay.api.middleware import REDIS_DOWN, Handler
from relay.console.sessions import COOKIE, Session, SessionStore
from relay.errors import Forbidden, RelayError
from relay.models import iso_z

log = structlog.get_logger("relay.console")

PageHandler = Callable[[web.Request, Session], Awaitable[web.StreamResponse]]

# No script at all: plain forms and a redirect after each POST.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}
SAFE_METHODS = {"GET", "HEAD"}
LOGIN = "/console/login"
LOCAL_PATH = re.compile(r"/console(?:[/?][!-\[\]-~]*)?")  # printable, no backslash, no "//" host


@dataclass(frozen=True)
class Console:
    templates: jinja2.Environment
    css: str


CONSOLE = web.AppKey("console", Console)


def make_console() -> Console:
    templates = jinja2.Environment(
        loader=jinja2.PackageLoader("relay.console", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    templates.filters["money"] = _money
    templates.filters["when"] = _when
    css = templates.loader.get_source(templates, "console.css")[0] if templates.loader else ""
    return Console(templates=templates, css=css)


def _money(amount: int) -> str:
    return f"{amount:,}"


def _when(moment: datetime | None) -> str:
    return iso_z(moment).replace("T", " ") if moment else ""


def sessions(request: web.Request) -> SessionStore:
    return SessionStore(request.app[STORE].redis, prefix=request.app[SETTINGS].key_prefix)


async def current_session(request: web.Request) -> Session | None:
    return await sessions(request).get(request.cookies.get(COOKIE))


async def render(
    request: web.Request, name: str, *, session: Session | None, status: int = 200, **context: Any
) -> web.Response:
    flash = await sessions(request).pop_flash(session) if session else None
    template = request.app[CONSOLE].templates.get_template(name)
    body = template.render(
        context | {"session": session, "csrf_token": session.csrf if session else "", "flash": flash}
    )
    return web.Response(text=body, status=status, content_type="text/html")


def see_other(location: str) -> web.Response:
    """The redirect after a POST (303: the browser follows it with a GET)."""
    return web.Response(status=303, headers={"Location": location})


def local_path(raw: object, *, default: str) -> str:
    """``raw`` when it is a console path on this site (a form's "back" field), else ``default``."""
    return raw if isinstance(raw, str) and LOCAL_PATH.fullmatch(raw) else default


def public_page(handler: Handler) -> Handler:
    async def wrapped(request: web.Request) -> web.StreamResponse:
        return _secured(await _guarded(request, handler))

    return wrapped


def operator_page(handler: PageHandler) -> Handler:
    async def authorised(request: web.Request) -> web.StreamResponse:
        session = await current_session(request)
        if session is None:
            if request.method in SAFE_METHODS:
                return see_other(LOGIN)
            raise Forbidden("your console session has expired; log in again")
        if request.method not in SAFE_METHODS:
            token = (await request.post()).get("csrf_token")
            if not isinstance(token, str) or not session.csrf_matches(token):
                log.warning("console_csrf_rejected", path=request.path)
                raise Forbidden("the form's CSRF token is missing or wrong; reload the page and try again")
        return await handler(request, session)

    async def wrapped(request: web.Request) -> web.StreamResponse:
        return _secured(await _guarded(request, authorised))

    return wrapped


def _secured(response: web.StreamResponse) -> web.StreamResponse:
    response.headers.update(SECURITY_HEADERS)
    return response


async def _guarded(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Errors as HTML pages: the console's counterpart of the API's JSON error middleware."""
    try:
        return await handler(request)
    except RelayError as error:
        return await _error_page(request, error.status, type(error).__name__, error.detail)
    except REDIS_DOWN as error:
        log.warning("store_unavailable", error=type(error).__name__)
        return await _error_page(request, 503, "StoreUnavailable", "the store is unavailable; retry later")
    except web.HTTPException as error:
        if error.status < 400:
            location = error.headers.get("Location")
            return web.Response(status=error.status, headers={"Location": location} if location else None)
        return await _error_page(request, error.status, error.reason, error.reason)
    except Exception:
        # The edge of the console: a bug still answers a page, and is logged with its traceback.
        log.exception("unhandled_error")
        return await _error_page(request, 500, "InternalError", "an internal error occurred")


async def _error_page(request: web.Request, status: int, title: str, detail: str) -> web.Response:
    template = request.app[CONSOLE].templates.get_template("error.html")
    body = template.render(status=status, title=title, detail=detail)
    return web.Response(text=body, status=status, content_type="text/html")
