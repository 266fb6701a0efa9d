"""Shop payments, plans and subscriptions: the builder routes (bearer admin token).

A shop payment is the merchant's own order: its amount and its ``order_id``, unique in the
project. The gateway sees ``relay.models.new_payment_order_id`` (``pay-`` and 96 random bits; the
project keeps which is the merchant's); every answer and event carries the merchant's. The same body again
answers the same invoice; another body with that order id is a 409.
"""

from __future__ import annotations

from typing import Any

import structlog
from aiohttp import web

from relay.api.auth import audit_target, builder
from relay.api.builder import put_fields
from relay.api.context import ARQ, CLOCK, METRICS, OPERATIONS, STORE, SUBSCRIPTIONS
from relay.api.invoices import chosen_gateway, kept_invoice, sandbox_invoice
from relay.api.parsing import parse, read_model
from relay.errors import Conflict, not_found
from relay.idempotency import idempotent
from relay.models import (
    OrderKind,
    PaymentIn,
    Plan,
    PlanIn,
    Purchase,
    Subscription,
    new_payment_order_id,
)
from relay.subscriptions import cancel

log = structlog.get_logger("relay.billing")
routes = web.RouteTableDef()

# What makes two payment requests the same request (DESIGN.md: the same body answers the same
# invoice): every field the merchant sends.
PAYMENT_FIELDS = ("amount", "currency", "buyer_email", "buyer_name", "description", "metadata", "gateway")


def payment_answer(payment: Purchase) -> dict[str, Any]:
    return {
        "order_id": payment.merchant_order_id,
        "invoice_url": payment.invoice_url,
        "amount": payment.amount,
        "currency": payment.currency,
    }


@routes.post("/api/platform/projects/{project_id}/payments")
@builder
async def create_payment(request: web.Request) -> web.Response:
    """Start a shop payment; the merchant's order id makes it idempotent (and so does an
    Idempotency-Key)."""
    data = await read_model(request, PaymentIn)
    project_id = request.match_info["project_id"]
    return await idempotent(
        request, scope=project_id, answer=lambda: _start_payment(request, project_id, data)
    )


async def _start_payment(request: web.Request, project_id: str, data: PaymentIn) -> web.Response:
    store, now = request.app[STORE], request.app[CLOCK]()
    project = await request.app[OPERATIONS].project(project_id)
    gateway = chosen_gateway(request, data.gateway)
    order = Purchase(
        order_id=new_payment_order_id(),
        kind=OrderKind.PAYMENT,
        event_type="payment.paid",
        project_id=project.id,
        merchant_order_id=data.order_id,
        description=data.description,
        amount=data.amount,
        currency=data.currency,
        buyer_email=data.buyer_email,
        buyer_name=data.buyer_name,
        metadata=data.metadata,
        gateway=gateway.name,
        created_at=now,
        updated_at=now,
    )
    sandbox_url = sandbox_invoice(request, order)
    if not await store.create_purchase(order):
        existing = await store.payment(project.id, data.order_id)
        if existing is None:  # deleted between the two steps: retention, at the very end of its life
            raise Conflict(f"payment {data.order_id} is being deleted; retry")
        if [getattr(existing, name) for name in PAYMENT_FIELDS] != [
            getattr(order, name) for name in PAYMENT_FIELDS
        ]:
            raise Conflict(f"payment {data.order_id} exists with another body; use a new order_id")
        if existing.invoice_url is None:  # its invoice failed or is being made: make it now
            existing = await _invoiced(request, existing, sandbox_url)
        return web.json_response(payment_answer(existing))
    structlog.contextvars.bind_contextvars(order_id=order.order_id)
    audit_target(request, order_id=data.order_id, gateway_order_id=order.order_id)
    request.app[METRICS].purchases_created.inc()
    return web.json_response(payment_answer(await _invoiced(request, order, sandbox_url)))


async def _invoiced(request: web.Request, order: Purchase, sandbox_url: str | None) -> Purchase:
    url = await kept_invoice(request, order, chosen_gateway(request, order.gateway), sandbox_url)
    return order.model_copy(update={"invoice_url": url})


@routes.get("/api/platform/projects/{project_id}/payments/{order_id}")
@builder
async def get_payment(request: web.Request) -> web.Response:
    operations = request.app[OPERATIONS]
    project = await operations.project(request.match_info["project_id"])
    order_id = request.match_info["order_id"]
    payment = await request.app[STORE].payment(project.id, order_id)
    if payment is None or payment.kind is not OrderKind.PAYMENT:
        raise not_found("payment", order_id)
    [view] = await operations.with_attempts([payment])
    return web.json_response({"payment": view})


# --- plans ---------------------------------------------------------------------------------------------


@routes.put("/api/platform/plans")
@builder
async def put_plan(request: web.Request) -> web.Response:
    """Create a plan, or change one (its price and interval apply to subscriptions taken after)."""
    store, now = request.app[STORE], request.app[CLOCK]()
    data = await read_model(request, PlanIn)
    existing = await store.get_plan(data.id) if data.id else None
    plan = parse(Plan, await put_fields(request, "plan", existing, data, now=now))
    await store.put_plan(plan)
    audit_target(request, plan_id=plan.id, project_id=plan.project_id)
    return web.json_response({"plan": plan.model_dump(mode="json")})


@routes.get("/api/platform/projects/{project_id}/plans")
@builder
async def list_plans(request: web.Request) -> web.Response:
    project = await request.app[OPERATIONS].project(request.match_info["project_id"])
    plans = await request.app[STORE].list_plans(project.id)
    return web.json_response({"plans": [plan.model_dump(mode="json") for plan in plans]})


# --- subscriptions -------------------------------------------------------------------------------------


def subscription_view(subscription: Subscription) -> dict[str, Any]:
    """A subscription as the API shows it: every field but the version its moves are fenced by."""
    return subscription.model_dump(mode="json", exclude={"version"})


@routes.get("/api/platform/projects/{project_id}/subscriptions/{subscription_id}")
@builder
async def get_subscription(request: web.Request) -> web.Response:
    project = await request.app[OPERATIONS].project(request.match_info["project_id"])
    subscription_id = request.match_info["subscription_id"]
    subscription = await request.app[SUBSCRIPTIONS].get(subscription_id)
    if subscription is None or subscription.project_id != project.id:
        raise not_found("subscription", subscription_id)
    return web.json_response({"subscription": subscription_view(subscription)})


@routes.post("/api/platform/projects/{project_id}/subscriptions/{subscription_id}/cancel")
@builder
async def cancel_subscription(request: web.Request) -> web.Response:
    """Cancel at the period's end (relay.subscriptions.cancel); canceling again changes nothing."""
    project = await request.app[OPERATIONS].project(request.match_info["project_id"])
    subscription_id = request.match_info["subscription_id"]
    subscriptions = request.app[SUBSCRIPTIONS]
    found = await subscriptions.get(subscription_id)
    if found is None or found.project_id != project.id:
        raise not_found("subscription", subscription_id)
    canceled = await cancel(subscriptions, subscription_id, arq=request.app[ARQ], now=request.app[CLOCK]())
    if canceled is None:
        raise not_found("subscription", subscription_id)
    return web.json_response({"subscription": subscription_view(canceled)})
