"""The operator console: server-rendered pages under ``/console`` on the ingress (no JavaScript).

``create_console()`` makes it a sub-application, so it has its own middleware
(``relay.console.middleware``: HTML error pages, security headers) while its requests still get the
ingress's request id and log line. ``relay.console.pages`` has the pages; they reach the ingress's
stores through ``request.config_dict``.
"""

from __future__ import annotations

from aiohttp import web

from relay.console import pages
from relay.console.middleware import console_middleware


def create_console() -> web.Application:
    console = web.Application(middlewares=[console_middleware])
    console.router.add_routes(pages.routes)
    return console
