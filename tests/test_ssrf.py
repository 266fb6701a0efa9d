"""SSRF: with private targets disallowed, no spelling of a local address gets a delivery through."""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers import Merchant, StartRelay, eventually


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hook",
        "http://127.1.2.3/hook",
        "http://localhost/hook",
        "http://api.localhost/hook",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://[::ffff:a9fe:a9fe]/latest/meta-data",
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.1/hook",
        "http://172.16.5.4/hook",
        "http://192.168.1.1/hook",
        "http://100.64.0.1/hook",
        "http://0.0.0.0/hook",
        "http://[fd00::1]/hook",
        "http://[fe80::1]/hook",
        "http://[64:ff9b::7f00:1]/hook",
        "http://[2002:7f00:1::]/hook",
        "http://2130706433/hook",
        "http://0x7f000001/hook",
        "http://127.1/hook",
        "http://0177.0.0.1/hook",
        "http://224.0.0.1/hook",
        # Spellings a resolver normalises (NFKC, IDNA) into local ones (issue 12, item 14).
        "http://\u2460\u2461\u2466.0.0.1/hook",  # circled digits: 127.0.0.1
        "http://\u24db\u24de\u24d2\u24d0\u24db\u24d7\u24de\u24e2\u24e3/hook",  # circled letters: localhost
        "http://api.\u24db\u24de\u24d2\u24d0\u24db\u24d7\u24de\u24e2\u24e3/hook",
        "http://\uff11\uff12\uff17.\uff10.\uff10.\uff11/hook",  # full-width digits
        "http://127\u30020\u30020\u30021/hook",  # ideographic full stops
        "http://\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54:8080/hook",  # full-width letters
        "http://LOCALHOST/hook",
        "http://\u2488.0.0.1/hook",  # "1." : an empty label
        "http://[::\uff11]/hook",
    ],
)
async def test_registration_refuses_local_targets(start_relay: StartRelay, url: str) -> None:
    running = await start_relay(worker=False, allow_private_targets=False)
    body = await running.api.call(
        "PUT", "/api/platform/projects", json={"name": "x", "webhook_url": url}, expect=400
    )
    assert body["error"] == "InvalidInput"
    assert "webhook_url" in body["detail"]


async def test_registration_accepts_public_targets_and_enforces_https(start_relay: StartRelay) -> None:
    running = await start_relay(worker=False, allow_private_targets=False, require_https=True)
    api = running.api
    project = await api.project(webhook_url="https://hooks.example.com/relay")
    assert project["webhook_url"] == "https://hooks.example.com/relay"
    body = await api.call(
        "PUT",
        "/api/platform/items",
        json={
            "project_id": project["id"],
            "name": "x",
            "price": 1,
            "webhook_url": "http://hooks.example.com/relay",
        },
        expect=400,
    )
    assert "https" in body["detail"]


async def deliver_to(start_relay: StartRelay, url: str, **worker_settings: Any) -> dict[str, Any]:
    """Register ``url`` through a relay that allows private targets (as if registered before the
    policy changed, or a DNS name that later resolves locally), then deliver through a worker that
    does not. Returns the purchase once its webhook is settled."""
    registrar = await start_relay(worker=False, allow_private_targets=True)
    project = await registrar.api.project(webhook_url=url)
    item = await registrar.api.item(project["id"])
    await start_relay(worker=True, **({"allow_private_targets": False} | worker_settings))
    order = await registrar.api.buy(project["client_id"], item["id"])
    await registrar.api.pay(order)
    found: dict[str, Any] = {}

    async def settled() -> bool:
        found.update(await registrar.api.purchase(project["id"], order["order_id"]))
        return found["webhook_status"] in {"failed", "delivered"}

    await eventually(settled, what=f"the delivery to {url} to settle")
    return found


@pytest.mark.parametrize(
    "spelling",
    ["127.0.0.1:{port}", "localhost:{port}", "[::ffff:127.0.0.1]:{port}", "[::1]:{port}", "127.0.0.2:{port}"],
)
async def test_delivery_never_reaches_a_local_port(
    start_relay: StartRelay, merchant: Merchant, spelling: str
) -> None:
    port = merchant.url.rsplit(":", 1)[1]
    purchase = await deliver_to(start_relay, "http://" + spelling.format(port=port) + "/hook")
    assert purchase["webhook_status"] == "failed"
    [attempt] = purchase["attempts"]  # refused targets are permanent: no retries
    assert "refused target" in attempt["error"]
    assert merchant.received == []


async def test_allowlisted_network_is_reachable(start_relay: StartRelay, merchant: Merchant) -> None:
    purchase = await deliver_to(start_relay, f"{merchant.url}/hook", allowed_target_cidrs=("127.0.0.0/8",))
    assert purchase["webhook_status"] == "delivered"
    assert len(merchant.hits("/hook")) == 1
