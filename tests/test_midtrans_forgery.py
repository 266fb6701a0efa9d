"""Captured Midtrans notifications with a forged transaction_status, through the running relay
(issue 12, item 2). The signature covers order_id + status_code + gross_amount, not the status: the
signed status_code must vouch for a paying status, and the signed fields must have Midtrans's exact
formats. Without RELAY_MIDTRANS_CONFIRM (tests/test_midtrans_confirm.py covers it with)."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio import Redis

from relay.gateways.midtrans import sign_notification
from tests.helpers import Running, Shop, assert_error, stored_events

OK = {"status": "ok"}


def flipped(genuine: dict[str, Any], status: str, **changes: Any) -> dict[str, Any]:
    """``genuine`` with its unsigned transaction_status changed: its signature still verifies."""
    return genuine | {"transaction_status": status, "fraud_status": "accept"} | changes


async def assert_refused(relay: Running, forged: dict[str, Any]) -> None:
    body = await relay.api.callback(forged, expect=400)
    assert_error(body, "InvalidInput", mentions="status_code")


async def test_a_pending_notification_flipped_to_settlement_does_not_pay(
    relay: Running, shop: Shop, redis: Redis
) -> None:
    order = await shop.buy()
    genuine = relay.api.notification(order["order_id"], order["amount"], status="pending")
    assert genuine["status_code"] == "201"
    assert await relay.api.callback(genuine) == OK
    await assert_refused(relay, flipped(genuine, "settlement", settlement_time=genuine["transaction_time"]))
    assert await shop.status(order) == "pending"
    assert await stored_events(redis, order["order_id"]) == []


async def test_a_deny_notification_flipped_to_capture_does_not_pay(
    relay: Running, shop: Shop, redis: Redis
) -> None:
    order = await shop.buy()
    genuine = relay.api.notification(order["order_id"], order["amount"], status="deny")
    assert genuine["status_code"] == "202"
    await assert_refused(relay, flipped(genuine, "capture"))
    assert await relay.api.callback(genuine) == OK
    assert await shop.status(order) == "failed"
    assert await stored_events(redis, order["order_id"]) == []


@pytest.mark.parametrize("code", ["202", "407"])
async def test_an_old_expire_replayed_as_settlement_does_not_pay(
    relay: Running, shop: Shop, redis: Redis, code: str
) -> None:
    order = await shop.buy()
    genuine = relay.api.notification(order["order_id"], order["amount"], status="expire", status_code=code)
    assert await relay.api.callback(genuine) == OK
    assert await shop.status(order) == "expired"
    await assert_refused(relay, flipped(genuine, "settlement"))
    assert await shop.status(order) == "expired"
    assert await stored_events(redis, order["order_id"]) == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("gross_amount", "{amount}"),
        ("gross_amount", "{amount}.0"),
        ("gross_amount", "0{amount}.00"),
        ("status_code", "20"),
        ("status_code", "2000"),
    ],
)
async def test_signed_fields_in_another_format_are_400(
    relay: Running, shop: Shop, redis: Redis, field: str, value: str
) -> None:
    """Correctly signed, but not as Midtrans writes them: refused, nothing changes."""
    order = await shop.buy()
    notification = relay.api.notification(order["order_id"], order["amount"])
    notification[field] = value.format(amount=order["amount"])
    body = await relay.api.callback(sign_notification(notification, relay.api.midtrans_key), expect=400)
    assert_error(body, "InvalidInput", mentions=field)
    assert await shop.status(order) == "pending"


async def test_a_genuine_settlement_still_pays(relay: Running, shop: Shop, redis: Redis) -> None:
    order = await shop.buy()
    notification = relay.api.notification(order["order_id"], order["amount"])
    assert (notification["status_code"], notification["gross_amount"]) == ("200", f"{order['amount']}.00")
    assert await relay.api.callback(notification) == OK
    assert await shop.status(order) == "paid"
    assert len(await stored_events(redis, order["order_id"])) == 1


async def test_a_notification_in_another_currency_is_409(relay: Running, shop: Shop, redis: Redis) -> None:
    """currency is not signed either: a stated currency that is not the purchase's changes nothing."""
    order = await shop.buy()
    notification = relay.api.notification(order["order_id"], order["amount"], currency="USD")
    assert_error(await relay.api.callback(notification, expect=409), "Conflict", mentions="USD")
    assert await shop.status(order) == "pending"
    assert await stored_events(redis, order["order_id"]) == []
