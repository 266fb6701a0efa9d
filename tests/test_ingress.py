"""Integration tests of the ingress half: builder, public and admin APIs, the sandbox checkout,
Midtrans Snap and Midtrans callbacks, against a real Redis through real HTTP on loopback."""

from __future__ import annotations

import asyncio
import base64
import html
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiohttp import web
from redis.asyncio import Redis

from relay.gateways.midtrans import sign_notification
from tests.helpers import (
    Api,
    Merchant,
    Running,
    Shop,
    StartRelay,
    assert_error,
    eventually,
    local_server,
    make_settings,
    open_shop,
)
from workers.arq_compat import SWEEP

PREFIX = "relay"
ARQ_QUEUE = "arq:queue"
SERVER_KEY = "SB-Mid-server-test"
PROJECTS = "/api/platform/projects"
ITEMS = "/api/platform/items"
PUBLIC_ITEMS = "/api/platform/public-items"
PURCHASE = "/api/platform/public-items/purchase"
CALLBACK = "/callbacks/midtrans"


# --- helpers --------------------------------------------------------------------------------------


def parse_utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def stored_events(redis: Redis, order_id: str | None = None) -> list[dict[str, str]]:
    """Event hashes (``{prefix}:event:{id}``), optionally only those of ``order_id``."""
    found = []
    async for key in redis.scan_iter(match=f"{PREFIX}:event:*", count=1000):
        if key.endswith(":attempts"):
            continue
        event = await redis.hgetall(key)
        if order_id is None or event.get("order_id") == order_id:
            found.append(event)
    return found


async def outbox(redis: Redis) -> list[str]:
    return list(await redis.zrange(f"{PREFIX}:outbox", 0, -1))


async def queued_jobs(redis: Redis) -> list[str]:
    """Delivery jobs in the arq queue (a running worker also keeps its sweeper's cron job there)."""
    return [job for job in await redis.zrange(ARQ_QUEUE, 0, -1) if not job.startswith(f"{SWEEP}:")]


async def assert_one_event(redis: Redis, order_id: str, *, queued: bool) -> dict[str, str]:
    """Exactly one event for ``order_id``, in the outbox and (``queued``) as the one arq job."""
    events = await stored_events(redis, order_id)
    assert len(events) == 1, events
    [event] = events
    assert event["id"].startswith("evt_")
    assert await outbox(redis) == [event["id"]]
    if queued:
        assert await queued_jobs(redis) == [event["id"]]
    return event


async def assert_no_event(redis: Redis) -> None:
    assert await stored_events(redis) == []
    assert await outbox(redis) == []
    assert await queued_jobs(redis) == []


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


async def get_status(api: Api, path: str) -> tuple[int, Any]:
    async with api.http.get(path) as response:
        return response.status, await response.json(content_type=None)


# --- fixtures -------------------------------------------------------------------------------------


@pytest.fixture
async def relay(start_relay: StartRelay) -> Running:
    """Ingress only (sandbox gateway): stored events stay undelivered for inspection."""
    return await start_relay(worker=False)


@pytest.fixture
async def shop(relay: Running) -> Shop:
    return await open_shop(relay.api)


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


# --- 1. builder API -------------------------------------------------------------------------------


async def test_create_project_returns_client_id_and_secret_once(relay: Running) -> None:
    api = relay.api
    created = await api.project(name="Toko Digital", webhook_url="https://merchant.example/hook")
    assert created["name"] == "Toko Digital"
    assert created["webhook_url"] == "https://merchant.example/hook"
    assert created["client_id"].startswith("cl_")
    assert created["webhook_secret"].startswith("whsec_")
    assert len(created["webhook_secret"]) > len("whsec_") + 16

    shown = (await api.call("GET", f"{PROJECTS}/{created['id']}"))["project"]
    assert "webhook_secret" not in shown
    assert not any("secret" in key for key in shown), shown
    assert shown["id"] == created["id"]
    assert shown["client_id"] == created["client_id"]


async def test_update_project_by_id_keeps_client_id_and_hides_secret(relay: Running) -> None:
    api = relay.api
    created = await api.project(name="Old name")
    body = await api.call(
        "PUT", PROJECTS, json={"id": created["id"], "name": "New name", "webhook_url": "https://m.example/h"}
    )
    updated = body["project"]
    assert "webhook_secret" not in updated
    assert updated["id"] == created["id"]
    assert updated["client_id"] == created["client_id"]
    assert updated["name"] == "New name"
    assert updated["webhook_url"] == "https://m.example/h"
    shown = (await api.call("GET", f"{PROJECTS}/{created['id']}"))["project"]
    assert shown["name"] == "New name"
    assert "webhook_secret" not in shown


async def test_update_project_keeps_fields_not_given(relay: Running) -> None:
    api = relay.api
    created = await api.project(name="Shop", webhook_url="https://m.example/h")
    updated = (await api.call("PUT", PROJECTS, json={"id": created["id"], "name": "Renamed"}))["project"]
    assert (updated["name"], updated["webhook_url"]) == ("Renamed", "https://m.example/h")
    cleared = await api.call(
        "PUT", PROJECTS, json={"id": created["id"], "name": "Renamed", "webhook_url": ""}
    )
    assert cleared["project"]["webhook_url"] is None


async def test_put_project_with_new_id_creates_it(relay: Running) -> None:
    created = await relay.api.project(id="my-shop", name="Mine")
    assert created["id"] == "my-shop"
    assert created["webhook_secret"].startswith("whsec_")
    shown = (await relay.api.call("GET", f"{PROJECTS}/my-shop"))["project"]
    assert shown["name"] == "Mine"


async def test_rotate_returns_a_new_secret(relay: Running) -> None:
    api = relay.api
    created = await api.project()
    rotated = await api.call("POST", f"{PROJECTS}/{created['id']}/webhook-secret/rotate")
    secret = rotated["project"]["webhook_secret"]
    assert secret.startswith("whsec_")
    assert secret != created["webhook_secret"]
    assert rotated["project"]["client_id"] == created["client_id"]
    grace = parse_utc(rotated["previous_secret_expires_at"]) - datetime.now(UTC)
    assert 23 * 3600 < grace.total_seconds() <= 24 * 3600
    shown = (await api.call("GET", f"{PROJECTS}/{created['id']}"))["project"]
    assert not any("secret" in key for key in shown), shown


async def test_unknown_project_is_404(relay: Running) -> None:
    body = await relay.api.call("GET", f"{PROJECTS}/nope", expect=404)
    assert_error(body, "NotFound")
    body = await relay.api.call("POST", f"{PROJECTS}/nope/webhook-secret/rotate", expect=404)
    assert_error(body, "NotFound")


async def test_items_create_update_get_list_delete(relay: Running) -> None:
    api = relay.api
    project = await api.project()
    other = await api.project(name="Other")
    first = await api.item(project["id"], name="Template", description="A template", price=50000)
    second = await api.item(project["id"], name="Ebook", price=25000, webhook_url="https://m.example/ebook")
    await api.item(other["id"], name="Elsewhere")
    assert first["project_id"] == project["id"]
    assert (first["name"], first["description"], first["price"], first["currency"]) == (
        "Template",
        "A template",
        50000,
        "IDR",
    )

    updated = await api.item(project["id"], id=first["id"], name="Template v2", price=60000)
    assert updated["id"] == first["id"]
    assert (updated["name"], updated["price"]) == ("Template v2", 60000)
    assert updated["created_at"] == first["created_at"]

    shown = (await api.call("GET", f"{ITEMS}/{first['id']}"))["item"]
    assert shown == updated

    listed = (await api.call("GET", ITEMS, params={"project_id": project["id"]}))["items"]
    assert sorted(item["id"] for item in listed) == sorted([first["id"], second["id"]])
    assert {item["id"]: item["price"] for item in listed}[first["id"]] == 60000

    deleted = await api.call("DELETE", f"{ITEMS}/{first['id']}")
    assert deleted["deleted"] is True
    assert_error(await api.call("GET", f"{ITEMS}/{first['id']}", expect=404), "NotFound")
    assert_error(await api.call("DELETE", f"{ITEMS}/{first['id']}", expect=404), "NotFound")
    listed = (await api.call("GET", ITEMS, params={"project_id": project["id"]}))["items"]
    assert [item["id"] for item in listed] == [second["id"]]


async def test_item_update_keeps_fields_not_given(relay: Running) -> None:
    api = relay.api
    project = await api.project()
    item = await api.item(project["id"], currency="usd", description="D", webhook_url="https://m.example/i")
    assert item["currency"] == "USD"
    body = await api.call(
        "PUT", ITEMS, json={"id": item["id"], "project_id": project["id"], "name": "N", "price": 7}
    )
    updated = body["item"]
    assert (updated["name"], updated["price"]) == ("N", 7)
    assert (updated["currency"], updated["description"], updated["webhook_url"]) == (
        "USD",
        "D",
        "https://m.example/i",
    )


async def test_list_items_needs_project_id(relay: Running) -> None:
    assert_error(await relay.api.call("GET", ITEMS, expect=400), "InvalidInput", mentions="project_id")
    body = await relay.api.call("GET", ITEMS, params={"project_id": "missing"}, expect=404)
    assert_error(body, "NotFound")


async def test_item_for_missing_project_is_404(relay: Running) -> None:
    body = await relay.api.call(
        "PUT", ITEMS, json={"project_id": "no-such-project", "name": "X", "price": 1000}, expect=404
    )
    assert_error(body, "NotFound", mentions="no-such-project")


async def test_item_cannot_move_to_another_project(relay: Running) -> None:
    api = relay.api
    shop = await open_shop(api)
    other = await api.project(name="Other")
    body = await api.call(
        "PUT",
        ITEMS,
        json={"id": shop.item["id"], "project_id": other["id"], "name": "X", "price": 1},
        expect=409,
    )
    assert_error(body, "Conflict")
    assert (await api.call("GET", f"{ITEMS}/{shop.item['id']}"))["item"]["project_id"] == shop.project["id"]


ITEM_INVALID = [
    pytest.param({"price": 50000.5}, "price", id="float-price"),
    pytest.param({"price": "50000"}, "price", id="string-price"),
    pytest.param({"price": 0}, "price", id="zero-price"),
    pytest.param({"price": -1}, "price", id="negative-price"),
    pytest.param({"price": 10**15 + 1}, "price", id="huge-price"),
    pytest.param({"price": None}, "price", id="null-price"),
    pytest.param({"currency": "RUPIAH"}, "currency", id="currency-RUPIAH"),
    pytest.param({"webhook_url": "ftp://x"}, "webhook_url", id="ftp-webhook"),
    pytest.param({"webhook_url": "http://user:pw@host/"}, "webhook_url", id="credentials-webhook"),
    pytest.param({"colour": "red"}, "colour", id="unknown-field"),
    pytest.param({"name": ""}, "name", id="empty-name"),
]


@pytest.mark.parametrize(("change", "field_name"), ITEM_INVALID)
async def test_item_validation_errors_name_the_field(
    relay: Running, change: dict[str, Any], field_name: str
) -> None:
    api = relay.api
    project = await api.project()
    payload = {"project_id": project["id"], "name": "Template", "price": 50000, "currency": "IDR"} | change
    body = await api.call("PUT", ITEMS, json=payload, expect=400)
    assert_error(body, "InvalidInput", mentions=field_name)
    listed = (await api.call("GET", ITEMS, params={"project_id": project["id"]}))["items"]
    assert listed == []


PROJECT_INVALID = [
    pytest.param({"webhook_url": "ftp://x"}, "webhook_url", id="ftp-webhook"),
    pytest.param({"webhook_url": "http://user:pw@host/"}, "webhook_url", id="credentials-webhook"),
    pytest.param({"colour": "red"}, "colour", id="unknown-field"),
    pytest.param({"name": ""}, "name", id="empty-name"),
    pytest.param({"id": "bad id!"}, "id", id="bad-id"),
]


@pytest.mark.parametrize(("change", "field_name"), PROJECT_INVALID)
async def test_project_validation_errors_name_the_field(
    relay: Running, change: dict[str, Any], field_name: str
) -> None:
    body = await relay.api.call("PUT", PROJECTS, json={"name": "Shop"} | change, expect=400)
    assert_error(body, "InvalidInput", mentions=field_name)


@pytest.mark.parametrize("path", [PROJECTS, ITEMS])
@pytest.mark.parametrize(
    ("data", "mentions"),
    [
        pytest.param(b"{not json", "JSON", id="non-json"),
        pytest.param(b'[{"name": "Shop"}]', "object", id="json-array"),
        pytest.param(b"\xff\xfe", "JSON", id="not-utf8"),
    ],
)
async def test_builder_rejects_bodies_that_are_not_json_objects(
    relay: Running, path: str, data: bytes, mentions: str
) -> None:
    body = await relay.api.call(
        "PUT", path, data=data, headers={"content-type": "application/json"}, expect=400
    )
    assert_error(body, "InvalidInput", mentions=mentions)


# --- 2. auth --------------------------------------------------------------------------------------

ADMIN_ROUTES = [
    ("PUT", PROJECTS),
    ("GET", f"{PROJECTS}/p1"),
    ("POST", f"{PROJECTS}/p1/webhook-secret/rotate"),
    ("PUT", ITEMS),
    ("GET", f"{ITEMS}?project_id=p1"),
    ("GET", f"{ITEMS}/i1"),
    ("DELETE", f"{ITEMS}/i1"),
    ("GET", f"{PROJECTS}/p1/item-purchases"),
    ("GET", f"{PROJECTS}/p1/item-purchases/o1"),
    ("POST", f"{PROJECTS}/p1/item-purchases/o1/retry-webhook"),
    ("GET", "/api/admin/dead-letters"),
    ("POST", "/api/admin/dead-letters/replay"),
    ("DELETE", "/api/admin/dead-letters/evt_1"),
]
BAD_AUTH = [
    pytest.param({}, id="no-token"),
    pytest.param({"Authorization": "Bearer wrong-token-0123456789"}, id="wrong-token"),
    pytest.param({"Authorization": "Bearer "}, id="empty-bearer"),
    pytest.param({"Authorization": f"Basic {base64.b64encode(b'admin:pw').decode()}"}, id="basic"),
]


@pytest.mark.parametrize(("method", "path"), ADMIN_ROUTES)
async def test_admin_routes_need_the_bearer_token(relay: Running, method: str, path: str) -> None:
    token = relay.settings.admin_token
    assert token is not None
    bad = [*(param.values[0] for param in BAD_AUTH), {"Authorization": f"Basic {token.get_secret_value()}"}]
    for headers in bad:
        body = await relay.api.call(method, path, auth=False, headers=dict(headers), json={}, expect=401)
        assert_error(body, "Unauthorized")


async def test_admin_token_is_accepted(relay: Running) -> None:
    body = await relay.api.call("GET", "/api/admin/dead-letters")
    assert body == {"dead_letters": [], "next_cursor": None}


async def test_public_routes_need_no_token(relay: Running, shop: Shop) -> None:
    api = relay.api
    listed = await api.call("GET", PUBLIC_ITEMS, params={"client_id": shop.project["client_id"]}, auth=False)
    assert [item["id"] for item in listed["items"]] == [shop.item["id"]]
    order = await shop.buy()
    assert order["order_id"]
    assert await api.call("GET", "/healthz", auth=False) == {"status": "ok"}
    assert await api.call("GET", "/readyz", auth=False) == {"status": "ready", "embedded": False}


# --- 3. public API --------------------------------------------------------------------------------


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
    assert re.fullmatch(rf"item-{prefix}-[0-9a-f]{{8}}", order["order_id"]), order
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
    token = relay.settings.sandbox_token(order["order_id"])
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


async def test_purchase_is_scoped_to_its_project(relay: Running, shop: Shop) -> None:
    other = await relay.api.project(name="Other")
    order = await shop.buy()
    path = f"{PROJECTS}/{other['id']}/item-purchases/{order['order_id']}"
    assert_error(await relay.api.call("GET", path, expect=404), "NotFound")
    path = f"{PROJECTS}/{shop.project['id']}/item-purchases/item-00000000-00000000"
    assert_error(await relay.api.call("GET", path, expect=404), "NotFound")


async def test_list_purchases_by_webhook_status(relay: Running, shop: Shop) -> None:
    paid, unpaid = await shop.buy(), await shop.buy()
    await relay.api.pay(paid)
    path = f"{PROJECTS}/{shop.project['id']}/item-purchases"
    listed = (await relay.api.call("GET", path))["purchases"]
    assert {purchase["order_id"] for purchase in listed} == {paid["order_id"], unpaid["order_id"]}
    pending = (await relay.api.call("GET", path, params={"webhook_status": "pending"}))["purchases"]
    assert [purchase["order_id"] for purchase in pending] == [paid["order_id"]]
    body = await relay.api.call("GET", path, params={"webhook_status": "bogus"}, expect=400)
    assert_error(body, "InvalidInput", mentions="webhook_status")


# --- 4. sandbox checkout --------------------------------------------------------------------------


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
    order = await shop.buy(amount=12345)
    async with relay.api.http.get(checkout_link(order["invoice_url"])) as response:
        page = await response.text()
    assert order["order_id"] in page
    assert "12345 IDR" in page
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


# --- 5. Midtrans Snap mode ------------------------------------------------------------------------


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
    sandbox_key = make_settings().midtrans_key
    assert sandbox_key != SERVER_KEY
    forged = sign_notification(api.notification(order["order_id"], order["amount"]), sandbox_key)
    assert_error(await api.callback(forged, expect=401), "VerificationError")
    assert await shop.status(order) == "pending"
    assert await api.pay(order) == {"status": "ok"}
    assert await shop.status(order) == "paid"


# --- 6. Midtrans callbacks ------------------------------------------------------------------------


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
        payload = sign_notification(payload | {field_name: value}, relay.settings.midtrans_key)
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
    body = await relay.api.callback(sign_notification(payload, relay.settings.midtrans_key), expect=409)
    assert_error(body, "AmountMismatch")
    await assert_no_event(redis)


async def test_callback_unknown_order_is_200_without_event(relay: Running, shop: Shop, redis: Redis) -> None:
    payload = relay.api.notification("item-00000000-deadbeef", 50000)
    assert await relay.api.callback(payload) == {"status": "ok"}
    await assert_no_event(redis)
    unmatched = [json.loads(raw) for raw in await redis.lrange(f"{PREFIX}:unmatched", 0, -1)]
    assert [entry["order_id"] for entry in unmatched] == ["item-00000000-deadbeef"]


async def test_callback_pending_keeps_pending(relay: Running, shop: Shop, redis: Redis) -> None:
    order = await shop.buy()
    assert await relay.api.pay(order, status="pending") == {"status": "ok"}
    purchase = await shop.purchase(order)
    assert (purchase["status"], purchase["paid_at"], purchase["webhook_status"]) == ("pending", None, None)
    await assert_no_event(redis)


async def test_settlement_pays_with_paid_at_in_utc(relay: Running, shop: Shop, redis: Redis) -> None:
    order = await shop.buy(buyer_name="John Doe", metadata={"ref": "campaign-42"})
    assert await relay.api.pay(order, settlement_time="2026-05-06 17:00:00") == {"status": "ok"}
    purchase = await shop.purchase(order)
    assert purchase["status"] == "paid"
    assert purchase["paid_at"].endswith("Z")
    assert parse_utc(purchase["paid_at"]) == datetime(2026, 5, 6, 10, 0, tzinfo=UTC)
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
        "paid_at": "2026-05-06T10:00:00Z",
        "metadata": {"ref": "campaign-42"},
    }


@pytest.mark.parametrize("stamp", ["06/05/2026 17:00", "2026-05-06T17:00:00Z", "2026-13-01 00:00:00"])
async def test_settlement_with_bad_settlement_time_is_400(
    relay: Running, shop: Shop, redis: Redis, stamp: str
) -> None:
    order = await shop.buy()
    payload = relay.api.notification(order["order_id"], order["amount"], settlement_time=stamp)
    body = await relay.api.callback(payload, expect=400)
    assert_error(body, "InvalidInput")
    assert await shop.status(order) == "pending"
    await assert_no_event(redis)


async def test_settlement_without_settlement_time_uses_transaction_time(relay: Running, shop: Shop) -> None:
    order = await shop.buy()
    payload = relay.api.notification(
        order["order_id"], order["amount"], transaction_time="2026-01-01 06:30:15"
    )
    del payload["settlement_time"]
    await relay.api.callback(payload)
    purchase = await shop.purchase(order)
    assert parse_utc(purchase["paid_at"]) == datetime(2025, 12, 31, 23, 30, 15, tzinfo=UTC)


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
    await assert_one_event(redis, order["order_id"], queued=True)
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


# --- 7. store down --------------------------------------------------------------------------------


async def test_store_down_is_503_never_200(start_relay: StartRelay) -> None:
    running = await start_relay(worker=False, redis_url="redis://127.0.0.1:1/0")
    api = running.api
    payload = api.notification("item-00000000-deadbeef", 50000)
    assert_error(await api.callback(payload, expect=503), "StoreUnavailable")
    assert_error(await api.call("GET", "/readyz", auth=False, expect=503), "StoreUnavailable")
    assert await api.call("GET", "/healthz", auth=False) == {"status": "ok"}
    assert_error(await api.call("PUT", PROJECTS, json={"name": "x"}, expect=503), "StoreUnavailable")


# --- 8. error shape -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/nope", "/api/platform/nothing"])
async def test_unknown_route_is_json_404(relay: Running, path: str) -> None:
    body = await relay.api.call("GET", path, auth=False, expect=404)
    assert_error(body, "NotFound")


async def test_unknown_gateway_is_json_404(relay: Running) -> None:
    body = await relay.api.call("POST", "/callbacks/unknown-gateway", auth=False, json={}, expect=404)
    assert_error(body, "NotFound")


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", CALLBACK), ("DELETE", PROJECTS), ("POST", "/healthz"), ("GET", PURCHASE)],
)
async def test_wrong_method_is_json_405(relay: Running, method: str, path: str) -> None:
    body = await relay.api.call(method, path, auth=False, expect=405)
    assert_error(body, "MethodNotAllowed")


async def test_errors_carry_a_request_id(relay: Running) -> None:
    async with relay.api.http.get("/nope", headers={"x-request-id": "abc-123"}) as response:
        assert response.status == 404
        assert response.headers["x-request-id"] == "abc-123"
        assert response.content_type == "application/json"


async def test_metrics_count_callbacks(relay: Running, shop: Shop) -> None:
    order = await shop.buy()
    await relay.api.pay(order)
    await relay.api.pay(order)
    await relay.api.callback({"order_id": "x"}, expect=400)
    async with relay.api.http.get("/metrics") as response:
        assert response.status == 200
        text = await response.text()
    samples = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line[:1] != "#"
    }
    assert samples['relay_callbacks_total{gateway="midtrans",outcome="paid"}'] == 1
    assert samples['relay_callbacks_total{gateway="midtrans",outcome="unchanged"}'] == 1
    assert samples['relay_callbacks_total{gateway="midtrans",outcome="InvalidInput"}'] == 1
    assert samples["relay_events_created_total"] == 1
    assert samples["relay_purchases_created_total"] == 1
