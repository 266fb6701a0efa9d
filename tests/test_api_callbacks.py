"""Midtrans callbacks (relay/api/callbacks.py): 400/401/409/413, the status ladder, duplicates and
concurrency, the callback metrics, and 503 when the store is down."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from redis.asyncio import Redis

from relay.gateways.midtrans import sign_notification
from tests.helpers import (
    ADMIN,
    PREFIX,
    PROJECTS,
    Merchant,
    Running,
    Shop,
    StartRelay,
    assert_error,
    assert_one_event,
    eventually,
    open_shop,
    outbox,
    parse_utc,
    queued_jobs,
    stored_events,
)


async def assert_no_event(redis: Redis) -> None:
    assert await stored_events(redis) == []
    assert await outbox(redis) == []
    assert await queued_jobs(redis) == []


async def test_callback_malformed_json_is_400(relay: Running, shop: Shop) -> None:
    order = await shop.buy()
    good = json.dumps(relay.api.notification(order["order_id"], order["amount"]))
    for data in ("{not json", good[:-1], "[1, 2]", '"settlement"', ""):
        assert_error(await relay.api.callback(data, expect=400), "InvalidInput")
    assert await shop.status(order) == "pending"


@pytest.mark.parametrize(
    ("field_name", "value"),
    [
        pytest.param("signature_key", None, id="no-signature"),
        pytest.param("order_id", None, id="no-order-id"),
        pytest.param("transaction_status", None, id="no-status"),
        pytest.param("gross_amount", 50000, id="numeric-amount"),
        pytest.param("status_code", 200, id="numeric-status-code"),
    ],
)
async def test_callback_missing_or_mistyped_fields_are_400(
    relay: Running, shop: Shop, field_name: str, value: Any
) -> None:
    order = await shop.buy()
    payload = relay.api.notification(order["order_id"], order["amount"])
    if value is None:
        del payload[field_name]
    else:
        payload = sign_notification(payload | {field_name: value}, relay.api.midtrans_key)
    body = await relay.api.callback(payload, expect=400)
    assert_error(body, "InvalidInput", mentions=field_name)
    assert await shop.status(order) == "pending"


async def test_callback_unknown_transaction_status_is_400(relay: Running, shop: Shop) -> None:
    order = await shop.buy()
    payload = relay.api.notification(order["order_id"], order["amount"], status="teleported")
    assert_error(await relay.api.callback(payload, expect=400), "InvalidInput", mentions="teleported")
    assert await shop.status(order) == "pending"


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda p: p | {"signature_key": "0" * 128}, id="zeros"),
        pytest.param(lambda p: p | {"signature_key": p["signature_key"][:-1] + "x"}, id="one-char"),
        pytest.param(lambda p: sign_notification(p, "SB-Mid-server-other"), id="other-key"),
        pytest.param(lambda p: p | {"status_code": "201"}, id="status-code-changed"),
    ],
)
async def test_callback_wrong_signature_is_401(relay: Running, shop: Shop, redis: Redis, tamper: Any) -> None:
    order = await shop.buy()
    payload = tamper(relay.api.notification(order["order_id"], order["amount"]))
    body = await relay.api.callback(payload, expect=401)
    assert_error(body, "VerificationError")
    purchase = await shop.purchase(order)
    assert (purchase["status"], purchase["paid_at"], purchase["webhook_status"]) == ("pending", None, None)
    await assert_no_event(redis)


async def test_callback_body_over_limit_is_413(start_relay: StartRelay) -> None:
    running = await start_relay(worker=False, max_body_bytes=2048)
    shop = await open_shop(running.api)
    order = await shop.buy()
    payload = running.api.notification(order["order_id"], order["amount"]) | {"padding": "x" * 4096}
    data = json.dumps(payload).encode()
    assert len(data) > 4096
    body = await running.api.callback(data, expect=413)
    assert_error(body, "PayloadTooLarge", mentions="2048")
    assert await shop.status(order) == "pending"
    # a body under the limit still goes through
    assert await running.api.pay(order) == {"status": "ok"}


async def test_callback_amount_mismatch_is_409(relay: Running, shop: Shop, redis: Redis) -> None:
    order = await shop.buy()
    for amount in (order["amount"] + 1, order["amount"] - 1, 1):
        payload = relay.api.notification(order["order_id"], amount)
        body = await relay.api.callback(payload, expect=409)
        assert_error(body, "AmountMismatch")
    assert await shop.status(order) == "pending"
    await assert_no_event(redis)


async def test_callback_fractional_amount_is_409(relay: Running, shop: Shop, redis: Redis) -> None:
    order = await shop.buy()
    payload = relay.api.notification(order["order_id"], order["amount"]) | {"gross_amount": "50000.50"}
    body = await relay.api.callback(sign_notification(payload, relay.api.midtrans_key), expect=409)
    assert_error(body, "AmountMismatch")
    await assert_no_event(redis)


async def test_callback_unknown_order_is_200_without_event(relay: Running, shop: Shop, redis: Redis) -> None:
    payload = relay.api.notification("item-00000000-deadbeef", 50000)
    assert await relay.api.callback(payload) == {"status": "ok"}
    await assert_no_event(redis)
    unmatched = [json.loads(raw) for raw in await redis.lrange(f"{PREFIX}:unmatched", 0, -1)]
    assert [entry["order_id"] for entry in unmatched] == ["item-00000000-deadbeef"]


async def test_unknown_gateway_is_json_404(relay: Running) -> None:
    body = await relay.api.call("POST", "/callbacks/unknown-gateway", auth=False, json={}, expect=404)
    assert_error(body, "NotFound")


async def test_callback_pending_keeps_pending(relay: Running, shop: Shop, redis: Redis) -> None:
    order = await shop.buy()
    assert await relay.api.pay(order, status="pending") == {"status": "ok"}
    purchase = await shop.purchase(order)
    assert (purchase["status"], purchase["paid_at"], purchase["webhook_status"]) == ("pending", None, None)
    await assert_no_event(redis)


def jakarta(moment: datetime) -> str:
    """``moment`` as Midtrans writes its times: Asia/Jakarta (UTC+7), to the second."""
    return (moment + timedelta(hours=7)).strftime("%Y-%m-%d %H:%M:%S")


async def test_settlement_pays_with_paid_at_in_utc(relay: Running, shop: Shop, redis: Redis) -> None:
    order = await shop.buy(buyer_name="John Doe", metadata={"ref": "campaign-42"})
    # After the order was made (a paid_at before it is clamped to the order's creation).
    paid = datetime.now(UTC).replace(microsecond=0)
    assert await relay.api.pay(order, settlement_time=jakarta(paid)) == {"status": "ok"}
    purchase = await shop.purchase(order)
    assert purchase["status"] == "paid"
    assert purchase["paid_at"].endswith("Z")
    assert parse_utc(purchase["paid_at"]) == paid
    assert purchase["webhook_status"] == "pending"
    event = await assert_one_event(redis, order["order_id"], queued=True)
    assert purchase["event_id"] == event["id"]
    assert json.loads(event["body"]) == {
        "event": "item.purchased",
        "order_id": order["order_id"],
        "item_id": shop.item["id"],
        "item_name": "Premium Template",
        "buyer_email": "buyer@example.com",
        "buyer_name": "John Doe",
        "amount": 50000,
        "currency": "IDR",
        "paid_at": paid.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "metadata": {"ref": "campaign-42"},
    }


@pytest.mark.parametrize(
    "stamp",
    [
        "06/05/2026 17:00",
        "2026-05-06T17:00:00Z",
        "2026-13-01 00:00:00",
        "0001-01-01 00:00:00",  # before year 1 in UTC: was a 500 (OverflowError)
        "9999-12-31 23:59:59",
    ],
)
async def test_settlement_with_an_unreadable_settlement_time_pays_at_the_relays_clock(
    relay: Running, shop: Shop, redis: Redis, stamp: str
) -> None:
    """A gateway's own clock never fails a correctly signed callback (issue 12, item 6)."""
    order = await shop.buy()
    before = datetime.now(UTC).replace(microsecond=0)
    payload = relay.api.notification(order["order_id"], order["amount"], settlement_time=stamp)
    assert await relay.api.callback(payload) == {"status": "ok"}
    purchase = await shop.purchase(order)
    assert purchase["status"] == "paid"
    assert before <= parse_utc(purchase["paid_at"]) <= datetime.now(UTC)
    await assert_one_event(redis, order["order_id"], queued=True)


async def test_settlement_without_settlement_time_uses_transaction_time(relay: Running, shop: Shop) -> None:
    order = await shop.buy()
    paid = datetime.now(UTC).replace(microsecond=0)
    payload = relay.api.notification(order["order_id"], order["amount"], transaction_time=jakarta(paid))
    del payload["settlement_time"]
    await relay.api.callback(payload)
    purchase = await shop.purchase(order)
    assert parse_utc(purchase["paid_at"]) == paid


@pytest.mark.parametrize("late", ["pending", "expire", "deny", "cancel", "settlement"])
async def test_late_callbacks_never_unpay(relay: Running, shop: Shop, redis: Redis, late: str) -> None:
    order = await shop.buy()
    await relay.api.pay(order, settlement_time="2026-05-06 17:00:00")
    before = await shop.purchase(order)
    assert await relay.api.pay(order, status=late, settlement_time="2026-05-07 09:00:00") == {"status": "ok"}
    after = await shop.purchase(order)
    assert after["status"] == "paid"
    assert after["paid_at"] == before["paid_at"]
    assert after["event_id"] == before["event_id"]
    await assert_one_event(redis, order["order_id"], queued=True)


async def test_refund_after_paid_is_refunded(relay: Running, shop: Shop, redis: Redis) -> None:
    order = await shop.buy()
    await relay.api.pay(order)
    assert await relay.api.pay(order, status="refund") == {"status": "ok"}
    purchase = await shop.purchase(order)
    assert purchase["status"] == "refunded"
    # The payment's event and the refund's, each queued.
    events = await stored_events(redis, order["order_id"])
    kinds = sorted(json.loads(event["body"])["event"] for event in events)
    assert kinds == ["item.purchased", "item.refunded"]
    assert sorted(await queued_jobs(redis)) == sorted(event["id"] for event in events)
    # refunds are final: a resent settlement does not make it paid again
    await relay.api.pay(order)
    assert await shop.status(order) == "refunded"


async def test_capture_depends_on_fraud_status(relay: Running, shop: Shop, redis: Redis) -> None:
    order = await shop.buy()
    assert await relay.api.pay(order, status="capture", fraud_status="challenge") == {"status": "ok"}
    assert await shop.status(order) == "pending"
    await assert_no_event(redis)
    assert await relay.api.pay(order, status="capture", fraud_status="accept") == {"status": "ok"}
    assert await shop.status(order) == "paid"
    await assert_one_event(redis, order["order_id"], queued=True)


async def test_expired_then_settled_is_paid(relay: Running, shop: Shop, redis: Redis) -> None:
    order = await shop.buy()
    await relay.api.pay(order, status="expire")
    assert await shop.status(order) == "expired"
    await relay.api.pay(order)
    assert await shop.status(order) == "paid"
    await assert_one_event(redis, order["order_id"], queued=True)


async def test_duplicate_settlement_yields_one_event(relay: Running, shop: Shop, redis: Redis) -> None:
    order = await shop.buy()
    for _ in range(3):
        assert await relay.api.pay(order) == {"status": "ok"}
    assert await shop.status(order) == "paid"
    await assert_one_event(redis, order["order_id"], queued=True)


async def test_concurrent_settlements_store_one_event(relay: Running, shop: Shop, redis: Redis) -> None:
    order, bystander = await shop.buy(), await shop.buy()
    answers = await asyncio.gather(*(relay.api.pay(order) for _ in range(50)))
    assert answers == [{"status": "ok"}] * 50
    purchase = await shop.purchase(order)
    assert purchase["status"] == "paid"
    event = await assert_one_event(redis, order["order_id"], queued=True)
    assert event["id"] == purchase["event_id"]
    assert await shop.status(bystander) == "pending"


async def test_concurrent_settlements_and_expiries_end_paid(relay: Running, shop: Shop, redis: Redis) -> None:
    order = await shop.buy()
    calls = [relay.api.pay(order, status="expire" if n % 2 else "settlement") for n in range(40)]
    assert await asyncio.gather(*calls) == [{"status": "ok"}] * 40
    assert await shop.status(order) == "paid"
    await assert_one_event(redis, order["order_id"], queued=True)


async def test_concurrent_settlements_deliver_one_webhook(
    start_relay: StartRelay, merchant: Merchant, redis: Redis
) -> None:
    running = await start_relay()
    shop = await open_shop(running.api, webhook_url=f"{merchant.url}/hook")
    order = await shop.buy()
    answers = await asyncio.gather(*(running.api.pay(order) for _ in range(50)))
    assert answers == [{"status": "ok"}] * 50

    async def delivered() -> bool:
        return (await shop.purchase(order))["webhook_status"] == "delivered"

    await eventually(delivered, what="the webhook delivered")

    async def queue_drained() -> bool:
        return not await queued_jobs(redis) and not await outbox(redis)

    await eventually(queue_drained, what="an empty arq queue and outbox")
    events = await stored_events(redis, order["order_id"])
    assert len(events) == 1
    hits = merchant.hits("/hook")
    assert len(hits) == 1, hits
    assert hits[0].headers["webhook-id"] == events[0]["id"]
    assert json.loads(hits[0].body)["order_id"] == order["order_id"]


async def test_metrics_count_callbacks(relay: Running, shop: Shop) -> None:
    order = await shop.buy()
    await relay.api.pay(order)
    await relay.api.pay(order)
    await relay.api.callback({"order_id": "x"}, expect=400)
    async with relay.api.http.get("/metrics", headers=ADMIN) as response:
        assert response.status == 200
        text = await response.text()
    samples = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line[:1] != "#"
    }
    assert samples['relay_callbacks_total{error="",gateway="midtrans",result="paid"}'] == 1
    assert samples['relay_callbacks_total{error="",gateway="midtrans",result="unchanged"}'] == 1
    assert samples['relay_callbacks_total{error="InvalidInput",gateway="midtrans",result="refused"}'] == 1
    assert samples["relay_events_created_total"] == 1
    assert samples["relay_purchases_created_total"] == 1


async def test_store_down_is_503_never_200(start_relay: StartRelay) -> None:
    running = await start_relay(worker=False, redis_url="redis://127.0.0.1:1/0")
    api = running.api
    payload = api.notification("item-00000000-deadbeef", 50000)
    assert_error(await api.callback(payload, expect=503), "StoreUnavailable")
    assert_error(await api.call("GET", "/readyz", auth=False, expect=503), "StoreUnavailable")
    assert await api.call("GET", "/healthz", auth=False) == {"status": "ok"}
    assert_error(await api.call("PUT", PROJECTS, json={"name": "x"}, expect=503), "StoreUnavailable")
