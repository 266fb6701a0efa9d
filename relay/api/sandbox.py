"""The built-in sandbox checkout (only in sandbox mode: no gateway key set, or RELAY_SANDBOX).

``GET /sandbox/checkout/{order_id}`` shows the purchase with "Pay" and "Expire" buttons.

For a Midtrans purchase each button carries a Midtrans-format notification signed with the sandbox
key and posts it, from the browser, to the relay's own ``/callbacks/midtrans``: the same route and
checks a real gateway goes through. The sandbox key is random, made once and kept in Redis
(``load_key``), so every process of the relay agrees on it and nothing about any other secret (the
admin token) can be learnt from what it signs.

For any other gateway the keys are real ones, so nothing signed reaches the browser: the buttons
post a form to ``POST /sandbox/checkout/{order_id}`` (``action=pay|expire``), and the server builds
that gateway's callback (``Gateway.sandbox_callback``), posts it over HTTP to the relay's own
``/callbacks/<gateway>`` at the address this connection came in on (the socket's, never the Host
header's), and redirects back to the page.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
from urllib.parse import quote

import aiohttp
from aiohttp import web
from redis.asyncio import Redis

from relay.api.clients import own_base_url
from relay.api.context import CLOCK, GATEWAYS, HTTP, SANDBOX_KEY, SETTINGS, STORE, TEMPLATES
from relay.errors import REDIS_DOWN, Conflict, InvalidInput, StoreUnavailable, not_found
from relay.gateways.midtrans import settlement_payload, sign_notification
from relay.jsonutil import dumps
from relay.models import Purchase, PurchaseStatus
from relay.schema import Keys
from relay.settings import Settings
from relay.templating import PAGE_HEADERS, static_text

routes = web.RouteTableDef()

ACTIONS = {"pay": PurchaseStatus.PAID, "expire": PurchaseStatus.EXPIRED}
ACCEPTED = "accepted"
# Its script and style come from the relay itself (/sandbox/sandbox.js, .css); nothing inline runs.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    **PAGE_HEADERS,
}
ASSETS = {"sandbox.js": "text/javascript", "sandbox.css": "text/css"}


async def load_key(redis: Redis, keys: Keys) -> str:
    """The sandbox key: the one in Redis, or, the first time, a new random one put there."""
    await redis.set(keys.sandbox_key, "SB-Mid-server-" + secrets.token_hex(24), nx=True)
    key = await redis.get(keys.sandbox_key)
    if not isinstance(key, str):
        raise RuntimeError("the sandbox key vanished from Redis as it was read")
    return key


class SandboxKey:
    """The sandbox key once loaded; until then (Redis was away when the relay started) reading it
    is ``StoreUnavailable``, as everything else is without Redis."""

    def __init__(self) -> None:
        self.value: str | None = None

    def __call__(self) -> str:
        if self.value is None:
            raise StoreUnavailable("the sandbox key is not loaded yet: the store is unavailable; retry later")
        return self.value

    async def keep_loading(self, redis: Redis, keys: Keys, *, every: float = 1.0) -> None:
        """Load the key, trying again every ``every`` seconds while Redis is away."""
        while self.value is None:
            try:
                self.value = await load_key(redis, keys)
            except REDIS_DOWN:
                await asyncio.sleep(every)


def sandbox_token(key: str, order_id: str) -> str:
    """The token a sandbox checkout link carries: without it the page is a 404, so order ids
    cannot be enumerated through the sandbox."""
    return hmac.new(key.encode(), f"sandbox checkout {order_id}".encode(), hashlib.sha256).hexdigest()[:32]


def checkout_path(key: str, order_id: str) -> str:
    """The sandbox checkout link of an order, with the token that opens it."""
    return f"/sandbox/checkout/{quote(order_id, safe='')}?token={sandbox_token(key, order_id)}"


def checkout_url(request: web.Request, order_id: str) -> str:
    """``checkout_path`` on RELAY_PUBLIC_BASE_URL, or when that is unset, on the address this
    request reached the relay at."""
    base = request.app[SETTINGS].public_base_url or own_base_url(request)
    return base + checkout_path(request.app[SANDBOX_KEY](), order_id)


async def _sandbox_purchase(request: web.Request) -> Purchase:
    order_id = request.match_info["order_id"]
    settings = request.app[SETTINGS]
    token = request.query.get("token", "")
    opened = settings.sandbox_mode and hmac.compare_digest(
        token.encode(errors="surrogateescape"), sandbox_token(request.app[SANDBOX_KEY](), order_id).encode()
    )
    purchase = await request.app[STORE].get_purchase(order_id) if opened else None
    if purchase is None:
        raise not_found("order", order_id)
    return purchase


def _may_simulate(settings: Settings, purchase: Purchase) -> bool:
    """Other gateways sign with real configured keys: simulating them lets anyone who can reach
    this page pay, so it is off unless RELAY_SANDBOX_GATEWAYS opts in (test keys only)."""
    return purchase.gateway == "midtrans" or settings.sandbox_gateways


@routes.get("/sandbox/checkout/{order_id}")
async def checkout(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    purchase = await _sandbox_purchase(request)
    now = request.app[CLOCK]()

    def notification(status: str) -> str:
        return dumps(
            sign_notification(
                settlement_payload(purchase, status=status, now=now), request.app[SANDBOX_KEY]()
            )
        )

    notifications = form_action = None
    if purchase.gateway == "midtrans":
        notifications = {"pay": notification("settlement"), "expire": notification("expire")}
    elif _may_simulate(settings, purchase):
        form_action = checkout_path(request.app[SANDBOX_KEY](), purchase.order_id)
    page = (
        request.app[TEMPLATES]
        .get_template("sandbox.html")
        .render(
            purchase=purchase,
            notifications=notifications,
            form_action=form_action,
            result=request.query.get("result", ""),
        )
    )
    return web.Response(text=page, content_type="text/html", headers=SECURITY_HEADERS)


@routes.get("/sandbox/{asset:sandbox\\.(?:js|css)}")
async def asset(request: web.Request) -> web.Response:
    name = request.match_info["asset"]
    return web.Response(text=static_text(name), content_type=ASSETS[name], headers=SECURITY_HEADERS)


@routes.post("/sandbox/checkout/{order_id}")
async def simulate(request: web.Request) -> web.Response:
    """Send the purchase's gateway callback to this relay's own route, then show the page again."""
    purchase = await _sandbox_purchase(request)
    if not _may_simulate(request.app[SETTINGS], purchase):
        raise Conflict("simulating this gateway is off (RELAY_SANDBOX_GATEWAYS)")
    action = (await request.post()).get("action")
    status = ACTIONS.get(action) if isinstance(action, str) else None
    if status is None:
        raise InvalidInput("action must be pay or expire")
    gateway = request.app[GATEWAYS].get(purchase.gateway)
    if gateway is None:
        raise not_found("gateway", purchase.gateway)
    body, headers = gateway.sandbox_callback(purchase, status, request.app[CLOCK]())
    url = f"{own_base_url(request)}/callbacks/{gateway.name}"
    try:
        async with request.app[HTTP].post(url, data=body, headers=headers) as response:
            answer = await response.json(content_type=None)
            accepted = response.status < 300
    except (aiohttp.ClientError, TimeoutError, ValueError) as failure:
        answer, accepted = {"error": type(failure).__name__}, False
    result = ACCEPTED
    if not accepted:
        name = answer.get("error") if isinstance(answer, dict) else None
        result = name if isinstance(name, str) and re.fullmatch(r"\w{1,64}", name) else "Error"
    location = f"{checkout_path(request.app[SANDBOX_KEY](), purchase.order_id)}&result={result}"
    return web.Response(status=303, headers={"Location": location})
