"""Public API, keyed by a project's ``client_id``: the catalogue and starting a purchase."""

from __future__ import annotations

import structlog
from aiohttp import web

from relay.api.clients import client_address
from relay.api.context import CLOCK, GATEWAYS, HTTP, METRICS, PURCHASE_LIMIT, SETTINGS, STORE
from relay.api.parsing import read_model, required_query
from relay.api.sandbox import checkout_url
from relay.errors import Conflict, InvalidInput, not_found
from relay.idempotency import idempotent
from relay.models import Project, Purchase, PurchaseIn, new_order_id
from relay.store import Store

log = structlog.get_logger("relay.public")
# Order ids carry 64 random bits: a taken one is next to impossible, three in a row a broken RNG.
ORDER_ID_TRIES = 3
routes = web.RouteTableDef()


async def _client_project(store: Store, client_id: str) -> Project:
    project = await store.project_for_client(client_id)
    if project is None:
        raise not_found("client_id", client_id)
    return project


@routes.get("/api/platform/public-items")
async def public_items(request: web.Request) -> web.Response:
    store = request.app[STORE]
    project = await _client_project(store, required_query(request, "client_id"))
    items = await store.list_items(project.id)
    return web.json_response({"items": [item.public_view() for item in items]})


@routes.post("/api/platform/public-items/purchase")
async def purchase(request: web.Request) -> web.Response:
    """Start a purchase; a retry with the same Idempotency-Key gets the first answer, not a second order."""
    data = await read_model(request, PurchaseIn)
    return await idempotent(request, scope=data.client_id, answer=lambda: _start_purchase(request, data))


async def _start_purchase(request: web.Request, data: PurchaseIn) -> web.Response:
    store, settings, now = request.app[STORE], request.app[SETTINGS], request.app[CLOCK]()
    project = await _client_project(store, data.client_id)
    item = await store.get_item(data.item_id)
    if item is None or item.project_id != project.id:
        raise not_found("item", data.item_id)
    # A buyer-chosen amount is what the buyer pays and the webhook reports: within the item's bounds.
    amount = item.price if data.amount is None else data.amount
    amount_problem = item.amount_problem(amount)
    if amount_problem is not None:
        raise InvalidInput(amount_problem)
    gateway_name = data.gateway or "midtrans"
    gateway = request.app[GATEWAYS].get(gateway_name)
    if gateway is None:
        raise InvalidInput(f"gateway {gateway_name!r} is not configured on this relay")
    # Counted only now, for a request that creates a purchase: a flood of bad ones locks out nobody.
    address = client_address(request, settings.trusted_proxies)
    await request.app[PURCHASE_LIMIT].hit(data.client_id, address, now=now)
    record = Purchase(
        order_id=new_order_id(item.id),
        item_id=item.id,
        project_id=project.id,
        item_name=item.name,
        amount=amount,
        currency=item.currency,
        buyer_email=data.buyer_email,
        buyer_name=data.buyer_name,
        metadata=data.metadata,
        gateway=gateway.name,
        created_at=now,
        updated_at=now,
    )
    for _ in range(ORDER_ID_TRIES):
        # The sandbox link before the purchase is stored: a client gone by now is refused with nothing kept.
        sandbox_url = checkout_url(request, record.order_id) if settings.sandbox_mode else None
        if await store.create_purchase(record):  # never over a purchase with the same order id
            break
        log.warning("order_id_taken", order_id=record.order_id)
        record = record.model_copy(update={"order_id": new_order_id(item.id)})
    else:
        raise Conflict("no free order id was found; retry the purchase")
    structlog.contextvars.bind_contextvars(order_id=record.order_id)
    request.app[METRICS].purchases_created.inc()
    invoice_url = sandbox_url or await gateway.create_invoice(record, request.app[HTTP])
    return web.json_response(
        {
            "order_id": record.order_id,
            "invoice_url": invoice_url,
            "amount": record.amount,
            "currency": record.currency,
        }
    )
