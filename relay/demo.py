"""``relay demo``: the whole story on loopback, in one process, with the embedded store.

It tells the story through a ``Narrator`` (``relay.cli`` gives it one that prints in colour).
"""

from __future__ import annotations

import asyncio
import html
import re
import secrets
import socket
from typing import Any, Protocol

import aiohttp
from aiohttp import web
from standardwebhooks import Webhook, WebhookVerificationError

from relay.runner import Relay
from relay.settings import Settings

DEMO_SCHEDULE = (0.2, 0.4, 0.8)
WAIT = 15.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Narrator(Protocol):
    def step(self, text: str) -> None:
        """A new part of the story begins."""

    def show(self, text: str) -> None:
        """A detail of the current part."""

    def end(self, text: str, *, ok: bool) -> None:
        """How it ended."""


class Merchant:
    """A merchant backend: verifies every webhook with the public standardwebhooks library."""

    def __init__(self, say: Narrator) -> None:
        self.say = say
        self.secret = ""
        self.received: list[dict[str, Any]] = []
        self.flaky_fixed = False
        self.flaky_calls = 0
        self.app = web.Application()
        self.app.router.add_post("/hooks/ok", self.ok)
        self.app.router.add_post("/hooks/flaky", self.flaky)

    async def ok(self, request: web.Request) -> web.Response:
        body = await request.text()
        try:
            payload = Webhook(self.secret).verify(body, dict(request.headers))
        except WebhookVerificationError as error:
            self.say.show(f"merchant REJECTED a webhook: {error}")
            return web.Response(status=400)
        self.received.append({"id": request.headers["webhook-id"], "payload": payload, "path": request.path})
        return web.Response(text="ok")

    async def flaky(self, request: web.Request) -> web.Response:
        self.flaky_calls += 1
        if not self.flaky_fixed:
            return web.Response(status=503, text="down for maintenance")
        return await self.ok(request)


async def wait_for(predicate: Any, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + WAIT
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def run_demo(say: Narrator) -> int:
    token = secrets.token_urlsafe(24)
    port = free_port()
    settings = Settings(
        redis_url=None,
        admin_token=token,
        midtrans_server_key=None,
        sandbox=True,  # whatever gateway keys the environment holds: the demo pays in the sandbox
        public_base_url=f"http://127.0.0.1:{port}",
        allow_private_targets=True,
        retry_schedule=DEMO_SCHEDULE,
        delivery_timeout=5,
    )
    merchant = Merchant(say)
    merchant_runner = web.AppRunner(merchant.app, access_log=None)
    await merchant_runner.setup()
    merchant_port = free_port()
    await web.TCPSite(merchant_runner, "127.0.0.1", merchant_port).start()
    merchant_url = f"http://127.0.0.1:{merchant_port}"
    relay = Relay(settings)
    await relay.start(host="127.0.0.1", port=port)
    try:
        async with aiohttp.ClientSession(
            base_url=relay.url, headers={"Authorization": f"Bearer {token}"}
        ) as api:
            await story(say, api, merchant, merchant_url, relay.url)
    except (TimeoutError, AssertionError, aiohttp.ClientError) as error:
        say.end(f"demo FAILED: {error}", ok=False)
        return 1
    finally:
        await relay.stop()
        await merchant_runner.cleanup()
    say.end("demo finished: every step worked.", ok=True)
    return 0


async def call(api: aiohttp.ClientSession, method: str, path: str, **kwargs: Any) -> Any:
    async with api.request(method, path, **kwargs) as response:
        body = await response.json()
        assert response.status == 200, f"{method} {path} answered {response.status}: {body}"
        return body


async def buy_and_pay(
    say: Narrator, api: aiohttp.ClientSession, client_id: str, item_id: str, email: str
) -> str:
    order = await call(
        api,
        "POST",
        "/api/platform/public-items/purchase",
        json={
            "client_id": client_id,
            "item_id": item_id,
            "buyer_email": email,
            "buyer_name": "Demo Buyer",
            "metadata": {"ref": "relay-demo"},
        },
    )
    say.show(
        f"order {order['order_id']}: {order['amount']} {order['currency']}, invoice {order['invoice_url']}"
    )
    await pay_invoice(say, api, order["invoice_url"])
    return str(order["order_id"])


async def pay_invoice(say: Narrator, api: aiohttp.ClientSession, invoice_url: str) -> None:
    """Press Pay on the sandbox checkout: a signed Midtrans settlement to /callbacks/midtrans."""
    async with api.get(invoice_url) as response:
        page = await response.text()
    match = re.search(r'id="pay" data-notification="([^"]+)"', page)
    assert match, "the sandbox checkout page has no Pay button"
    notification = html.unescape(match.group(1))
    say.show("sandbox checkout: pressing Pay posts a signed Midtrans settlement to /callbacks/midtrans")
    result = await call(
        api, "POST", "/callbacks/midtrans", data=notification, headers={"content-type": "application/json"}
    )
    say.show(f"callback answered {result}")


async def received(merchant: Merchant, event: str, what: str, **fields: Any) -> dict[str, Any]:
    """Wait for the merchant to verify an ``event`` webhook whose body has ``fields``."""

    def matches(hit: dict[str, Any]) -> bool:
        payload = hit["payload"]
        return bool(payload.get("event") == event and all(payload.get(k) == v for k, v in fields.items()))

    async def arrived() -> bool:
        return any(matches(hit) for hit in merchant.received)

    await wait_for(arrived, what)
    return next(hit for hit in merchant.received if matches(hit))


async def other_kinds(
    say: Narrator, api: aiohttp.ClientSession, merchant: Merchant, project: dict[str, Any]
) -> None:
    """A shop payment and a subscription, on the same project webhook as the items."""
    say.step("the merchant's own shop payment: its amount and its own order id, on the same webhook")
    payment = await call(
        api,
        "POST",
        f"/api/platform/projects/{project['id']}/payments",
        json={
            "order_id": "DEMO-INV-1001",
            "amount": 125000,
            "buyer_email": "shop@example.com",
            "description": "Custom logo design",
        },
    )
    say.show(f"payment {payment['order_id']}: {payment['amount']} {payment['currency']}")
    await pay_invoice(say, api, payment["invoice_url"])
    hit = await received(merchant, "payment.paid", "the payment.paid webhook", order_id="DEMO-INV-1001")
    say.show(f"merchant verified payment.paid for its own order id: {hit['payload']}")

    say.step("a subscription to a monthly plan: its first payment activates it")
    plan = (
        await call(
            api,
            "PUT",
            "/api/platform/plans",
            json={"project_id": project["id"], "name": "Pro Monthly", "price": 99000, "interval": "month"},
        )
    )["plan"]
    subscription = await call(
        api,
        "POST",
        "/api/platform/public-plans/subscribe",
        json={
            "client_id": project["client_id"],
            "plan_id": plan["id"],
            "buyer_email": "member@example.com",
            "user_id": "demo-user-1",
        },
    )
    say.show(f"subscription {subscription['subscription_id']} pending its first invoice")
    await pay_invoice(say, api, subscription["invoice_url"])
    hit = await received(
        merchant,
        "subscription.activated",
        "the subscription.activated webhook",
        subscription_id=subscription["subscription_id"],
    )
    period = f"{hit['payload']['period_start']} to {hit['payload']['period_end']}"
    say.show(f"merchant verified subscription.activated: period {period}")


async def story(
    say: Narrator, api: aiohttp.ClientSession, merchant: Merchant, merchant_url: str, relay_url: str
) -> None:
    say.step(f"relay is up at {relay_url} (embedded store, sandbox gateway); merchant at {merchant_url}")
    project = (
        await call(
            api,
            "PUT",
            "/api/platform/projects",
            json={"name": "Demo Shop", "webhook_url": f"{merchant_url}/hooks/ok"},
        )
    )["project"]
    merchant.secret = project["webhook_secret"]
    say.show(
        f"project {project['id']} client_id={project['client_id']} secret={project['webhook_secret'][:12]}..."
    )
    item = (
        await call(
            api,
            "PUT",
            "/api/platform/items",
            json={"project_id": project["id"], "name": "Premium Template", "price": 50000, "currency": "IDR"},
        )
    )["item"]
    say.show(f"item {item['id']}: {item['name']} {item['price']} {item['currency']}")

    say.step("a buyer purchases the item through the sandbox checkout")
    order_id = await buy_and_pay(say, api, project["client_id"], item["id"], "buyer@example.com")

    async def delivered_ok() -> bool:
        return any(hit["payload"]["order_id"] == order_id for hit in merchant.received)

    await wait_for(delivered_ok, "the merchant to receive the webhook")
    hit = next(hit for hit in merchant.received if hit["payload"]["order_id"] == order_id)
    say.show(f"merchant verified webhook-id {hit['id']} with standardwebhooks: {hit['payload']}")
    purchase = await call(api, "GET", f"/api/platform/projects/{project['id']}/item-purchases/{order_id}")
    say.show(
        f"purchase status={purchase['purchase']['status']} "
        f"webhook_status={purchase['purchase']['webhook_status']}"
    )

    await other_kinds(say, api, merchant, project)

    say.step("a second item whose endpoint is down goes through retries into the dead-letter queue")
    flaky = (
        await call(
            api,
            "PUT",
            "/api/platform/items",
            json={
                "project_id": project["id"],
                "name": "Flaky Course",
                "price": 75000,
                "currency": "IDR",
                "webhook_url": f"{merchant_url}/hooks/flaky",
            },
        )
    )["item"]
    flaky_order = await buy_and_pay(say, api, project["client_id"], flaky["id"], "second@example.com")

    async def dead_lettered() -> bool:
        body = await call(api, "GET", "/api/admin/dead-letters", params={"project_id": project["id"]})
        return any(row["order_id"] == flaky_order for row in body["dead_letters"])

    await wait_for(dead_lettered, "the dead-letter queue")
    detail = await call(api, "GET", f"/api/platform/projects/{project['id']}/item-purchases/{flaky_order}")
    for attempt in detail["purchase"]["attempts"]:
        say.show(
            f"attempt at {attempt['at']}: {attempt['status_code']} {attempt['error']} "
            f"next={attempt['next_attempt_at']}"
        )
    say.show(
        f"webhook_status={detail['purchase']['webhook_status']} after {merchant.flaky_calls} attempts "
        f"(schedule {','.join(str(s) for s in DEMO_SCHEDULE)} s)"
    )

    say.step("the merchant fixes the endpoint; an operator replays the dead letter")
    merchant.flaky_fixed = True
    replayed = await call(
        api, "POST", "/api/admin/dead-letters/replay", json={"all": True, "project_id": project["id"]}
    )
    say.show(f"replay answered {replayed}")

    async def flaky_delivered() -> bool:
        return any(hit["payload"]["order_id"] == flaky_order for hit in merchant.received)

    await wait_for(flaky_delivered, "the replayed webhook")
    replay_hit = next(hit for hit in merchant.received if hit["payload"]["order_id"] == flaky_order)
    event_id = detail["purchase"]["event_id"]
    assert replay_hit["id"] == event_id, "replay changed the webhook-id"
    say.show(f"merchant verified the replay; webhook-id {replay_hit['id']} is the same as before")
