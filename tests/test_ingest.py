"""relay/ingest.py on each backend (the embedded store and a real Redis): what a verified callback
does to its purchase, as an ``Ingested``. Statuses only move up pending < failed = expired < paid <
refunded; the move to paid stores the event and queues its first delivery in the same step."""

from __future__ import annotations

from typing import Any

import pytest

from relay.errors import AmountMismatch, Conflict
from relay.ingest import Ingested, apply_outcome
from relay.models import PaymentOutcome, PurchaseStatus, iso_z, to_ms
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
    (REFUNDED, PAID, UNCHANGED),
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
    await stores.store.create_purchase(make_purchase("order-1").model_copy(update={"status": current}))

    assert await ingest(stores, make_outcome("order-1", incoming)) is result

    stored = await stores.store.get_purchase("order-1")
    assert stored is not None
    assert stored.status is (current if result is UNCHANGED else incoming)
    paid = result is Ingested.PAID
    assert (stored.event_id is not None) is paid
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
