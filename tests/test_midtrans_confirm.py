"""RELAY_MIDTRANS_CONFIRM: a final status (paid, failed, expired, refunded) is applied only as
Midtrans's status API states it."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from tests.helpers import ADMIN, Running, StartRelay, local_server

SERVER_KEY = "SB-Mid-server-confirm-test"


@dataclass
class FakeMidtrans:
    """Snap and the status API on loopback. ``statuses[order_id]`` is what the status API says."""

    url: str = ""
    statuses: dict[str, Any] = field(default_factory=dict)
    status_calls: list[tuple[str, str]] = field(default_factory=list)

    async def snap(self, request: web.Request) -> web.Response:
        return web.json_response({"token": "t", "redirect_url": "https://example.test/pay"})

    async def status(self, request: web.Request) -> web.Response:
        order_id = request.match_info["order_id"]
        self.status_calls.append((order_id, request.headers.get("Authorization", "")))
        answer = self.statuses.get(order_id, 404)
        if isinstance(answer, int):
            return web.json_response({"status_code": str(answer), "status_message": "nope"}, status=answer)
        return web.json_response(answer)


@pytest.fixture
async def fake() -> AsyncIterator[FakeMidtrans]:
    found = FakeMidtrans()
    app = web.Application()
    app.router.add_post("/snap/v1/transactions", found.snap)
    app.router.add_get("/v2/{order_id}/status", found.status)
    async with local_server(app) as found.url:
        yield found


async def confirming_relay(start_relay: StartRelay, api_base: str, **overrides: Any) -> Running:
    values = {"midtrans_server_key": SERVER_KEY, "midtrans_api_base": api_base, "midtrans_confirm": True}
    return await start_relay(worker=False, **(values | overrides))


async def shop_order(running: Running) -> tuple[dict[str, Any], dict[str, Any]]:
    project = await running.api.project()
    item = await running.api.item(project["id"])
    return project, await running.api.buy(project["client_id"], item["id"])


def api_answer(order: dict[str, Any], status: str, amount: str = "50000.00") -> dict[str, Any]:
    return {
        "status_code": "200",
        "order_id": order["order_id"],
        "gross_amount": amount,
        "transaction_status": status,
        "fraud_status": "accept",
        "settlement_time": "2026-05-06 17:00:00",
    }


async def status_of(running: Running, project: dict[str, Any], order: dict[str, Any]) -> str:
    return str((await running.api.purchase(project["id"], order["order_id"]))["status"])


async def test_settlement_confirmed_by_the_status_api_pays(
    start_relay: StartRelay, fake: FakeMidtrans
) -> None:
    running = await confirming_relay(start_relay, fake.url)
    project, order = await shop_order(running)
    fake.statuses[order["order_id"]] = api_answer(order, "settlement")
    assert await running.api.pay(order) == {"status": "ok"}
    assert await status_of(running, project, order) == "paid"
    [(asked, auth)] = fake.status_calls
    assert asked == order["order_id"]
    assert auth == "Basic " + base64.b64encode(f"{SERVER_KEY}:".encode()).decode()


@pytest.mark.parametrize("answer", ["pending", 404])
async def test_settlement_the_status_api_denies_does_not_pay(
    start_relay: StartRelay, fake: FakeMidtrans, answer: str | int
) -> None:
    """A correctly signed settlement (a leaked key, or a replayed signature with another status)
    that Midtrans itself does not confirm changes nothing."""
    running = await confirming_relay(start_relay, fake.url)
    project, order = await shop_order(running)
    fake.statuses[order["order_id"]] = answer if isinstance(answer, int) else api_answer(order, answer)
    assert await running.api.pay(order) == {"status": "ok"}
    assert await status_of(running, project, order) == "pending"
    assert (await running.api.purchase(project["id"], order["order_id"]))["event_id"] is None


async def test_status_api_amount_is_checked(start_relay: StartRelay, fake: FakeMidtrans) -> None:
    running = await confirming_relay(start_relay, fake.url)
    project, order = await shop_order(running)
    fake.statuses[order["order_id"]] = api_answer(order, "settlement", amount="1.00")
    notification = running.api.notification(order["order_id"], order["amount"])
    body = await running.api.callback(notification, expect=409)
    assert body["error"] == "AmountMismatch"
    assert await status_of(running, project, order) == "pending"


@pytest.mark.parametrize("answer", [500, 503])
async def test_status_api_failing_is_503_so_midtrans_retries(
    start_relay: StartRelay, fake: FakeMidtrans, answer: int
) -> None:
    running = await confirming_relay(start_relay, fake.url)
    project, order = await shop_order(running)
    fake.statuses[order["order_id"]] = answer
    notification = running.api.notification(order["order_id"], order["amount"])
    body = await running.api.callback(notification, expect=503)
    assert body["error"] == "GatewayUnavailable"
    assert await status_of(running, project, order) == "pending"
    # Midtrans retries once the API answers again: then it is paid, once.
    fake.statuses[order["order_id"]] = api_answer(order, "settlement")
    assert await running.api.callback(notification) == {"status": "ok"}
    assert await status_of(running, project, order) == "paid"


async def test_status_api_unreachable_is_503_and_counted(start_relay: StartRelay, fake: FakeMidtrans) -> None:
    running = await confirming_relay(start_relay, fake.url)
    project, order = await shop_order(running)
    # A second relay on the same store, whose status API is a closed port.
    closed = await confirming_relay(start_relay, "http://127.0.0.1:9")
    body = await closed.api.callback(closed.api.notification(order["order_id"], order["amount"]), expect=503)
    assert body["error"] == "GatewayUnavailable"
    assert await status_of(running, project, order) == "pending"
    async with closed.api.http.get("/metrics", headers=ADMIN) as response:
        text = await response.text()
    assert 'relay_callbacks_total{error="GatewayUnavailable",gateway="midtrans",result="refused"} 1.0' in text


async def test_confirmation_is_off_by_default(start_relay: StartRelay, fake: FakeMidtrans) -> None:
    running = await confirming_relay(start_relay, fake.url, midtrans_confirm=False)
    project, order = await shop_order(running)
    assert await running.api.pay(order) == {"status": "ok"}
    assert await status_of(running, project, order) == "paid"
    assert fake.status_calls == []


async def test_pending_is_not_confirmed(start_relay: StartRelay, fake: FakeMidtrans) -> None:
    """A pending notification changes nothing, whatever Midtrans would say."""
    running = await confirming_relay(start_relay, fake.url)
    project, order = await shop_order(running)
    assert await running.api.pay(order, status="pending") == {"status": "ok"}
    assert await status_of(running, project, order) == "pending"
    assert fake.status_calls == []


@pytest.mark.parametrize(
    ("notified", "answer", "expected"),
    [
        ("expire", "expire", "expired"),
        ("deny", "deny", "failed"),
        ("cancel", "cancel", "failed"),
        ("failure", "failure", "failed"),
        # An old or forged final status that Midtrans does not state changes nothing ...
        ("expire", "pending", "pending"),
        ("deny", "pending", "pending"),
        ("cancel", 404, "pending"),
        # ... and what Midtrans does state wins.
        ("expire", "settlement", "paid"),
    ],
)
async def test_every_final_status_is_confirmed(
    start_relay: StartRelay, fake: FakeMidtrans, notified: str, answer: str | int, expected: str
) -> None:
    running = await confirming_relay(start_relay, fake.url)
    project, order = await shop_order(running)
    fake.statuses[order["order_id"]] = answer if isinstance(answer, int) else api_answer(order, answer)
    assert await running.api.pay(order, status=notified) == {"status": "ok"}
    assert await status_of(running, project, order) == expected
    assert [asked for asked, _ in fake.status_calls] == [order["order_id"]]


@pytest.mark.parametrize(("answer", "expected"), [("refund", "refunded"), ("settlement", "paid")])
async def test_a_refund_is_confirmed(
    start_relay: StartRelay, fake: FakeMidtrans, answer: str, expected: str
) -> None:
    """A refund notification of a paid purchase refunds it only when Midtrans says so."""
    running = await confirming_relay(start_relay, fake.url)
    project, order = await shop_order(running)
    fake.statuses[order["order_id"]] = api_answer(order, "settlement")
    assert await running.api.pay(order) == {"status": "ok"}
    fake.statuses[order["order_id"]] = api_answer(order, answer)
    assert await running.api.pay(order, status="refund") == {"status": "ok"}
    assert await status_of(running, project, order) == expected
    assert len(fake.status_calls) == 2


async def test_a_confirmed_refund_of_an_order_whose_settlement_never_came_sends_the_payment_too(
    start_relay: StartRelay, fake: FakeMidtrans
) -> None:
    """The settlement's notification was lost, and the merchant refunded before Midtrans's next
    notification: the status API says refunded, after a settlement at its settlement_time. The
    payment's event is written first (the buyer paid), then the refund's."""
    running = await confirming_relay(start_relay, fake.url)
    project, order = await shop_order(running)
    fake.statuses[order["order_id"]] = api_answer(order, "partial_refund")
    assert await running.api.pay(order, status="partial_refund") == {"status": "ok"}
    purchase = await running.api.purchase(project["id"], order["order_id"])
    assert purchase["status"] == "refunded"
    assert purchase["event_id"] is not None
    assert purchase["paid_at"] is not None
    # Told again, nothing more: one payment event, the refund once.
    assert await running.api.pay(order, status="partial_refund") == {"status": "ok"}
    again = await running.api.purchase(project["id"], order["order_id"])
    assert again["event_id"] == purchase["event_id"]


async def test_an_unconfirmed_refund_of_an_unpaid_order_sends_no_payment(start_relay: StartRelay) -> None:
    """Without the status API a refund notification of an unpaid order is kept, never a payment:
    its status is not signed, so it cannot vouch for one."""
    running = await start_relay()
    project, order = await shop_order(running)
    assert await running.api.pay(order, status="refund") == {"status": "ok"}
    purchase = await running.api.purchase(project["id"], order["order_id"])
    assert (purchase["status"], purchase["event_id"], purchase["paid_at"]) == ("refunded", None, None)
