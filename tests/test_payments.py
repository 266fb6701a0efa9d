"""Shop payments (relay/api/billing.py) through the real routes on loopback: what the create route
refuses and how, the merchant's order id as the key of the payment (the same body again answers
the same invoice, another body is a 409, per project), and each of the five gateways' callbacks
resolving the namespaced gateway order id to one ``payment.paid`` carrying the merchant's order id.
"""

from __future__ import annotations

import asyncio
import re
from datetime import datetime, timedelta
from typing import Any

import pytest

from relay.event_body import PaymentPaidEvent
from relay.ingest import Ingested, apply_outcome
from relay.models import OrderKind, Purchase, PurchaseStatus, WebhookStatus, new_payment_order_id
from relay.stores import make_stores
from tests.gateway_callbacks import GATEWAY_SETTINGS, OK_BODY, send
from tests.helpers import (
    ADMIN_TOKEN,
    T0,
    Api,
    Backend,
    Merchant,
    Received,
    Running,
    StartRelay,
    assert_error,
    eventually,
    make_outcome,
    make_settings,
    verify,
)

PAYMENTS = "/api/platform/projects/{}/payments"
BODY = {
    "order_id": "INV-1001",
    "amount": 75000,
    "buyer_email": "buyer@example.com",
    "buyer_name": "Budi",
    "description": "Two tickets",
    "metadata": {"ref": "campaign-42"},
}
PAID_KEYS = [
    *("event", "order_id", "amount", "currency", "buyer_email", "buyer_name"),
    *("description", "paid_at", "metadata"),
]
# The five gateways, and a generic HMAC source.
GATEWAYS = ["midtrans", "xendit", "tripay", "doku", "duitku", "custom/shop"]


async def create(api: Api, project_id: str, body: dict[str, Any], *, expect: int = 200, **kwargs: Any) -> Any:
    return await api.call("POST", PAYMENTS.format(project_id), json=body, expect=expect, **kwargs)


async def payment(api: Api, project_id: str, order_id: str, *, expect: int = 200) -> Any:
    answer = await api.call("GET", PAYMENTS.format(project_id) + f"/{order_id}", expect=expect)
    return answer if expect != 200 else answer["payment"]


async def hooks(merchant: Merchant, path: str, count: int) -> list[Received]:
    """The first ``count`` deliveries to ``path``, once they arrived (and no more by then)."""

    async def arrived() -> bool:
        return len(merchant.hits(path)) >= count

    await eventually(arrived, what=f"{count} deliveries to {path}")
    hits = merchant.hits(path)
    assert len(hits) == count, [hit.body for hit in hits]
    return hits


@pytest.fixture
async def ingress(start_relay: StartRelay) -> Running:
    """The sandbox's Midtrans only, no worker."""
    return await start_relay(worker=False)


@pytest.fixture
async def project(ingress: Running) -> dict[str, Any]:
    return await ingress.api.project()


# --- what the create route refuses ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "mentions"),
    [
        pytest.param({"order_id": "x" * 65}, "order_id", id="order-id-65-chars"),
        pytest.param({"order_id": ""}, "order_id", id="order-id-empty"),
        pytest.param({"order_id": "INV 1001"}, "order_id", id="order-id-space"),
        pytest.param({"order_id": "INV/1001"}, "order_id", id="order-id-slash"),
        pytest.param({"order_id": "INV#1"}, "order_id", id="order-id-hash"),
        pytest.param({"order_id": "INVé"}, "order_id", id="order-id-non-ascii"),
        pytest.param({"order_id": 1001}, "order_id", id="order-id-number"),
        pytest.param({"order_id": None}, "order_id", id="order-id-null"),
        pytest.param({"amount": 0}, "amount", id="amount-zero"),
        pytest.param({"amount": -1}, "amount", id="amount-negative"),
        pytest.param({"amount": 1.5}, "amount", id="amount-fraction"),
        pytest.param({"amount": 1000.0}, "amount", id="amount-float"),
        pytest.param({"amount": "1000"}, "amount", id="amount-string"),
        pytest.param({"amount": True}, "amount", id="amount-bool"),
        pytest.param({"amount": None}, "amount", id="amount-null"),
        pytest.param({"buyer_email": "not-an-email"}, "buyer_email", id="email-no-at"),
        pytest.param({"buyer_email": "a@b"}, "buyer_email", id="email-no-domain"),
        pytest.param({"buyer_email": "a b@example.com"}, "buyer_email", id="email-space"),
        pytest.param({"buyer_email": ""}, "buyer_email", id="email-empty"),
        pytest.param({"currency": "RUPIAH"}, "currency", id="currency"),
        pytest.param({"metadata": ["a"]}, "metadata", id="metadata-list"),
        pytest.param({"unknown": 1}, "unknown", id="extra-field"),
    ],
)
async def test_an_invalid_body_is_400_in_the_contracts_shape_and_creates_nothing(
    ingress: Running, project: dict[str, Any], change: dict[str, Any], mentions: str
) -> None:
    body = await create(ingress.api, project["id"], BODY | change, expect=400)
    assert_error(body, "InvalidInput", mentions=mentions)
    assert (await ingress.api.call("GET", f"/api/platform/projects/{project['id']}/item-purchases")) == {
        "purchases": []
    }


@pytest.mark.parametrize("missing", ["order_id", "amount", "buyer_email"])
async def test_a_body_without_a_required_field_is_400(
    ingress: Running, project: dict[str, Any], missing: str
) -> None:
    body = {name: value for name, value in BODY.items() if name != missing}
    assert_error(await create(ingress.api, project["id"], body, expect=400), "InvalidInput", mentions=missing)


@pytest.mark.parametrize("raw", [b"", b"{", b"[]", b'"INV-1"', b"\xff\xfe"])
async def test_a_body_that_is_not_a_json_object_is_400(
    ingress: Running, project: dict[str, Any], raw: bytes
) -> None:
    body = await ingress.api.call(
        "POST",
        PAYMENTS.format(project["id"]),
        data=raw,
        expect=400,
        headers={"content-type": "application/json"},
    )
    assert_error(body, "InvalidInput")


@pytest.mark.parametrize("order_id", ["x" * 64, "A", "a.b_c-D.9", "...", "-_-"])
async def test_every_order_id_of_the_pattern_is_accepted_and_answered_as_given(
    ingress: Running, project: dict[str, Any], order_id: str
) -> None:
    created = await create(ingress.api, project["id"], BODY | {"order_id": order_id})
    assert created["order_id"] == order_id
    shown = await payment(ingress.api, project["id"], order_id)
    assert shown["order_id"] == order_id
    assert re.fullmatch(r"pay-[0-9a-f]{24}", shown["gateway_order_id"])


async def test_an_unknown_project_is_404(ingress: Running) -> None:
    assert_error(await create(ingress.api, "no-such-project", BODY, expect=404), "NotFound")
    assert_error(await payment(ingress.api, "no-such-project", "INV-1001", expect=404), "NotFound")


@pytest.mark.parametrize("gateway", ["xendit", "tripay", "doku", "duitku", "custom/shop", "nope"])
async def test_a_gateway_not_configured_is_400_and_creates_nothing(
    ingress: Running, project: dict[str, Any], gateway: str
) -> None:
    body = await create(ingress.api, project["id"], BODY | {"gateway": gateway}, expect=400)
    assert_error(body, "InvalidInput", mentions=gateway)
    assert_error(await payment(ingress.api, project["id"], BODY["order_id"], expect=404), "NotFound")


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer wrong-token-0123456789", f"Basic {ADMIN_TOKEN}", ADMIN_TOKEN],
)
async def test_without_the_admin_token_both_routes_are_401(
    ingress: Running, project: dict[str, Any], authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    api = ingress.api
    for method, path, kwargs in [
        ("POST", PAYMENTS.format(project["id"]), {"json": BODY}),
        ("GET", PAYMENTS.format(project["id"]) + "/INV-1001", {}),
    ]:
        body = await api.call(method, path, auth=False, headers=dict(headers), expect=401, **kwargs)
        assert_error(body, "Unauthorized")
    assert_error(await payment(api, project["id"], "INV-1001", expect=404), "NotFound")


# --- the merchant's order id is the payment's key ---------------------------------------------------


async def test_the_same_body_again_answers_the_same_invoice(
    ingress: Running, project: dict[str, Any]
) -> None:
    created = await create(ingress.api, project["id"], BODY)
    assert set(created) == {"order_id", "invoice_url", "amount", "currency"}
    assert (created["order_id"], created["amount"], created["currency"]) == ("INV-1001", 75000, "IDR")
    assert created["invoice_url"]
    for _ in range(2):
        assert await create(ingress.api, project["id"], BODY) == created
    # The same body in another key order and with the defaults spelled out is the same body.
    spelled = {"currency": "idr", "gateway": "midtrans", **dict(reversed(list(BODY.items())))}
    assert await create(ingress.api, project["id"], spelled) == created
    listed = (await ingress.api.call("GET", f"/api/platform/projects/{project['id']}/item-purchases"))[
        "purchases"
    ]
    assert [row["order_id"] for row in listed] == ["INV-1001"]


async def test_the_same_body_at_once_makes_one_payment(ingress: Running, project: dict[str, Any]) -> None:
    answers = await asyncio.gather(*(create(ingress.api, project["id"], BODY) for _ in range(8)))
    assert all(answer == answers[0] for answer in answers)
    listed = (await ingress.api.call("GET", f"/api/platform/projects/{project['id']}/item-purchases"))[
        "purchases"
    ]
    assert len(listed) == 1


@pytest.mark.parametrize(
    "change",
    [
        {"amount": 75001},
        {"currency": "USD"},
        {"buyer_email": "other@example.com"},
        {"buyer_name": "Siti"},
        {"buyer_name": None},
        {"description": "Three tickets"},
        {"description": None},
        {"metadata": {"ref": "campaign-43"}},
        {"metadata": {}},
    ],
    ids=lambda change: "-".join(f"{key}={value}" for key, value in change.items()),
)
async def test_another_body_with_the_same_order_id_is_409_and_changes_nothing(
    ingress: Running, project: dict[str, Any], change: dict[str, Any]
) -> None:
    await create(ingress.api, project["id"], BODY)
    before = await payment(ingress.api, project["id"], "INV-1001")
    body = await create(ingress.api, project["id"], BODY | change, expect=409)
    assert_error(body, "Conflict", mentions="INV-1001")
    assert await payment(ingress.api, project["id"], "INV-1001") == before


async def test_another_gateway_with_the_same_order_id_is_409(start_relay: StartRelay) -> None:
    running = await start_relay(worker=False, **GATEWAY_SETTINGS)
    project = await running.api.project()
    await create(running.api, project["id"], BODY)
    body = await create(running.api, project["id"], BODY | {"gateway": "xendit"}, expect=409)
    assert_error(body, "Conflict")
    assert (await payment(running.api, project["id"], "INV-1001"))["gateway"] == "midtrans"


async def test_an_idempotency_key_answers_its_first_answer_again(
    ingress: Running, project: dict[str, Any]
) -> None:
    api, key = ingress.api, {"Idempotency-Key": "order-1001-attempt"}
    path = PAYMENTS.format(project["id"])
    async with api.http.post(
        path, json=BODY, headers={"Authorization": f"Bearer {ADMIN_TOKEN}", **key}
    ) as first:
        assert first.status == 200
        created = await first.json()
        assert "Idempotent-Replayed" not in first.headers
    async with api.http.post(
        path, json=BODY, headers={"Authorization": f"Bearer {ADMIN_TOKEN}", **key}
    ) as again:
        assert again.status == 200
        assert await again.json() == created
        assert again.headers["Idempotent-Replayed"] == "true"
    # The key with another body: 409, even a body that would create another payment.
    other = BODY | {"order_id": "INV-1002"}
    assert_error(await create(api, project["id"], other, expect=409, headers=dict(key)), "Conflict")
    assert_error(await payment(api, project["id"], "INV-1002", expect=404), "NotFound")
    # Another key with the same body: the merchant's order id still makes it the same payment.
    assert await create(api, project["id"], BODY, headers={"Idempotency-Key": "another"}) == created
    # A refused request does not hold its key: the key works once the body is right.
    bad = {"Idempotency-Key": "bad-first"}
    await create(
        api, project["id"], BODY | {"order_id": "INV-1003", "amount": 0}, expect=400, headers=dict(bad)
    )
    assert (await create(api, project["id"], BODY | {"order_id": "INV-1003"}, headers=dict(bad)))[
        "order_id"
    ] == ("INV-1003")


async def test_an_idempotency_key_is_per_project(ingress: Running) -> None:
    first, second = await ingress.api.project(), await ingress.api.project()
    key = {"Idempotency-Key": "shared-key"}
    one = await create(ingress.api, first["id"], BODY, headers=dict(key))
    two = await create(ingress.api, second["id"], BODY, headers=dict(key))
    assert one["invoice_url"] != two["invoice_url"]
    assert (await payment(ingress.api, second["id"], "INV-1001"))["project_id"] == second["id"]


# --- projects, each with its own payments -----------------------------------------------------------


async def test_two_projects_with_the_same_order_id_have_their_own_payments(
    start_relay: StartRelay, merchant: Merchant
) -> None:
    running = await start_relay()
    api = running.api
    first = await api.project(webhook_url=f"{merchant.url}/first")
    second = await api.project(webhook_url=f"{merchant.url}/second")
    await create(api, first["id"], BODY)
    await create(api, second["id"], BODY | {"amount": 12000, "metadata": {"shop": "second"}})
    one = await payment(api, first["id"], "INV-1001")
    two = await payment(api, second["id"], "INV-1001")
    assert one["gateway_order_id"] != two["gateway_order_id"]
    assert (one["amount"], two["amount"]) == (75000, 12000)
    assert (one["project_id"], two["project_id"]) == (first["id"], second["id"])

    await api.pay({"order_id": two["gateway_order_id"], "amount": 12000})
    [hit] = await hooks(merchant, "/second", 1)
    paid = verify(hit, second["webhook_secret"])
    assert (paid["order_id"], paid["amount"], paid["metadata"]) == ("INV-1001", 12000, {"shop": "second"})
    assert (await payment(api, second["id"], "INV-1001"))["status"] == "paid"
    assert (await payment(api, first["id"], "INV-1001"))["status"] == "pending"
    assert merchant.hits("/first") == []

    await api.pay({"order_id": one["gateway_order_id"], "amount": 75000})
    [hit] = await hooks(merchant, "/first", 1)
    paid = verify(hit, first["webhook_secret"])
    assert (paid["order_id"], paid["amount"], paid["metadata"]) == ("INV-1001", 75000, {"ref": "campaign-42"})
    assert len(merchant.hits("/second")) == 1


async def test_a_payment_is_found_only_in_its_own_project_and_only_as_a_payment(ingress: Running) -> None:
    api = ingress.api
    first, second = await api.project(), await api.project()
    await create(api, first["id"], BODY)
    gateway_order = (await payment(api, first["id"], "INV-1001"))["gateway_order_id"]
    assert_error(await payment(api, second["id"], "INV-1001", expect=404), "NotFound", mentions="INV-1001")
    # Its gateway order id is not a merchant order id of either project.
    assert_error(await payment(api, first["id"], gateway_order, expect=404), "NotFound")
    assert_error(await payment(api, second["id"], gateway_order, expect=404), "NotFound")
    # An item purchase is no payment, whichever id is asked for.
    item = await api.item(first["id"])
    bought = await api.buy(first["client_id"], item["id"])
    assert_error(await payment(api, first["id"], bought["order_id"], expect=404), "NotFound")
    # The other project's item-purchases do not show it either.
    assert_error(
        await api.call(
            "GET", f"/api/platform/projects/{second['id']}/item-purchases/{gateway_order}", expect=404
        ),
        "NotFound",
    )
    listed = (await api.call("GET", f"/api/platform/projects/{second['id']}/item-purchases"))["purchases"]
    assert listed == []


async def test_the_project_list_shows_the_payment_with_both_order_ids(ingress: Running) -> None:
    api = ingress.api
    project = await api.project()
    item = await api.item(project["id"])
    bought = await api.buy(project["client_id"], item["id"])
    await create(api, project["id"], BODY)
    shown = await payment(api, project["id"], "INV-1001")
    listed = (await api.call("GET", f"/api/platform/projects/{project['id']}/item-purchases"))["purchases"]
    by_order = {row["order_id"]: row for row in listed}
    assert set(by_order) == {"INV-1001", bought["order_id"]}
    row = by_order["INV-1001"]
    assert row["gateway_order_id"] == shown["gateway_order_id"]
    assert re.fullmatch(r"pay-[0-9a-f]{24}", row["gateway_order_id"])
    assert (row["kind"], row["amount"], row["description"], row["status"]) == (
        "payment",
        75000,
        "Two tickets",
        "pending",
    )
    assert row == shown
    assert "gateway_order_id" not in by_order[bought["order_id"]]
    assert "merchant_order_id" not in row
    # The payment's view: the contract's fields, its attempts (none yet).
    for name in ("status", "webhook_status", "attempts", "gateway_order_id", "buyer_email", "metadata"):
        assert name in shown, name
    assert shown["attempts"] == []


# --- each gateway's callback pays the payment -------------------------------------------------------


@pytest.mark.parametrize("gateway", GATEWAYS)
async def test_each_gateways_callback_delivers_payment_paid_with_the_merchants_order_id(
    start_relay: StartRelay, merchant: Merchant, gateway: str
) -> None:
    running = await start_relay(**GATEWAY_SETTINGS)
    api = running.api
    project = await api.project(webhook_url=f"{merchant.url}/hook")
    metadata = {"note": 'say "hi" — ünïcode ✓', "n": [1, 2.5, None, True]}
    request = BODY | {"gateway": gateway, "metadata": metadata}
    created = await create(api, project["id"], request)
    assert created["order_id"] == "INV-1001"
    gateway_order = (await payment(api, project["id"], "INV-1001"))["gateway_order_id"]
    assert re.fullmatch(r"pay-[0-9a-f]{24}", gateway_order)

    order = {"order_id": gateway_order, "amount": 75000}
    if gateway == "midtrans":
        assert await api.pay(order) == {"status": "ok"}
    else:
        assert await send(api, gateway, order, "paid") == OK_BODY.get(gateway, {"status": "ok"})
        await send(api, gateway, order, "paid")  # the same callback again: still one event
    [hit] = await hooks(merchant, "/hook", 1)
    paid = verify(hit, project["webhook_secret"])
    assert list(paid) == PAID_KEYS
    shown = await payment(api, project["id"], "INV-1001")
    assert (shown["status"], shown["gateway"]) == ("paid", gateway)
    expected = PaymentPaidEvent(
        order_id="INV-1001",
        amount=75000,
        currency="IDR",
        buyer_email="buyer@example.com",
        buyer_name="Budi",
        description="Two tickets",
        paid_at=shown["paid_at"],
        metadata=metadata,
    )
    assert hit.body == expected.model_dump_json()
    assert hit.headers["webhook-id"] == shown["event_id"]

    async def delivered() -> bool:
        return (await payment(api, project["id"], "INV-1001"))["webhook_status"] == "delivered"

    await eventually(delivered, what="the payment's webhook_status delivered")
    shown = await payment(api, project["id"], "INV-1001")
    assert [attempt["status_code"] for attempt in shown["attempts"]] == [200]
    assert len(merchant.hits("/hook")) == 1


async def test_a_payment_goes_to_the_projects_url_whatever_its_items_say(
    start_relay: StartRelay, merchant: Merchant
) -> None:
    running = await start_relay()
    api = running.api
    project = await api.project(webhook_url=f"{merchant.url}/project")
    await api.item(project["id"], webhook_url=f"{merchant.url}/item")
    await create(api, project["id"], BODY)
    shown = await payment(api, project["id"], "INV-1001")
    await api.pay({"order_id": shown["gateway_order_id"], "amount": 75000})
    [hit] = await hooks(merchant, "/project", 1)
    assert verify(hit, project["webhook_secret"])["event"] == "payment.paid"
    assert merchant.hits("/item") == []


async def test_a_paid_payment_keeps_its_event_and_its_answer(ingress: Running) -> None:
    api = ingress.api
    project = await api.project()
    await create(api, project["id"], BODY)
    shown = await payment(api, project["id"], "INV-1001")
    await api.pay({"order_id": shown["gateway_order_id"], "amount": 75000})
    shown = await payment(api, project["id"], "INV-1001")
    assert (shown["status"], shown["paid_at"] is not None) == ("paid", True)
    # Paid again (the same settlement): the same payment, the same event.
    await api.pay({"order_id": shown["gateway_order_id"], "amount": 75000})
    assert (await payment(api, project["id"], "INV-1001"))["event_id"] == shown["event_id"]
    # Asked for again once paid, the same body still answers its invoice; another body is 409.
    assert (await create(api, project["id"], BODY))["order_id"] == "INV-1001"
    await create(api, project["id"], BODY | {"amount": 1}, expect=409)


# --- a merchant order id used again once retention deleted its payment ----------------------------------


async def test_an_order_id_used_again_after_retention_is_a_new_gateway_order(stores: Backend) -> None:
    """Once retention deletes a finished payment its order id is free in the project again, as a
    new gateway order: a replayed notification of the old one finds no order, so it pays nothing."""
    kept = make_stores(stores.redis, make_settings(retention=timedelta(seconds=60)))

    def payment(at: datetime) -> Purchase:
        return Purchase(
            order_id=new_payment_order_id(),
            kind=OrderKind.PAYMENT,
            event_type="payment.paid",
            project_id="shop",
            merchant_order_id="INV-1001",
            amount=50000,
            currency="IDR",
            buyer_email="b@example.com",
            created_at=at,
            updated_at=at,
        )

    first = payment(T0)
    assert await kept.store.create_purchase(first)
    assert not await kept.store.create_purchase(payment(T0))  # taken while the first is kept
    paid = await apply_outcome(kept.store, stores.arq, make_outcome(first.order_id), clock=lambda: T0)
    assert paid is Ingested.PAID
    stored = await kept.store.payment("shop", "INV-1001")
    assert stored is not None
    assert stored.event_id is not None
    event = await kept.events.get(stored.event_id)
    assert event is not None
    await kept.events.finish_attempt(event, seq=0, attempt=None, state=WebhookStatus.NO_ENDPOINT, now=T0)
    swept = await kept.retention.sweep(now=T0 + timedelta(seconds=61))
    assert swept.deleted_orders == 1
    assert await kept.store.payment("shop", "INV-1001") is None

    again = payment(T0 + timedelta(seconds=62))
    assert await kept.store.create_purchase(again)
    assert again.order_id != first.order_id
    assert (await kept.store.payment("shop", "INV-1001")) == await kept.store.get_purchase(again.order_id)
    replayed = await apply_outcome(kept.store, stores.arq, make_outcome(first.order_id), clock=lambda: T0)
    assert replayed is Ingested.UNKNOWN_ORDER
    pending = await kept.store.get_purchase(again.order_id)
    assert pending is not None
    assert pending.status is PurchaseStatus.PENDING
