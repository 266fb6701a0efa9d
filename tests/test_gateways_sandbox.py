"""The sandbox checkout for gateways besides Midtrans: the page exposes no key, the server signs the
gateway's callback and posts it to the relay's own route at its socket address, then redirects back."""

from __future__ import annotations

import html
import re
from typing import Any
from urllib.parse import urlsplit

import pytest
from redis.asyncio import Redis
from standardwebhooks import Webhook

from tests.gateway_callbacks import (
    EXPIRED_AS,
    GATEWAY_SETTINGS,
    GATEWAYS,
    KEYS,
    assert_one_event,
    events_of,
)
from tests.helpers import Merchant, Running, Shop, StartRelay, assert_error, eventually, open_shop


@pytest.fixture
async def ingress(start_relay: StartRelay) -> Running:
    return await start_relay(worker=False, sandbox_gateways=True, **GATEWAY_SETTINGS)


def checkout(order: dict[str, Any]) -> str:
    """The sandbox checkout link from the purchase answer: path and token, no host."""
    parts = urlsplit(order["invoice_url"])
    assert parts.path == f"/sandbox/checkout/{order['order_id']}"
    assert re.fullmatch(r"token=[0-9a-f]{32}", parts.query)
    return f"{parts.path}?{parts.query}"


async def page(shop: Shop, order: dict[str, Any], query: str = "") -> str:
    async with shop.api.http.get(checkout(order) + query) as response:
        assert response.status == 200
        assert response.content_type == "text/html"
        return await response.text()


async def press(shop: Shop, order: dict[str, Any], action: str, *, expect: int = 303) -> str:
    """Submit the page's form as a browser would; the Host header is the client's to choose, so it
    is a hostile one here: the relay must post the callback to its own socket address anyway."""
    async with shop.api.http.post(
        checkout(order),
        data={"action": action},
        headers={"Host": "attacker.invalid:9"},
        allow_redirects=False,
    ) as response:
        assert response.status == expect, await response.text()
        if expect != 303:
            assert_error(await response.json(), "InvalidInput")
            return ""
        return response.headers["Location"]


@pytest.mark.parametrize("gateway", GATEWAYS)
async def test_checkout_page_exposes_no_key(ingress: Running, gateway: str) -> None:
    shop = await open_shop(ingress.api)
    order = await shop.buy(gateway=gateway)
    text = await page(shop, order)
    assert "data-notification" not in text
    assert "<script" not in text
    for secret in KEYS.values():
        assert secret not in text
    form = re.search(r'<form method="post" action="([^"]+)">', text)
    assert form is not None
    assert html.unescape(form.group(1)) == checkout(order)
    assert f'<td id="gateway">{html.escape(gateway)}</td>' in text
    assert re.search(r'<button id="pay" name="action" value="pay">', text)
    assert re.search(r'<button id="expire" name="action" value="expire">', text)


@pytest.mark.parametrize("gateway", GATEWAYS)
async def test_pay_button_sends_the_gateways_callback(ingress: Running, redis: Redis, gateway: str) -> None:
    shop = await open_shop(ingress.api)
    order = await shop.buy(gateway=gateway)
    location = await press(shop, order, "pay")
    assert location == checkout(order) + "&result=accepted"
    assert await shop.status(order) == "paid"
    await assert_one_event(redis, shop, order)
    text = await page(shop, order, "&result=accepted")
    assert "Gateway callback accepted." in text
    assert '<td id="status">paid</td>' in text
    # pressing Pay again resends the callback: still one event
    await press(shop, order, "pay")
    await assert_one_event(redis, shop, order)


@pytest.mark.parametrize("gateway", GATEWAYS)
async def test_expire_button(ingress: Running, redis: Redis, gateway: str) -> None:
    shop = await open_shop(ingress.api)
    order = await shop.buy(gateway=gateway)
    assert (await press(shop, order, "expire")).endswith("&result=accepted")
    assert await shop.status(order) == EXPIRED_AS.get(gateway, "expired")
    assert await events_of(redis, order["order_id"]) == []


async def test_sandbox_checkout_delivers_to_the_merchant(start_relay: StartRelay, merchant: Merchant) -> None:
    running = await start_relay(sandbox_gateways=True, **GATEWAY_SETTINGS)
    shop = await open_shop(running.api, webhook_url=f"{merchant.url}/hook")
    order = await shop.buy(gateway="doku")
    await press(shop, order, "pay")

    async def delivered() -> bool:
        return (await shop.purchase(order))["webhook_status"] == "delivered"

    await eventually(delivered, what="the sandbox purchase's webhook delivered")
    [hit] = merchant.hits("/hook")
    assert (
        Webhook(shop.project["webhook_secret"]).verify(hit.body, hit.headers)["order_id"] == order["order_id"]
    )


async def test_midtrans_purchases_keep_the_browser_buttons_and_the_form_works(ingress: Running) -> None:
    shop = await open_shop(ingress.api)
    order = await shop.buy()
    text = await page(shop, order)
    assert '<button id="pay" data-notification="' in text
    assert "<form" not in text
    await press(shop, order, "pay")
    assert await shop.status(order) == "paid"


@pytest.mark.parametrize("action", ["", "refund", "PAY"])
async def test_unknown_action_is_400(ingress: Running, action: str) -> None:
    shop = await open_shop(ingress.api)
    order = await shop.buy(gateway="xendit")
    await press(shop, order, action, expect=400)
    assert await shop.status(order) == "pending"


async def test_result_on_the_page_is_escaped(ingress: Running) -> None:
    shop = await open_shop(ingress.api)
    order = await shop.buy(gateway="tripay")
    text = await page(shop, order, "&result=%3Cscript%3E")
    assert "<script>" not in text
    assert "Gateway callback rejected: &lt;script&gt;." in text


async def test_no_sandbox_once_midtrans_is_configured(start_relay: StartRelay) -> None:
    real = GATEWAY_SETTINGS | {
        "sandbox": False,
        "midtrans_server_key": "SB-Mid-server-test",
        "duitku_api_base": "http://127.0.0.1:9",  # required outside a sandbox; never called here
    }
    running = await start_relay(worker=False, **real)
    shop = await open_shop(running.api)
    order = await shop.buy(gateway="xendit")
    assert order["invoice_url"] is None  # relay creates invoices at Midtrans (Snap) only
    async with running.api.http.post(
        f"/sandbox/checkout/{order['order_id']}", data={"action": "pay"}, allow_redirects=False
    ) as response:
        assert response.status == 404
    assert await shop.status(order) == "pending"


@pytest.mark.parametrize("token", ["", "?token=", "?token=00000000000000000000000000000000"])
async def test_checkout_needs_the_links_token(ingress: Running, token: str) -> None:
    shop = await open_shop(ingress.api)
    order = await shop.buy()
    path = f"/sandbox/checkout/{order['order_id']}{token}"
    async with shop.api.http.get(path) as response:
        assert response.status == 404
    async with shop.api.http.post(path, data={"action": "pay"}, allow_redirects=False) as response:
        assert response.status == 404
    assert await shop.status(order) == "pending"


async def test_simulating_other_gateways_is_opt_in(start_relay: StartRelay) -> None:
    running = await start_relay(worker=False, **GATEWAY_SETTINGS)
    shop = await open_shop(running.api)
    order = await shop.buy(gateway="tripay")
    text = await page(shop, order)
    assert 'id="simulation-off"' in text
    assert "<form" not in text
    async with shop.api.http.post(checkout(order), data={"action": "pay"}, allow_redirects=False) as response:
        assert response.status == 409
    assert await shop.status(order) == "pending"
