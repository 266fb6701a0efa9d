"""The admin bearer token: ``admin_only`` for the builder and admin routes, compared in constant time."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from aiohttp import web

from relay.api.context import SETTINGS
from relay.errors import Unauthorized
from relay.settings import Settings

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def admin_token_matches(settings: Settings, given: str) -> bool:
    """Whether ``given`` is RELAY_ADMIN_TOKEN, compared in constant time; never when it is unset."""
    token = settings.admin_token
    expected = token.get_secret_value() if token else ""
    return hmac.compare_digest(given.encode(), expected.encode()) and bool(expected)


def admin_only(handler: Handler) -> Handler:
    """Require ``Authorization: Bearer <RELAY_ADMIN_TOKEN>``."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        matches = admin_token_matches(request.app[SETTINGS], value.strip())
        if not matches or scheme.lower() != "bearer":
            raise Unauthorized("missing or wrong bearer token")
        return await handler(request)

    return wrapped
