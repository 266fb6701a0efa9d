"""The sandbox checkout (relay/api/sandbox.py): its page, and the Pay and Expire buttons' signed
notifications going through the relay's own Midtrans callback."""

from __future__ import annotations

import html
import json
import re
from urllib.parse import urlsplit

from redis.asyncio import Redis

from tests.helpers import Api, Running, Shop, assert_error, assert_one_event, get_status, stored_events


def checkout_link(invoice_url: str) -> str:
    """The sandbox checkout path with its token, from an invoice_url."""
    parts = urlsplit(invoice_url)
    return f"{parts.path}?{parts.query}"


async def checkout_notification(api: Api, invoice_url: str, button: str) -> str:
    """The notification a sandbox checkout button would post (unescaped JSON text)."""
    async with api.http.get(checkout_link(invoice_url)) as response:
        assert response.status == 200
        assert response.content_type == "text/html"
        page = await response.text()
    found = re.search(rf'<button id="{button}" data-notification="([^"]*)"', page)
    assert found is not None, page
    return html.unescape(found.group(1))


async def test_sandbox_pay_button_pays(relay: Running, shop: Shop, redis: Redis) -> None:
    order = await shop.buy()
    notification = await checkout_notification(relay.api, order["invoice_url"], "pay")
    assert json.loads(notification)["transaction_status"] == "settlement"
    assert await relay.api.callback(notification) == {"status": "ok"}
    purchase = await shop.purchase(order)
    assert purchase["status"] == "paid"
    assert purchase["webhook_status"] == "pending"  # no worker runs: the event waits in the outbox
    await assert_one_event(redis, order["order_id"], queued=True)


async def test_sandbox_expire_button_expires(relay: Running, shop: Shop, redis: Redis) -> None:
    paid, expired = await shop.buy(), await shop.buy()
    await relay.api.callback(await checkout_notification(relay.api, paid["invoice_url"], "pay"))
    notification = await checkout_notification(relay.api, expired["invoice_url"], "expire")
    assert await relay.api.callback(notification) == {"status": "ok"}
    assert await shop.status(expired) == "expired"
    assert await shop.status(paid) == "paid"
    assert len(await stored_events(redis, expired["order_id"])) == 0


async def test_sandbox_page_shows_the_purchase(relay: Running, shop: Shop) -> None:
    order = await shop.buy(amount=62345)
    async with relay.api.http.get(checkout_link(order["invoice_url"])) as response:
        page = await response.text()
    assert order["order_id"] in page
    assert "62345 IDR" in page
    assert '<td id="status">pending</td>' in page


async def test_sandbox_page_escapes_the_item_name(relay: Running) -> None:
    api = relay.api
    project = await api.project()
    item = await api.item(project["id"], name='<script>alert("x")</script>')
    order = await api.buy(project["client_id"], item["id"])
    async with api.http.get(checkout_link(order["invoice_url"])) as response:
        page = await response.text()
    assert '<script>alert("x")</script>' not in page
    assert "&lt;script&gt;" in page
    notification = await checkout_notification(api, order["invoice_url"], "pay")
    assert await api.callback(notification) == {"status": "ok"}


async def test_sandbox_unknown_order_page_is_404(relay: Running) -> None:
    status, body = await get_status(relay.api, "/sandbox/checkout/item-00000000-00000000")
    assert status == 404
    assert_error(body, "NotFound")
