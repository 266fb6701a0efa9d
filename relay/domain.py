"""The purchase state machine and the domain operations the HTTP handlers call."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import structlog
from arq.connections import ArqRedis

from relay.errors import AmountMismatch, Conflict, NotFound
from relay.events import EventStore
from relay.gateways import PaymentOutcome
from relay.models import (
    EventRecord,
    ItemPurchasedEvent,
    Purchase,
    PurchaseStatus,
    iso_z,
    new_event_id,
)
from relay.queue import enqueue_delivery, job_write
from relay.store import Store

log = structlog.get_logger("relay.domain")

# Statuses only move up this ladder; failed and expired share a rung. A settlement that arrives
# after an expiry still wins (the money arrived), a late pending never un-pays, refunds are final.
RANK = {
    PurchaseStatus.PENDING: 0,
    PurchaseStatus.FAILED: 1,
    PurchaseStatus.EXPIRED: 1,
    PurchaseStatus.PAID: 2,
    PurchaseStatus.REFUNDED: 3,
}
MAX_RACES = 20


def next_status(current: PurchaseStatus, incoming: PurchaseStatus) -> PurchaseStatus | None:
    """The status to move to, or None when ``incoming`` would not move the purchase forward."""
    return incoming if RANK[incoming] > RANK[current] else None


def build_event(purchase: Purchase, *, paid_at: datetime, now: datetime) -> EventRecord:
    body = ItemPurchasedEvent(
        order_id=purchase.order_id,
        item_id=purchase.item_id,
        item_name=purchase.item_name,
        buyer_email=purchase.buyer_email,
        buyer_name=purchase.buyer_name,
        amount=purchase.amount,
        currency=purchase.currency,
        paid_at=iso_z(paid_at),
        metadata=purchase.metadata,
    )
    return EventRecord(
        id=new_event_id(),
        project_id=purchase.project_id,
        order_id=purchase.order_id,
        item_id=purchase.item_id,
        body=body.model_dump_json(),
        created_at=now,
    )


async def apply_outcome(
    store: Store, arq: ArqRedis, outcome: PaymentOutcome, *, clock: Callable[[], datetime]
) -> str:
    """Apply a verified gateway outcome. Returns what happened: ``unknown_order``, ``unchanged``,
    or the new status. Raises Conflict when the purchase was made through another gateway and
    AmountMismatch when the amount differs; then nothing changes."""
    for _ in range(MAX_RACES):
        purchase = await store.get_purchase(outcome.order_id)
        if purchase is None:
            await store.record_unmatched(
                {
                    "gateway": outcome.gateway,
                    "order_id": outcome.order_id,
                    "status": outcome.raw_status,
                    "amount": str(outcome.amount),
                    "reference": outcome.reference,
                    "received_at": iso_z(clock()),
                }
            )
            return "unknown_order"
        if purchase.gateway != outcome.gateway:
            raise Conflict(
                f"purchase {outcome.order_id} was made with gateway {purchase.gateway}, not {outcome.gateway}"
            )
        if not outcome.amount_accepted(purchase.amount):
            raise AmountMismatch(
                f"amount {outcome.amount} does not match the purchase amount {purchase.amount}"
            )
        status = next_status(purchase.status, outcome.status)
        if status is None:
            return "unchanged"
        event = None
        paid_at = None
        if status is PurchaseStatus.PAID:
            now = clock()
            paid_at = (outcome.paid_at or now).replace(microsecond=0)
            event = build_event(purchase, paid_at=paid_at, now=now)
        # The first delivery job is enqueued in the same script as the event (one round trip).
        job = job_write(arq, event.id, 0) if event is not None else None
        applied = await store.transition(purchase, status, paid_at=paid_at, event=event, job=job)
        if applied == 1:
            return status.value
    raise Conflict(f"purchase {outcome.order_id} kept changing; retry the callback")


async def resend(events: EventStore, arq: ArqRedis, event_id: str, *, now: datetime) -> EventRecord:
    """Send an event again with a fresh retry budget and the same ``webhook-id``."""
    event = await events.get(event_id)
    if event is None:
        raise NotFound(f"event {event_id} does not exist")
    seq = await events.requeue(event, now=now)
    if seq is None:
        raise NotFound(f"event {event_id} does not exist")
    await enqueue_delivery(arq, event.id, seq)
    return event
