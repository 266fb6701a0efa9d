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
        return hanging.in_flight >= 1

    await eventually(hanging_saturated, what="the hanging endpoint to hold a slot")
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
    # Never proven quick, it had one request at a time (the server counts the abandoned ones too).
    assert hanging.most <= 2, hanging.most
    postponed = [await api.purchase(project["id"], order["order_id"]) for order in slow_orders]
    # Postponed events spent no attempt: only the ones actually sent have one (and none failed yet).
    assert sum(len(purchase["attempts"]) for purchase in postponed) <= 2
    async with api.http.get("/metrics", headers=ADMIN) as response:
        text = await response.text()
    line = next(line for line in text.splitlines() if line.startswith("relay_deliveries_postponed_total "))
    assert float(line.split()[1]) >= 6


# --- HostLimiter ------------------------------------------------------------------------------

HOST = "http://merchant.test:80"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def proven(limiter: HostLimiter, key: str) -> None:
    """Make ``key`` proven: one request that finishes at once."""
    slot = await limiter.acquire(key)
    assert slot is not None
    limiter.release(key, slot)


async def test_a_merchant_answering_in_half_a_second_stays_proven() -> None:
    clock = Clock()
    limiter = HostLimiter(10, stuck_slots=1, slow_after=1.0, clock=clock)
    await proven(limiter, HOST)
    slot = await limiter.acquire(HOST)
    assert slot is not None
    clock.now += 0.5
    limiter.release(HOST, slot)
    slots = [await limiter.acquire(HOST) for _ in range(10)]  # proven still: ten at a time
    assert all(slot is not None for slot in slots)


async def test_an_endpoint_gets_one_request_at_a_time_until_one_finishes_quickly() -> None:
    limiter = HostLimiter(3, stall_after=5.0)
    probe = await limiter.acquire(HOST)
    assert probe is not None
    waiting = [asyncio.create_task(limiter.acquire(HOST)) for _ in range(4)]
    await asyncio.sleep(0.01)
    assert limiter.in_flight(HOST) == 1
    assert not any(task.done() for task in waiting)
    limiter.release(HOST, probe)  # quick: proven, three at a time now
    await asyncio.sleep(0.01)
    assert limiter.in_flight(HOST) == 3
    assert sum(task.done() for task in waiting) == 3
    for task in waiting:
        task.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)


async def test_endpoints_not_proven_hold_at_most_the_stuck_share() -> None:
    clock = Clock()
    limiter = HostLimiter(10, stuck_slots=2, stall_after=0.2, clock=clock)
    await proven(limiter, "http://healthy.test:80")
    held = [await limiter.acquire(f"http://dead-{n}.test:80") for n in range(2)]
    assert all(slot is not None for slot in held)
    # The share is taken: past it, a never-seen endpoint may have one trial request, out of a
    # reserve (a fifth of the share, at least one); the next is postponed at once.
    assert await limiter.acquire("http://dead-2.test:80") is not None
    assert await limiter.acquire("http://dead-3.test:80") is None
    assert limiter.suspect_in_flight() == 3
    # A proven endpoint is not held back by them.
    slots = [await limiter.acquire("http://healthy.test:80") for _ in range(10)]
    assert all(slot is not None for slot in slots)


async def test_a_proven_endpoint_that_hangs_counts_in_the_share_and_a_slow_one_is_proven_no_more() -> None:
    clock = Clock()
    limiter = HostLimiter(10, stuck_slots=3, stall_after=0.2, slow_after=1.0, clock=clock)
    await proven(limiter, HOST)
    hanging = [await limiter.acquire(HOST) for _ in range(3)]
    assert all(slot is not None for slot in hanging)
    clock.now += 0.5  # slow, not stuck yet: a merchant answering in half a second is healthy
    assert limiter.suspect_in_flight() == 0
    clock.now += 0.6  # its requests are stuck now
    assert limiter.suspect_in_flight() == 3
    assert await limiter.acquire(HOST) is None  # stuck: postponed
    trial = await limiter.acquire("http://new.test:80")  # the share is taken: its trial, from the reserve
    assert trial is not None
    assert await limiter.acquire("http://newer.test:80") is None  # the reserve is taken too
    limiter.release("http://new.test:80", trial)
    for slot in hanging:
        assert slot is not None
        limiter.release(HOST, slot)  # slow: proven no more
    assert await limiter.acquire(HOST) is not None
    assert await limiter.acquire("http://new.test:80") is not None  # the share is free again
    assert limiter.in_flight(HOST) == 1


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


async def test_a_release_between_a_waiters_timeout_and_its_wakeup_raises_nothing() -> None:
    """A waiter's wait times out, and before it resumes the endpoint's last slot is released (its
    lists are dropped): the waiter reads them anew and takes the slot."""
    limiter = HostLimiter(10, stuck_slots=50, stall_after=0.05)
    key = "https://shop.example:443"
    held = await limiter.acquire(key)  # not proven: cap 1
    assert held is not None
    waiting = asyncio.ensure_future(limiter.acquire(key))
    await asyncio.sleep(0)
    [waiter] = limiter._waiters[key]
    while not waiter.done():  # the timeout cancels it
        await asyncio.sleep(0)
    limiter.release(key, held)  # a request finishing in the same loop turn
    slot = await waiting
    assert slot is not None
    limiter.release(key, slot)


async def test_a_never_seen_endpoint_has_its_trial_while_dead_ones_fill_the_share() -> None:
    """Two dead endpoints hold the share: a merchant this worker has never seen still gets the one
    request that can prove it (out of the trial reserve)."""
    limiter = HostLimiter(10, stuck_slots=2)
    for dead in ("https://dead-1:443", "https://dead-2:443"):
        assert await limiter.acquire(dead) is not None
    assert await limiter.acquire("https://healthy:443") is not None, "healthy newcomer postponed"
