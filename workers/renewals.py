"""The worker's invoices: a subscription's next period is invoiced when its renewal notice is due
(``relay.subscriptions.Timers``), away from any request, through the gateway the buyer chose."""

from __future__ import annotations

import aiohttp
from redis.asyncio import Redis

from relay.api.sandbox import checkout_path, load_key
from relay.gateways.registry import configured_gateways
from relay.models import Purchase
from relay.schema import Keys
from relay.settings import Settings
from relay.subscriptions import Invoicer


async def make_invoicer(settings: Settings, redis: Redis, http: aiohttp.ClientSession) -> Invoicer:
    """In sandbox mode, the sandbox checkout on RELAY_PUBLIC_BASE_URL (no invoice URL when it is
    unset: the worker has no request to learn the relay's address from); otherwise the order's
    gateway's hosted page (Midtrans Snap), or None for a gateway without an invoice API."""
    sandbox_key = await load_key(redis, Keys(settings.key_prefix)) if settings.sandbox_mode else None
    gateways = configured_gateways(settings, sandbox_key=(lambda: sandbox_key) if sandbox_key else None)

    async def invoice(order: Purchase) -> str | None:
        if sandbox_key is not None:
            base = settings.public_base_url
            return None if base is None else base + checkout_path(sandbox_key, order.order_id)
        gateway = gateways.get(order.gateway)
        return None if gateway is None else await gateway.create_invoice(order, http)

    return invoice
