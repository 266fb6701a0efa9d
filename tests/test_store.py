"""relay/store.py on each backend (the embedded store and a real Redis): projects, items, purchases,
and the ingest script (ingest.lua)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import pytest

from relay.crypto import SecretBox, generate_key
from relay.event_body import ItemPurchasedEvent, event_body, metadata_json
from relay.event_types import event_body_head
from relay.jsonutil import dumps
from relay.models import (
    EventRecord,
    Item,
    Project,
    Purchase,
    PurchaseStatus,
    WebhookStatus,
    iso_z,
    to_ms,
)
from relay.signing import new_webhook_secret
from relay.store import Store
from tests.helpers import (
    KEY_PREFIX,
    T0,
    Backend,
    make_outcome,
    make_purchase,
    outbox_scores,
    settle,
)


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


# --- projects and items ----------------------------------------------------------------------


async def test_project_round_trip(stores: Backend) -> None:
    project = make_project()
    await stores.store.put_project(project)
    assert await stores.store.get_project("shop") == project
    assert await stores.store.project_for_client("cl_shop") == project
    assert await stores.store.get_project("other") is None
    assert await stores.store.project_for_client("cl_other") is None


async def test_item_round_trip_and_delete(stores: Backend) -> None:
    item = make_item("tmpl")
    await stores.store.put_item(item, set_stock=True)
    assert await stores.store.get_item("tmpl") == item
    await stores.store.delete_item(item)
    assert await stores.store.get_item("tmpl") is None
    assert await stores.store.list_items("shop") == []


async def test_list_items_oldest_first_per_project(stores: Backend) -> None:
    newest = make_item("a-newest", created_at=T0 + timedelta(minutes=2))
    oldest = make_item("z-oldest", created_at=T0)
    middle = make_item("m-middle", created_at=T0 + timedelta(minutes=1))
    elsewhere = make_item("elsewhere", project_id="other")
    for item in (newest, oldest, middle, elsewhere):
        await stores.store.put_item(item, set_stock=True)
    assert await stores.store.list_items("shop") == [oldest, middle, newest]
    assert await stores.store.list_items("other") == [elsewhere]
    assert await stores.store.list_items("nobody") == []


# --- purchases -------------------------------------------------------------------------------


async def test_purchase_round_trip(stores: Backend) -> None:
    purchase = make_purchase("item-tmpl-00000001")
    await stores.store.create_purchase(purchase)
    found = await stores.store.get_purchase("item-tmpl-00000001")
    assert found == purchase
    assert found is not None
    assert found.status is PurchaseStatus.PENDING
    assert found.webhook_status is None
    assert found.metadata == {"ref": "campaign-42", "nested": {"n": 1}}
    assert await stores.store.get_purchase("item-tmpl-missing") is None


async def test_list_purchases_newest_first_and_filtered(stores: Backend) -> None:
    for minute, order_id in enumerate(["order-1", "order-2", "order-3"]):
        await stores.store.create_purchase(
            make_purchase(order_id, created_at=T0 - timedelta(minutes=3 - minute))
        )
    await stores.store.create_purchase(make_purchase("elsewhere", project_id="other"))
    listed = await stores.store.list_purchases("shop")
    assert [purchase.order_id for purchase in listed] == ["order-3", "order-2", "order-1"]
    assert [p.order_id for p in await stores.store.list_purchases("shop", limit=2)] == ["order-3", "order-2"]
    assert await settle(stores, "order-2", event_id="evt_2") == ("applied", "paid")
    pending = await stores.store.list_purchases("shop", webhook_status=WebhookStatus.PENDING)
    assert [purchase.order_id for purchase in pending] == ["order-2"]


# --- ingest (one script: checks, compare-and-set, event, outbox) -----------------------------


async def test_ingest_to_paid_writes_event_and_outbox(stores: Backend) -> None:
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
        id="evt_1",
        type="item.purchased",
        project_id="shop",
        order_id="order-1",
        item_id="tmpl",
        body=body,
        created_at=T0,
    )
    assert await stores.events.get("evt_1") == expected
    assert list(json.loads(body)) == list(ItemPurchasedEvent.model_fields)
    assert await outbox_scores(stores) == {"evt_1": to_ms(T0)}
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
    body = event_body(event_body_head(purchase), iso_z(T0), metadata_json(purchase.metadata))
    assert body == model_body(purchase, T0)
    assert json.loads(body)["paid_at"] == iso_z(T0)


@pytest.mark.parametrize("text", TRICKY)
async def test_the_ingest_script_writes_exactly_the_model_body(stores: Backend, text: str) -> None:
    """The script joins the stored template around paid_at (and reads the purchase's doc with
    cjson): the event's body is the model's, byte for byte, on either backend."""
    purchase = make_purchase("order-1").model_copy(
        update={"buyer_name": text, "item_name": text, "metadata": {text: text, "paid_at": text}}
    )
    await stores.store.create_purchase(purchase)
    assert await settle(stores, "order-1", event_id="evt_1") == ("applied", "paid")
    event = await stores.events.get("evt_1")
    assert event is not None
    assert event.body == model_body(purchase, T0)


async def test_a_second_settlement_and_a_late_expiry_change_nothing(stores: Backend) -> None:
    await stores.store.create_purchase(make_purchase("order-1"))
    assert await settle(stores, "order-1", event_id="evt_1") == ("applied", "paid")

    assert await settle(stores, "order-1", event_id="evt_2") == ("unchanged", "paid")
    expired = make_outcome("order-1", PurchaseStatus.EXPIRED)
    assert (await stores.store.ingest(expired, now=T0))[:2] == ("unchanged", "paid")

    stored = await stores.store.get_purchase("order-1")
    assert stored is not None
    assert (stored.status, stored.event_id) == (PurchaseStatus.PAID, "evt_1")
    assert await stores.events.get("evt_2") is None
    assert await outbox_scores(stores) == {"evt_1": to_ms(T0)}


async def test_ingest_of_a_missing_purchase_writes_nothing(stores: Backend) -> None:
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
    stores: Backend, fields: dict[str, Any], expected: tuple[str, str]
) -> None:
    await stores.store.create_purchase(make_purchase("order-1"))
    assert await settle(stores, "order-1", event_id="evt_1", **fields) == expected
    stored = await stores.store.get_purchase("order-1")
    assert stored is not None
    applied = expected[0] == "applied"
    assert stored.status is (PurchaseStatus.PAID if applied else PurchaseStatus.PENDING)
    assert (await stores.events.get("evt_1") is not None) is applied


async def store_the_old_way(stores: Backend, purchase: Purchase, *, template: bool) -> None:
    """A purchase as relay stored it before metadata was kept once: the metadata inside ``doc``
    and, with ``template``, again in ``event_tail`` (older still: no template at all)."""
    state_fields = ("status", "paid_at", "webhook_status", "event_id", "updated_at")
    doc = purchase.model_dump(mode="json", exclude=set(state_fields))
    fields = {"doc": dumps(doc)} | {
        name: value or ""
        for name, value in purchase.model_dump(mode="json", include=set(state_fields)).items()
    }
    if template:
        fields |= {
            "event_head": event_body_head(purchase),
            "event_tail": '","metadata":' + metadata_json(purchase.metadata) + "}",
        }
    await stores.redis.hset(stores.store.keys.purchase(purchase.order_id), mapping=fields)  # type: ignore[misc]


@pytest.mark.parametrize("text", TRICKY)
async def test_a_purchase_stored_with_the_old_template_is_paid_with_the_model_body(
    stores: Backend, text: str
) -> None:
    purchase = make_purchase("order-1").model_copy(update={"buyer_name": text, "metadata": {text: text}})
    await store_the_old_way(stores, purchase, template=True)
    assert await stores.store.get_purchase("order-1") == purchase

    assert await settle(stores, "order-1", event_id="evt_1") == ("applied", "paid")
    event = await stores.events.get("evt_1")
    assert event is not None
    assert event.body == model_body(purchase, T0)
    stored = await stores.store.get_purchase("order-1")
    assert stored is not None
    assert (stored.status, stored.metadata) == (PurchaseStatus.PAID, purchase.metadata)


async def test_a_purchase_without_a_template_gets_one_and_is_paid(stores: Backend) -> None:
    """Purchases stored before they carried their event template: the script writes nothing and
    says so; add_event_template repairs it (in today's layout: the metadata once)."""
    purchase = make_purchase("order-1")
    await store_the_old_way(stores, purchase, template=False)

    assert await settle(stores, "order-1", event_id="evt_1") == ("no_template", "")
    assert await stores.store.get_purchase("order-1") == purchase

    await stores.store.add_event_template("order-1")
    assert await stores.store.get_purchase("order-1") == purchase
    assert "metadata" not in json.loads(await stores.redis.hget(stores.store.keys.purchase("order-1"), "doc"))  # type: ignore[misc]
    assert await settle(stores, "order-1", event_id="evt_1") == ("applied", "paid")
    event = await stores.events.get("evt_1")
    assert event is not None
    assert event.body == model_body(purchase, T0)


@pytest.mark.parametrize("status", [PurchaseStatus.FAILED, PurchaseStatus.EXPIRED, PurchaseStatus.REFUNDED])
async def test_ingest_without_paid_writes_no_event(stores: Backend, status: PurchaseStatus) -> None:
    purchase = make_purchase("order-1")
    await stores.store.create_purchase(purchase)
    ingested = await stores.store.ingest(make_outcome("order-1", status), now=T0)
    assert ingested[:2] == ("applied", status.value)
    stored = await stores.store.get_purchase("order-1")
    assert stored is not None
    assert stored.status is status
    assert stored.event_id is None
    assert stored.webhook_status is None
    assert stored.paid_at is None
    assert await outbox_scores(stores) == {}
    assert await stores.redis.keys(f"{KEY_PREFIX}:event:*") == []


# --- a purchase is created once; its metadata is stored once --------------------------------------


async def test_create_purchase_never_overwrites_a_purchase_with_the_same_order_id(stores: Backend) -> None:
    first = make_purchase("order-1")
    assert await stores.store.create_purchase(first) is True
    assert await settle(stores, "order-1", event_id="evt_1") == ("applied", "paid")
    paid = await stores.store.get_purchase("order-1")

    again = make_purchase("order-1", created_at=T0 + timedelta(minutes=1)).model_copy(update={"amount": 1})
    assert await stores.store.create_purchase(again) is False

    assert await stores.store.get_purchase("order-1") == paid
    assert await stores.redis.zrange(stores.store.keys.project_purchases("shop"), 0, -1, withscores=True) == [
        ("order-1", to_ms(T0))
    ]


async def test_a_purchase_hash_holds_its_metadata_once(stores: Backend) -> None:
    marker = "\N{GRINNING FACE}" * 500
    purchase = make_purchase("order-1").model_copy(update={"metadata": {"note": marker}})
    await stores.store.create_purchase(purchase)
    fields = await stores.redis.hgetall(stores.store.keys.purchase("order-1"))  # type: ignore[misc]
    assert sum(value.count(marker) for value in fields.values()) == 1
    assert "metadata" not in json.loads(fields["doc"])
    assert await stores.store.get_purchase("order-1") == purchase


# --- signing secrets: every previous one, and projects stored with one ------------------------------


async def test_every_previous_secret_is_stored_encrypted_and_read_back(stores: Backend) -> None:
    project = make_project()
    for hours in (0, 1):
        project = project.rotated(
            new_webhook_secret(), now=T0 + timedelta(hours=hours), grace=timedelta(hours=24)
        )
    await stores.store.put_project(project)
    raw = await stores.redis.get(stores.store.keys.project("shop"))
    assert raw is not None
    assert raw.count("fernet:") == 3
    assert not any(secret in raw for secret in project.signing_secrets(T0))
    assert await stores.store.get_project("shop") == project


async def test_a_project_stored_with_one_previous_secret_reads_signs_and_reencrypts(stores: Backend) -> None:
    current, older = new_webhook_secret(), new_webhook_secret()
    expires_at = T0 + timedelta(hours=3)
    legacy = make_project().model_dump(mode="json", exclude={"previous_secrets"}) | {
        "webhook_secret": stores.store.box.encrypt(current),
        "previous_webhook_secret": stores.store.box.encrypt(older),
        "previous_secret_expires_at": iso_z(expires_at),
    }
    await stores.redis.set(stores.store.keys.project("shop"), json.dumps(legacy))

    new_key = generate_key()
    rotating = Store(stores.redis, prefix=KEY_PREFIX, box=SecretBox([new_key, stores.encryption_key]))
    assert await rotating.reencrypt_project("shop") is True
    # Written back under the new key alone, in the project's own key (nothing else was written).
    only_new = Store(stores.redis, prefix=KEY_PREFIX, box=SecretBox([new_key]))
    project = await only_new.get_project("shop")
    assert project is not None
    assert project.signing_secrets(T0) == [current, older]
    assert project.signing_secrets(expires_at) == [current]
    assert project.public_view() == make_project().public_view()
