"""One canonical log line per callback and per delivery attempt, with ids bound and no secrets."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from structlog.testing import LogCapture

from tests.helpers import ADMIN_TOKEN, Merchant, StartRelay, eventually


@pytest.fixture
def captured() -> Iterator[LogCapture]:
    capture = LogCapture()
    structlog.configure(processors=[structlog.contextvars.merge_contextvars, capture])
    yield capture
    structlog.reset_defaults()


def lines(capture: LogCapture, event: str, **match: Any) -> list[dict[str, Any]]:
    return [
        entry
        for entry in capture.entries
        if entry["event"] == event and all(entry.get(key) == value for key, value in match.items())
    ]


async def test_canonical_lines(captured: LogCapture, start_relay: StartRelay, merchant: Merchant) -> None:
    running = await start_relay()
    api = running.api
    project = await api.project(webhook_url=f"{merchant.url}/hook")
    item = await api.item(project["id"])
    order = await api.buy(project["client_id"], item["id"])
    notification = api.notification(order["order_id"], order["amount"])
    await api.callback(notification)

    async def delivered() -> bool:
        return bool(lines(captured, "delivery", outcome="delivered"))

    await eventually(delivered, what="the delivery's log line")
    [callback] = lines(captured, "request", path="/callbacks/midtrans")
    assert callback["status"] == 200
    assert callback["order_id"] == order["order_id"]
    assert callback["gateway"] == "midtrans"
    assert callback["gateway_status"] == "settlement"
    assert callback["result"] == "paid"
    assert len(callback["request_id"]) == 32
    [delivery] = lines(captured, "delivery")
    event_id = merchant.hits("/hook")[0].headers["webhook-id"]
    assert delivery["event_id"] == event_id
    assert delivery["order_id"] == order["order_id"]
    assert delivery["status_code"] == 200
    assert delivery["attempt"] == 1
    text = repr(captured.entries)
    for secret in (ADMIN_TOKEN, project["webhook_secret"], notification["signature_key"]):
        assert secret not in text
    signature = merchant.hits("/hook")[0].headers["webhook-signature"]
    assert signature.split(",", 1)[1] not in text
