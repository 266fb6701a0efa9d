"""The console's edge: HTML error pages, security headers, sessions and CSRF checks, rendering.

``console_middleware`` wraps every console request: like the JSON API
(``relay.api.middleware.answered``) it reads the body within its deadline and turns any error into
what ``relay.errors.classify`` says it means, here drawn as a small HTML page, and it gives every
response the same security headers. Page handlers are wrapped by ``operator_page``, which requires
a session (a GET without one is sent to the login form, anything else is refused) and, on every
state-changing request, the session's CSRF token in the form, compared in constant time.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import structlog
from aiohttp import web

from relay.api.auth import audited
from relay.api.context import SESSIONS, SETTINGS, TEMPLATES
from relay.api.middleware import ERROR_NAME, answered
from relay.console.paths import ConsolePaths, PortalPaths
from relay.errors import Forbidden, RelayError
from relay.sessions import Session
from relay.templating import PAGE_HEADERS

log = structlog.get_logger("relay.console")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PageHandler = Callable[[web.Request, Session], Awaitable[web.StreamResponse]]

# Over https the session cookie is __Host- (Secure, Path=/, no Domain: no subdomain or plain-http
# page can set or shadow it); over plain http, for local use, a plain one on /console.
COOKIE = "relay_console"
COOKIE_PATH = "/console"
HOST_COOKIE = "__Host-relay_console"

# No script at all: plain forms and a redirect after each POST.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    **PAGE_HEADERS,
}
SAFE_METHODS = {"GET", "HEAD"}
LOGIN = "/console/login"
LOCAL_PATH = re.compile(r"/console(?:[/?][!-\[\]-~]*)?")  # printable, no backslash, no "//" host


@web.middleware
async def console_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await answered(request, handler, partial(_error_page, request), log)
    except web.HTTPException as redirect:  # made a response here, so it gets the headers too
        location = redirect.headers.get("Location")
        response = web.Response(status=redirect.status, headers={"Location": location} if location else None)
    response.headers.update(SECURITY_HEADERS)
    return response


def _error_page(request: web.Request, error: RelayError) -> web.Response:
    name = type(error).__name__
    template = request.config_dict[TEMPLATES].get_template("error.html")
    home, label = _home(request, error)
    body = template.render(status=error.status, title=name, detail=error.detail, home=home, home_label=label)
    response = web.Response(text=body, status=error.status, content_type="text/html", headers=error.headers)
    response[ERROR_NAME] = name
    return response


def _home(request: web.Request, error: RelayError) -> tuple[str | None, str]:
    """Where an error page leads back to: the console, or the portal page of the link in the path
    (none when the link itself was refused)."""
    if not request.path.startswith("/portal/"):
        return "/console", "Back to the console"
    token = request.match_info.get("token")
    if token is None or isinstance(error, Forbidden):
        return None, ""
    return PortalPaths(token).project, "Back to the portal"


def https(request: web.Request) -> bool:
    """Whether the browser reached the console over https: directly, or through a TLS-terminating
    proxy in front of a relay whose RELAY_PUBLIC_BASE_URL is https."""
    base = request.config_dict[SETTINGS].public_base_url or ""
    return request.secure or base.startswith("https://")


def session_cookie(request: web.Request) -> tuple[str, str, bool]:
    """The session cookie's name, path and Secure flag for this request."""
    return (HOST_COOKIE, "/", True) if https(request) else (COOKIE, COOKIE_PATH, False)


# What a session id can look like (secrets.token_urlsafe): any other cookie value is no session,
# and never reaches the store (one that is not UTF-8 could not even be hashed into its key).
SESSION_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


async def current_session(request: web.Request) -> Session | None:
    name, _, _ = session_cookie(request)
    given = request.cookies.get(name)
    session_id = given if given is not None and SESSION_ID.fullmatch(given) else None
    return await request.config_dict[SESSIONS].get(session_id)


async def render(
    request: web.Request, name: str, *, session: Session | None, status: int = 200, **context: Any
) -> web.Response:
    flash = await request.config_dict[SESSIONS].pop_flash(session) if session else None
    template = request.config_dict[TEMPLATES].get_template(name)
    shared = {"layout": "base.html", "project_paths": ConsolePaths, "show_project": False}
    body = template.render(
        shared | context | {"session": session, "csrf_token": session.csrf if session else "", "flash": flash}
    )
    return web.Response(text=body, status=status, content_type="text/html")


def see_other(location: str) -> web.Response:
    """The redirect after a POST (303: the browser follows it with a GET)."""
    return web.Response(status=303, headers={"Location": location})


def local_path(raw: object, *, default: str) -> str:
    """``raw`` when it is a console path on this site (a form's "back" field), else ``default``."""
    return raw if isinstance(raw, str) and LOCAL_PATH.fullmatch(raw) else default


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
        response = await handler(request, session)
        await audited(request, response, actor="console", project_id=request.match_info.get("project_id"))
        return response

    return authorised
