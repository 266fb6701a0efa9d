"""Per-endpoint isolation: a hanging merchant holds at most RELAY_WORKER_HOST_CONCURRENCY of a
worker's slots; deliveries to healthy merchants keep flowing, and postponing spends no attempt."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from tests.helpers import ADMIN, Merchant, StartRelay, eventually, local_server
from workers.isolation import HostLimiter


class Hanging:
    """A merchant that never answers within the delivery timeout; counts concurrent requests."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.most = 0
        self.requests = 0
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            await asyncio.sleep(30)
        finally:
            self.in_flight -= 1
        return web.Response(text="too late")


@pytest.fixture
async def hanging() -> AsyncIterator[Hanging]:
    found = Hanging()
    app = web.Application()
    app.router.add_post("/{tail:.*}", found.handle)
    async with local_server(app, shutdown_timeout=0.1) as found.url:
        yield found


@pytest.mark.timeout(60)
async def test_hanging_endpoint_does_not_starve_others(
    start_relay: StartRelay, merchant: Merchant, hanging: Hanging
) -> None:
    running = await start_relay(
        worker_max_jobs=6, worker_host_concurrency=2, delivery_timeout=3, retry_schedule=(60.0,)
    )
    api = running.api
    project = await api.project(webhook_url=f"{merchant.url}/ok")
    slow_item = await api.item(project["id"], webhook_url=f"{hanging.url}/hook")
    fast_item = await api.item(project["id"])
    slow_orders = [await api.buy(project["client_id"], slow_item["id"]) for _ in range(8)]
    for order in slow_orders:
        await api.pay(order)

    async def hanging_saturated() -> bool:
        return hanging.in_flight == 2

    await eventually(hanging_saturated, what="the hanging endpoint to hold its share of slots")
    started = time.monotonic()
    fast_orders = [await api.buy(project["client_id"], fast_item["id"]) for _ in range(20)]
    for order in fast_orders:
        await api.pay(order)

    async def fast_delivered() -> bool:
        return len(merchant.hits("/ok")) == len(fast_orders)

    await eventually(fast_delivered, timeout=10, what="every healthy delivery")
    elapsed = time.monotonic() - started
    # Well before the hanging requests time out (3 s): the healthy ones did not wait behind them.
    assert elapsed < 2.5, elapsed
    assert hanging.most == 2
    postponed = [await api.purchase(project["id"], order["order_id"]) for order in slow_orders]
    # Postponed events spent no attempt: only the ones actually sent have one (and none failed yet).
    assert sum(len(purchase["attempts"]) for purchase in postponed) <= 2
    async with api.http.get("/metrics", headers=ADMIN) as response:
        text = await response.text()
    line = next(line for line in text.splitlines() if line.startswith("relay_deliveries_postponed_total "))
    assert float(line.split()[1]) >= 6


# --- HostLimiter ------------------------------------------------------------------------------

HOST = "http://merchant.test:80"


async def test_a_full_but_healthy_endpoint_is_waited_for_first_come_first_served() -> None:
    limiter = HostLimiter(1, stall_after=5.0)
    first = await limiter.acquire(HOST)
    assert first is not None
    second = asyncio.create_task(limiter.acquire(HOST))
    third = asyncio.create_task(limiter.acquire(HOST))
    await asyncio.sleep(0.01)
    assert not second.done()
    assert not third.done()
    limiter.release(HOST, first)
    token = await second
    assert token is not None
    assert not third.done()
    limiter.release(HOST, token)
    last = await third
    assert last is not None
    limiter.release(HOST, last)
    assert limiter.in_flight(HOST) == 0


async def test_a_stuck_endpoint_is_given_up_on_after_stall_after() -> None:
    limiter = HostLimiter(1, stall_after=0.1)
    held = await limiter.acquire(HOST)
    assert held is not None
    started = time.monotonic()
    assert await limiter.acquire(HOST) is None
    assert 0.08 <= time.monotonic() - started < 1.0
    # Once the oldest request has been out that long, later deliveries give up at once.
    started = time.monotonic()
    assert await limiter.acquire(HOST) is None
    assert time.monotonic() - started < 0.05
    assert await limiter.acquire("http://other.test:80") is not None


async def test_a_cancelled_waiter_takes_no_slot() -> None:
    limiter = HostLimiter(1, stall_after=5.0)
    held = await limiter.acquire(HOST)
    assert held is not None
    waiting = asyncio.create_task(limiter.acquire(HOST))
    await asyncio.sleep(0.01)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    limiter.release(HOST, held)
    assert limiter.in_flight(HOST) == 0
    assert await limiter.acquire(HOST) is not None
