"""Applying a verified gateway outcome to its purchase: the use case behind every callback route.

One atomic script does the checks and the writes (``relay/lua/ingest.lua``): the gateway, the
amount, the status ladder, and on the move to paid the event, its outbox entry and its first
delivery job. What happened comes back as an ``Ingested``; a conflict is raised.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from enum import StrEnum

from arq.connections import ArqRedis

from relay.errors import AmountMismatch, Conflict
from relay.models import PaymentOutcome, PurchaseStatus, iso_z, new_event_id
from relay.store import Store
from workers.arq_compat import job_write


class Ingested(StrEnum):
    """What a callback did to its purchase (the callback metric's ``outcome``, the log's ``result``)."""

    PAID = "paid"  # moved to paid: an event was created and its delivery queued
    FAILED = "failed"
    EXPIRED = "expired"
    REFUNDED = "refunded"
    UNCHANGED = "unchanged"  # a duplicate, or a status below the purchase's (a late pending)
    UNKNOWN_ORDER = "unknown_order"  # recorded for operators; nothing else happens

    @classmethod
    def moved_to(cls, status: str) -> Ingested:
        return cls(PurchaseStatus(status).value)


async def apply_outcome(
    store: Store, arq: ArqRedis, outcome: PaymentOutcome, *, clock: Callable[[], datetime]
) -> Ingested:
    """Apply a verified outcome. Raises Conflict when the purchase was made through another
    gateway and AmountMismatch when the amount differs; then nothing changes."""
    now = clock()
    paid_at, event_id, job = None, "", None
    if outcome.status is PurchaseStatus.PAID:
        paid_at = (outcome.paid_at or now).replace(microsecond=0)
        event_id = new_event_id()
        job = job_write(arq, event_id, 0)  # the first delivery, enqueued by the same script
    code, detail = await store.ingest(outcome, now=now, paid_at=paid_at, event_id=event_id, job=job)
    if code == "no_template":  # a purchase stored before purchases carried their event template
        await store.add_event_template(outcome.order_id)
        code, detail = await store.ingest(outcome, now=now, paid_at=paid_at, event_id=event_id, job=job)
    match code:
        case "applied":
            return Ingested.moved_to(detail)
        case "unchanged":
            return Ingested.UNCHANGED
        case "unknown_order":
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
            return Ingested.UNKNOWN_ORDER
        case "other_gateway":
            raise Conflict(
                f"purchase {outcome.order_id} was made with gateway {detail}, not {outcome.gateway}"
            )
        case "amount_mismatch":
            raise AmountMismatch(f"amount {outcome.amount} does not match the purchase amount {detail}")
    raise Conflict(f"purchase {outcome.order_id} could not be updated ({code}); retry the callback")
