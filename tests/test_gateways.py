"""Integration tests of Xendit, Tripay, DOKU, Duitku and a generic HMAC source, each through its real
HTTP route on loopback against a real Redis: a paid callback ends in one signed item.purchased at a
local merchant; wrong signatures, wrong amounts, duplicates, reordering and other gateways' purchases
change nothing they should not."""

from __future__ import annotations

import asyncio
from datetime import datetime

import pytest
from redis.asyncio import Redis
from standardwebhooks import Webhook

from tests.gateway_callbacks import (
    AT_LEAST,
    EXPIRED_AS,
    GATEWAY_SETTINGS,
    GATEWAYS,
    KEYS,
    OK_BODY,
    assert_one_event,
    assert_untouched,
    custom,
    custom_paid_at,
    post,
    send,
)
from tests.helpers import Merchant, Running, StartRelay, assert_error, eventually, open_shop


@pytest.fixture
async def ingress(start_relay: StartRelay) -> Running:
    """Every gateway configured; no worker, so stored events stay in the outbox for inspection."""
    return await start_relay(worker=False, **GATEWAY_SETTINGS)


# --- a paid callback ends in one signed item.purchased --------------------------------------------


@pytest.mark.parametrize("gateway", GATEWAYS)
async def test_paid_callback_delivers_one_signed_event(
    start_relay: StartRelay, merchant: Merchant, redis: Redis, gateway: str
) -> None:
    running = await start_relay(**GATEWAY_SETTINGS)
    shop = await open_shop(running.api, webhook_url=f"{merchant.url}/hook")
    order = await shop.buy(gateway=gateway, buyer_name="Budi", metadata={"ref": "campaign-42"})
    assert (await shop.purchase(order))["gateway"] == gateway
    answer = await send(running.api, gateway, order, "paid")
    assert answer == OK_BODY.get(gateway, {"status": "ok"})

    async def delivered() -> bool:
        return (await shop.purchase(order))["webhook_status"] == "delivered"

    await eventually(delivered, what=f"the {gateway} purchase's webhook delivered")
    [hit] = merchant.hits("/hook")
    event = Webhook(shop.project["webhook_secret"]).verify(hit.body, hit.headers)
    assert event["event"] == "item.purchased"
    assert (event["order_id"], event["amount"], event["currency"]) == (order["order_id"], 50000, "IDR")
    assert (event["buyer_name"], event["metadata"]) == ("Budi", {"ref": "campaign-42"})
    purchase = await shop.purchase(order)
    assert purchase["status"] == "paid"
    assert event["paid_at"] == purchase["paid_at"]
    if gateway == "custom/shop":  # from its paid_at path, in UTC, within a second of the callback
        stated = datetime.fromisoformat(purchase["paid_at"])
        assert abs((stated - custom_paid_at()).total_seconds()) <= 2
        assert purchase["paid_at"].endswith("Z")
    await assert_one_event(redis, shop, order)


# --- verification, amounts, gateways --------------------------------------------------------------


@pytest.mark.parametrize("gateway", GATEWAYS)
async def test_wrong_signature_is_401_and_changes_nothing(
    ingress: Running, redis: Redis, gateway: str
) -> None:
    shop = await open_shop(ingress.api)
    order = await shop.buy(gateway=gateway)
    body = await send(ingress.api, gateway, order, "paid", key="not-the-configured-key-000", expect=401)
    assert_error(body, "VerificationError")
    await assert_untouched(redis, shop, order)


@pytest.mark.parametrize("gateway", GATEWAYS)
async def test_wrong_amount_is_409_and_changes_nothing(ingress: Running, redis: Redis, gateway: str) -> None:
    shop = await open_shop(ingress.api)
    order = await shop.buy(gateway=gateway)
    for amount in (order["amount"] - 1, 1):
        assert_error(
            await send(ingress.api, gateway, order, "paid", amount=amount, expect=409), "AmountMismatch"
        )
    await assert_untouched(redis, shop, order)
    more = order["amount"] + 1
    if gateway in AT_LEAST:
        await send(ingress.api, gateway, order, "paid", amount=more)
        assert await shop.status(order) == "paid"
    else:
        assert_error(
            await send(ingress.api, gateway, order, "paid", amount=more, expect=409), "AmountMismatch"
        )
        await assert_untouched(redis, shop, order)


@pytest.mark.parametrize("gateway", GATEWAYS)
async def test_duplicate_callbacks_make_one_event(ingress: Running, redis: Redis, gateway: str) -> None:
    shop = await open_shop(ingress.api)
    order = await shop.buy(gateway=gateway)
    for _ in range(2):
        await send(ingress.api, gateway, order, "paid")
    await asyncio.gather(*(send(ingress.api, gateway, order, "paid") for _ in range(10)))
    assert await shop.status(order) == "paid"
    await assert_one_event(redis, shop, order)


@pytest.mark.parametrize("gateway", GATEWAYS)
async def test_reordered_callbacks_end_paid(ingress: Running, redis: Redis, gateway: str) -> None:
    shop = await open_shop(ingress.api)
    first, second = await shop.buy(gateway=gateway), await shop.buy(gateway=gateway)
    # pending, then paid, then a late expiry and a late pending: stays paid
    await send(ingress.api, gateway, first, "pending")
    assert await shop.status(first) == "pending"
    await send(ingress.api, gateway, first, "paid")
    paid = await shop.purchase(first)
    await send(ingress.api, gateway, first, "expired")
    await send(ingress.api, gateway, first, "pending")
    after = await shop.purchase(first)
    assert (after["status"], after["paid_at"], after["event_id"]) == (
        "paid",
        paid["paid_at"],
        paid["event_id"],
    )
    await assert_one_event(redis, shop, first)
    # expired first, paid after: the money arrived, so it ends paid
    await send(ingress.api, gateway, second, "expired")
    assert await shop.status(second) == EXPIRED_AS.get(gateway, "expired")
    await send(ingress.api, gateway, second, "paid")
    assert await shop.status(second) == "paid"
    await assert_one_event(redis, shop, second)


@pytest.mark.parametrize("gateway", GATEWAYS)
async def test_callback_from_another_gateway_is_409(ingress: Running, redis: Redis, gateway: str) -> None:
    shop = await open_shop(ingress.api)
    midtrans_order, order = await shop.buy(), await shop.buy(gateway=gateway)
    assert_error(await send(ingress.api, gateway, midtrans_order, "paid", expect=409), "Conflict")
    await assert_untouched(redis, shop, midtrans_order)
    notification = ingress.api.notification(order["order_id"], order["amount"])
    assert_error(await ingress.api.callback(notification, expect=409), "Conflict")
    await assert_untouched(redis, shop, order)


async def test_unconfigured_gateways_answer_404(start_relay: StartRelay) -> None:
    running = await start_relay(worker=False)
    shop = await open_shop(running.api)
    order = await shop.buy()
    for gateway in GATEWAYS:
        assert_error(await send(running.api, gateway, order, "paid", expect=404), "NotFound")
        body = await running.api.call(
            "POST",
            "/api/platform/public-items/purchase",
            auth=False,
            expect=400,
            json={
                "client_id": shop.project["client_id"],
                "item_id": shop.item["id"],
                "buyer_email": "a@example.com",
                "gateway": gateway,
            },
        )
        assert_error(body, "InvalidInput")
    assert await shop.status(order) == "pending"


async def test_unknown_custom_source_is_404(ingress: Running) -> None:
    callback = custom("item-00000000-00000000", 50000, "succeeded", KEYS["custom/shop"])
    callback.path = "/callbacks/custom/other"
    assert_error(await post(ingress.api, callback, expect=404), "NotFound")
