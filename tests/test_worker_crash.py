"""Crash recovery with real processes: `relay serve` and `relay worker` as subprocesses, workers
SIGKILLed while deliveries are in flight. Every paid purchase must still reach the merchant.

A job whose worker died runs again once its claim (arq's in-progress mark, and the job's lease in
``arq:queue:leases``) runs out (job_timeout + 10 s = delivery timeout + 25 s, so 26 s here);
delivery is at least once, so duplicates are reported, not failed on.
"""

from __future__ import annotations

import asyncio
import random
import signal
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from standardwebhooks import Webhook

from tests.helpers import Api, Merchant, eventually, make_settings, midtrans_key_of
from tests.processes import Processes, free_port, relay_env, wait_until_answering

PURCHASES = 500
KILLS = 3
MERCHANT_DELAY = 0.2
# Few concurrent deliveries per worker, so the 100 take seconds and a kill lands mid-batch.
WORKER_MAX_JOBS = 10


@pytest.fixture
async def processes(redis_url: str, tmp_path: Path) -> AsyncIterator[Processes]:
    env = relay_env(redis_url, RELAY_WORKER_MAX_JOBS=str(WORKER_MAX_JOBS))
    found = Processes(tmp_path, env)
    try:
        yield found
    finally:
        await found.kill_all()


class SlowMerchant:
    """Answers 200 after MERCHANT_DELAY and counts requests still being answered."""

    def __init__(self) -> None:
        self.in_flight = 0

    async def __call__(self, request: web.Request) -> web.Response:
        self.in_flight += 1
        try:
            await asyncio.sleep(MERCHANT_DELAY)
        finally:
            self.in_flight -= 1
        return web.Response(text="ok")


def distinct_ids(merchant: Merchant) -> set[str]:
    return {hit.headers["webhook-id"] for hit in merchant.hits("/hook")}


def duplicates(merchant: Merchant) -> dict[str, int]:
    counts = Counter(hit.headers["webhook-id"] for hit in merchant.hits("/hook"))
    return {event_id: n for event_id, n in sorted(counts.items()) if n > 1}


@dataclass
class Deployment:
    """`relay serve` in a subprocess, a project and an item on it, and a slow merchant."""

    api: Api
    project: dict[str, Any]
    item: dict[str, Any]
    merchant: Merchant
    slow: SlowMerchant
    processes: Processes

    async def paid_purchases(self, count: int) -> list[str]:
        """``count`` purchases, bought and settled through the relay; their order ids."""
        gate = asyncio.Semaphore(20)

        async def one() -> str:
            async with gate:
                order = await self.api.buy(self.project["client_id"], self.item["id"])
                assert await self.api.pay(order) == {"status": "ok"}
                return str(order["order_id"])

        return list(await asyncio.gather(*(one() for _ in range(count))))

    async def purchases(self) -> dict[str, dict[str, Any]]:
        path = f"/api/platform/projects/{self.project['id']}/item-purchases"
        body = await self.api.call("GET", path, params={"limit": "1000"})
        return {purchase["order_id"]: purchase for purchase in body["purchases"]}

    async def wait_all_delivered(self, count: int, *, timeout: float) -> None:
        async def arrived() -> bool:
            return len(distinct_ids(self.merchant)) == count

        async def delivered() -> bool:
            states = [p["webhook_status"] for p in (await self.purchases()).values()]
            return states == ["delivered"] * count

        deadline = asyncio.get_running_loop().time() + timeout
        await eventually(arrived, timeout=timeout, what=f"all {count} events at the merchant")
        left = deadline - asyncio.get_running_loop().time()
        await eventually(delivered, timeout=left, what="every purchase marked delivered")

    async def check_every_delivery(self, orders: list[str]) -> None:
        """Each event reached the merchant, verifiably signed, and is the purchase's event."""
        purchases = await self.purchases()
        assert set(purchases) == set(orders)
        assert distinct_ids(self.merchant) == {p["event_id"] for p in purchases.values()}
        webhook = Webhook(self.project["webhook_secret"])
        for hit in self.merchant.hits("/hook"):
            order_id = webhook.verify(hit.body, hit.headers)["order_id"]
            assert purchases[order_id]["event_id"] == hit.headers["webhook-id"]

    async def stop_mid_delivery(self, worker: asyncio.subprocess.Process, *, at: int, sig: int) -> int:
        """Send ``sig`` to ``worker`` once the merchant has seen ``at`` events and is still answering
        some; wait for it to exit. Returns how many requests were in flight."""

        async def mid_batch() -> bool:
            return len(distinct_ids(self.merchant)) >= at and self.slow.in_flight > 0

        await eventually(mid_batch, timeout=30, what=f"{at} events seen with deliveries in flight")
        in_flight = self.slow.in_flight
        worker.send_signal(sig)
        await asyncio.wait_for(worker.wait(), timeout=15)
        return in_flight


@pytest.fixture
async def deployment(processes: Processes, merchant: Merchant) -> AsyncIterator[Deployment]:
    slow = SlowMerchant()
    merchant.script["/hook"] = [slow]
    port = free_port()
    await processes.start("serve", "serve", "--port", str(port))
    async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{port}") as http:
        try:
            await wait_until_answering(http, what="relay serve")
            settings = make_settings()
            key = await midtrans_key_of(str(settings.redis_url), settings)
            api = Api(http, settings, f"http://127.0.0.1:{port}", midtrans_key=key)
            project = await api.project(webhook_url=f"{merchant.url}/hook")
            item = await api.item(project["id"])
            yield Deployment(api, project, item, merchant, slow, processes)
        finally:
            print(processes.tail())  # pytest shows it when the test fails


def elapsed_since(started: float) -> float:
    return asyncio.get_running_loop().time() - started


@pytest.mark.timeout(240)
async def test_sigkilled_workers_lose_no_event(deployment: Deployment) -> None:
    orders = await deployment.paid_purchases(PURCHASES)
    seed = random.randrange(2**32)
    # KILLS random moments, spread over the batch: after how many distinct events each kill lands.
    span = PURCHASES * 3 // 4 // KILLS
    moments = [index * span + random.Random(seed + index).randrange(10, span) for index in range(KILLS)]
    print(f"\nkill moments (seed {seed}): after {moments} events")
    started = asyncio.get_running_loop().time()
    start_worker = deployment.processes.start
    killed = []
    for index, moment in enumerate(moments, start=1):
        worker = await start_worker(f"worker-{index}", "worker")
        killed.append(await deployment.stop_mid_delivery(worker, at=moment, sig=signal.SIGKILL))
    await start_worker(f"worker-{KILLS + 1}", "worker")

    # Deliveries cut off by a kill finish only when arq re-runs their jobs (~26 s later).
    await deployment.wait_all_delivered(PURCHASES, timeout=150)
    took = elapsed_since(started)
    await deployment.check_every_delivery(orders)

    hits = deployment.merchant.hits("/hook")
    repeated = duplicates(deployment.merchant)
    print(
        f"\nSIGKILL: {PURCHASES} events all delivered after {took:.1f}s through {KILLS} kills "
        f"(requests in flight at the kills: {killed}); {len(hits)} requests, "
        f"{len(repeated)} events delivered more than once: {repeated}"
    )
    # At least once, but bounded: only a job cut off by a kill (at most max_jobs per kill) repeats.
    assert len(hits) <= PURCHASES + KILLS * WORKER_MAX_JOBS


@pytest.mark.timeout(120)
async def test_sigterm_lets_in_flight_deliveries_finish(deployment: Deployment) -> None:
    """`relay worker` on SIGTERM stops taking jobs, finishes the ones in flight and exits: no
    delivery is cut off, so nothing is sent twice and nothing waits for arq's in-progress timeout."""
    orders = await deployment.paid_purchases(PURCHASES // 2)
    worker = await deployment.processes.start("worker-1", "worker")
    in_flight = await deployment.stop_mid_delivery(worker, at=20, sig=signal.SIGTERM)
    assert worker.returncode == 0
    stopped_at = len(distinct_ids(deployment.merchant))
    assert stopped_at < PURCHASES // 2, "the worker finished everything before the signal landed"

    started = asyncio.get_running_loop().time()
    await deployment.processes.start("worker-2", "worker")
    await deployment.wait_all_delivered(PURCHASES // 2, timeout=20)
    took = elapsed_since(started)
    await deployment.check_every_delivery(orders)
    print(f"\nSIGTERM with {in_flight} requests in flight; the rest delivered {took:.1f}s after restart")
    assert duplicates(deployment.merchant) == {}
    assert took < 15, "a delivery cut off by SIGTERM had to wait for arq's in-progress timeout"
