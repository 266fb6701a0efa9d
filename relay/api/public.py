"""Public API, keyed by a project's ``client_id``: the catalogue and starting a purchase."""

from __future__ import annotations

import structlog
from aiohttp import web

from relay.api.context import CLOCK, GATEWAYS, HTTP, METRICS, PURCHASE_LIMIT, SETTINGS, STORE
from relay.api.middleware import not_found, read_model, required_query
from relay.api.sandbox import checkout_path
from relay.errors import InvalidInput
from relay.gateways.midtrans import create_snap_transaction
from relay.models import Project, Purchase, PurchaseIn, new_order_id
from relay.store import Store

log = structlog.get_logger("relay.public")
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
    store, settings, now = request.app[STORE], request.app[SETTINGS], request.app[CLOCK]()
    data = await read_model(request, PurchaseIn)
    await request.app[PURCHASE_LIMIT].hit(f"purchase:{data.client_id}", now=now)
    project = await _client_project(store, data.client_id)
    item = await store.get_item(data.item_id)
    if item is None or item.project_id != project.id:
        raise not_found("item", data.item_id)
    gateway = data.gateway or "midtrans"
    if gateway not in request.app[GATEWAYS]:
        raise InvalidInput(f"gateway {gateway!r} is not configured on this relay")
    record = Purchase(
        order_id=new_order_id(item.id),
        item_id=item.id,
        project_id=project.id,
        item_name=item.name,
        amount=data.amount or item.price,
        currency=item.currency,
        buyer_email=data.buyer_email,
        buyer_name=data.buyer_name,
        metadata=data.metadata,
        gateway=gateway,
        created_at=now,
        updated_at=now,
    )
    await store.create_purchase(record)
    structlog.contextvars.bind_contextvars(order_id=record.order_id)
    request.app[METRICS].purchases_created.inc()
    invoice_url: str | None = None  # other gateways: the merchant creates the invoice there
    if settings.sandbox:
        invoice_url = settings.public_base_url + checkout_path(settings, record.order_id)
    elif gateway == "midtrans":
        invoice_url = await create_snap_transaction(
            request.app[HTTP], base=settings.snap_base, server_key=settings.midtrans_key, purchase=record
        )
    return web.json_response(
        {
            "order_id": record.order_id,
            "invoice_url": invoice_url,
            "amount": record.amount,
            "currency": record.currency,
        }
    )
