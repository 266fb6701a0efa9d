"""The server-rendered pages on the ingress (no JavaScript): the operator console under
``/console`` and the merchant portal under ``/portal``.

``create_console()`` and ``create_portal()`` make them sub-applications, so they have their own
middleware (``relay.console.middleware``: HTML error pages, security headers) while their requests
still get the ingress's request id and log line. ``relay.console.pages`` has the console's pages,
``relay.console.portal`` the portal's; both render the same templates (``relay.console.paths``
says where their links go) and reach the ingress's stores through ``request.config_dict``.
"""

from __future__ import annotations

from aiohttp import web

from relay.console import pages, portal
from relay.console.middleware import console_middleware


def create_console() -> web.Application:
    console = web.Application(middlewares=[console_middleware])
    console.router.add_routes(pages.routes)
    return console


def create_portal() -> web.Application:
    app = web.Application(middlewares=[console_middleware])
    app.router.add_routes(portal.routes)
    return app
