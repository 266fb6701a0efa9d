"""When the sandbox checkout runs (relay.settings.Settings.sandbox_mode), seen through HTTP: it
fails closed. With a real gateway key and no RELAY_SANDBOX there is no self-paying checkout, and
a purchase through a gateway that is not configured is a 400 naming it."""

from __future__ import annotations

import hashlib
import hmac

from redis.asyncio import Redis

from tests.helpers import ADMIN_TOKEN, StartRelay, assert_error, open_shop

XENDIT_ONLY = {"xendit_callback_token": "xnd-callback-token-0123456789"}


async def test_a_real_gateway_key_turns_the_sandbox_off(start_relay: StartRelay) -> None:
    running = await start_relay(worker=False, **XENDIT_ONLY)
    shop = await open_shop(running.api)
    body = await running.api.call(
        "POST",
        "/api/platform/public-items/purchase",
        auth=False,
        json={
            "client_id": shop.project["client_id"],
            "item_id": shop.item["id"],
            "buyer_email": "b@example.com",
        },
        expect=400,
    )
    assert_error(body, "InvalidInput", mentions="'midtrans'")
    # The configured gateway sells; the merchant creates the invoice at Xendit (no sandbox link).
    order = await shop.buy(gateway="xendit")
    assert order["invoice_url"] is None
    token = "0" * 32
    async with running.api.http.get(f"/sandbox/checkout/{order['order_id']}?token={token}") as page:
        assert page.status == 404
    # No Midtrans at all: its callbacks route is not there, whatever a sandbox page would sign.
    assert_error(await running.api.callback({"order_id": order["order_id"]}, expect=404), "NotFound")


async def test_the_sandbox_on_purpose_beside_real_keys(start_relay: StartRelay) -> None:
    running = await start_relay(worker=False, sandbox=True, **XENDIT_ONLY)
    shop = await open_shop(running.api)
    order = await shop.buy()
    assert "/sandbox/checkout/" in order["invoice_url"]
    assert await running.api.pay(order) == {"status": "ok"}
    assert await shop.status(order) == "paid"


async def test_with_no_gateway_key_at_all_the_sandbox_runs(start_relay: StartRelay) -> None:
    running = await start_relay(worker=False)
    shop = await open_shop(running.api)
    order = await shop.buy()
    async with running.api.http.get(order["invoice_url"]) as page:
        assert page.status == 200


async def test_the_sandbox_key_is_random_kept_in_redis_and_shared(
    start_relay: StartRelay, redis: Redis
) -> None:
    first = await start_relay(worker=False)
    second = await start_relay(worker=False)  # another ingress process of the same relay
    key = await redis.get("relay:sandbox:key")
    assert key is not None
    assert key == first.api.midtrans_key == second.api.midtrans_key
    # Not derived from the admin token, as it was: a sandbox page's signature is no oracle for it.
    derived = hmac.new(ADMIN_TOKEN.encode(), b"relay sandbox midtrans key", hashlib.sha256).hexdigest()
    assert derived[:32] not in key
    # What one process's checkout signs, the other accepts.
    shop = await open_shop(first.api)
    order = await shop.buy()
    assert await second.api.pay(order) == {"status": "ok"}
    # A new Redis, a new key.
    await redis.flushdb()
    third = await start_relay(worker=False)
    assert third.api.midtrans_key not in (key, "")
