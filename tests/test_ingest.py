"""relay/ingest.py on each backend (the embedded store and a real Redis): what a verified callback
does to its purchase, as an ``Ingested``. Statuses only move up pending < failed = expired < paid <
refunded; the first settlement stores the event and queues its first delivery in the same step,
even after a refund that came first (the status stays refunded)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest
from structlog.testing import capture_logs

from relay.errors import AmountMismatch, Conflict
from relay.ingest import Ingested, apply_outcome
from relay.jsonutil import dumps
from relay.models import RANK, PaymentOutcome, PurchaseStatus, iso_z, to_ms
from tests.helpers import T0, Backend, make_outcome, make_purchase, outbox_scores

PENDING = PurchaseStatus.PENDING
FAILED = PurchaseStatus.FAILED
EXPIRED = PurchaseStatus.EXPIRED
PAID = PurchaseStatus.PAID
REFUNDED = PurchaseStatus.REFUNDED
UNCHANGED = Ingested.UNCHANGED

# current, incoming, what the callback did (UNCHANGED: the purchase does not move)
TABLE = [
    (PENDING, PENDING, UNCHANGED),
    (PENDING, FAILED, Ingested.FAILED),
    (PENDING, EXPIRED, Ingested.EXPIRED),
    (PENDING, PAID, Ingested.PAID),
    (PENDING, REFUNDED, Ingested.REFUNDED),
    (FAILED, PENDING, UNCHANGED),
    (FAILED, FAILED, UNCHANGED),
    (FAILED, EXPIRED, UNCHANGED),
    (FAILED, PAID, Ingested.PAID),
    (FAILED, REFUNDED, Ingested.REFUNDED),
    (EXPIRED, PENDING, UNCHANGED),
    (EXPIRED, FAILED, UNCHANGED),
    (EXPIRED, EXPIRED, UNCHANGED),
    (EXPIRED, PAID, Ingested.PAID),  # a settlement after expiry: the money arrived
    (EXPIRED, REFUNDED, Ingested.REFUNDED),
    (PAID, PENDING, UNCHANGED),  # a late pending never un-pays
    (PAID, FAILED, UNCHANGED),
    (PAID, EXPIRED, UNCHANGED),
    (PAID, PAID, UNCHANGED),  # the same settlement twice: one event
    (PAID, REFUNDED, Ingested.REFUNDED),
    (REFUNDED, PENDING, UNCHANGED),  # refunded is final
    (REFUNDED, FAILED, UNCHANGED),
    (REFUNDED, EXPIRED, UNCHANGED),
    (REFUNDED, PAID, Ingested.PAID),  # a refund before its settlement: the event, status refunded
    (REFUNDED, REFUNDED, UNCHANGED),
]


async def ingest(stores: Backend, outcome: PaymentOutcome) -> Ingested:
    return await apply_outcome(stores.store, stores.arq, outcome, clock=lambda: T0)


async def queued_jobs(stores: Backend) -> list[str]:
    """The job ids in arq's queue."""
    return list(await stores.redis.zrange(stores.arq.default_queue_name, 0, -1))


@pytest.mark.parametrize(("current", "incoming", "result"), TABLE)
async def test_a_callback_moves_its_purchase_only_up_the_ladder(
    stores: Backend, current: PurchaseStatus, incoming: PurchaseStatus, result: Ingested
) -> None:
    # A paid purchase has its event; a refunded one here was refunded before any settlement.
    event_id = "evt_0" if current is PAID else None
    start = make_purchase("order-1").model_copy(update={"status": current, "event_id": event_id})
    await stores.store.create_purchase(start)

    assert await ingest(stores, make_outcome("order-1", incoming)) is result

    stored = await stores.store.get_purchase("order-1")
    assert stored is not None
    moved = result is not UNCHANGED and RANK[incoming] > RANK[current]
    assert stored.status is (incoming if moved else current)
    paid = result is Ingested.PAID
    assert (stored.event_id is not None) is (paid or current is PAID)
    assert await outbox_scores(stores) == ({stored.event_id: to_ms(T0)} if paid else {})
    assert await queued_jobs(stores) == ([stored.event_id] if paid else [])


def test_table_covers_every_pair() -> None:
    pairs = {(current, incoming) for current, incoming, _ in TABLE}
    assert pairs == {(current, incoming) for current in PurchaseStatus for incoming in PurchaseStatus}


async def test_a_callback_for_an_unknown_order_is_recorded_for_operators(stores: Backend) -> None:
    assert await ingest(stores, make_outcome("order-gone")) is Ingested.UNKNOWN_ORDER
    assert await stores.store.unmatched() == [
        {
            "gateway": "midtrans",
            "order_id": "order-gone",
            "status": "paid",
            "amount": "50000",
            "reference": None,
            "received_at": iso_z(T0),
        }
    ]
    assert await outbox_scores(stores) == {}
    assert await queued_jobs(stores) == []


@pytest.mark.parametrize(
    ("fields", "error"), [({"gateway": "xendit"}, Conflict), ({"amount": "49999"}, AmountMismatch)]
)
async def test_a_callback_that_does_not_match_its_purchase_raises_and_changes_nothing(
    stores: Backend, fields: dict[str, Any], error: type[Conflict]
) -> None:
    purchase = make_purchase("order-1")
    await stores.store.create_purchase(purchase)
    with pytest.raises(Conflict) as raised:
        await ingest(stores, make_outcome("order-1", **fields))
    assert type(raised.value) is error
    assert await stores.store.get_purchase("order-1") == purchase
    assert await outbox_scores(stores) == {}
    assert await queued_jobs(stores) == []


async def test_a_purchase_stored_without_its_event_template_is_still_paid(stores: Backend) -> None:
    await stores.store.create_purchase(make_purchase("order-1"))
    await stores.redis.hdel(stores.store.keys.purchase("order-1"), "event_head", "event_tail")  # type: ignore[misc]

    assert await ingest(stores, make_outcome("order-1")) is Ingested.PAID

    stored = await stores.store.get_purchase("order-1")
    assert stored is not None
    assert stored.event_id is not None
    assert await stores.events.get(stored.event_id) is not None
    assert await queued_jobs(stores) == [stored.event_id]


async def test_a_settlement_after_a_refund_writes_the_event_once_and_stays_refunded(stores: Backend) -> None:
    await stores.store.create_purchase(make_purchase("order-1"))
    assert await ingest(stores, make_outcome("order-1", REFUNDED)) is Ingested.REFUNDED

    assert await ingest(stores, make_outcome("order-1", PAID)) is Ingested.PAID
    assert await ingest(stores, make_outcome("order-1", PAID)) is UNCHANGED

    stored = await stores.store.get_purchase("order-1")
    assert stored is not None
    assert (stored.status, stored.paid_at) == (REFUNDED, T0)
    assert stored.event_id is not None
    # The refund that came first is sent too, after the payment: from the outbox (the sweeper
    # enqueues it), the payment's own job queued at once.
    refund_id = f"{stored.event_id}_refund"
    assert await outbox_scores(stores) == {stored.event_id: to_ms(T0), refund_id: to_ms(T0)}
    assert await queued_jobs(stores) == [stored.event_id]
    refund = await stores.events.get(refund_id)
    assert refund is not None
    assert (refund.type, json.loads(refund.body)["event"]) == ("item.refunded", "item.refunded")


@pytest.mark.parametrize(("stated", "applies"), [(None, True), ("IDR", True), ("idr", True), ("USD", False)])
async def test_a_callback_in_another_currency_is_a_conflict_naming_both(
    stores: Backend, stated: str | None, applies: bool
) -> None:
    purchase = make_purchase("order-1")
    await stores.store.create_purchase(purchase)
    outcome = replace(make_outcome("order-1"), currency=stated)
    if applies:
        assert await ingest(stores, outcome) is Ingested.PAID
        return
    with pytest.raises(Conflict) as raised:
        await ingest(stores, outcome)
    assert "USD" in raised.value.detail
    assert "IDR" in raised.value.detail
    assert await stores.store.get_purchase("order-1") == purchase
    assert await outbox_scores(stores) == {}


@pytest.mark.parametrize(
    ("reported", "expected"),
    [
        (T0 - timedelta(minutes=5), T0 - timedelta(minutes=5)),  # after the order: believed
        (T0 - timedelta(days=400), T0 - timedelta(minutes=10)),  # before the order: its creation
        (T0 + timedelta(days=400), T0),  # in the future: now
    ],
)
async def test_a_gateways_paid_at_is_clamped_to_the_order_creation_and_now(
    stores: Backend, reported: datetime, expected: datetime
) -> None:
    # 10 minutes ago, with milliseconds: paid_at is to the second, the creation's second is its floor
    created = T0 - timedelta(minutes=10) + timedelta(milliseconds=2)
    await stores.store.create_purchase(make_purchase("order-1", created_at=created))
    outcome = replace(make_outcome("order-1"), paid_at=reported + timedelta(microseconds=250))
    with capture_logs() as logs:
        assert await ingest(stores, outcome) is Ingested.PAID
    stored = await stores.store.get_purchase("order-1")
    assert stored is not None
    assert stored.paid_at == expected
    assert stored.event_id is not None
    event = await stores.events.get(stored.event_id)
    assert event is not None
    assert json.loads(event.body)["paid_at"] == iso_z(expected)
    implausible = [entry for entry in logs if entry["event"] == "implausible_paid_at"]
    assert len(implausible) == (0 if expected == reported.replace(microsecond=0) else 1)


async def test_an_unknown_order_record_is_a_bounded_summary(stores: Backend) -> None:
    outcome = replace(make_outcome("x" * 5000), reference="r\ud800" + "r" * 70_000, raw_status="s" * 300)
    assert await ingest(stores, outcome) is Ingested.UNKNOWN_ORDER
    [entry] = await stores.store.unmatched()
    assert entry["order_id"] == "x" * 128
    assert entry["reference"] == "r?" + "r" * 126
    assert entry["status"] == "s" * 128
    assert len(dumps(entry).encode()) < 1024
