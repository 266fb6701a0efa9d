"""Security round 2 (issue 12), the payment items, each as the attacker met it: through HTTP on a
running relay and the real Redis. 1: the buyer chose the price. 4: metadata counted in characters
and stored twice. 8: a colliding order id overwrote a paid purchase. 11: a refund before its
settlement swallowed the payment. 13: a second rotation dropped the first secret early. 14: the
callback's currency, a gateway's implausible paid_at, unknown-order records of any size."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from redis.asyncio import Redis

from relay.api import public
from relay.crypto import SecretBox
from relay.jsonutil import dumps
from relay.models import MAX_METADATA_BYTES, MAX_RETIRED_SECRETS, Project, iso_z
from relay.signing import new_webhook_secret
from tests.helpers import (
    PROJECTS,
    PURCHASE,
    TEST_ENCRYPTION_KEY,
    Merchant,
    Running,
    Shop,
    StartRelay,
    assert_error,
    parse_utc,
    start_shop,
    stored_events,
    verify,
    wait_hits,
)


def purchases_path(shop: Shop) -> str:
    return f"{PROJECTS}/{shop.project['id']}/item-purchases"


async def buy_refused(shop: Shop, **fields: Any) -> dict[str, Any]:
    payload = {
        "client_id": shop.project["client_id"],
        "item_id": shop.item["id"],
        "buyer_email": "b@example.com",
    }
    body: dict[str, Any] = await shop.api.call(
        "POST", PURCHASE, auth=False, json=payload | fields, expect=400
    )
    return body


# --- 1. the buyer chooses the price ------------------------------------------------------------


async def test_a_buyer_cannot_pay_less_than_the_items_price(relay: Running, shop: Shop) -> None:
    for amount in (1, 49_999):
        assert_error(await buy_refused(shop, amount=amount), "InvalidInput", mentions="amount_min 50000")
    assert await relay.api.call("GET", purchases_path(shop)) == {"purchases": []}
    # The price, or more (no amount_max): a tip is the buyer's choice.
    assert (await shop.buy(amount=50_000))["amount"] == 50_000
    assert (await shop.buy(amount=75_000))["amount"] == 75_000


async def test_a_donation_item_takes_any_amount_within_its_bounds_and_the_webhook_says_what_was_paid(
    start_relay: StartRelay, merchant: Merchant
) -> None:
    shop = await start_shop(start_relay, merchant)
    await shop.set_item_url(None, amount_min=1000, amount_max=1_000_000)
    assert_error(await buy_refused(shop, amount=999), "InvalidInput", mentions="amount_min 1000")
    assert_error(await buy_refused(shop, amount=1_000_001), "InvalidInput", mentions="amount_max 1000000")
    shown = await shop.api.call(
        "GET", "/api/platform/public-items", params={"client_id": shop.project["client_id"]}
    )
    assert [(item["price"], item["amount_min"], item["amount_max"]) for item in shown["items"]] == [
        (50_000, 1000, 1_000_000)
    ]

    await shop.order(amount=1000)
    await wait_hits(merchant, 1)
    assert verify(merchant.hits()[0], shop.secret)["amount"] == 1000


# --- 4. metadata: capped in UTF-8 bytes, stored once -------------------------------------------


async def test_metadata_is_capped_in_utf8_bytes_not_characters(relay: Running, shop: Shop) -> None:
    emoji = {"note": "\N{GRINNING FACE}" * 1100}  # 1,100 characters, 4,400 bytes
    assert_error(await buy_refused(shop, metadata=emoji), "InvalidInput", mentions="bytes")
    assert await relay.api.call("GET", purchases_path(shop)) == {"purchases": []}


async def test_a_purchase_keeps_its_metadata_once_and_sends_it_whole(
    relay: Running, shop: Shop, redis: Redis
) -> None:
    marker = "\N{LATIN SMALL LETTER U WITH DIAERESIS}" * 2000  # 4,000 bytes: a near-maximal purchase
    metadata = {"note": marker, "nested": {"n": [1, 2.5, None, True]}}
    order = await shop.buy(metadata=metadata, buyer_name="\N{CJK UNIFIED IDEOGRAPH-6F22}" * 200)

    stored = await redis.hgetall(f"relay:purchase:{order['order_id']}")  # type: ignore[misc]
    assert sum(value.count(marker) for value in stored.values()) == 1
    size = sum(len(key.encode()) + len(value.encode()) for key, value in stored.items())
    assert size < MAX_METADATA_BYTES + 3000, size  # before: the metadata twice, about 9 KB more

    assert (await shop.purchase(order))["metadata"] == metadata
    await relay.api.pay(order)
    [event] = await stored_events(redis, order["order_id"])
    assert json.loads(event["body"])["metadata"] == metadata


# --- 8. an order id is created only if it is new -----------------------------------------------


async def test_order_ids_carry_sixteen_random_hex_digits(relay: Running, shop: Shop) -> None:
    order = await shop.buy()
    assert re.fullmatch(rf"item-{re.escape(shop.item['id'][:8])}-[0-9a-f]{{16}}", order["order_id"]), order


async def test_a_colliding_order_id_never_overwrites_a_paid_purchase(
    relay: Running, shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    paid = await shop.order()
    taken = iter([paid["order_id"]])  # the next order id drawn is the paid purchase's
    draw = public.new_order_id
    monkeypatch.setattr(public, "new_order_id", lambda item_id: next(taken, None) or draw(item_id))

    second = await shop.buy(amount=60_000)

    assert second["order_id"] != paid["order_id"]
    first = await shop.purchase(paid)
    assert (first["status"], first["amount"], first["webhook_status"]) == ("paid", 50_000, "pending")
    assert (await shop.purchase(second))["status"] == "pending"


async def test_an_order_id_that_keeps_colliding_is_a_409_and_overwrites_nothing(
    relay: Running, shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    paid = await shop.order()
    monkeypatch.setattr(public, "new_order_id", lambda item_id: paid["order_id"])
    payload = {
        "client_id": shop.project["client_id"],
        "item_id": shop.item["id"],
        "buyer_email": "b@example.com",
    }
    body = await relay.api.call("POST", PURCHASE, auth=False, json=payload | {"amount": 60_000}, expect=409)
    assert_error(body, "Conflict", mentions="order id")
    listed = (await relay.api.call("GET", purchases_path(shop)))["purchases"]
    assert [(p["order_id"], p["status"], p["amount"]) for p in listed] == [(paid["order_id"], "paid", 50_000)]


# --- 11. a refund before its settlement ----------------------------------------------------------


@pytest.mark.parametrize("first", ["refund", "chargeback"])
async def test_a_refund_before_its_settlement_still_sends_item_purchased_once(
    start_relay: StartRelay, merchant: Merchant, redis: Redis, first: str
) -> None:
    shop = await start_shop(start_relay, merchant)
    order = await shop.buy()
    assert await shop.api.pay(order, status=first) == {"status": "ok"}
    assert await shop.status(order) == "refunded"

    assert await shop.api.pay(order) == {"status": "ok"}  # the real settlement, reordered
    await wait_hits(merchant, 1)
    body = verify(merchant.hits()[0], shop.secret)
    assert (body["event"], body["order_id"], body["amount"]) == ("item.purchased", order["order_id"], 50_000)
    purchase = await shop.wait_status(order, "delivered")
    assert purchase["status"] == "refunded"  # the refund stands
    assert purchase["paid_at"] is not None

    assert await shop.api.pay(order) == {"status": "ok"}  # a resent settlement: no second event
    # One item.purchased, and the refund that came first, sent after it.
    events = await stored_events(redis, order["order_id"])
    kinds = sorted(json.loads(event["body"])["event"] for event in events)
    assert kinds == ["item.purchased", "item.refunded"]
    assert (await shop.purchase(order))["event_id"] == purchase["event_id"]


# --- 13. every previous secret signs for its own full 24 h -------------------------------------


async def test_after_two_rotations_the_original_secret_still_verifies(
    start_relay: StartRelay, merchant: Merchant
) -> None:
    shop = await start_shop(start_relay, merchant)
    rotate = f"{PROJECTS}/{shop.project['id']}/webhook-secret/rotate"
    original = shop.secret
    first = await shop.api.call("POST", rotate)
    second = await shop.api.call("POST", rotate)
    secrets = [original, first["project"]["webhook_secret"], second["project"]["webhook_secret"]]
    assert len(set(secrets)) == 3
    # The API shows the new secret on rotate, and no other, ever.
    answered = json.dumps(second)
    assert [secret in answered for secret in secrets] == [False, False, True]
    shown = json.dumps(await shop.api.call("GET", f"{PROJECTS}/{shop.project['id']}"))
    assert not any(secret in shown for secret in secrets)

    await shop.order()
    await wait_hits(merchant, 1)
    hit = merchant.hits()[0]
    assert len(hit.headers["webhook-signature"].split()) == 3
    for secret in secrets:
        assert verify(hit, secret)["event"] == "item.purchased"


def test_each_previous_secret_signs_for_its_own_24_hours() -> None:
    t0 = datetime(2026, 5, 6, 10, 0, tzinfo=UTC)
    secrets = [new_webhook_secret() for _ in range(3)]
    grace = timedelta(hours=24)
    project = Project(
        id="p", name="Shop", client_id="cl_p", webhook_secret=secrets[0], created_at=t0, updated_at=t0
    )
    project = project.rotated(secrets[1], now=t0, grace=grace)
    project = project.rotated(secrets[2], now=t0 + timedelta(hours=1), grace=grace)

    assert project.signing_secrets(t0 + timedelta(hours=23, minutes=59)) == [
        secrets[2],
        secrets[1],
        secrets[0],
    ]
    assert project.signing_secrets(t0 + timedelta(hours=24)) == [secrets[2], secrets[1]]
    assert project.signing_secrets(t0 + timedelta(hours=25)) == [secrets[2]]
    later = project.rotated(new_webhook_secret(), now=t0 + timedelta(hours=30), grace=grace)
    assert [old.secret for old in later.previous_secrets] == [secrets[2]]  # expired ones are dropped


async def test_a_project_stored_with_one_previous_secret_keeps_working(
    start_relay: StartRelay, merchant: Merchant, redis: Redis
) -> None:
    """A project as relay stored it before every previous secret was kept (previous_webhook_secret,
    previous_secret_expires_at): read, shown without secrets, rotated, and its deliveries signed
    with both of its secrets."""
    shop = await start_shop(start_relay, merchant)
    key = f"relay:project:{shop.project['id']}"
    box = SecretBox([TEST_ENCRYPTION_KEY])
    legacy = json.loads(await redis.get(key) or "")
    older = new_webhook_secret()
    del legacy["previous_secrets"]
    legacy["previous_webhook_secret"] = box.encrypt(older)
    legacy["previous_secret_expires_at"] = iso_z(datetime.now(UTC) + timedelta(hours=2))
    await redis.set(key, dumps(legacy))

    shown = await shop.api.call("GET", f"{PROJECTS}/{shop.project['id']}")
    assert not any("secret" in name for name in shown["project"]), shown
    await shop.order()
    await wait_hits(merchant, 1)
    for secret in (shop.secret, older):
        verify(merchant.hits()[0], secret)

    rotated = await shop.api.call("POST", f"{PROJECTS}/{shop.project['id']}/webhook-secret/rotate")
    assert older not in json.dumps(rotated)
    stored = json.loads(await redis.get(key) or "")
    assert "previous_webhook_secret" not in stored
    assert [box.decrypt(old["secret"]) for old in stored["previous_secrets"]] == [shop.secret, older]


# --- 14. currency, implausible paid_at, unknown orders ------------------------------------------


async def test_a_settlement_in_another_currency_is_a_409_naming_both_and_writes_nothing(
    relay: Running, shop: Shop, redis: Redis
) -> None:
    order = await shop.buy()
    body = await relay.api.callback(
        relay.api.notification(order["order_id"], 50_000, currency="USD"), expect=409
    )
    assert_error(body, "Conflict", mentions="USD")
    assert "IDR" in body["detail"]
    assert await shop.status(order) == "pending"
    assert await stored_events(redis, order["order_id"]) == []
    # The same currency in another case is the same currency.
    assert await relay.api.pay(order, currency="idr") == {"status": "ok"}
    assert await shop.status(order) == "paid"


async def test_a_settlement_time_before_the_order_was_made_is_clamped_to_its_creation(
    relay: Running, shop: Shop, redis: Redis
) -> None:
    order = await shop.buy()
    assert await relay.api.pay(order, settlement_time="2001-01-01 00:00:00") == {"status": "ok"}
    purchase = await shop.purchase(order)
    created = parse_utc(purchase["created_at"]).replace(microsecond=0)
    assert purchase["status"] == "paid"
    assert parse_utc(purchase["paid_at"]) == created
    [event] = await stored_events(redis, order["order_id"])
    assert json.loads(event["body"])["paid_at"] == iso_z(created)


async def test_a_settlement_time_in_the_future_is_clamped_to_now(relay: Running, shop: Shop) -> None:
    order = await shop.buy()
    assert await relay.api.pay(order, settlement_time="2099-12-31 23:59:59") == {"status": "ok"}
    purchase = await shop.purchase(order)
    assert purchase["status"] == "paid"
    assert parse_utc(purchase["paid_at"]) <= datetime.now(UTC)


async def test_a_callback_for_an_unknown_order_is_kept_as_a_small_summary(
    relay: Running, redis: Redis
) -> None:
    api = relay.api
    payload = api.notification("item-unknown0-00000000", 50_000, transaction_id="x" * 40_000)
    assert await api.callback(payload) == {"status": "ok"}
    [raw] = await redis.lrange("relay:unmatched", 0, -1)  # type: ignore[misc]
    assert len(raw.encode()) < 1024, len(raw)
    entry = json.loads(raw)
    assert entry["order_id"] == "item-unknown0-00000000"
    assert entry["reference"] == "x" * 128


async def test_rotations_keep_the_newest_few_secrets_and_none_is_lost_to_a_race(
    start_relay: StartRelay, merchant: Merchant
) -> None:
    """Every kept secret signs every webhook, so they are capped (a flood of rotations cannot grow
    the signature header past what endpoints accept); rotations at once are each kept."""
    shop = await start_shop(start_relay, merchant)
    rotate = f"{PROJECTS}/{shop.project['id']}/webhook-secret/rotate"
    for _ in range(20):
        await shop.api.call("POST", rotate)
    await shop.order()
    await wait_hits(merchant, 1)
    hit = merchant.hits()[0]
    assert len(hit.headers["webhook-signature"].split()) == 1 + MAX_RETIRED_SECRETS

    fresh = await start_shop(start_relay, merchant, project_path="/fresh")
    rotate = f"{PROJECTS}/{fresh.project['id']}/webhook-secret/rotate"
    raced = [
        answer["project"]["webhook_secret"]
        for answer in await asyncio.gather(*(fresh.api.call("POST", rotate) for _ in range(2)))
    ]
    await fresh.order()
    await wait_hits(merchant, 1, "/fresh")
    [hit] = merchant.hits("/fresh")
    for secret in [fresh.secret, *raced]:  # both answers' secrets sign: neither rotation was lost
        assert verify(hit, secret)["event"] == "item.purchased"
