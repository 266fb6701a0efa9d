"""The operator console: server-rendered pages under ``/console`` on the ingress (no JavaScript).

``setup(app)`` is the one call ``create_app`` makes. See ``pages`` for sessions, CSRF and headers,
``routes`` for the pages themselves.
"""

from __future__ import annotations

from aiohttp import web

from relay.console import routes
from relay.console.pages import CONSOLE, make_console


def setup(app: web.Application) -> None:
    app[CONSOLE] = make_console()
    app.router.add_routes(routes.routes)
