"""Public API, keyed by a project's ``client_id``: the catalogue and starting a purchase."""

from __future__ import annotations

import structlog
from aiohttp import web

from relay.api.clients import client_address
from relay.api.context import CLOCK, METRICS, PURCHASE_LIMIT, SETTINGS, STORE, SUBSCRIPTIONS
from relay.api.invoices import chosen_gateway, invoice, kept_invoice, sandbox_invoice
from relay.api.parsing import read_model, required_query
from relay.catalogue import buyer_fields, order_amount, purchase_metadata
from relay.errors import Conflict, not_found
from relay.idempotency import idempotent
from relay.models import (
    ItemStatus,
    Project,
    Purchase,
    PurchaseIn,
    SubscribeIn,
    new_order_id,
    new_subscription_id,
)
from relay.store import Store
from relay.subscriptions import subscription_to

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
    shown = [item.public_view() for item in items if item.status is ItemStatus.PUBLISHED]
    return web.json_response({"items": shown})


@routes.get("/api/platform/public-items/{item_id:(?!purchase$)[^/]+}")  # /purchase stays a POST
async def public_item(request: web.Request) -> web.Response:
    """One published item as a checkout form needs it; any other is as absent as a missing one."""
    store = request.app[STORE]
    project = await _client_project(store, required_query(request, "client_id"))
    item = await store.get_item(request.match_info["item_id"])
    if item is None or item.project_id != project.id or item.status is not ItemStatus.PUBLISHED:
        raise not_found("item", request.match_info["item_id"])
    return web.json_response({"item": item.public_view()})


@routes.post("/api/platform/public-items/purchase")
async def purchase(request: web.Request) -> web.Response:
    """Start a purchase; a retry with the same Idempotency-Key gets the first answer, not a second order."""
    data = await read_model(request, PurchaseIn)
    return await idempotent(request, scope=data.client_id, answer=lambda: _start_purchase(request, data))


async def _start_purchase(request: web.Request, data: PurchaseIn) -> web.Response:
    store, settings, now = request.app[STORE], request.app[SETTINGS], request.app[CLOCK]()
    project = await _client_project(store, data.client_id)
    item = await store.get_item(data.item_id)
    if item is None or item.project_id != project.id or item.status is not ItemStatus.PUBLISHED:
        raise not_found("item", data.item_id)  # a draft or archived item is not for sale
    # A buyer-chosen amount is what the buyer pays and the webhook reports: within the item's bounds.
    amount = order_amount(item, quantity=data.quantity, chosen=data.amount)
    fields = buyer_fields(item, data.fields)
    gateway = chosen_gateway(request, data.gateway)
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
        quantity=data.quantity,
        metadata=purchase_metadata(data.metadata, fields=fields, quantity=data.quantity),
        gateway=gateway.name,
        created_at=now,
        updated_at=now,
    )
    for _ in range(ORDER_ID_TRIES):
        sandbox_url = sandbox_invoice(request, record)
        # Never over a purchase with the same order id; its units reserved in the same step (409
        # SoldOut when short).
        if await store.create_purchase(record, reserve=item.stock is not None):
            break
        log.warning("order_id_taken", order_id=record.order_id)
        record = record.model_copy(update={"order_id": new_order_id(item.id)})
    else:
        raise Conflict("no free order id was found; retry the purchase")
    structlog.contextvars.bind_contextvars(order_id=record.order_id)
    request.app[METRICS].purchases_created.inc()
    invoice_url = await invoice(request, record, gateway, sandbox_url)
    return web.json_response(
        {
            "order_id": record.order_id,
            "invoice_url": invoice_url,
            "amount": record.amount,
            "currency": record.currency,
        }
    )


@routes.post("/api/platform/public-plans/subscribe")
async def subscribe(request: web.Request) -> web.Response:
    """Subscribe to a plan: the subscription, pending until its first invoice is paid."""
    data = await read_model(request, SubscribeIn)
    return await idempotent(request, scope=data.client_id, answer=lambda: _subscribe(request, data))


async def _subscribe(request: web.Request, data: SubscribeIn) -> web.Response:
    store, settings, now = request.app[STORE], request.app[SETTINGS], request.app[CLOCK]()
    project = await _client_project(store, data.client_id)
    plan = await store.get_plan(data.plan_id)
    if plan is None or plan.project_id != project.id:
        raise not_found("plan", data.plan_id)
    gateway = chosen_gateway(request, data.gateway)
    address = client_address(request, settings.trusted_proxies)
    await request.app[PURCHASE_LIMIT].hit(data.client_id, address, now=now)
    subscription_id = new_subscription_id()
    for _ in range(ORDER_ID_TRIES):
        subscription, order = subscription_to(
            plan,
            subscription_id=subscription_id,
            buyer_email=data.buyer_email,
            buyer_name=data.buyer_name,
            user_id=data.user_id,
            metadata=data.metadata,
            gateway=gateway.name,
            now=now,
        )
        sandbox_url = sandbox_invoice(request, order)
        if await request.app[SUBSCRIPTIONS].create(subscription, order):
            break
        log.warning("order_id_taken", order_id=order.order_id)
    else:
        raise Conflict("no free order id was found; retry the subscription")
    structlog.contextvars.bind_contextvars(order_id=order.order_id, subscription_id=subscription.id)
    request.app[METRICS].purchases_created.inc()
    invoice_url = await kept_invoice(request, order, gateway, sandbox_url)
    return web.json_response(
        {
            "subscription_id": subscription.id,
            "order_id": order.order_id,
            "invoice_url": invoice_url,
            "amount": order.amount,
            "currency": order.currency,
        }
    )
