"""Failover without loss, with real processes on loopback: a primary ``redis-server``, two replicas
and three Sentinels; ``relay serve`` and two ``relay worker`` reaching Redis only through the
Sentinels, with RELAY_REDIS_MIN_REPLICAS_ACK=1. Gateways buy and pay orders at a steady pace, the
primary is SIGKILLed mid-load, and:

- every callback answered 200 is delivered to the merchant, and every purchase answered 200 exists
  (acknowledged writes were on a replica, and Sentinel promotes the replica with the most data);
- no order is paid twice: one event, one webhook-id each (deliveries are at least once, so the same
  webhook-id may arrive again: reported, not failed on);
- while the Sentinels switch, the ingress answers 503 (never another error, never a dropped
  connection), and the gateway side resends what was not answered 200, as gateways do;
- the ingress and the workers follow the new primary by themselves: no process is restarted.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.helpers import (
    PURCHASE,
    Api,
    Merchant,
    eventually,
    make_settings,
    midtrans_key_of,
    purchase_body,
    verify,
)
from tests.processes import Processes, RedisCell, free_port, relay_env, wait_until_answering

ORDERS = 240
GATEWAYS = 12  # orders bought and paid at once
KILL_AFTER = ORDERS // 3  # payments acknowledged before the primary dies
RESEND = 0.2  # seconds a gateway waits before it sends again what was not answered 200


@dataclass
class Gateway:
    """Buys and pays orders, sending each request again until it is answered 200."""

    api: Api
    project: dict[str, Any]
    item: dict[str, Any]
    statuses: Counter[int] = field(default_factory=Counter)
    bought: list[dict[str, Any]] = field(default_factory=list)
    paid: list[str] = field(default_factory=list)
    killed_at: float | None = None
    last_503: float = 0.0  # seconds after the kill

    async def until_200(self, method: str, path: str, **kwargs: Any) -> Any:
        while True:
            async with self.api.http.request(method, path, **kwargs) as response:
                body = await response.json(content_type=None)
                self.statuses[response.status] += 1
                if response.status == 200:
                    return body
                assert response.status == 503, f"{method} {path}: {response.status} {body}"
                assert body["error"] == "StoreUnavailable", body
                if self.killed_at is not None:
                    self.last_503 = time.monotonic() - self.killed_at
            await asyncio.sleep(RESEND)

    async def buy_and_pay(self, orders: asyncio.Queue[int]) -> None:
        while not orders.empty():
            orders.get_nowait()
            order = await self.until_200(
                "POST", PURCHASE, json=purchase_body(self.project["client_id"], self.item["id"])
            )
            self.bought.append(order)
            notification = self.api.notification(order["order_id"], order["amount"])
            assert await self.until_200("POST", "/callbacks/midtrans", json=notification) == {"status": "ok"}
            self.paid.append(order["order_id"])


@pytest.mark.timeout(240)
async def test_a_primary_killed_under_load_loses_no_acknowledged_payment(
    processes: Processes, merchant: Merchant, tmp_path: Path
) -> None:
    started = time.monotonic()
    cell = RedisCell(processes, tmp_path / "cell", replicas=2, sentinels=3, down_after_ms=1000)
    await cell.start()
    print(f"cell up in {time.monotonic() - started:.1f}s")
    first_primary = await cell.primary_port()
    port = free_port()
    processes.env = relay_env(
        "",  # no Redis host anywhere: only the Sentinels
        RELAY_REDIS_SENTINELS=cell.sentinels,
        RELAY_REDIS_MIN_REPLICAS_ACK="1",
        RELAY_REDIS_ACK_TIMEOUT="1",
        RELAY_RETRY_SCHEDULE="0.2,0.5,1,2,2,2,2,2,2,2",
        RELAY_WORKER_METRICS_PORT="0",
    )
    serve = await processes.start("serve", "serve", "--port", str(port))
    workers = [await processes.start(f"worker-{n}", "worker") for n in (1, 2)]
    url = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession(base_url=url) as http:
        await wait_until_answering(http, "/readyz", what="relay serve")
        settings = make_settings(redis_url=cell.node(first_primary).url)
        key = await midtrans_key_of(cell.node(first_primary).url, settings)
        api = Api(http, settings, url, midtrans_key=key)
        project = await api.project(webhook_url=f"{merchant.url}/hook")
        item = await api.item(project["id"])
        gateway = Gateway(api, project, item)
        orders: asyncio.Queue[int] = asyncio.Queue()
        for n in range(ORDERS):
            orders.put_nowait(n)
        load = [asyncio.create_task(gateway.buy_and_pay(orders)) for _ in range(GATEWAYS)]

        async def enough_paid() -> bool:
            return len(gateway.paid) >= KILL_AFTER

        await eventually(enough_paid, timeout=60, what=f"{KILL_AFTER} payments before the kill")
        gateway.killed_at = time.monotonic()
        await cell.node(first_primary).crash()
        paid_before_kill = len(gateway.paid)
        await asyncio.wait_for(asyncio.gather(*load), timeout=120)

        async def promoted() -> bool:
            return await cell.primary_port() != first_primary

        await eventually(promoted, timeout=30, what="a replica promoted")
        assert len(gateway.paid) == ORDERS
        assert gateway.statuses[503] > 0, "no request met the switch: the kill came too late"

        secret = project["webhook_secret"]

        def delivered() -> dict[str, set[str]]:
            ids: dict[str, set[str]] = defaultdict(set)
            for hit in merchant.hits("/hook"):
                ids[verify(hit, secret)["order_id"]].add(hit.headers["webhook-id"])
            return ids

        async def all_delivered() -> bool:
            return len(delivered()) >= ORDERS

        await eventually(all_delivered, timeout=90, what="every acknowledged payment delivered")
        by_order = delivered()
        assert set(by_order) == set(gateway.paid)
        assert {order_id: len(ids) for order_id, ids in by_order.items() if len(ids) != 1} == {}
        unsettled: list[tuple[str, str, str]] = []

        async def all_settled() -> bool:
            # Each order read back from the new primary. A delivery whose outcome was being written
            # when the primary died stays pending until the worker retries it (the same webhook-id).
            unsettled[:] = []
            for order in gateway.bought:
                purchase = await api.purchase(project["id"], order["order_id"])
                if (purchase["status"], purchase["webhook_status"]) != ("paid", "delivered"):
                    unsettled.append((order["order_id"], purchase["status"], purchase["webhook_status"]))
            return not unsettled

        try:
            await eventually(all_settled, timeout=60, what="every purchase paid and delivered")
        except AssertionError:
            raise AssertionError(f"not paid and delivered: {unsettled[:5]}\n{processes.tail()}") from None
        assert serve.returncode is None, processes.tail()
        assert all(worker.returncode is None for worker in workers), processes.tail()
        hits = [hit.headers["webhook-id"] for hit in merchant.hits("/hook")]
        print(
            f"orders {ORDERS}, paid before the kill {paid_before_kill}, answers {dict(gateway.statuses)}, "
            f"503s until {gateway.last_503:.2f}s after the kill, "
            f"deliveries {len(hits)} (repeated webhook-ids {len(hits) - len(set(hits))})"
        )
