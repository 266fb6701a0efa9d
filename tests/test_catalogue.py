"""Catalogue depth (DESIGN.md, "Catalogue depth"): stock that never oversells, buyer fields,
quantities and open denominations, categories, item status, the paged item list and the public
item detail. Stock under concurrency runs on a real Redis; the scripts' bookkeeping on both
backends."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import aiohttp

from relay.ingest import Ingested, apply_outcome
from relay.models import Item, PurchaseStatus
from relay.retention import Lifetimes, Retention
from tests.helpers import (
    ITEMS,
    KEY_PREFIX,
    PUBLIC_ITEMS,
    PURCHASE,
    T0,
    Backend,
    Merchant,
    Running,
    StartRelay,
    assert_error,
    make_outcome,
    make_purchase,
    open_shop,
    start_shop,
    verify,
    wait_hits,
)

CATEGORIES = "/api/platform/categories"


async def buy(running: Running, shop: Any, item_id: str, *, expect: int = 200, **fields: Any) -> Any:
    body = {
        "client_id": shop.project["client_id"],
        "item_id": item_id,
        "buyer_email": "b@example.com",
    } | fields
    return await running.api.call("POST", PURCHASE, auth=False, json=body, expect=expect)


async def test_hundreds_of_buyers_at_once_never_take_more_than_the_stock(start_relay: StartRelay) -> None:
    running = await start_relay(worker=False, purchase_rate_limit=0)
    shop = await open_shop(running.api)
    item = await running.api.item(shop.project["id"], name="Diamonds 86", stock=50)
    body = {"client_id": shop.project["client_id"], "item_id": item["id"], "buyer_email": "b@example.com"}

    async def one(http: aiohttp.ClientSession) -> tuple[int, str]:
        async with http.post(PURCHASE, json=body) as response:
            answer = await response.json()
            return response.status, answer.get("error", "")

    async with aiohttp.ClientSession(base_url=running.url) as http:
        answers = await asyncio.gather(*(one(http) for _ in range(300)))
    assert sorted(answers) == [(200, "")] * 50 + [(409, "SoldOut")] * 250
    stored = (await running.api.call("GET", f"{ITEMS}/{item['id']}"))["item"]
    assert stored["stock"] == 0
    detail = await running.api.call(
        "GET", f"{PUBLIC_ITEMS}/{item['id']}?client_id={shop.project['client_id']}", auth=False
    )
    assert (detail["item"]["stock"], detail["item"]["available"]) == (0, False)


async def test_a_failed_purchase_gives_its_units_back_and_a_paid_one_keeps_them(
    start_relay: StartRelay, merchant: Merchant
) -> None:
    shop = await start_shop(start_relay, merchant, purchase_rate_limit=0)
    running_api = shop.api
    item = await running_api.item(shop.project["id"], stock=3)
    first = await running_api.buy(shop.project["client_id"], item["id"], quantity=2)
    second = await running_api.buy(shop.project["client_id"], item["id"])
    body = {"client_id": shop.project["client_id"], "item_id": item["id"], "buyer_email": "b@example.com"}
    assert_error(await running_api.call("POST", PURCHASE, auth=False, json=body, expect=409), "SoldOut")
    await running_api.pay(first, status="deny")  # a failed payment: its two units are for sale again
    assert (await running_api.call("GET", f"{ITEMS}/{item['id']}"))["item"]["stock"] == 2
    await running_api.pay(second)  # paid: its unit is sold
    await running_api.pay(second, status="expire")  # a late expiry of a paid order changes nothing
    assert (await running_api.call("GET", f"{ITEMS}/{item['id']}"))["item"]["stock"] == 2
    # Setting the stock sets what is left; changing anything else leaves the count alone.
    await running_api.item(shop.project["id"], id=item["id"], name="Renamed")
    assert (await running_api.call("GET", f"{ITEMS}/{item['id']}"))["item"]["stock"] == 2
    await running_api.item(shop.project["id"], id=item["id"], stock=None)
    assert (await running_api.call("GET", f"{ITEMS}/{item['id']}"))["item"]["stock"] is None
    for _ in range(5):  # unlimited
        await running_api.buy(shop.project["client_id"], item["id"])


LIFETIMES = Lifetimes(retention=timedelta(minutes=1), purchase_expiry=timedelta(seconds=10))


async def stocked(stores: Backend, left: int) -> Item:
    item = Item(
        id="tmpl", project_id="shop", name="Voucher", price=50000, stock=left, created_at=T0, updated_at=T0
    )
    await stores.store.put_item(item, set_stock=True)
    return item


async def test_an_expired_purchase_gives_its_units_back_and_a_late_payment_is_honoured(
    stores: Backend,
) -> None:
    """Expiry releases the unit; a settlement that comes after takes it again if it is there, and
    when it was sold meanwhile the payment is still honoured, marked oversold."""
    retention = Retention(stores.redis, prefix=KEY_PREFIX, lifetimes=LIFETIMES)
    await stocked(stores, 1)
    left = stores.store.keys.item_stock("tmpl")
    await stores.store.create_purchase(make_purchase("a"), reserve=True)
    assert await stores.redis.get(left) == "0"
    await retention.expire(now=T0 + timedelta(days=2))
    assert await stores.redis.get(left) == "1"
    await stores.store.create_purchase(make_purchase("b", created_at=T0 + timedelta(days=2)), reserve=True)
    assert await stores.redis.get(left) == "0"

    async def pay(order_id: str) -> Ingested:
        return await apply_outcome(
            stores.store, stores.arq, make_outcome(order_id), clock=lambda: T0 + timedelta(days=2)
        )

    assert await pay("a") is Ingested.PAID  # the money arrived: honoured
    paid_late = await stores.store.get_purchase("a")
    assert paid_late is not None
    assert (paid_late.status, paid_late.oversold) == (PurchaseStatus.PAID, 1)
    assert await pay("b") is Ingested.PAID
    assert await stores.redis.get(left) == "0"  # never below zero

    # Expired and paid late while its unit is still there: it takes it again, nothing oversold.
    await stores.redis.set(left, "1")
    await stores.store.create_purchase(make_purchase("c"), reserve=True)
    await retention.expire(now=T0 + timedelta(days=2))
    assert await pay("c") is Ingested.PAID
    paid = await stores.store.get_purchase("c")
    assert paid is not None
    assert paid.oversold is None
    assert await stores.redis.get(left) == "0"


async def test_buyer_fields_are_checked_and_delivered_in_metadata(
    start_relay: StartRelay, merchant: Merchant
) -> None:
    shop = await start_shop(start_relay, merchant)
    api = shop.api
    asks = [
        {"key": "game_user_id", "label": "Game user ID", "pattern": r"\d{5,12}"},
        {"key": "server", "label": "Server", "required": False},
        {"key": "slow", "label": "Slow", "required": False, "pattern": r"(a+)+$"},
    ]
    item = await api.item(shop.project["id"], name="Diamonds", price=15000, required_fields=asks)
    client = shop.project["client_id"]
    body = {"client_id": client, "item_id": item["id"], "buyer_email": "b@example.com"}
    for fields, mentions in (
        ({}, "fields.game_user_id"),
        ({"game_user_id": "12ab"}, "fields.game_user_id"),
        ({"game_user_id": "123456", "nickname": "x"}, "fields.nickname"),
        ({"game_user_id": "123456", "slow": "a" * 40 + "!"}, "fields.slow"),  # the pattern times out
    ):
        answer = await api.call("POST", PURCHASE, auth=False, json=body | {"fields": fields}, expect=400)
        assert_error(answer, "InvalidInput", mentions=mentions)
    order = await api.buy(client, item["id"], fields={"game_user_id": "123456", "server": "Asia"}, quantity=2)
    assert order["amount"] == 30000
    assert await api.pay(order) == {"status": "ok"}
    await wait_hits(merchant, 1)
    event = verify(merchant.hits()[-1], shop.secret)
    assert event["amount"] == 30000
    assert event["metadata"] == {"fields": {"game_user_id": "123456", "server": "Asia"}, "quantity": 2}
    assert set(event) == {
        *("event", "order_id", "item_id", "item_name", "buyer_email", "buyer_name"),
        *("amount", "currency", "paid_at", "metadata"),
    }


async def test_open_denominations_and_quantities(relay: Running) -> None:
    shop = await open_shop(relay.api)
    api, client = relay.api, shop.project["client_id"]
    item = await api.item(
        shop.project["id"], price=10000, amount_min=10000, amount_max=100000, amount_step=5000
    )
    body = {"client_id": client, "item_id": item["id"], "buyer_email": "b@example.com"}
    for amount, ok in ((10000, True), (15000, True), (12000, False), (5000, False), (105000, False)):
        answer = await api.call(
            "POST", PURCHASE, auth=False, json=body | {"amount": amount}, expect=200 if ok else 400
        )
        if not ok:
            assert "amount" in answer["detail"]
    assert (await api.buy(client, item["id"], quantity=3))["amount"] == 30000
    await api.call(
        "POST", PURCHASE, auth=False, json=body | {"quantity": 11}, expect=400
    )  # 110,000: over max
    for quantity in (0, 1001, "2"):
        await api.call("POST", PURCHASE, auth=False, json=body | {"quantity": quantity}, expect=400)


async def test_categories_status_and_the_paged_item_list(relay: Running) -> None:
    api = relay.api
    shop = await open_shop(api)
    other = await open_shop(api)
    project_id = shop.project["id"]
    games = (await api.call("PUT", CATEGORIES, json={"project_id": project_id, "name": "Games"}))["category"]
    mobile = (
        await api.call(
            "PUT", CATEGORIES, json={"project_id": project_id, "name": "Mobile", "parent_id": games["id"]}
        )
    )["category"]
    # A parent of another project's, or a cycle, is refused.
    theirs = (await api.call("PUT", CATEGORIES, json={"project_id": other.project["id"], "name": "X"}))[
        "category"
    ]
    await api.call(
        "PUT", CATEGORIES, json={"project_id": project_id, "name": "Y", "parent_id": theirs["id"]}, expect=404
    )
    cycle = {"id": games["id"], "project_id": project_id, "name": "Games", "parent_id": mobile["id"]}
    await api.call("PUT", CATEGORIES, json=cycle, expect=409)
    listed = (await api.call("GET", f"{CATEGORIES}?project_id={project_id}"))["categories"]
    assert {category["id"] for category in listed} == {games["id"], mobile["id"]}
    bad = {"project_id": project_id, "name": "x", "price": 1000, "category_id": theirs["id"]}
    await api.call("PUT", ITEMS, json=bad, expect=404)

    made = [
        await api.item(project_id, name=f"Diamonds {n}", sku=f"ML-{n}", category_id=mobile["id"])
        for n in range(5)
    ]
    draft = await api.item(project_id, name="Coming soon", status="draft")
    archived = await api.item(project_id, name="Old voucher", status="archived")
    page = await api.call(
        "GET", f"{ITEMS}?project_id={project_id}&per_page=2&page=2&search=ml-&category_id={mobile['id']}"
    )
    assert (page["page"], page["per_page"], page["total"]) == (2, 2, 5)
    assert [item["id"] for item in page["items"]] == [made[2]["id"], made[3]["id"]]
    drafts = await api.call("GET", f"{ITEMS}?project_id={project_id}&status=draft")
    assert [item["id"] for item in drafts["items"]] == [draft["id"]]
    await api.call("GET", f"{ITEMS}?project_id={project_id}&status=nope", expect=400)

    # Only published items are listed publicly, detailed, or sold.
    client = shop.project["client_id"]
    public = await api.call("GET", f"{PUBLIC_ITEMS}?client_id={client}", auth=False)
    assert draft["id"] not in {item["id"] for item in public["items"]}
    for hidden in (draft, archived):
        await api.call("GET", f"{PUBLIC_ITEMS}/{hidden['id']}?client_id={client}", auth=False, expect=404)
        body = {"client_id": client, "item_id": hidden["id"], "buyer_email": "b@example.com"}
        await api.call("POST", PURCHASE, auth=False, json=body, expect=404)
    detail = (await api.call("GET", f"{PUBLIC_ITEMS}/{made[0]['id']}?client_id={client}", auth=False))["item"]
    assert (detail["sku"], detail["stock"], detail["available"]) == ("ML-0", None, True)
    await api.call(
        "GET",
        f"{PUBLIC_ITEMS}/{made[0]['id']}?client_id={other.project['client_id']}",
        auth=False,
        expect=404,
    )


async def test_what_a_buyer_cannot_slip_past(start_relay: StartRelay, merchant: Merchant) -> None:
    """Many units for one unit's price, the relay's own metadata keys, an item id that names its
    stock count: all refused or dropped."""
    shop = await start_shop(start_relay, merchant)
    api, client = shop.api, shop.project["client_id"]
    item = await api.item(shop.project["id"], price=10000, stock=5)
    body = {"client_id": client, "item_id": item["id"], "buyer_email": "b@example.com"}
    answer = await api.call(
        "POST", PURCHASE, auth=False, json=body | {"quantity": 5, "amount": 10000}, expect=400
    )
    assert_error(answer, "InvalidInput", mentions="amount_min for 5 units")
    order = await api.buy(client, item["id"], metadata={"quantity": 50, "fields": {"x": "y"}, "ref": "r1"})
    await api.pay(order)
    await wait_hits(merchant, 1)
    assert verify(merchant.hits()[-1], shop.secret)["metadata"] == {"ref": "r1"}
    await api.call("GET", f"{PUBLIC_ITEMS}/{item['id']}:stock?client_id={client}", auth=False, expect=404)
    await api.call("GET", f"{ITEMS}/{item['id']}:stock", expect=404)


async def test_a_refund_before_the_payment_gives_the_units_back(stores: Backend) -> None:
    await stocked(stores, 1)
    left = stores.store.keys.item_stock("tmpl")
    await stores.store.create_purchase(make_purchase("a"), reserve=True)
    refund = make_outcome("a", PurchaseStatus.REFUNDED)
    code, _, _ = await stores.store.ingest(refund, now=T0, event_id="evt_r", refunded_at=T0)
    assert code == "applied"
    assert await stores.redis.get(left) == "1"
    # Its payment, when it comes, takes them again.
    assert await apply_outcome(stores.store, stores.arq, make_outcome("a"), clock=lambda: T0) is Ingested.PAID
    assert await stores.redis.get(left) == "0"
