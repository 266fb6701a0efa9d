"""Applying a verified gateway outcome to its purchase: the use case behind every callback route.

One atomic script does the checks and the writes (``relay/lua/ingest.lua``): the gateway, the
currency, the amount, the status ladder, and on the purchase's first settlement the event, its
outbox entry and its first delivery job. What happened comes back as an ``Ingested``; a conflict
is raised.

A gateway's own timestamp never fails a correctly signed callback: ``paid_at`` is clamped to
[the order's creation, now] (now here, the creation in the script) and an implausible one is logged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from enum import StrEnum
from typing import Any

import structlog
from arq.connections import ArqRedis

from relay.errors import AmountMismatch, Conflict
from relay.metrics import Metrics
from relay.models import PaymentOutcome, PurchaseStatus, iso_z, new_event_id
from relay.store import Store
from workers.arq_compat import job_write

log = structlog.get_logger("relay.ingest")


class Ingested(StrEnum):
    """What a callback did to its purchase (the callback metric's ``outcome``, the log's ``result``)."""

    PAID = "paid"  # moved to paid: an event was created and its delivery queued
    FAILED = "failed"
    EXPIRED = "expired"
    REFUNDED = "refunded"  # moved to refunded before any payment: kept, sent once one arrives
    REFUND_SENT = "refund_sent"  # a paid order refunded: its *.refunded event was created and queued
    UNCHANGED = "unchanged"  # a duplicate, or a status below the purchase's (a late pending)
    UNKNOWN_ORDER = "unknown_order"  # recorded for operators; nothing else happens

    @classmethod
    def moved_to(cls, status: str) -> Ingested:
        return cls(PurchaseStatus(status).value)


def refunded_at_of(outcome: PaymentOutcome, now: datetime) -> datetime:
    """When the gateway says the refund happened, never after ``now``."""
    return min(outcome.refunded_at or now, now).replace(microsecond=0)


def paid_at_of(outcome: PaymentOutcome, now: datetime) -> datetime:
    """When the gateway says the order was paid, to the second and never after ``now`` (the
    script raises it to the order's creation when it is earlier)."""
    paid_at = min(outcome.paid_at or now, now).replace(microsecond=0)
    if outcome.paid_at is not None and outcome.paid_at > now:
        log.warning("implausible_paid_at", reported=outcome.paid_at.isoformat(), clamped_to="now")
    return paid_at


def unmatched_summary(outcome: PaymentOutcome, now: datetime) -> dict[str, Any]:
    """What is kept of a callback for an unknown order (the store cuts every text field short)."""
    return {
        "gateway": outcome.gateway,
        "order_id": outcome.order_id,
        "status": outcome.raw_status,
        "amount": str(outcome.amount),
        "reference": outcome.reference,
        "received_at": iso_z(now),
    }


async def apply_outcome(
    store: Store,
    arq: ArqRedis,
    outcome: PaymentOutcome,
    *,
    clock: Callable[[], datetime],
    metrics: Metrics | None = None,
) -> Ingested:
    """Apply a verified outcome; ``metrics`` counts the events it created (a settlement can send
    refunds kept from before it too). Raises Conflict when the purchase was made through another
    gateway or in another currency, and AmountMismatch when the amount differs; then nothing
    changes."""
    if outcome.status is PurchaseStatus.REFUNDED and outcome.settled_at is not None:
        # A confirmed refund of a settled order: the payment first (unchanged when it was applied).
        settlement = replace(
            outcome,
            status=PurchaseStatus.PAID,
            paid_at=outcome.settled_at,
            raw_status="settlement",
            settled_at=None,
        )
        await apply_outcome(store, arq, settlement, clock=clock, metrics=metrics)
    now = clock()
    paid_at, refunded_at, event_id, job = None, None, "", None
    if outcome.status in (PurchaseStatus.PAID, PurchaseStatus.REFUNDED):
        if outcome.status is PurchaseStatus.PAID:
            paid_at = paid_at_of(outcome, now)
        else:
            refunded_at = refunded_at_of(outcome, now)
        event_id = new_event_id()
        job = job_write(arq, event_id, 0)  # the first delivery, enqueued by the same script
    code, detail, written = await store.ingest(
        outcome, now=now, paid_at=paid_at, event_id=event_id, job=job, refunded_at=refunded_at
    )
    if code == "no_template":  # a purchase stored before purchases carried their event template
        await store.add_event_template(outcome.order_id)
        code, detail, written = await store.ingest(
            outcome, now=now, paid_at=paid_at, event_id=event_id, job=job, refunded_at=refunded_at
        )
    if metrics is not None and written:
        metrics.events_created.inc(written)
    match code:
        case "applied" if detail == PurchaseStatus.REFUNDED and written:
            return Ingested.REFUND_SENT
        case "applied":
            return Ingested.moved_to(detail)
        case "clamped":
            reported = outcome.paid_at.isoformat() if outcome.paid_at else None
            log.warning("implausible_paid_at", reported=reported, clamped_to="order created")
            return Ingested.moved_to(detail)
        case "oversold":  # paid after it expired, its units sold again: honoured, and said
            log.warning("oversold", order_id=outcome.order_id)
            if metrics is not None:
                metrics.oversold.inc()
            return Ingested.moved_to(detail)
        case "unchanged":
            return Ingested.UNCHANGED
        case "unknown_order":
            await store.record_unmatched(unmatched_summary(outcome, now))
            return Ingested.UNKNOWN_ORDER
        case "other_gateway":
            raise Conflict(
                f"purchase {outcome.order_id} was made with gateway {detail}, not {outcome.gateway}"
            )
        case "currency_mismatch":
            raise Conflict(
                f"currency {(outcome.currency or '')[:8]!r} does not match the purchase currency {detail}"
            )
        case "amount_mismatch":
            raise AmountMismatch(f"amount {outcome.amount} does not match the purchase amount {detail}")
    raise Conflict(f"purchase {outcome.order_id} could not be updated ({code}); retry the callback")
