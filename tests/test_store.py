"""relay/store.py and relay/events.py on fakeredis (with Lua): records, ingest CAS, delivery bookkeeping."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

import fakeredis
import pytest
from fakeredis.aioredis import FakeRedis

from relay.crypto import SecretBox, generate_key
from relay.errors import InvalidInput
from relay.events import EventStore
from relay.models import (
    Attempt,
    EventRecord,
    Item,
    ItemPurchasedEvent,
    PaymentOutcome,
    Project,
    Purchase,
    PurchaseStatus,
    WebhookStatus,
    event_body_parts,
    iso_z,
    new_event_id,
    to_ms,
)
from relay.signing import new_webhook_secret
from relay.store import Store

PREFIX = "t"
T0 = datetime(2026, 5, 6, 10, 0, tzinfo=UTC)


@dataclass
class Stores:
    redis: FakeRedis
    store: Store
    events: EventStore


@pytest.fixture
async def stores() -> AsyncIterator[Stores]:
    # A private FakeServer: FakeRedis() alone shares one server per host:port across tests.
    redis = FakeRedis(server=fakeredis.FakeServer(), decode_responses=True)
    yield Stores(
        redis, Store(redis, prefix=PREFIX, box=SecretBox([generate_key()])), EventStore(redis, prefix=PREFIX)
    )
    await redis.aclose()


def make_project(project_id: str = "shop", **fields: object) -> Project:
    values: dict[str, object] = {
        "id": project_id,
        "name": "Shop",
        "webhook_url": "https://merchant.example.com/hook",
        "client_id": f"cl_{project_id}",
        "webhook_secret": new_webhook_secret(),
        "created_at": T0,
        "updated_at": T0,
    }
    return Project.model_validate(values | fields)


def make_item(item_id: str, project_id: str = "shop", *, created_at: datetime = T0) -> Item:
    return Item(
        id=item_id,
        project_id=project_id,
        name=f"Item {item_id}",
        price=50000,
        currency="IDR",
        created_at=created_at,
        updated_at=created_at,
    )


def make_purchase(order_id: str, project_id: str = "shop", *, created_at: datetime = T0) -> Purchase:
    return Purchase(
        order_id=order_id,
        item_id="tmpl",
        project_id=project_id,
        item_name="Premium Template",
        amount=50000,
        currency="IDR",
        buyer_email="buyer@example.com",
        buyer_name="John Doe",
        metadata={"ref": "campaign-42", "nested": {"n": 1}},
        created_at=created_at,
        updated_at=created_at,
    )


def outcome(
    order_id: str,
    status: PurchaseStatus = PurchaseStatus.PAID,
    *,
    amount: str = "50000",
    gateway: str = "midtrans",
    rule: Literal["exact", "at_least"] = "exact",
) -> PaymentOutcome:
    return PaymentOutcome(
        gateway=gateway,
        order_id=order_id,
        status=status,
        amount=Decimal(amount),
        paid_at=None,
        raw_status=status.value,
        amount_rule=rule,
    )


async def settle(stores: Stores, order_id: str, *, event_id: str, **fields: Any) -> tuple[str, str]:
    """Ingest a settlement of ``order_id`` at T0 (``fields`` shape the outcome)."""
    return await stores.store.ingest(outcome(order_id, **fields), now=T0, paid_at=T0, event_id=event_id)


async def paid_event(
    stores: Stores, order_id: str, project_id: str = "shop", *, event_id: str | None = None
) -> EventRecord:
    """A purchase moved to paid, with its event in the outbox (seq 0)."""
    await stores.store.create_purchase(make_purchase(order_id, project_id))
    event_id = event_id or new_event_id()
    assert await settle(stores, order_id, event_id=event_id) == ("applied", "paid")
    event = await stores.events.get(event_id)
    assert event is not None
    return event


def attempt(*, at: datetime = T0, next_attempt_at: datetime | None = None) -> Attempt:
    return Attempt(
        at=at,
        url="https://merchant.example.com/hook",
        status_code=503,
        error="HTTP 503",
        duration_ms=12,
        next_attempt_at=next_attempt_at,
    )


async def attempt_log(stores: Stores, event_id: str) -> list[Attempt]:
    logs = await stores.events.attempts([event_id])
    assert list(logs) == [event_id]
    return logs[event_id]


async def outbox(stores: Stores) -> dict[str, int]:
    rows = await stores.redis.zrange(stores.store.keys.outbox, 0, -1, withscores=True)
    return {member: int(score) for member, score in rows}


async def zset(stores: Stores, key: str) -> dict[str, int]:
    rows = await stores.redis.zrange(key, 0, -1, withscores=True)
    return {member: int(score) for member, score in rows}


# --- projects and items ----------------------------------------------------------------------


async def test_project_round_trip(stores: Stores) -> None:
    project = make_project()
    await stores.store.put_project(project)
    assert await stores.store.get_project("shop") == project
    assert await stores.store.project_for_client("cl_shop") == project
    assert await stores.store.get_project("other") is None
    assert await stores.store.project_for_client("cl_other") is None


async def test_item_round_trip_and_delete(stores: Stores) -> None:
    item = make_item("tmpl")
    await stores.store.put_item(item)
    assert await stores.store.get_item("tmpl") == item
    await stores.store.delete_item(item)
    assert await stores.store.get_item("tmpl") is None
    assert await stores.store.list_items("shop") == []


async def test_list_items_oldest_first_per_project(stores: Stores) -> None:
    newest = make_item("a-newest", created_at=T0 + timedelta(minutes=2))
    oldest = make_item("z-oldest", created_at=T0)
    middle = make_item("m-middle", created_at=T0 + timedelta(minutes=1))
    elsewhere = make_item("elsewhere", project_id="other")
    for item in (newest, oldest, middle, elsewhere):
        await stores.store.put_item(item)
    assert await stores.store.list_items("shop") == [oldest, middle, newest]
    assert await stores.store.list_items("other") == [elsewhere]
    assert await stores.store.list_items("nobody") == []


# --- purchases -------------------------------------------------------------------------------


async def test_purchase_round_trip(stores: Stores) -> None:
    purchase = make_purchase("item-tmpl-00000001")
    await stores.store.create_purchase(purchase)
    found = await stores.store.get_purchase("item-tmpl-00000001")
    assert found == purchase
    assert found is not None
    assert found.status is PurchaseStatus.PENDING
    assert found.webhook_status is None
    assert found.metadata == {"ref": "campaign-42", "nested": {"n": 1}}
    assert await stores.store.get_purchase("item-tmpl-missing") is None


async def test_list_purchases_newest_first_and_filtered(stores: Stores) -> None:
    for minute, order_id in enumerate(["order-1", "order-2", "order-3"]):
        await stores.store.create_purchase(make_purchase(order_id, created_at=T0 + timedelta(minutes=minute)))
    await stores.store.create_purchase(make_purchase("elsewhere", project_id="other"))
    listed = await stores.store.list_purchases("shop")
    assert [purchase.order_id for purchase in listed] == ["order-3", "order-2", "order-1"]
    assert [p.order_id for p in await stores.store.list_purchases("shop", limit=2)] == ["order-3", "order-2"]
    assert await settle(stores, "order-2", event_id="evt_2") == ("applied", "paid")
    pending = await stores.store.list_purchases("shop", webhook_status=WebhookStatus.PENDING)
    assert [purchase.order_id for purchase in pending] == ["order-2"]


# --- ingest (one script: checks, compare-and-set, event, outbox) -----------------------------


async def test_ingest_to_paid_writes_event_and_outbox(stores: Stores) -> None:
    purchase = make_purchase("order-1")
    await stores.store.create_purchase(purchase)

    assert await settle(stores, "order-1", event_id="evt_1") == ("applied", "paid")

    stored = await stores.store.get_purchase("order-1")
    assert stored is not None
    assert stored.status is PurchaseStatus.PAID
    assert stored.paid_at == T0
    assert stored.event_id == "evt_1"
    assert stored.webhook_status is WebhookStatus.PENDING
    body = ItemPurchasedEvent(
        **purchase.model_dump(include=set(ItemPurchasedEvent.model_fields) - {"event"})
        | {"paid_at": iso_z(T0)}
    ).model_dump_json()
    expected = EventRecord(
        id="evt_1", project_id="shop", order_id="order-1", item_id="tmpl", body=body, created_at=T0
    )
    assert await stores.events.get("evt_1") == expected
    assert list(json.loads(body)) == list(ItemPurchasedEvent.model_fields)
    assert await outbox(stores) == {"evt_1": to_ms(T0)}
    # the template is spent: the body lives in the event now
    assert await stores.redis.hmget(stores.store.keys.purchase("order-1"), "event_head", "event_tail") == [
        None,
        None,
    ]


def model_body(purchase: Purchase, paid_at: datetime) -> str:
    """The body as ItemPurchasedEvent makes it from ``purchase``."""
    fields = purchase.model_dump(include=set(ItemPurchasedEvent.model_fields) - {"event", "paid_at"})
    return ItemPurchasedEvent(**fields, paid_at=iso_z(paid_at)).model_dump_json()


TRICKY = ['","paid_at":"', ',"paid_at":""', 'quote " backslash \\ end', "\u2028 é 漢字 \x00"]


@pytest.mark.parametrize("text", TRICKY)
def test_the_body_template_makes_exactly_the_model_body(text: str) -> None:
    purchase = make_purchase("order-1").model_copy(
        update={"buyer_name": text, "item_name": text, "metadata": {text: text, "paid_at": text}}
    )
    head, tail = event_body_parts(purchase)
    assert head + iso_z(T0) + tail == model_body(purchase, T0)
    assert json.loads(head + iso_z(T0) + tail)["paid_at"] == iso_z(T0)


async def test_a_second_settlement_and_a_late_expiry_change_nothing(stores: Stores) -> None:
    await stores.store.create_purchase(make_purchase("order-1"))
    assert await settle(stores, "order-1", event_id="evt_1") == ("applied", "paid")

    assert await settle(stores, "order-1", event_id="evt_2") == ("unchanged", "paid")
    expired = outcome("order-1", PurchaseStatus.EXPIRED)
    assert await stores.store.ingest(expired, now=T0) == ("unchanged", "paid")

    stored = await stores.store.get_purchase("order-1")
    assert stored is not None
    assert (stored.status, stored.event_id) == (PurchaseStatus.PAID, "evt_1")
    assert await stores.events.get("evt_2") is None
    assert await outbox(stores) == {"evt_1": to_ms(T0)}


async def test_ingest_of_a_missing_purchase_writes_nothing(stores: Stores) -> None:
    assert await settle(stores, "order-gone", event_id="evt_1") == ("unknown_order", "")
    assert await stores.redis.keys("*") == []


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"gateway": "xendit"}, ("other_gateway", "midtrans")),
        ({"amount": "49999"}, ("amount_mismatch", "50000")),
        ({"amount": "50001"}, ("amount_mismatch", "50000")),
        ({"amount": "50000.5"}, ("amount_mismatch", "50000")),
        ({"amount": "1E+400"}, ("amount_mismatch", "50000")),
        ({"amount": "49999.99", "rule": "at_least"}, ("amount_mismatch", "50000")),
        ({"amount": "50000.00"}, ("applied", "paid")),
        ({"amount": "50000.5", "rule": "at_least"}, ("applied", "paid")),
        ({"amount": "52500", "rule": "at_least"}, ("applied", "paid")),
    ],
)
async def test_ingest_checks_gateway_and_amount_before_writing(
    stores: Stores, fields: dict[str, Any], expected: tuple[str, str]
) -> None:
    await stores.store.create_purchase(make_purchase("order-1"))
    assert await settle(stores, "order-1", event_id="evt_1", **fields) == expected
    stored = await stores.store.get_purchase("order-1")
    assert stored is not None
    applied = expected[0] == "applied"
    assert stored.status is (PurchaseStatus.PAID if applied else PurchaseStatus.PENDING)
    assert (await stores.events.get("evt_1") is not None) is applied


async def test_a_purchase_without_a_template_gets_one_and_is_paid(stores: Stores) -> None:
    """Purchases stored before they carried their event template: the script writes nothing and
    says so; add_event_template repairs it."""
    purchase = make_purchase("order-1")
    await stores.store.create_purchase(purchase)
    await stores.redis.hdel(stores.store.keys.purchase("order-1"), "event_head", "event_tail")

    assert await settle(stores, "order-1", event_id="evt_1") == ("no_template", "")
    assert await stores.store.get_purchase("order-1") == purchase

    await stores.store.add_event_template("order-1")
    assert await settle(stores, "order-1", event_id="evt_1") == ("applied", "paid")
    event = await stores.events.get("evt_1")
    assert event is not None
    assert json.loads(event.body)["buyer_name"] == "John Doe"


@pytest.mark.parametrize("status", [PurchaseStatus.FAILED, PurchaseStatus.EXPIRED, PurchaseStatus.REFUNDED])
async def test_ingest_without_paid_writes_no_event(stores: Stores, status: PurchaseStatus) -> None:
    purchase = make_purchase("order-1")
    await stores.store.create_purchase(purchase)
    assert await stores.store.ingest(outcome("order-1", status), now=T0) == ("applied", status.value)
    stored = await stores.store.get_purchase("order-1")
    assert stored is not None
    assert stored.status is status
    assert stored.event_id is None
    assert stored.webhook_status is None
    assert stored.paid_at is None
    assert await outbox(stores) == {}
    assert await stores.redis.keys(f"{PREFIX}:event:*") == []


# --- finish_attempt --------------------------------------------------------------------------


async def test_finish_attempt_with_a_stale_seq_writes_nothing(stores: Stores) -> None:
    event = await paid_event(stores, "order-1")
    due = T0 + timedelta(seconds=5)
    applied = await stores.events.finish_attempt(
        event, seq=1, attempt=attempt(next_attempt_at=due), state=WebhookStatus.RETRYING, now=T0
    )
    assert applied is False
    assert await stores.events.get(event.id) == event
    assert await attempt_log(stores, event.id) == []
    assert await outbox(stores) == {event.id: to_ms(T0)}
    purchase = await stores.store.get_purchase("order-1")
    assert purchase is not None
    assert purchase.webhook_status is WebhookStatus.PENDING


async def test_finish_attempt_retrying_moves_the_outbox_and_bumps_seq(stores: Stores) -> None:
    event = await paid_event(stores, "order-1")
    due = T0 + timedelta(seconds=5)
    logged = attempt(next_attempt_at=due)

    assert await stores.events.finish_attempt(
        event, seq=0, attempt=logged, state=WebhookStatus.RETRYING, now=T0
    )

    stored = await stores.events.get(event.id)
    assert stored is not None
    assert (stored.seq, stored.attempts, stored.state) == (1, 1, WebhookStatus.RETRYING)
    assert stored.next_attempt_at == due
    assert stored.dead_at is None
    assert await attempt_log(stores, event.id) == [logged]
    assert await outbox(stores) == {event.id: to_ms(due)}
    purchase = await stores.store.get_purchase("order-1")
    assert purchase is not None
    assert purchase.webhook_status is WebhookStatus.RETRYING
    # The job that just ran (seq 0) is now stale.
    again = await stores.events.finish_attempt(
        event, seq=0, attempt=logged, state=WebhookStatus.DELIVERED, now=T0
    )
    assert again is False
    assert await attempt_log(stores, event.id) == [logged]


async def test_finish_attempt_failed_dead_letters(stores: Stores) -> None:
    event = await paid_event(stores, "order-1")
    dead_at = T0 + timedelta(seconds=30)

    assert await stores.events.finish_attempt(
        event, seq=0, attempt=attempt(at=dead_at), state=WebhookStatus.FAILED, now=dead_at
    )

    stored = await stores.events.get(event.id)
    assert stored is not None
    assert (stored.seq, stored.attempts, stored.state) == (0, 1, WebhookStatus.FAILED)
    assert stored.dead_at == dead_at
    assert await outbox(stores) == {}
    keys = stores.events.keys
    assert await zset(stores, keys.dead_letters) == {event.id: to_ms(dead_at)}
    assert await zset(stores, keys.project_dead_letters("shop")) == {event.id: to_ms(dead_at)}
    purchase = await stores.store.get_purchase("order-1")
    assert purchase is not None
    assert purchase.webhook_status is WebhookStatus.FAILED


async def test_finish_attempt_delivered_leaves_the_outbox(stores: Stores) -> None:
    event = await paid_event(stores, "order-1")
    ok = Attempt(at=T0, url="https://merchant.example.com/hook", status_code=200, duration_ms=3)
    assert await stores.events.finish_attempt(event, seq=0, attempt=ok, state=WebhookStatus.DELIVERED, now=T0)
    stored = await stores.events.get(event.id)
    assert stored is not None
    assert (stored.seq, stored.attempts, stored.state) == (0, 1, WebhookStatus.DELIVERED)
    assert await outbox(stores) == {}
    assert await zset(stores, stores.events.keys.dead_letters) == {}


async def test_requeue_resets_the_budget(stores: Stores) -> None:
    event = await paid_event(stores, "order-1")
    retry_at = T0 + timedelta(seconds=5)
    await stores.events.finish_attempt(
        event, seq=0, attempt=attempt(next_attempt_at=retry_at), state=WebhookStatus.RETRYING, now=T0
    )
    await stores.events.finish_attempt(
        event, seq=1, attempt=attempt(at=retry_at), state=WebhookStatus.FAILED, now=retry_at
    )
    replayed_at = T0 + timedelta(hours=1)

    assert await stores.events.requeue(event, now=replayed_at) == 2

    stored = await stores.events.get(event.id)
    assert stored is not None
    assert (stored.seq, stored.attempts, stored.state) == (2, 0, WebhookStatus.PENDING)
    assert stored.next_attempt_at is None
    assert stored.dead_at is None
    assert len(await attempt_log(stores, event.id)) == 2  # the history stays
    assert await outbox(stores) == {event.id: to_ms(replayed_at)}
    assert await zset(stores, stores.events.keys.dead_letters) == {}
    assert await zset(stores, stores.events.keys.project_dead_letters("shop")) == {}
    purchase = await stores.store.get_purchase("order-1")
    assert purchase is not None
    assert purchase.webhook_status is WebhookStatus.PENDING


async def test_attempt_logs_for_several_events(stores: Stores) -> None:
    first = await paid_event(stores, "order-1")
    second = await paid_event(stores, "order-2")
    logged = attempt(next_attempt_at=T0 + timedelta(seconds=5))
    await stores.events.finish_attempt(first, seq=0, attempt=logged, state=WebhookStatus.RETRYING, now=T0)
    logs = await stores.events.attempts([first.id, second.id, "evt_missing"])
    assert logs == {first.id: [logged], second.id: [], "evt_missing": []}
    assert await stores.events.attempts([]) == {}


async def test_requeue_of_a_missing_event(stores: Stores) -> None:
    event = EventRecord(
        id="evt_gone", project_id="shop", order_id="order-gone", item_id="tmpl", body="{}", created_at=T0
    )
    assert await stores.events.requeue(event, now=T0) is None
    assert await outbox(stores) == {}


async def test_purge_dead_letter(stores: Stores) -> None:
    event = await paid_event(stores, "order-1")
    await stores.events.finish_attempt(event, seq=0, attempt=attempt(), state=WebhookStatus.FAILED, now=T0)
    assert await stores.events.purge_dead_letter(event) is True
    assert await stores.events.purge_dead_letter(event) is False
    assert await zset(stores, stores.events.keys.dead_letters) == {}
    assert await zset(stores, stores.events.keys.project_dead_letters("shop")) == {}
    assert await stores.events.get(event.id) is not None


# --- dead-letter pagination ------------------------------------------------------------------

# (event id, dead-lettered at): inserted out of id order, four sharing one millisecond.
DEAD = [
    ("evt_g", T0),
    ("evt_c", T0),
    ("evt_a", T0),
    ("evt_f", T0),
    ("evt_b", T0 + timedelta(milliseconds=1)),
    ("evt_e", T0 + timedelta(milliseconds=1)),
    ("evt_d", T0 + timedelta(seconds=1)),
]
DEAD_ORDER = ["evt_a", "evt_c", "evt_f", "evt_g", "evt_b", "evt_e", "evt_d"]


async def dead_letters(stores: Stores) -> None:
    for number, (event_id, dead_at) in enumerate(DEAD):
        project_id = "shop" if number % 2 == 0 else "other"
        event = await paid_event(stores, f"order-{event_id}", project_id, event_id=event_id)
        applied = await stores.events.finish_attempt(
            event, seq=0, attempt=attempt(at=dead_at), state=WebhookStatus.FAILED, now=dead_at
        )
        assert applied


async def test_dead_letter_pages_yield_each_once_in_order(stores: Stores) -> None:
    await dead_letters(stores)
    seen: list[str] = []
    sizes: list[int] = []
    cursor = None
    for _ in range(10):
        page = await stores.events.dead_letters(limit=3, cursor=cursor)
        seen += [event.id for event in page.events]
        sizes.append(len(page.events))
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == DEAD_ORDER
    assert sizes == [3, 3, 1]


@pytest.mark.parametrize("limit", [1, 2, 4, 6, 7, 8])
async def test_dead_letter_pages_for_any_limit(stores: Stores, limit: int) -> None:
    await dead_letters(stores)
    seen: list[str] = []
    cursor = None
    for _ in range(20):
        page = await stores.events.dead_letters(limit=limit, cursor=cursor)
        assert len(page.events) <= limit
        seen += [event.id for event in page.events]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == DEAD_ORDER


async def test_dead_letters_by_project_and_since(stores: Stores) -> None:
    await dead_letters(stores)
    shop = await stores.events.dead_letters(project_id="shop")
    assert [event.id for event in shop.events] == ["evt_a", "evt_g", "evt_b", "evt_d"]
    assert shop.next_cursor is None
    later = await stores.events.dead_letters(since=T0 + timedelta(milliseconds=1))
    assert [event.id for event in later.events] == ["evt_b", "evt_e", "evt_d"]


@pytest.mark.parametrize(
    "cursor", ["nonsense", "1778061600000", "abc:evt_a", ":evt_a", "1778061600000:", "-1:evt_a"]
)
async def test_bad_cursor_is_invalid_input(stores: Stores, cursor: str) -> None:
    await dead_letters(stores)
    with pytest.raises(InvalidInput):
        await stores.events.dead_letters(limit=3, cursor=cursor)


async def test_due_lists_the_outbox_oldest_first(stores: Stores) -> None:
    first = await paid_event(stores, "order-1")
    second = await paid_event(stores, "order-2")
    later = T0 + timedelta(minutes=5)
    await stores.events.finish_attempt(
        first, seq=0, attempt=attempt(next_attempt_at=later), state=WebhookStatus.RETRYING, now=T0
    )
    assert await stores.events.due(until=T0, limit=10) == [(second.id, to_ms(T0))]
    assert await stores.events.due(until=later, limit=10) == [
        (second.id, to_ms(T0)),
        (first.id, to_ms(later)),
    ]
    assert await stores.events.outbox_size() == 2
