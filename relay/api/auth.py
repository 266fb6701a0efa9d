"""The admin bearer token: ``admin_only`` for the builder and admin routes, compared in constant
time, with failed attempts limited per address (``relay.ratelimit.FailedAuth``)."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from aiohttp import web

from relay.api.clients import client_address, limit_key
from relay.api.context import CLOCK, FAILED_AUTH, SETTINGS
from relay.errors import Unauthorized
from relay.settings import Settings

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def admin_token_matches(settings: Settings, given: str) -> bool:
    """Whether ``given`` is RELAY_ADMIN_TOKEN, compared in constant time; never when it is unset.
    ``surrogatepass``: a header's undecodable bytes (lone surrogates) compare unequal, not raise."""
    token = settings.admin_token
    expected = token.get_secret_value() if token else ""
    encoded = given.encode("utf-8", "surrogatepass")
    return hmac.compare_digest(encoded, expected.encode()) and bool(expected)


def admin_only(handler: Handler) -> Handler:
    """Require ``Authorization: Bearer <RELAY_ADMIN_TOKEN>``. An address that failed too often
    in the current minute is refused (429) before its token is even compared."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        await check_admin(request)
        return await handler(request)

    return wrapped


async def check_admin(request: web.Request) -> None:
    """A request without a bearer token is refused and counts for nothing; one with a token counts
    against its address until the token proves right (``relay.ratelimit.FailedAuth``)."""
    settings = request.config_dict[SETTINGS]
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise Unauthorized("missing or wrong bearer token")
    address = client_address(request, settings.trusted_proxies)
    if not await admin_token_accepted(request, value.strip(), address=address):
        raise Unauthorized("missing or wrong bearer token")


async def admin_token_accepted(request: web.Request, given: str, *, address: str) -> bool:
    """Whether ``given`` is the admin token; the attempt counts against ``address`` before the
    token is compared and is given back when it proves right (``relay.ratelimit.FailedAuth``): an
    address past its limit is refused (429) with its token unread. The bearer token and the
    console's login form both ask here."""
    failures = request.config_dict[FAILED_AUTH]
    attempt = await failures.attempt(limit_key(address), now=request.config_dict[CLOCK]())
    if not admin_token_matches(request.config_dict[SETTINGS], given):
        return False
    await failures.succeeded(attempt)
    return True
