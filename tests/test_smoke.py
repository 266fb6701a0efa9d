from __future__ import annotations

from standardwebhooks import Webhook

from tests.helpers import Merchant, StartRelay, eventually


async def test_paid_purchase_reaches_merchant_verified(start_relay: StartRelay, merchant: Merchant) -> None:
    running = await start_relay()
    api = running.api
    project = await api.project(webhook_url=f"{merchant.url}/hook")
    item = await api.item(project["id"])
    order = await api.buy(project["client_id"], item["id"], metadata={"ref": "campaign-42"})
    assert await api.pay(order) == {"status": "ok"}

    async def delivered() -> bool:
        return len(merchant.hits("/hook")) == 1

    await eventually(delivered, what="one delivery")
    hit = merchant.hits("/hook")[0]
    payload = Webhook(project["webhook_secret"]).verify(hit.body, hit.headers)
    assert payload["order_id"] == order["order_id"]
    assert payload["metadata"] == {"ref": "campaign-42"}
    purchase = await api.purchase(project["id"], order["order_id"])
    assert purchase["status"] == "paid"
    assert purchase["webhook_status"] == "delivered"
    assert hit.headers["webhook-id"] == purchase["event_id"]
