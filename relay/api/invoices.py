"""Invoicing an order through its gateway, for every kind of order the API starts."""

from __future__ import annotations

from aiohttp import web

from relay.api.context import GATEWAYS, HTTP, SETTINGS, STORE
from relay.api.sandbox import checkout_url
from relay.errors import InvalidInput
from relay.gateways import Gateway
from relay.models import Purchase


def chosen_gateway(request: web.Request, name: str | None) -> Gateway:
    """The gateway an order asks for (Midtrans when it names none); 400 when it is not configured."""
    name = name or "midtrans"
    gateway = request.app[GATEWAYS].get(name)
    if gateway is None:
        raise InvalidInput(f"gateway {name!r} is not configured on this relay")
    return gateway


def sandbox_invoice(request: web.Request, order: Purchase) -> str | None:
    """The sandbox checkout of ``order`` in sandbox mode (made before the order is stored: a
    client gone by then is refused with nothing kept), else None."""
    return checkout_url(request, order.order_id) if request.app[SETTINGS].sandbox_mode else None


async def invoice(
    request: web.Request, order: Purchase, gateway: Gateway, sandbox_url: str | None
) -> str | None:
    """The invoice a buyer pays: the sandbox checkout, or the gateway's hosted page (Midtrans
    Snap), or None when the merchant creates the invoice at the gateway itself."""
    return sandbox_url or await gateway.create_invoice(order, request.app[HTTP])


async def kept_invoice(
    request: web.Request, order: Purchase, gateway: Gateway, sandbox_url: str | None
) -> str | None:
    """``invoice``, kept with the order (a shop payment asked for again, a subscription's pending
    invoice answer it)."""
    url = await invoice(request, order, gateway, sandbox_url)
    if url is not None:
        await request.app[STORE].remember_invoice(order.order_id, url)
    return url
