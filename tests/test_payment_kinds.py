"""Every payment kind on one project webhook, end to end on a running relay: a shop payment, a
subscription's first payment, and a refund of each, signed and delivered to the project's URL."""

from __future__ import annotations

from typing import Any

from tests.helpers import Merchant, StartRelay, eventually, verify

PAYMENTS = "/api/platform/projects/{}/payments"


async def delivered(merchant: Merchant, count: int, secret: str) -> list[dict[str, Any]]:
    async def arrived() -> bool:
        return len(merchant.hits("/hook")) >= count

    await eventually(arrived, what=f"{count} deliveries")
    return [verify(hit, secret) for hit in merchant.hits("/hook")]


async def test_a_shop_payment_and_its_refund_reach_the_project_webhook(
    start_relay: StartRelay, merchant: Merchant
) -> None:
    running = await start_relay()
    api = running.api
    project = await api.project(webhook_url=f"{merchant.url}/hook")
    request = {"order_id": "INV-1001", "amount": 75000, "buyer_email": "b@example.com", "metadata": {"x": 1}}
    created = await api.call("POST", PAYMENTS.format(project["id"]), json=request)
    assert created["order_id"] == "INV-1001"
    assert (created["amount"], created["currency"]) == (75000, "IDR")
    assert created["invoice_url"]
    # The same body again: the same invoice; another body: 409.
    assert await api.call("POST", PAYMENTS.format(project["id"]), json=request) == created
    await api.call("POST", PAYMENTS.format(project["id"]), json=request | {"amount": 1}, expect=409)

    payment = (await api.call("GET", PAYMENTS.format(project["id"]) + "/INV-1001"))["payment"]
    assert payment["order_id"] == "INV-1001"
    gateway_order = payment["gateway_order_id"]
    assert gateway_order != "INV-1001"
    assert payment["status"] == "pending"

    await api.pay({"order_id": gateway_order, "amount": 75000})
    [paid] = await delivered(merchant, 1, project["webhook_secret"])
    assert list(paid) == [
        *("event", "order_id", "amount", "currency", "buyer_email", "buyer_name"),
        *("description", "paid_at", "metadata"),
    ]
    assert (paid["event"], paid["order_id"], paid["metadata"]) == ("payment.paid", "INV-1001", {"x": 1})

    refund = api.notification(
        gateway_order,
        75000,
        status="partial_refund",
        refunds=[{"refund_chargeback_id": 7, "refund_amount": "25000.00", "reason": "damaged"}],
    )
    await api.callback(refund)
    await api.callback(refund)  # the same refund again: one event
    _, refunded = await delivered(merchant, 2, project["webhook_secret"])
    assert refunded["event"] == "payment.refunded"
    assert refunded["order_id"] == "INV-1001"
    assert (refunded["refund_amount"], refunded["reason"]) == (25000, "damaged")
    assert refunded["paid_at"] == paid["paid_at"]
    payment = (await api.call("GET", PAYMENTS.format(project["id"]) + "/INV-1001"))["payment"]
    assert payment["status"] == "refunded"
    assert len(merchant.hits("/hook")) == 2


async def test_a_subscription_is_activated_by_its_first_payment(
    start_relay: StartRelay, merchant: Merchant
) -> None:
    running = await start_relay()
    api = running.api
    project = await api.project(webhook_url=f"{merchant.url}/hook")
    plan = (
        await api.call(
            "PUT",
            "/api/platform/plans",
            json={"project_id": project["id"], "name": "Pro", "price": 99000, "interval": "month"},
        )
    )["plan"]
    started = await api.call(
        "POST",
        "/api/platform/public-plans/subscribe",
        auth=False,
        json={
            "client_id": project["client_id"],
            "plan_id": plan["id"],
            "buyer_email": "b@example.com",
            "user_id": "u1",
        },
    )
    assert set(started) == {"subscription_id", "order_id", "invoice_url", "amount", "currency"}
    path = f"/api/platform/projects/{project['id']}/subscriptions/{started['subscription_id']}"
    assert (await api.call("GET", path))["subscription"]["status"] == "pending"

    await api.pay(started)
    [activated] = await delivered(merchant, 1, project["webhook_secret"])
    assert activated["event"] == "subscription.activated"
    assert activated["subscription_id"] == started["subscription_id"]
    assert activated["period_start"] == activated["paid_at"]
    subscription = (await api.call("GET", path))["subscription"]
    assert subscription["status"] == "active"
    assert subscription["current_period_end"] == activated["period_end"]

    canceled = (await api.call("POST", path + "/cancel"))["subscription"]
    assert (canceled["status"], canceled["cancel_at_period_end"]) == ("active", True)
