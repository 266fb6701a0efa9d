"""Refunds and chargebacks of paid orders: ``*.refunded`` (relay/lua/ingest.lua, relay/gateways).

On each backend (the embedded store and a real Redis): a refund's body is its model's byte for byte
(the paid body with ``refunded_at``, ``refund_amount`` and ``reason`` before ``metadata``), each
refund is sent once, a refund that came before its payment is sent once the payment arrives, and
retention keeps an order until every one of its events is finished, then deletes them all. Through
the real routes: each Midtrans refund status, Tripay's and DOKU's, a shop payment's, delivered and
signed, and the callback metric's ``refund_sent``.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

import pytest
from arq.connections import ArqRedis
from redis.asyncio import Redis

from relay.archive import export_orders
from relay.crypto import SecretBox, generate_key
from relay.errors import Conflict
from relay.event_body import (
    ItemPurchasedEvent,
    ItemRefundedEvent,
    PaymentPaidEvent,
    PaymentRefundedEvent,
    SubscriptionRefundedEvent,
)
from relay.events import EventStore
from relay.gateways.midtrans import JAKARTA, Midtrans
from relay.ingest import Ingested, apply_outcome
from relay.models import (
    Attempt,
    EventRecord,
    OrderKind,
    PaymentOutcome,
    Purchase,
    PurchaseStatus,
    WebhookStatus,
    iso_z,
    new_payment_order_id,
)
from relay.periods import Interval, add_interval
from relay.retention import Lifetimes, Retention
from relay.store import Store
from tests.gateway_callbacks import GATEWAY_SETTINGS, KEYS, OK_BODY, SIGNERS, post, send
from tests.helpers import (
    ADMIN,
    KEY_PREFIX,
    T0,
    Api,
    Backend,
    Merchant,
    Received,
    Running,
    StartRelay,
    eventually,
    make_outcome,
    make_purchase,
    open_shop,
    stored_events,
    verify,
)

PAID = PurchaseStatus.PAID
REFUNDED = PurchaseStatus.REFUNDED
MIDTRANS_REFUNDS = ["refund", "partial_refund", "chargeback", "partial_chargeback"]
# Text that would break a body joined by hand: the key the script splits at, quotes, escapes,
# characters JSON and Lua treat specially.
TRICKY = [
    '","metadata":',
    '","metadata":{"x":1}}',
    '","paid_at":"',
    'quote " backslash \\ end\\',
    "\u2028 é 漢字 \x00 / \t",
    "😀" * 20,
]
# Two of the test relay's sweeps (RELAY_SWEEP_INTERVAL 1 s): an event only in the outbox is sent by then.
SWEEPS = 2.2
LIFETIMES = Lifetimes(
    retention=timedelta(seconds=60),
    dead_letter_retention=timedelta(seconds=120),
    purchase_expiry=timedelta(seconds=10),
)


# --- on each backend: the store and the ingest script -----------------------------------------------


class Stores(Protocol):
    """A ``Backend``, or the stores with short lifetimes of the retention tests (``Kept``)."""

    @property
    def redis(self) -> Redis: ...
    @property
    def arq(self) -> ArqRedis: ...
    @property
    def store(self) -> Store: ...
    @property
    def events(self) -> EventStore: ...


def refund_of(
    order_id: str,
    *,
    raw: str = "partial_refund",
    amount: int | None = 20000,
    reason: str | None = "damaged",
    key: str | None = "midtrans:1",
    at: datetime | None = None,
    gross: str = "50000",
    gateway: str = "midtrans",
) -> PaymentOutcome:
    """A refund outcome as a gateway module makes it (None: the notification did not say)."""
    return PaymentOutcome(
        gateway=gateway,
        order_id=order_id,
        status=REFUNDED,
        amount=Decimal(gross),
        paid_at=None,
        raw_status=raw,
        refund_amount=None if amount is None else Decimal(amount),
        refund_reason=reason,
        refunded_at=at,
        refund_key=key,
    )


async def ingest(stores: Stores, outcome: PaymentOutcome, at: timedelta = timedelta(0)) -> Ingested:
    return await apply_outcome(stores.store, stores.arq, outcome, clock=lambda: T0 + at)


def item_refunded(
    purchase: Purchase, *, paid_at: datetime, refunded_at: datetime, amount: int, reason: str | None
) -> str:
    """The body ItemRefundedEvent makes of ``purchase`` and the refund."""
    fields = purchase.model_dump(include=set(ItemPurchasedEvent.model_fields) - {"event", "paid_at"})
    return ItemRefundedEvent(
        **fields,
        paid_at=iso_z(paid_at),
        refunded_at=iso_z(refunded_at),
        refund_amount=amount,
        reason=reason,
    ).model_dump_json()


def item_purchased(purchase: Purchase, *, paid_at: datetime) -> str:
    fields = purchase.model_dump(include=set(ItemPurchasedEvent.model_fields) - {"event", "paid_at"})
    return ItemPurchasedEvent(**fields, paid_at=iso_z(paid_at)).model_dump_json()


async def sent_refunds(stores: Stores, order_id: str) -> dict[str, EventRecord]:
    """The refund events the order has sent, by refund key (the purchase's ``refund:{key}`` fields)."""
    fields = await stores.redis.hgetall(stores.store.keys.purchase(order_id))  # type: ignore[misc]
    found = {}
    for name, event_id in fields.items():
        if name.startswith("refund:"):
            event = await stores.events.get(event_id)
            assert event is not None, name
            found[name.removeprefix("refund:")] = event
    return found


async def paid_event(stores: Stores, order_id: str) -> EventRecord:
    purchase = await stores.store.get_purchase(order_id)
    assert purchase is not None
    assert purchase.event_id is not None
    event = await stores.events.get(purchase.event_id)
    assert event is not None
    return event


async def queued(stores: Stores) -> list[str]:
    return list(await stores.redis.zrange(stores.arq.default_queue_name, 0, -1))


async def outbox(stores: Stores) -> list[str]:
    return list(await stores.redis.zrange(stores.store.keys.outbox, 0, -1))


async def paid_order(stores: Stores, purchase: Purchase) -> EventRecord:
    """``purchase`` stored and paid at T0."""
    await stores.store.create_purchase(purchase)
    assert await ingest(stores, make_outcome(purchase.order_id)) is Ingested.PAID
    return await paid_event(stores, purchase.order_id)


@pytest.mark.parametrize("text", TRICKY)
async def test_a_refund_of_a_paid_item_is_the_models_body_byte_for_byte(stores: Backend, text: str) -> None:
    purchase = make_purchase("order-1").model_copy(
        update={
            "buyer_name": text,
            "item_name": text,
            "metadata": {text: text, "metadata": text, "n": [1, None]},
        }
    )
    paid = await paid_order(stores, purchase)
    refunded_at = T0 + timedelta(minutes=3)
    outcome = refund_of("order-1", reason=text, at=refunded_at)

    assert await ingest(stores, outcome, timedelta(minutes=5)) is Ingested.REFUND_SENT

    [refund] = (await sent_refunds(stores, "order-1")).values()
    expected = item_refunded(purchase, paid_at=T0, refunded_at=refunded_at, amount=20000, reason=text)
    assert refund.body == expected
    assert list(json.loads(refund.body)) == list(ItemRefundedEvent.model_fields)
    assert (refund.type, refund.order_id, refund.item_id, refund.project_id) == (
        "item.refunded",
        "order-1",
        "tmpl",
        "shop",
    )
    # The paid event is untouched, still exactly the seed's item.purchased.
    assert (await paid_event(stores, "order-1")) == paid
    assert paid.body == item_purchased(purchase, paid_at=T0)
    assert list(json.loads(paid.body)) == list(ItemPurchasedEvent.model_fields)
    # Queued at once, like the payment's.
    assert set(await queued(stores)) == {paid.id, refund.id}
    stored = await stores.store.get_purchase("order-1")
    assert stored is not None
    assert (stored.status, stored.event_id, stored.paid_at) == (REFUNDED, paid.id, T0)
    assert stored.webhook_status is WebhookStatus.PENDING


async def test_a_refund_without_details_is_a_full_refund_now_without_a_reason(stores: Backend) -> None:
    purchase = make_purchase("order-1")
    await paid_order(stores, purchase)
    outcome = refund_of("order-1", raw="refund", amount=None, reason=None, key=None)

    assert await ingest(stores, outcome, timedelta(seconds=90, microseconds=7)) is Ingested.REFUND_SENT

    [(key, refund)] = (await sent_refunds(stores, "order-1")).items()
    assert key == "refund:50000"
    expected = item_refunded(
        purchase, paid_at=T0, refunded_at=T0 + timedelta(seconds=90), amount=50000, reason=None
    )
    assert refund.body == expected
    assert json.loads(refund.body)["reason"] is None


async def test_the_same_refund_twice_is_one_event(stores: Backend) -> None:
    paid = await paid_order(stores, make_purchase("order-1"))
    for outcome in (refund_of("order-1"), refund_of("order-1", key=None)):
        assert await ingest(stores, outcome, timedelta(seconds=1)) is Ingested.REFUND_SENT
        assert await ingest(stores, outcome, timedelta(seconds=2)) is Ingested.UNCHANGED
    # A settlement or a late status after it changes nothing either.
    for status in (PAID, PurchaseStatus.PENDING, PurchaseStatus.EXPIRED):
        assert (
            await ingest(stores, make_outcome("order-1", status), timedelta(seconds=3)) is Ingested.UNCHANGED
        )
    refunds = await sent_refunds(stores, "order-1")
    assert set(refunds) == {"midtrans:1", "partial_refund:20000"}
    assert sorted(await outbox(stores)) == sorted([paid.id, *(event.id for event in refunds.values())])


async def test_two_refunds_with_their_own_keys_are_two_events(stores: Backend) -> None:
    purchase = make_purchase("order-1")
    await paid_order(stores, purchase)
    first = refund_of("order-1", amount=10000, reason="one", key="midtrans:7", at=T0 + timedelta(minutes=1))
    second = refund_of("order-1", amount=15000, reason="two", key="midtrans:8", at=T0 + timedelta(minutes=2))
    assert await ingest(stores, first, timedelta(minutes=1)) is Ingested.REFUND_SENT
    assert await ingest(stores, second, timedelta(minutes=2)) is Ingested.REFUND_SENT
    assert await ingest(stores, first, timedelta(minutes=3)) is Ingested.UNCHANGED

    refunds = await sent_refunds(stores, "order-1")
    assert {key: json.loads(event.body)["refund_amount"] for key, event in refunds.items()} == {
        "midtrans:7": 10000,
        "midtrans:8": 15000,
    }
    assert refunds["midtrans:8"].body == item_refunded(
        purchase, paid_at=T0, refunded_at=T0 + timedelta(minutes=2), amount=15000, reason="two"
    )


async def test_a_refund_of_an_unpaid_order_sends_nothing_and_refunds_it(stores: Backend) -> None:
    await stores.store.create_purchase(make_purchase("order-1"))
    assert await ingest(stores, refund_of("order-1")) is Ingested.REFUNDED
    assert await ingest(stores, refund_of("order-1")) is Ingested.UNCHANGED

    stored = await stores.store.get_purchase("order-1")
    assert stored is not None
    assert (stored.status, stored.event_id, stored.webhook_status, stored.paid_at) == (
        REFUNDED,
        None,
        None,
        None,
    )
    assert await outbox(stores) == []
    assert await queued(stores) == []
    assert await stores.redis.keys(f"{KEY_PREFIX}:event:*") == []


@pytest.mark.parametrize("text", TRICKY)
async def test_a_refund_before_the_settlement_is_sent_after_it_byte_for_byte(
    stores: Backend, text: str
) -> None:
    """The kept refund goes through cjson (encode, then decode at the settlement): its reason and
    amount come out as they went in, on either backend."""
    purchase = make_purchase("order-1").model_copy(update={"metadata": {text: text}})
    await stores.store.create_purchase(purchase)
    refund = refund_of("order-1", raw="chargeback", amount=50000, reason=text, key=f"midtrans:{text}")
    assert await ingest(stores, refund, timedelta(seconds=30)) is Ingested.REFUNDED

    assert await ingest(stores, make_outcome("order-1"), timedelta(seconds=40)) is Ingested.PAID

    paid = await paid_event(stores, "order-1")
    assert paid.body == item_purchased(purchase, paid_at=T0 + timedelta(seconds=40))
    [sent] = (await sent_refunds(stores, "order-1")).values()
    assert sent.id == f"{paid.id}_refund"
    # Refunded at the refund's time, but never before the payment it refunds.
    expected = item_refunded(
        purchase,
        paid_at=T0 + timedelta(seconds=40),
        refunded_at=T0 + timedelta(seconds=40),
        amount=50000,
        reason=text,
    )
    assert sent.body == expected
    # The payment first: its job queued at once, the refund from the outbox (the sweeper's).
    assert await queued(stores) == [paid.id]
    assert set(await outbox(stores)) == {paid.id, sent.id}
    stored = await stores.store.get_purchase("order-1")
    assert stored is not None
    assert stored.status is REFUNDED
    # The refund again, once sent: nothing more.
    assert await ingest(stores, refund, timedelta(seconds=50)) is Ingested.UNCHANGED
    assert len(await sent_refunds(stores, "order-1")) == 1


async def test_every_refund_before_the_settlement_is_sent_after_it(stores: Backend) -> None:
    """Two partial refunds that both came before the payment: both are sent once it arrives (none
    is lost), each once however often it was notified."""
    purchase = make_purchase("order-1")
    await stores.store.create_purchase(purchase)
    first = refund_of("order-1", amount=10000, reason="one", key="midtrans:1")
    second = refund_of("order-1", amount=15000, reason="two", key="midtrans:2")
    assert await ingest(stores, first, timedelta(seconds=1)) is Ingested.REFUNDED
    assert await ingest(stores, first, timedelta(seconds=2)) is Ingested.UNCHANGED
    assert await ingest(stores, second, timedelta(seconds=3)) is Ingested.UNCHANGED
    assert await ingest(stores, second, timedelta(seconds=4)) is Ingested.UNCHANGED

    assert await ingest(stores, make_outcome("order-1"), timedelta(seconds=5)) is Ingested.PAID

    refunds = await sent_refunds(stores, "order-1")
    assert {key: json.loads(event.body)["reason"] for key, event in refunds.items()} == {
        "midtrans:1": "one",
        "midtrans:2": "two",
    }
    paid = await paid_event(stores, "order-1")
    assert set(await outbox(stores)) == {paid.id, *(event.id for event in refunds.values())}
    assert await ingest(stores, second, timedelta(seconds=6)) is Ingested.UNCHANGED
    assert len(await sent_refunds(stores, "order-1")) == 2


async def test_the_refunds_kept_before_the_payment_are_bounded(stores: Backend) -> None:
    """A refund's details are not signed: replays with made-up refund ids keep no more than 20."""
    await stores.store.create_purchase(make_purchase("order-1"))
    for number in range(25):
        await ingest(stores, refund_of("order-1", amount=100, key=f"midtrans:{number}"))
    assert await ingest(stores, make_outcome("order-1"), timedelta(seconds=1)) is Ingested.PAID
    refunds = await sent_refunds(stores, "order-1")
    assert set(refunds) == {f"midtrans:{number}" for number in range(20)}
    paid = await paid_event(stores, "order-1")
    assert {event.id for event in refunds.values()} == {
        f"{paid.id}_refund",
        *(f"{paid.id}_refund{index}" for index in range(2, 21)),
    }


async def test_a_refund_kept_by_the_previous_script_is_sent_after_the_payment(stores: Backend) -> None:
    """An order refunded before its payment by the script before kept refunds were a list: its one
    refund, an object, is sent all the same."""
    purchase = make_purchase("order-1")
    await stores.store.create_purchase(purchase)
    kept = {"key": "midtrans:5", "at": iso_z(T0), "amount": "7000", "reason": '"old é"'}
    key = stores.store.keys.purchase("order-1")
    await stores.redis.hset(key, mapping={"status": "refunded", "pending_refund": json.dumps(kept)})  # type: ignore[misc]
    assert await ingest(stores, make_outcome("order-1"), timedelta(seconds=1)) is Ingested.PAID
    [(refund_key, refund)] = (await sent_refunds(stores, "order-1")).items()
    assert refund_key == "midtrans:5"
    paid_at = T0 + timedelta(seconds=1)
    assert refund.body == item_refunded(
        purchase, paid_at=paid_at, refunded_at=paid_at, amount=7000, reason="old é"
    )
    assert await stores.redis.hget(key, "pending_refund") is None  # type: ignore[misc]


@pytest.mark.parametrize(
    ("stated", "expected"),
    [
        pytest.param(timedelta(minutes=3), timedelta(minutes=3), id="believed"),
        pytest.param(timedelta(minutes=-3), timedelta(0), id="before-the-payment"),
        pytest.param(timedelta(days=-400), timedelta(0), id="long-before"),
        pytest.param(timedelta(days=400), timedelta(minutes=5), id="in-the-future"),
    ],
)
async def test_refunded_at_is_held_to_the_payment_and_now(
    stores: Backend, stated: timedelta, expected: timedelta
) -> None:
    purchase = make_purchase("order-1")
    await paid_order(stores, purchase)
    outcome = refund_of("order-1", at=T0 + stated + timedelta(microseconds=300))
    assert await ingest(stores, outcome, timedelta(minutes=5)) is Ingested.REFUND_SENT
    [refund] = (await sent_refunds(stores, "order-1")).values()
    assert json.loads(refund.body)["refunded_at"] == iso_z(T0 + expected)


async def test_a_refund_is_never_of_more_than_the_order(stores: Backend) -> None:
    """A gateway whose amounts include the buyer's fee (Tripay's total_amount: the at_least rule)
    states a full refund as more than the order: the body says the order's amount."""
    purchase = make_purchase("order-1")
    await paid_order(stores, purchase)
    stated = refund_of("order-1", amount=None, key=None, raw="REFUND", gross="52500")
    outcome = replace(stated, amount_rule="at_least")
    assert await ingest(stores, outcome, timedelta(seconds=1)) is Ingested.REFUND_SENT
    refunds = await sent_refunds(stores, "order-1")
    assert {key: json.loads(event.body)["refund_amount"] for key, event in refunds.items()} == {
        "REFUND:52500": 50000
    }
    # A stated partial refund of more than the order, too (on another order: this one is refunded
    # in full, so a further refund sends nothing).
    await paid_order(stores, make_purchase("order-2"))
    partial = replace(outcome, order_id="order-2", refund_amount=Decimal(60000), refund_key="k")
    assert await ingest(stores, partial) is Ingested.REFUND_SENT
    assert await ingest(stores, replace(partial, refund_key="k2")) is Ingested.REFUNDED
    refunds = await sent_refunds(stores, "order-2")
    assert {key: json.loads(event.body)["refund_amount"] for key, event in refunds.items()} == {"k": 50000}


async def test_a_refund_of_a_shop_payment_is_payment_refunded(stores: Backend) -> None:
    order_id = new_payment_order_id()
    payment = make_purchase(order_id).model_copy(
        update={
            "kind": OrderKind.PAYMENT,
            "event_type": "payment.paid",
            "item_id": "",
            "item_name": "",
            "merchant_order_id": "INV-1001",
            "description": 'Two "tickets" — ünïcode',
        }
    )
    await stores.store.create_purchase(payment)
    assert await ingest(stores, make_outcome(order_id)) is Ingested.PAID
    paid = await paid_event(stores, order_id)
    common = {
        "order_id": "INV-1001",
        "amount": 50000,
        "currency": "IDR",
        "buyer_email": "buyer@example.com",
        "buyer_name": "John Doe",
        "description": 'Two "tickets" — ünïcode',
        "paid_at": iso_z(T0),
        "metadata": payment.metadata,
    }
    assert paid.body == PaymentPaidEvent(**common).model_dump_json()

    outcome = refund_of(order_id, amount=None, reason=None, key=None, raw="refund")
    assert await ingest(stores, outcome, timedelta(seconds=9)) is Ingested.REFUND_SENT

    [refund] = (await sent_refunds(stores, order_id)).values()
    expected = PaymentRefundedEvent(
        **common, refunded_at=iso_z(T0 + timedelta(seconds=9)), refund_amount=50000, reason=None
    )
    assert refund.body == expected.model_dump_json()
    assert (refund.type, refund.item_id) == ("payment.refunded", "")


async def test_a_refund_of_a_subscriptions_first_payment_is_subscription_refunded(stores: Backend) -> None:
    """The paid body of a first period holds the period the payment started: the refund's too."""
    order = make_purchase("sub-0000aaaa-1").model_copy(
        update={
            "kind": OrderKind.SUBSCRIPTION,
            "event_type": "subscription.activated",
            "item_id": "",
            "item_name": 'Pro "plan"',
            "subscription_id": "sub_0000aaaa",
            "plan_id": "pro",
            "user_id": "u1",
            "interval": Interval.MONTH,
            "interval_count": 1,
        }
    )
    await stores.store.create_purchase(order)
    paid_at = T0 + timedelta(minutes=1)
    assert await ingest(stores, make_outcome(order.order_id), timedelta(minutes=1)) is Ingested.PAID
    outcome = refund_of(order.order_id, reason="cancelled", at=T0 + timedelta(minutes=2))
    assert await ingest(stores, outcome, timedelta(minutes=3)) is Ingested.REFUND_SENT

    [refund] = (await sent_refunds(stores, order.order_id)).values()
    expected = SubscriptionRefundedEvent(
        subscription_id="sub_0000aaaa",
        plan_id="pro",
        plan_name='Pro "plan"',
        user_id="u1",
        buyer_email="buyer@example.com",
        buyer_name="John Doe",
        order_id=order.order_id,
        amount=50000,
        currency="IDR",
        period_start=iso_z(paid_at),
        period_end=iso_z(add_interval(paid_at, Interval.MONTH)),
        paid_at=iso_z(paid_at),
        refunded_at=iso_z(T0 + timedelta(minutes=2)),
        refund_amount=20000,
        reason="cancelled",
        metadata=order.metadata,
    )
    assert refund.body == expected.model_dump_json()
    assert (refund.type, refund.plan_id) == ("subscription.refunded", "pro")


async def test_a_refund_of_a_purchase_stored_with_the_old_template_is_the_models_body(
    stores: Backend,
) -> None:
    """A purchase stored before metadata had its own field (it is in doc and in event_tail)."""
    purchase = make_purchase("order-1").model_copy(update={"metadata": {"q": 'a "b" é'}})
    await stores.store.create_purchase(purchase)
    key = stores.store.keys.purchase("order-1")
    doc = json.loads(await stores.redis.hget(key, "doc"))  # type: ignore[misc]
    tail = '","metadata":' + json.dumps(purchase.metadata, ensure_ascii=False, separators=(",", ":")) + "}"
    await stores.redis.hset(
        key, mapping={"doc": json.dumps(doc | {"metadata": purchase.metadata}), "event_tail": tail}
    )  # type: ignore[misc]
    await stores.redis.hdel(key, "metadata")  # type: ignore[misc]
    assert await ingest(stores, make_outcome("order-1")) is Ingested.PAID
    assert await ingest(stores, refund_of("order-1", at=T0), timedelta(seconds=1)) is Ingested.REFUND_SENT
    [refund] = (await sent_refunds(stores, "order-1")).values()
    assert refund.body == item_refunded(purchase, paid_at=T0, refunded_at=T0, amount=20000, reason="damaged")


@pytest.mark.parametrize(
    ("fields", "error"),
    [({"gateway": "xendit"}, "Conflict"), ({"gross": "49999"}, "AmountMismatch")],
)
async def test_a_refund_that_does_not_match_its_order_changes_nothing(
    stores: Backend, fields: dict[str, Any], error: str
) -> None:
    await paid_order(stores, make_purchase("order-1"))
    before = await stores.store.get_purchase("order-1")
    with pytest.raises(Conflict) as raised:
        await ingest(stores, refund_of("order-1", **fields))
    assert type(raised.value).__name__ == error
    assert await stores.store.get_purchase("order-1") == before
    assert await sent_refunds(stores, "order-1") == {}


# --- what a Midtrans refund notification says (relay.gateways.midtrans.refund_details) ---------------


def midtrans_refund(status: str = "partial_refund", **extra: Any) -> PaymentOutcome:
    payload = {
        "transaction_status": status,
        "status_code": "200",
        "order_id": "order-1",
        "gross_amount": "50000.00",
        "currency": "IDR",
    }
    return Midtrans(server_key="unused-here-0123456789").normalise(payload | extra)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        pytest.param({}, (None, None, None, None), id="no-details"),
        pytest.param(
            {"refund_amount": "20000.00", "refund_key": "k-1"},
            (Decimal(20000), None, None, "midtrans:k-1"),
            id="top-level",
        ),
        pytest.param(
            {
                "refund_amount": "30000.00",  # Midtrans's running total; the newest entry is the refund
                "refunds": [
                    {"refund_chargeback_id": 1, "refund_amount": "10000.00", "reason": "one"},
                    {
                        "refund_chargeback_id": 2,
                        "refund_amount": "20000.00",
                        "reason": "  two  ",
                        "created_at": "2026-05-06 17:00:00",
                    },
                ],
            },
            (Decimal(20000), "two", datetime(2026, 5, 6, 10, 0, tzinfo=UTC), "midtrans:2"),
            id="newest-entry",
        ),
        pytest.param(
            {"refunds": [{"refund_chargeback_id": None, "refund_key": "rk-9", "refund_amount": 5000}]},
            (Decimal(5000), None, None, "midtrans:rk-9"),
            id="null-id-falls-back-to-the-refund-key",
        ),
        pytest.param(
            {"refunds": [{"refund_chargeback_id": "", "refund_key": "rk-9", "refund_amount": "5000.00"}]},
            (Decimal(5000), None, None, "midtrans:rk-9"),
            id="empty-id-falls-back-to-the-refund-key",
        ),
        pytest.param(
            {"refunds": [{"refund_chargeback_id": True, "refund_amount": "60000.00", "reason": " "}]},
            (None, None, None, None),
            id="unreadable-parts-are-left-out",
        ),
        pytest.param(
            {"refunds": [{"refund_chargeback_id": 3, "refund_amount": "0.00", "created_at": "yesterday"}]},
            (None, None, None, "midtrans:3"),
            id="zero-amount-and-bad-time",
        ),
        pytest.param({"refunds": ["not an object"]}, (None, None, None, None), id="entry-not-an-object"),
    ],
)
def test_a_midtrans_refund_notification_is_read_from_its_newest_refund(
    extra: dict[str, Any], expected: tuple[Decimal | None, str | None, datetime | None, str | None]
) -> None:
    outcome = midtrans_refund(**extra)
    assert outcome.status is REFUNDED
    assert outcome.amount == Decimal("50000.00")
    assert (outcome.refund_amount, outcome.refund_reason, outcome.refunded_at, outcome.refund_key) == expected


@pytest.mark.parametrize("status", MIDTRANS_REFUNDS)
def test_every_midtrans_refund_status_refunds(status: str) -> None:
    assert midtrans_refund(status).status is REFUNDED


# --- retention: an order is finished when every one of its events is ---------------------------------


@dataclass
class Kept:
    backend: Backend
    store: Store
    events: EventStore
    retention: Retention

    @property
    def redis(self) -> Redis:
        return self.backend.redis

    @property
    def arq(self) -> ArqRedis:
        return self.backend.arq


@pytest.fixture
def kept(stores: Backend) -> Kept:
    redis = stores.redis
    store = Store(redis, prefix=KEY_PREFIX, box=SecretBox([generate_key()]), lifetimes=LIFETIMES)
    events = EventStore(redis, prefix=KEY_PREFIX, lifetimes=LIFETIMES)
    return Kept(stores, store, events, Retention(redis, prefix=KEY_PREFIX, lifetimes=LIFETIMES))


def attempt(at: timedelta, status: int, *, retry_in: timedelta | None = None) -> Attempt:
    return Attempt(
        at=T0 + at,
        url="https://merchant.example/hook",
        status_code=status,
        duration_ms=3,
        next_attempt_at=T0 + at + retry_in if retry_in else None,
    )


async def finish(
    kept: Kept, event: EventRecord, state: WebhookStatus, at: timedelta, status: int = 200
) -> None:
    """One attempt of ``event`` at its current seq, ending in ``state``."""
    current = await kept.events.get(event.id)
    assert current is not None
    retry_in = timedelta(seconds=30) if state is WebhookStatus.RETRYING else None
    await kept.events.finish_attempt(
        current, seq=current.seq, attempt=attempt(at, status, retry_in=retry_in), state=state, now=T0 + at
    )


async def relay_keys(kept: Kept) -> set[str]:
    return {key async for key in kept.redis.scan_iter(match=f"{KEY_PREFIX}:*")}


async def refunded_order(kept: Kept) -> tuple[EventRecord, EventRecord]:
    """order-1 paid at T0 and refunded at T0 + 2 s: its paid event and its refund event."""
    paid = await paid_order(kept, make_purchase("order-1"))
    assert await ingest(kept, refund_of("order-1"), timedelta(seconds=2)) is Ingested.REFUND_SENT
    [refund] = (await sent_refunds(kept, "order-1")).values()
    return paid, refund


async def assert_all_gone(kept: Kept, events: list[EventRecord], before: set[str]) -> None:
    assert await kept.store.get_purchase("order-1") is None
    for event in events:
        assert await kept.events.get(event.id) is None
    assert await kept.events.attempts([event.id for event in events]) == {event.id: [] for event in events}
    redis, keys = kept.redis, kept.store.keys
    for index in (
        keys.project_purchases("shop"),
        keys.project_events("shop"),
        keys.project_dead_letters("shop"),
        keys.outbox,
        keys.dead_letters,
        keys.retention,
        keys.expiry,
    ):
        assert await redis.zcard(index) == 0, index
    assert await redis.hget(keys.stats, "orders") == "0"
    assert await relay_keys(kept) - before == {keys.stats}


async def test_an_order_whose_refund_is_still_retrying_is_not_deleted(kept: Kept) -> None:
    before = await relay_keys(kept)
    paid, refund = await refunded_order(kept)
    await finish(kept, paid, WebhookStatus.DELIVERED, timedelta(seconds=1))
    await finish(kept, refund, WebhookStatus.RETRYING, timedelta(seconds=3), status=503)

    swept = await kept.retention.sweep(now=T0 + timedelta(days=365))
    assert swept.deleted_orders == 0
    assert await kept.store.get_purchase("order-1") is not None
    assert await kept.events.get(paid.id) is not None
    assert await kept.events.get(refund.id) is not None
    assert len((await kept.events.attempts([paid.id]))[paid.id]) == 1

    done = timedelta(days=366)
    await finish(kept, refund, WebhookStatus.DELIVERED, done)
    stored = await kept.store.get_purchase("order-1")
    assert stored is not None
    assert stored.webhook_status is WebhookStatus.DELIVERED
    assert (await kept.retention.sweep(now=T0 + done + timedelta(seconds=59))).deleted_orders == 0
    assert (await kept.retention.sweep(now=T0 + done + timedelta(seconds=60))).deleted_orders == 1
    await assert_all_gone(kept, [paid, refund], before)


async def test_an_order_whose_payment_is_still_retrying_is_not_deleted_when_its_refund_is_done(
    kept: Kept,
) -> None:
    before = await relay_keys(kept)
    paid, refund = await refunded_order(kept)
    await finish(kept, paid, WebhookStatus.RETRYING, timedelta(seconds=1), status=500)
    await finish(kept, refund, WebhookStatus.DELIVERED, timedelta(seconds=3))

    assert (await kept.retention.sweep(now=T0 + timedelta(days=365))).deleted_orders == 0
    assert await kept.store.get_purchase("order-1") is not None

    done = timedelta(days=366)
    await finish(kept, paid, WebhookStatus.DELIVERED, done)
    assert (await kept.retention.sweep(now=T0 + done + timedelta(seconds=60))).deleted_orders == 1
    await assert_all_gone(kept, [paid, refund], before)


async def test_a_refund_of_a_delivered_order_keeps_it_until_the_refund_is_done(kept: Kept) -> None:
    """Delivered, the order is due for deletion; a refund then keeps it until its own event is
    done (the sweep finds it unfinished and leaves it; it never goes with a refund pending)."""
    before = await relay_keys(kept)
    paid = await paid_order(kept, make_purchase("order-1"))
    await finish(kept, paid, WebhookStatus.DELIVERED, timedelta(seconds=1))
    assert await kept.redis.zscore(kept.store.keys.retention, "o:order-1") is not None
    assert await ingest(kept, refund_of("order-1"), timedelta(seconds=30)) is Ingested.REFUND_SENT
    [refund] = (await sent_refunds(kept, "order-1")).values()

    assert (await kept.retention.sweep(now=T0 + timedelta(seconds=61))).deleted_orders == 0
    assert await kept.events.get(refund.id) is not None
    await finish(kept, refund, WebhookStatus.DELIVERED, timedelta(seconds=62))
    assert (await kept.retention.sweep(now=T0 + timedelta(seconds=122))).deleted_orders == 1
    await assert_all_gone(kept, [paid, refund], before)


async def test_a_dead_lettered_refund_keeps_its_order_for_the_dead_letter_retention(kept: Kept) -> None:
    before = await relay_keys(kept)
    paid, refund = await refunded_order(kept)
    await finish(kept, paid, WebhookStatus.DELIVERED, timedelta(seconds=1))
    await finish(kept, refund, WebhookStatus.FAILED, timedelta(seconds=3), status=500)
    assert await kept.redis.zcard(kept.store.keys.project_dead_letters("shop")) == 1

    assert (await kept.retention.sweep(now=T0 + timedelta(seconds=122))).deleted_orders == 0
    assert (await kept.retention.sweep(now=T0 + timedelta(seconds=123))).deleted_orders == 1
    await assert_all_gone(kept, [paid, refund], before)


async def test_a_refund_sent_after_a_late_settlement_is_kept_until_it_is_done(kept: Kept) -> None:
    """Refunded before paid (finished: on the schedule), then paid: both events must finish."""
    before = await relay_keys(kept)
    await kept.store.create_purchase(make_purchase("order-1"))
    assert await ingest(kept, refund_of("order-1")) is Ingested.REFUNDED
    assert await kept.redis.zscore(kept.store.keys.retention, "o:order-1") is not None
    assert await ingest(kept, make_outcome("order-1"), timedelta(seconds=5)) is Ingested.PAID
    paid = await paid_event(kept, "order-1")
    [refund] = (await sent_refunds(kept, "order-1")).values()
    await finish(kept, paid, WebhookStatus.DELIVERED, timedelta(seconds=6))

    assert (await kept.retention.sweep(now=T0 + timedelta(days=30))).deleted_orders == 0
    await finish(kept, refund, WebhookStatus.DELIVERED, timedelta(days=30, seconds=1))
    assert (await kept.retention.sweep(now=T0 + timedelta(days=30, seconds=61))).deleted_orders == 1
    await assert_all_gone(kept, [paid, refund], before)


# --- through the routes: delivered, signed, counted --------------------------------------------------


def jakarta(moment: datetime) -> str:
    return moment.astimezone(JAKARTA).strftime("%Y-%m-%d %H:%M:%S")


async def hooks(merchant: Merchant, count: int, path: str = "/hook") -> list[Received]:
    """Exactly ``count`` deliveries to ``path``, once they arrived."""

    async def arrived() -> bool:
        return len(merchant.hits(path)) >= count

    await eventually(arrived, what=f"{count} deliveries to {path}")
    hits = merchant.hits(path)
    assert len(hits) == count, [hit.body for hit in hits]
    return hits


async def settled(merchant: Merchant, count: int, path: str = "/hook") -> list[Received]:
    """``hooks``, then two sweeps more (anything else due by then would have been sent): exactly
    ``count``."""
    await hooks(merchant, count, path)
    await asyncio.sleep(SWEEPS)
    hits = merchant.hits(path)
    assert len(hits) == count, [hit.body for hit in hits]
    return hits


def refunded_body(shown: dict[str, Any], *, refunded_at: str, amount: int, reason: str | None) -> str:
    """ItemRefundedEvent of a purchase as the API shows it."""
    fields = {name: shown[name] for name in ItemPurchasedEvent.model_fields if name != "event"}
    return ItemRefundedEvent(
        **fields, refunded_at=refunded_at, refund_amount=amount, reason=reason
    ).model_dump_json()


@pytest.fixture
async def running(start_relay: StartRelay) -> Running:
    return await start_relay(**GATEWAY_SETTINGS)


METADATA = {"note": 'say "hi" — ünïcode ✓ \\ /', "nested": {"list": [1, 2.5, None, False]}}


@pytest.mark.parametrize("status", MIDTRANS_REFUNDS)
async def test_each_midtrans_refund_of_a_paid_item_sends_item_refunded(
    running: Running, merchant: Merchant, status: str
) -> None:
    api = running.api
    shop = await open_shop(api, webhook_url=f"{merchant.url}/hook")
    await shop.set_item_url(None, name='Premium "Template" — ünïcode')
    order = await shop.order(buyer_name='Budi "B" Ñ', metadata=METADATA)
    [paid_hit] = await hooks(merchant, 1)
    shown = await shop.purchase(order)
    assert (
        paid_hit.body
        == ItemPurchasedEvent(
            **{name: shown[name] for name in ItemPurchasedEvent.model_fields if name != "event"}
        ).model_dump_json()
    )

    refunded_at = datetime.now(UTC).replace(microsecond=0)
    partial = status.startswith("partial")
    amount = 12500 if partial else 50000
    entry = {
        "refund_chargeback_id": 41,
        "refund_amount": f"{amount}.00",
        "created_at": jakarta(refunded_at),
        "reason": 'buyer said "no" — ünïcode',
        "refund_key": "reference-41",
    }
    notification = api.notification(
        order["order_id"], 50000, status=status, refund_amount=f"{amount}.00", refunds=[entry]
    )
    assert await api.callback(notification) == {"status": "ok"}
    _, hit = await hooks(merchant, 2)
    refund = verify(hit, shop.secret)
    assert list(refund) == list(ItemRefundedEvent.model_fields)
    expected = refunded_body(
        shown, refunded_at=iso_z(refunded_at), amount=amount, reason='buyer said "no" — ünïcode'
    )
    assert hit.body == expected
    assert hit.headers["webhook-id"] != paid_hit.headers["webhook-id"]
    assert (await shop.purchase(order))["status"] == "refunded"


async def test_a_midtrans_refund_without_details_is_a_full_refund_with_no_reason(
    running: Running, merchant: Merchant
) -> None:
    api = running.api
    shop = await open_shop(api, webhook_url=f"{merchant.url}/hook")
    order = await shop.order(metadata=METADATA)
    await hooks(merchant, 1)
    shown = await shop.purchase(order)
    before = datetime.now(UTC).replace(microsecond=0)
    assert await api.pay(order, status="refund") == {"status": "ok"}
    after = datetime.now(UTC)
    _, hit = await hooks(merchant, 2)
    refund = verify(hit, shop.secret)
    assert (refund["event"], refund["refund_amount"], refund["reason"]) == ("item.refunded", 50000, None)
    assert before <= datetime.fromisoformat(refund["refunded_at"]) <= after
    assert hit.body == refunded_body(shown, refunded_at=refund["refunded_at"], amount=50000, reason=None)


async def test_the_same_midtrans_refund_twice_is_one_event_and_two_partials_are_two(
    running: Running, merchant: Merchant
) -> None:
    api = running.api
    shop = await open_shop(api, webhook_url=f"{merchant.url}/hook")
    order = await shop.order()
    first = {"refund_chargeback_id": 1, "refund_amount": "10000.00", "reason": "one"}
    second = {"refund_chargeback_id": 2, "refund_amount": "15000.00", "reason": "two"}
    once = api.notification(order["order_id"], 50000, status="partial_refund", refunds=[first])
    for _ in range(3):
        await api.callback(once)
    # Midtrans lists every refund so far: the newest is the last.
    twice = api.notification(order["order_id"], 50000, status="partial_refund", refunds=[first, second])
    for _ in range(2):
        await api.callback(twice)
    hits = await settled(merchant, 3)
    assert len(hits) == 3, [hit.body for hit in hits]
    bodies = [verify(hit, shop.secret) for hit in hits]
    assert [body["event"] for body in bodies] == ["item.purchased", "item.refunded", "item.refunded"]
    assert sorted((body["refund_amount"], body["reason"]) for body in bodies[1:]) == [
        (10000, "one"),
        (15000, "two"),
    ]


async def test_a_midtrans_refund_before_the_settlement_is_sent_after_it(
    running: Running, merchant: Merchant, redis: Redis
) -> None:
    api = running.api
    shop = await open_shop(api, webhook_url=f"{merchant.url}/hook")
    order = await shop.order(pay=False, metadata=METADATA)
    entry = {"refund_chargeback_id": 9, "refund_amount": "50000.00", "reason": "chargeback ✓"}
    chargeback = api.notification(order["order_id"], 50000, status="chargeback", refunds=[entry])
    assert await api.callback(chargeback) == {"status": "ok"}
    assert (await shop.purchase(order))["status"] == "refunded"
    assert merchant.hits("/hook") == []

    assert await api.pay(order) == {"status": "ok"}
    hits = await settled(merchant, 2)
    # The payment's job is queued at once, the refund's by the next sweep: the payment is sent
    # first, though a sweep in between may send both at once (delivery promises no order).
    hits.sort(key=lambda hit: json.loads(hit.body)["event"])
    paid, refund = (verify(hit, shop.secret) for hit in hits)
    assert (paid["event"], refund["event"]) == ("item.purchased", "item.refunded")
    stored = sorted(event["type"] for event in await stored_events(redis, order["order_id"]))
    assert stored == ["item.purchased", "item.refunded"]
    assert (refund["refund_amount"], refund["reason"], refund["paid_at"]) == (
        50000,
        "chargeback ✓",
        paid["paid_at"],
    )
    assert refund["refunded_at"] >= paid["paid_at"]
    shown = await shop.purchase(order)
    assert shown["status"] == "refunded"
    assert hits[1].body == refunded_body(
        shown, refunded_at=refund["refunded_at"], amount=50000, reason="chargeback ✓"
    )
    # Both callbacks again: nothing more.
    await api.callback(chargeback)
    await api.pay(order)
    assert len(await settled(merchant, 2)) == 2


async def test_a_refund_of_an_unpaid_order_sends_nothing(
    running: Running, merchant: Merchant, redis: Redis
) -> None:
    api = running.api
    shop = await open_shop(api, webhook_url=f"{merchant.url}/hook")
    order = await shop.order(pay=False)
    assert await api.pay(order, status="refund") == {"status": "ok"}
    await settled(merchant, 0)
    shown = await shop.purchase(order)
    assert (shown["status"], shown["event_id"], shown["webhook_status"], shown["paid_at"]) == (
        "refunded",
        None,
        None,
        None,
    )
    assert await stored_events(redis, order["order_id"]) == []


@pytest.mark.parametrize(("gateway", "raw"), [("tripay", "REFUND"), ("doku", "REFUNDED")])
async def test_tripay_and_doku_refunds_of_a_paid_order_send_item_refunded(
    running: Running, merchant: Merchant, gateway: str, raw: str
) -> None:
    api = running.api
    shop = await open_shop(api, webhook_url=f"{merchant.url}/hook")
    order = await shop.buy(gateway=gateway, metadata=METADATA)
    await send(api, gateway, order, "paid")
    await hooks(merchant, 1)
    shown = await shop.purchase(order)

    refund = SIGNERS[gateway](order["order_id"], 50000, raw, KEYS[gateway])
    before = datetime.now(UTC).replace(microsecond=0)
    assert await post(api, refund) == OK_BODY.get(gateway, {"status": "ok"})
    after = datetime.now(UTC)
    await post(api, SIGNERS[gateway](order["order_id"], 50000, raw, KEYS[gateway]))  # again: one event
    hits = await settled(merchant, 2)
    body = verify(hits[1], shop.secret)
    assert (body["event"], body["refund_amount"], body["reason"]) == ("item.refunded", 50000, None)
    assert before <= datetime.fromisoformat(body["refunded_at"]) <= after
    assert hits[1].body == refunded_body(shown, refunded_at=body["refunded_at"], amount=50000, reason=None)
    assert (await shop.purchase(order))["status"] == "refunded"


async def test_a_tripay_refund_of_an_order_paid_with_a_fee_refunds_the_orders_amount(
    running: Running, merchant: Merchant
) -> None:
    api = running.api
    shop = await open_shop(api, webhook_url=f"{merchant.url}/hook")
    order = await shop.buy(gateway="tripay")
    await send(api, "tripay", order, "paid", amount=51500)  # 1500 of fees paid by the buyer
    await hooks(merchant, 1)
    await post(api, SIGNERS["tripay"](order["order_id"], 51500, "REFUND", KEYS["tripay"]))
    _, hit = await hooks(merchant, 2)
    body = verify(hit, shop.secret)
    assert (body["event"], body["amount"], body["refund_amount"]) == ("item.refunded", 50000, 50000)


async def test_a_shop_payment_refund_sends_payment_refunded(running: Running, merchant: Merchant) -> None:
    api = running.api
    project = await api.project(webhook_url=f"{merchant.url}/hook")
    path = f"/api/platform/projects/{project['id']}/payments"
    request = {
        "order_id": "INV-7",
        "amount": 80000,
        "buyer_email": "buyer@example.com",
        "description": 'Order "7" — ünïcode',
        "metadata": METADATA,
    }
    await api.call("POST", path, json=request)
    shown = (await api.call("GET", f"{path}/INV-7"))["payment"]
    gateway_order = shown["gateway_order_id"]
    await api.pay({"order_id": gateway_order, "amount": 80000})
    await hooks(merchant, 1)
    shown = (await api.call("GET", f"{path}/INV-7"))["payment"]

    entry = {"refund_chargeback_id": "r-1", "refund_amount": "30000.00", "reason": None}
    await api.callback(api.notification(gateway_order, 80000, status="partial_refund", refunds=[entry]))
    _, hit = await hooks(merchant, 2)
    body = verify(hit, project["webhook_secret"])
    expected = PaymentRefundedEvent(
        order_id="INV-7",
        amount=80000,
        currency="IDR",
        buyer_email="buyer@example.com",
        buyer_name=None,
        description='Order "7" — ünïcode',
        paid_at=shown["paid_at"],
        refunded_at=body["refunded_at"],
        refund_amount=30000,
        reason=None,
        metadata=METADATA,
    )
    assert hit.body == expected.model_dump_json()
    assert (await api.call("GET", f"{path}/INV-7"))["payment"]["status"] == "refunded"


def metric(text: str, name: str, **labels: str) -> float:
    """One sample's value in Prometheus text, 0 when absent."""
    wanted = sorted(f'{key}="{value}"' for key, value in labels.items())
    for line in text.splitlines():
        match = re.fullmatch(r"([a-z_]+)(?:\{(.*)\})? (\S+)", line)
        if match and match[1] == name and sorted(filter(None, (match[2] or "").split(","))) == wanted:
            return float(match[3])
    return 0.0


async def scrape(api: Api) -> str:
    async with api.http.get("/metrics", headers=ADMIN) as response:
        assert response.status == 200
        return await response.text()


async def test_the_callback_metric_counts_refund_sent(start_relay: StartRelay) -> None:
    running = await start_relay(worker=False)
    api = running.api
    shop = await open_shop(api)
    paid, unpaid = await shop.order(), await shop.order(pay=False)
    await api.pay(paid, status="refund")
    await api.pay(paid, status="refund")  # the same refund again
    await api.pay(unpaid, status="refund")
    text = await scrape(api)
    counts = {
        outcome: metric(text, "relay_callbacks_total", gateway="midtrans", result=outcome, error="")
        for outcome in ("paid", "refund_sent", "refunded", "unchanged")
    }
    assert counts == {"paid": 1, "refund_sent": 1, "refunded": 1, "unchanged": 1}
    assert metric(text, "relay_events_created_total") == 2


async def test_refunds_add_up_to_at_most_the_orders_amount_and_twenty_events(stores: Backend) -> None:
    """Refund details are not signed: a notification replayed with made-up refund ids sends nothing
    past a full refund, and at most twenty refunds of one order."""
    await paid_order(stores, make_purchase("order-1"))
    assert await ingest(stores, refund_of("order-1", amount=30000, key="a")) is Ingested.REFUND_SENT
    # 30,000 of 50,000 refunded: a refund of 30,000 more is the 20,000 left.
    assert await ingest(stores, refund_of("order-1", amount=30000, key="b")) is Ingested.REFUND_SENT
    # Fully refunded: another refund sends nothing.
    assert await ingest(stores, refund_of("order-1", amount=1, key="c")) is Ingested.REFUNDED
    sent = await sent_refunds(stores, "order-1")
    amounts = {key: json.loads(event.body)["refund_amount"] for key, event in sent.items()}
    assert amounts == {"a": 30000, "b": 20000}

    await paid_order(stores, make_purchase("order-2"))
    for index in range(25):
        await ingest(stores, refund_of("order-2", amount=1, key=f"k{index}"))
    assert len(await sent_refunds(stores, "order-2")) == 20


async def test_the_export_carries_an_orders_refunds_after_its_payment(stores: Backend) -> None:
    paid = await paid_order(stores, make_purchase("order-1"))
    await ingest(stores, refund_of("order-1"), timedelta(seconds=1))
    [refund] = (await sent_refunds(stores, "order-1")).values()
    [line] = [
        line async for line in export_orders(stores.store, stores.events, ["shop"], since=T0, until=None)
    ]
    assert [event["id"] for event in line["events"]] == [paid.id, refund.id]
    kinds = [json.loads(event["body"])["event"] for event in line["events"]]
    assert kinds == ["item.purchased", "item.refunded"]
    assert "refund_event_ids" not in line["order"]


async def test_a_refund_does_not_shorten_a_dead_lettered_payments_retention(kept: Kept) -> None:
    """The paid event dead-lettered keeps its order for RELAY_DEAD_LETTER_RETENTION; a refund
    delivered after it does not bring that forward to RELAY_RETENTION."""
    paid = await paid_order(kept, make_purchase("order-1"))
    await finish(kept, paid, WebhookStatus.FAILED, timedelta(seconds=1), status=500)
    assert await ingest(kept, refund_of("order-1"), timedelta(seconds=2)) is Ingested.REFUND_SENT
    [refund] = (await sent_refunds(kept, "order-1")).values()
    await finish(kept, refund, WebhookStatus.DELIVERED, timedelta(seconds=3))

    assert (await kept.retention.sweep(now=T0 + timedelta(seconds=64))).deleted_orders == 0
    assert await kept.events.get(paid.id) is not None
    assert await kept.redis.zcard(kept.store.keys.project_dead_letters("shop")) == 1
    assert (await kept.retention.sweep(now=T0 + timedelta(seconds=121))).deleted_orders == 1
