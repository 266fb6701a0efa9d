"""Bearer credentials: the admin token (``admin_only``: every route) and a project's API key
(``builder``: the builder routes of its own project only).

Both are checked with failures limited per address (``relay.ratelimit.FailedAuth``): a wrong
credential counts; a right admin token is refused only past the limit (so a guess that happens to
be right is no use to a guesser past it), a right project key never (256 random bits: no guessing
finds one). The admin token is compared in constant time; a project key is found by its SHA-256
(``relay.api_keys``).

A project key reaching another project's resource gets the 404 that resource would give if it did
not exist (no oracle of other projects' ids); on an admin route, 403.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog
from aiohttp import web

from relay.api.clients import client_address, limit_key
from relay.api.context import API_KEYS, AUDIT, CLOCK, FAILED_AUTH, SETTINGS
from relay.api_keys import KEY_PREFIX
from relay.errors import Forbidden, Unauthorized, not_found
from relay.settings import Settings

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
WRONG = "missing or wrong bearer token"


@dataclass(frozen=True)
class Principal:
    """Who a request acts as: the admin (``project_id`` None) or one project's API key."""

    project_id: str | None = None
    key_id: str | None = None

    @property
    def admin(self) -> bool:
        return self.project_id is None


ADMIN = Principal()
PRINCIPAL = web.RequestKey("relay_principal", Principal)
# The ids a change names besides its route's (in its body, or made by it): ``audit_target``.
AUDIT_TARGET: web.RequestKey[dict[str, str]] = web.RequestKey("relay_audit_target")


def audit_target(request: web.Request, **ids: str) -> None:
    """Name what a change acted on, for its audit entry (the route's own ids are there already)."""
    request[AUDIT_TARGET] = request.get(AUDIT_TARGET, {}) | ids


def admin_token_matches(settings: Settings, given: str) -> bool:
    """Whether ``given`` is RELAY_ADMIN_TOKEN, compared in constant time; never when it is unset.
    ``surrogatepass``: a header's undecodable bytes (lone surrogates) compare unequal, not raise."""
    token = settings.admin_token
    expected = token.get_secret_value() if token else ""
    encoded = given.encode("utf-8", "surrogatepass")
    return hmac.compare_digest(encoded, expected.encode()) and bool(expected)


CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


CREDENTIALS = frozenset({"token"})  # route parameters that are credentials (a portal link): never recorded


async def audited(
    request: web.Request, response: web.StreamResponse, *, actor: str, project_id: str | None
) -> None:
    """Record a changing request that succeeded in the audit log (``relay.audit``)."""
    if request.method not in CHANGING or response.status >= 400:
        return
    route = request.match_info.route.resource
    settings = request.config_dict[SETTINGS]
    shown = {name: value for name, value in request.match_info.items() if name not in CREDENTIALS}
    target = shown | request.get(AUDIT_TARGET, {})
    await request.config_dict[AUDIT].record(
        actor=actor,
        action=f"{request.method} {route.canonical if route is not None else request.path}",
        target=target,
        project_id=target.get("project_id") or project_id,
        address=client_address(request, settings.trusted_proxies),
        status=response.status,
        request_id=str(structlog.contextvars.get_contextvars().get("request_id", "")),
        now=request.config_dict[CLOCK](),
    )


def actor_of(principal: Principal) -> str:
    return "admin" if principal.admin else f"key:{principal.key_id}"


def admin_only(handler: Handler) -> Handler:
    """Require ``Authorization: Bearer <RELAY_ADMIN_TOKEN>``; a project key is a 403. An address
    that failed too often in the current minute is refused (429) before its token is compared.
    A change it makes is audited."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        principal = await authenticate(request)
        if not principal.admin:
            raise Forbidden("a project API key cannot use this route; it needs the admin token")
        request[PRINCIPAL] = principal
        response = await handler(request)
        await audited(request, response, actor="admin", project_id=request.match_info.get("project_id"))
        return response

    return wrapped


def builder(handler: Handler) -> Handler:
    """The admin token, or a project API key whose project is the route's ``{project_id}`` (any
    other answers the 404 of a missing project). Routes that name their project elsewhere (in the
    body, the query, or through an item) check it with ``in_scope``. A change is audited."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        principal = await authenticate(request)
        request[PRINCIPAL] = principal
        project_id = request.match_info.get("project_id")
        if project_id is not None:
            in_scope(request, project_id, "project", project_id)
        response = await handler(request)
        await audited(
            request, response, actor=actor_of(principal), project_id=project_id or principal.project_id
        )
        return response

    return wrapped


def principal_of(request: web.Request) -> Principal:
    principal: Principal = request.get(PRINCIPAL, ADMIN)
    return principal


def in_scope(request: web.Request, project_id: str, kind: str, name: str) -> None:
    """NotFound (``kind`` ``name``, as if it did not exist) unless the request may act on
    ``project_id``: the admin may on any, a project key on its own only."""
    principal = principal_of(request)
    if not principal.admin and principal.project_id != project_id:
        raise not_found(kind, name)


async def authenticate(request: web.Request) -> Principal:
    """A request without a bearer token is refused and counts for nothing; one with a token counts
    against its address until the token proves right."""
    settings = request.config_dict[SETTINGS]
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    given = value.strip()
    if scheme.lower() != "bearer" or not given:
        raise Unauthorized(WRONG)
    address = client_address(request, settings.trusted_proxies)
    failures = request.config_dict[FAILED_AUTH]
    now = request.config_dict[CLOCK]()
    if given.startswith(KEY_PREFIX):
        # 256 random bits: no burst of guesses finds one, so a right key is taken whatever its
        # address's failures (others behind the same NAT cannot lock a merchant's backend out); a
        # wrong one counts as a failure against the limit the admin token's failures share.
        api_keys = request.config_dict[API_KEYS]
        api_key = await api_keys.lookup(given)
        if api_key is None:
            await failures.judge(limit_key(address), right=False, now=now)
            raise Unauthorized(WRONG)
        await api_keys.touch(api_key, now=now)
        return Principal(project_id=api_key.project_id, key_id=api_key.id)
    if not await failures.judge(limit_key(address), right=admin_token_matches(settings, given), now=now):
        raise Unauthorized(WRONG)
    return ADMIN


async def admin_token_accepted(request: web.Request, given: str, *, address: str) -> bool:
    """Whether ``given`` is the admin token; a wrong one counts against ``address``, and past its
    limit the address is refused (429), right token or not (``relay.ratelimit.FailedAuth``). The
    console's login form asks here."""
    right = admin_token_matches(request.config_dict[SETTINGS], given)
    return await request.config_dict[FAILED_AUTH].judge(
        limit_key(address), right=right, now=request.config_dict[CLOCK]()
    )
