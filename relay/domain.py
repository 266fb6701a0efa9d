"""The purchase state machine and the domain operations the HTTP handlers call."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import structlog
from arq.connections import ArqRedis

from relay.errors import AmountMismatch, Conflict, NotFound
from relay.events import EventStore
from relay.gateways import PaymentOutcome
from relay.models import EventRecord, PurchaseStatus, iso_z, new_event_id
from relay.queue import enqueue_delivery, job_write
from relay.store import Store

log = structlog.get_logger("relay.domain")


async def apply_outcome(
    store: Store, arq: ArqRedis, outcome: PaymentOutcome, *, clock: Callable[[], datetime]
) -> str:
    """Apply a verified gateway outcome. Returns what happened: ``unknown_order``, ``unchanged``,
    or the new status. Raises Conflict when the purchase was made through another gateway and
    AmountMismatch when the amount differs; then nothing changes. One atomic script does the
    checks and the writes (relay.store.INGEST_LUA)."""
    now = clock()
    paid_at, event_id, job = None, "", None
    if outcome.status is PurchaseStatus.PAID:
        paid_at = (outcome.paid_at or now).replace(microsecond=0)
        event_id = new_event_id()
        # The first delivery job is enqueued in the same script as the event.
        job = job_write(arq, event_id, 0)
    code, detail = await store.ingest(outcome, now=now, paid_at=paid_at, event_id=event_id, job=job)
    if code == "no_template":  # a purchase stored before purchases carried their event template
        await store.add_event_template(outcome.order_id)
        code, detail = await store.ingest(outcome, now=now, paid_at=paid_at, event_id=event_id, job=job)
    if code == "applied":
        return detail
    if code == "unchanged":
        return "unchanged"
    if code == "unknown_order":
        await store.record_unmatched(
            {
                "gateway": outcome.gateway,
                "order_id": outcome.order_id,
                "status": outcome.raw_status,
                "amount": str(outcome.amount),
                "reference": outcome.reference,
                "received_at": iso_z(now),
            }
        )
        return "unknown_order"
    if code == "other_gateway":
        raise Conflict(f"purchase {outcome.order_id} was made with gateway {detail}, not {outcome.gateway}")
    if code == "amount_mismatch":
        raise AmountMismatch(f"amount {outcome.amount} does not match the purchase amount {detail}")
    raise Conflict(f"purchase {outcome.order_id} could not be updated ({code}); retry the callback")


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
