"""Builder API (relay/api/builder.py): projects, items and a project's purchases, with their validation."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from redis.asyncio import Redis

from tests.helpers import ITEMS, PROJECTS, Running, Shop, assert_error, open_shop, parse_utc


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
    pytest.param({"amount_min": 50001}, "amount_min", id="amount-min-above-price"),
    pytest.param({"amount_max": 49999}, "amount_max", id="amount-max-below-price"),
    pytest.param({"amount_min": 0}, "amount_min", id="zero-amount-min"),
    pytest.param({"amount_max": 1.5}, "amount_max", id="float-amount-max"),
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
        pytest.param(b"\xff\xfe", "UTF-8", id="not-utf8"),
    ],
)
async def test_builder_rejects_bodies_that_are_not_json_objects(
    relay: Running, path: str, data: bytes, mentions: str
) -> None:
    body = await relay.api.call(
        "PUT", path, data=data, headers={"content-type": "application/json"}, expect=400
    )
    assert_error(body, "InvalidInput", mentions=mentions)


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


async def test_item_amount_bounds_default_to_the_price_and_hold_it(relay: Running) -> None:
    api = relay.api
    project = await api.project()
    item = await api.item(project["id"])
    assert (item["amount_min"], item["amount_max"]) == (None, None)  # None: the price, no upper bound
    donation = await api.item(project["id"], id=item["id"], amount_min=1000, amount_max=100_000)
    assert (donation["price"], donation["amount_min"], donation["amount_max"]) == (50_000, 1000, 100_000)
    # An update that would put the price outside the stored bounds is refused, and changes nothing.
    body = await api.call(
        "PUT",
        ITEMS,
        json={"id": item["id"], "project_id": project["id"], "name": "X", "price": 200_000},
        expect=400,
    )
    assert_error(body, "InvalidInput", mentions="amount_max 100000")
    assert (await api.call("GET", f"{ITEMS}/{item['id']}"))["item"] == donation
    # Cleared, amount_min is the price again, whatever the price becomes.
    cleared = await api.item(project["id"], id=item["id"], price=80_000, amount_min=None, amount_max=None)
    assert (cleared["price"], cleared["amount_min"], cleared["amount_max"]) == (80_000, None, None)


async def test_projects_are_listed_a_page_at_a_time(relay: Running, redis: Redis) -> None:
    api = relay.api
    made = [(await api.project(name=f"Shop {n}"))["id"] for n in range(3)]
    # Projects stored before the listing existed are on it too.
    await redis.delete("relay:projects")
    first = await api.call("GET", f"{PROJECTS}?limit=2")
    assert len(first["projects"]) == 2
    assert not any("secret" in key for project in first["projects"] for key in project)
    second = await api.call("GET", f"{PROJECTS}?limit=2&cursor={first['next_cursor']}")
    assert len(second["projects"]) == 1
    assert second["next_cursor"] is None
    listed = [project["id"] for project in first["projects"] + second["projects"]]
    assert sorted(listed) == sorted(made)  # each once, oldest first (made in one ms, any order)
    assert_error(await api.call("GET", f"{PROJECTS}?cursor=nonsense", expect=400), "InvalidInput")
    # A project's key sees its own project only.
    key = (await api.call("POST", f"{PROJECTS}/{made[1]}/api-keys", json={"name": "b"}))["api_key"]["key"]
    mine = await api.call("GET", PROJECTS, auth=False, headers={"Authorization": f"Bearer {key}"})
    assert [project["id"] for project in mine["projects"]] == [made[1]]
