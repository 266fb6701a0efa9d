"""The status ladder, through the ingest script (relay.store, on fakeredis with Lua): statuses only
move up pending < failed = expired < paid < refunded."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import fakeredis
import pytest
from fakeredis.aioredis import FakeRedis

from relay.crypto import SecretBox, generate_key
from relay.models import PaymentOutcome, Purchase, PurchaseStatus
from relay.store import Store

PENDING = PurchaseStatus.PENDING
FAILED = PurchaseStatus.FAILED
EXPIRED = PurchaseStatus.EXPIRED
PAID = PurchaseStatus.PAID
REFUNDED = PurchaseStatus.REFUNDED

# current, incoming, expected (None = the callback does not move the purchase)
TABLE = [
    (PENDING, PENDING, None),
    (PENDING, FAILED, FAILED),
    (PENDING, EXPIRED, EXPIRED),
    (PENDING, PAID, PAID),
    (PENDING, REFUNDED, REFUNDED),
    (FAILED, PENDING, None),
    (FAILED, FAILED, None),
    (FAILED, EXPIRED, None),
    (FAILED, PAID, PAID),
    (FAILED, REFUNDED, REFUNDED),
    (EXPIRED, PENDING, None),
    (EXPIRED, FAILED, None),
    (EXPIRED, EXPIRED, None),
    (EXPIRED, PAID, PAID),  # a settlement after expiry: the money arrived
    (EXPIRED, REFUNDED, REFUNDED),
    (PAID, PENDING, None),  # a late pending never un-pays
    (PAID, FAILED, None),
    (PAID, EXPIRED, None),
    (PAID, PAID, None),  # the same settlement twice: one event
    (PAID, REFUNDED, REFUNDED),
    (REFUNDED, PENDING, None),  # refunded is final
    (REFUNDED, FAILED, None),
    (REFUNDED, EXPIRED, None),
    (REFUNDED, PAID, None),
    (REFUNDED, REFUNDED, None),
]


T0 = datetime(2026, 5, 6, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(("current", "incoming", "expected"), TABLE)
async def test_the_ingest_script_moves_only_up_the_ladder(
    current: PurchaseStatus, incoming: PurchaseStatus, expected: PurchaseStatus | None
) -> None:
    redis = FakeRedis(server=fakeredis.FakeServer(), decode_responses=True)
    store = Store(redis, prefix="t", box=SecretBox([generate_key()]))
    purchase = Purchase(
        order_id="order-1",
        item_id="tmpl",
        project_id="shop",
        item_name="Premium Template",
        amount=50000,
        currency="IDR",
        buyer_email="buyer@example.com",
        status=current,
        created_at=T0,
        updated_at=T0,
    )
    await store.create_purchase(purchase)
    outcome = PaymentOutcome(
        gateway="midtrans",
        order_id="order-1",
        status=incoming,
        amount=Decimal(50000),
        paid_at=None,
        raw_status=incoming.value,
    )
    result = await store.ingest(outcome, now=T0, paid_at=T0, event_id="evt_1")
    stored = await store.get_purchase("order-1")
    assert stored is not None
    if expected is None:
        assert result == ("unchanged", current.value)
        assert stored.status is current
    else:
        assert result == ("applied", expected.value)
        assert stored.status is expected
    assert (stored.event_id == "evt_1") is (expected is PurchaseStatus.PAID)
    await redis.aclose()


def test_table_covers_every_pair() -> None:
    pairs = {(current, incoming) for current, incoming, _ in TABLE}
    assert pairs == {(current, incoming) for current in PurchaseStatus for incoming in PurchaseStatus}
