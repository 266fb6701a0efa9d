"""Public API (relay/api/public.py): the catalogue by client_id and starting a purchase, with the
built-in sandbox checkout or Midtrans Snap (a fake Snap on loopback) as the invoice."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from relay.api.sandbox import sandbox_token
from relay.gateways.midtrans import create_snap_transaction, sign_notification
from relay.models import Purchase
from tests.helpers import (
    ITEMS,
    PROJECTS,
    PUBLIC_ITEMS,
    PURCHASE,
    Running,
    Shop,
    StartRelay,
    assert_error,
    get_status,
    local_server,
    open_shop,
)

SERVER_KEY = "SB-Mid-server-test"


@dataclass
class FakeSnap:
    """Midtrans Snap on loopback: records each create-transaction call."""

    url: str = ""
    status: int = 201
    calls: list[tuple[dict[str, str], Any]] = field(default_factory=list)
    redirects: list[str] = field(default_factory=list)

    async def create(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.calls.append((dict(request.headers), body))
        if self.status >= 300:
            return web.json_response({"error_messages": ["simulated outage"]}, status=self.status)
        token = f"tok-{len(self.calls)}"
        redirect = f"https://example.test/pay/{token}"
        self.redirects.append(redirect)
        return web.json_response({"token": token, "redirect_url": redirect}, status=self.status)


@pytest.fixture
async def snap() -> AsyncIterator[FakeSnap]:
    fake = FakeSnap()
    app = web.Application()
    app.router.add_post("/snap/v1/transactions", fake.create)
    async with local_server(app) as fake.url:
        yield fake


@pytest.fixture
async def snap_relay(start_relay: StartRelay, snap: FakeSnap) -> Running:
    return await start_relay(worker=False, midtrans_server_key=SERVER_KEY, midtrans_api_base=snap.url)


# --- the catalogue and purchases ------------------------------------------------------------------


async def test_public_items_hide_webhook_url(relay: Running) -> None:
    api = relay.api
    project = await api.project(webhook_url="https://m.example/project")
    item = await api.item(project["id"], description="Desc", webhook_url="https://m.example/item")
    other = await api.project(name="Other")
    await api.item(other["id"], name="Not mine")
    body = await api.call("GET", PUBLIC_ITEMS, params={"client_id": project["client_id"]}, auth=False)
    assert body == {
        "items": [
            {
                "id": item["id"],
                "name": "Premium Template",
                "description": "Desc",
                "price": 50000,
                "currency": "IDR",
                "amount_min": 50000,  # by default the price: a buyer never pays less
                "amount_max": None,
                "amount_step": None,
                "sku": None,
                "category_id": None,
                "required_fields": [],
                "stock": None,  # unlimited
                "available": True,
            }
        ]
    }
    assert "m.example" not in json.dumps(body)


async def test_public_items_unknown_or_missing_client_id(relay: Running) -> None:
    api = relay.api
    body = await api.call("GET", PUBLIC_ITEMS, params={"client_id": "cl_nope"}, auth=False, expect=404)
    assert_error(body, "NotFound")
    body = await api.call("GET", PUBLIC_ITEMS, auth=False, expect=400)
    assert_error(body, "InvalidInput", mentions="client_id")


async def test_purchase_starts_pending(relay: Running, shop: Shop) -> None:
    order = await shop.buy(buyer_name="John Doe")
    prefix = re.escape(shop.item["id"][:8])
    assert re.fullmatch(rf"item-{prefix}-[0-9a-f]{{16}}", order["order_id"]), order
    assert order["amount"] == 50000
    assert order["currency"] == "IDR"
    purchase = await shop.purchase(order)
    assert purchase["order_id"] == order["order_id"]
    assert purchase["item_id"] == shop.item["id"]
    assert purchase["project_id"] == shop.project["id"]
    assert purchase["amount"] == 50000
    assert purchase["buyer_email"] == "buyer@example.com"
    assert purchase["buyer_name"] == "John Doe"
    assert purchase["status"] == "pending"
    assert purchase["webhook_status"] is None
    assert purchase["paid_at"] is None
    assert purchase["attempts"] == []


async def test_order_ids_are_distinct(relay: Running, shop: Shop) -> None:
    orders = [await shop.buy() for _ in range(5)]
    assert len({order["order_id"] for order in orders}) == 5


async def test_purchase_in_sandbox_links_to_sandbox_checkout(relay: Running, shop: Shop) -> None:
    order = await shop.buy()
    token = sandbox_token(relay.api.midtrans_key, order["order_id"])
    # RELAY_PUBLIC_BASE_URL unset: the address the request reached the relay at.
    expected = f"{relay.url}/sandbox/checkout/{order['order_id']}?token={token}"
    assert order["invoice_url"] == expected


async def test_purchase_amount_override_and_metadata(relay: Running, shop: Shop) -> None:
    metadata = {"ref": "campaign-42", "nested": {"n": [1, 2]}}
    order = await shop.buy(amount=75000, metadata=metadata)
    assert order["amount"] == 75000
    purchase = await shop.purchase(order)
    assert purchase["amount"] == 75000
    assert purchase["metadata"] == metadata
    # the item's own price no longer matches the order
    body = await shop.api.callback(shop.api.notification(order["order_id"], 50000), expect=409)
    assert_error(body, "AmountMismatch")
    assert await shop.api.pay(order) == {"status": "ok"}
    assert await shop.status(order) == "paid"


async def test_purchase_of_another_projects_item_is_404(relay: Running, shop: Shop) -> None:
    other = await open_shop(relay.api, name="Other")
    body = await relay.api.call(
        "POST",
        PURCHASE,
        auth=False,
        json={"client_id": shop.project["client_id"], "item_id": other.item["id"], "buyer_email": "a@b.co"},
        expect=404,
    )
    assert_error(body, "NotFound")


async def test_purchase_of_deleted_item_is_404(relay: Running, shop: Shop) -> None:
    await relay.api.call("DELETE", f"{ITEMS}/{shop.item['id']}")
    payload = {"client_id": shop.project["client_id"], "item_id": shop.item["id"], "buyer_email": "a@b.co"}
    body = await relay.api.call("POST", PURCHASE, auth=False, json=payload, expect=404)
    assert_error(body, "NotFound")


async def test_purchase_with_unknown_client_id_is_404(relay: Running, shop: Shop) -> None:
    payload = {"client_id": "cl_nope", "item_id": shop.item["id"], "buyer_email": "a@b.co"}
    body = await relay.api.call("POST", PURCHASE, auth=False, json=payload, expect=404)
    assert_error(body, "NotFound")


@pytest.mark.parametrize(
    ("change", "field_name"),
    [
        pytest.param({"buyer_email": "not-an-email"}, "buyer_email", id="bad-email"),
        pytest.param({"buyer_email": "a b@example.com"}, "buyer_email", id="space-in-email"),
        pytest.param({"amount": 0}, "amount", id="zero-amount"),
        pytest.param({"amount": 1}, "amount_min", id="below-the-price"),
        pytest.param({"metadata": {"e": "\N{GRINNING FACE}" * 1100}}, "metadata", id="metadata-4400-bytes"),
        pytest.param({"amount": 100.5}, "amount", id="float-amount"),
        pytest.param({"metadata": ["x"]}, "metadata", id="metadata-list"),
        pytest.param({"metadata": {"blob": "x" * 5000}}, "metadata", id="metadata-too-big"),
        pytest.param({"coupon": "FREE"}, "coupon", id="unknown-field"),
    ],
)
async def test_purchase_validation_errors(
    relay: Running, shop: Shop, change: dict[str, Any], field_name: str
) -> None:
    payload = {"client_id": shop.project["client_id"], "item_id": shop.item["id"], "buyer_email": "a@b.co"}
    body = await relay.api.call("POST", PURCHASE, auth=False, json=payload | change, expect=400)
    assert_error(body, "InvalidInput", mentions=field_name)
    listed = await relay.api.call("GET", f"{PROJECTS}/{shop.project['id']}/item-purchases")
    assert listed == {"purchases": []}


# --- Midtrans Snap mode ---------------------------------------------------------------------------


async def test_snap_purchase_uses_snap_redirect_url(snap_relay: Running, snap: FakeSnap) -> None:
    shop = await open_shop(snap_relay.api)
    order = await shop.buy(amount=65000, buyer_name="Budi")
    assert len(snap.calls) == 1
    headers, body = snap.calls[0]
    assert order["invoice_url"] == snap.redirects[0]
    assert order["invoice_url"].startswith("https://example.test/pay/")
    assert headers["Authorization"] == "Basic " + base64.b64encode(f"{SERVER_KEY}:".encode()).decode()
    assert body["transaction_details"] == {"order_id": order["order_id"], "gross_amount": 65000}
    assert body["customer_details"]["email"] == "buyer@example.com"
    assert (await shop.purchase(order))["status"] == "pending"


@pytest.mark.parametrize("status", [500, 401])
async def test_snap_failure_is_502(snap_relay: Running, snap: FakeSnap, status: int) -> None:
    snap.status = status
    shop = await open_shop(snap_relay.api)
    payload = {"client_id": shop.project["client_id"], "item_id": shop.item["id"], "buyer_email": "a@b.co"}
    body = await snap_relay.api.call("POST", PURCHASE, auth=False, json=payload, expect=502)
    assert_error(body, "UpstreamUnavailable")
    assert len(snap.calls) == 1


async def test_snap_unreachable_is_502(start_relay: StartRelay) -> None:
    running = await start_relay(
        worker=False, midtrans_server_key=SERVER_KEY, midtrans_api_base="http://127.0.0.1:1"
    )
    shop = await open_shop(running.api)
    payload = {"client_id": shop.project["client_id"], "item_id": shop.item["id"], "buyer_email": "a@b.co"}
    body = await running.api.call("POST", PURCHASE, auth=False, json=payload, expect=502)
    assert_error(body, "UpstreamUnavailable")


async def test_snap_mode_has_no_sandbox_checkout(snap_relay: Running) -> None:
    shop = await open_shop(snap_relay.api)
    order = await shop.buy()
    status, body = await get_status(snap_relay.api, f"/sandbox/checkout/{order['order_id']}")
    assert status == 404
    assert_error(body, "NotFound")


async def test_snap_mode_verifies_with_the_server_key(snap_relay: Running) -> None:
    api = snap_relay.api
    shop = await open_shop(api)
    order = await shop.buy()
    sandbox_key = "SB-Mid-server-" + "0" * 48  # what a sandbox would sign with: not this relay's key
    assert sandbox_key != SERVER_KEY
    forged = sign_notification(api.notification(order["order_id"], order["amount"]), sandbox_key)
    assert_error(await api.callback(forged, expect=401), "VerificationError")
    assert await shop.status(order) == "pending"
    assert await api.pay(order) == {"status": "ok"}
    assert await shop.status(order) == "paid"


async def test_a_snap_invoice_with_a_pay_by_asks_snap_to_last_that_long(snap: FakeSnap) -> None:
    """A renewal is payable until its subscription would expire, not Snap's default 24 h (and
    Snap's pages last 7 days at most); an item's invoice asks nothing."""
    now = datetime(2026, 5, 6, 10, 0, tzinfo=UTC)
    order = Purchase(
        order_id="sub-12345678-0123456789abcdef",
        project_id="shop",
        item_name="Pro",
        amount=99000,
        currency="IDR",
        buyer_email="b@example.com",
        pay_by=now + timedelta(days=3, minutes=30),
        created_at=now,
        updated_at=now,
    )
    async with aiohttp.ClientSession() as http:
        await create_snap_transaction(http, base=snap.url, server_key=SERVER_KEY, purchase=order)
        far = order.model_copy(update={"pay_by": now + timedelta(days=30)})
        await create_snap_transaction(http, base=snap.url, server_key=SERVER_KEY, purchase=far)
        plain = order.model_copy(update={"pay_by": None})
        await create_snap_transaction(http, base=snap.url, server_key=SERVER_KEY, purchase=plain)
    minutes = 3 * 24 * 60 + 30
    [(_, first), (_, capped), (_, item)] = snap.calls
    assert first["expiry"] == first["page_expiry"] == {"unit": "minutes", "duration": minutes}
    assert capped["expiry"]["duration"] == 7 * 24 * 60
    assert "expiry" not in item
    assert "page_expiry" not in item
