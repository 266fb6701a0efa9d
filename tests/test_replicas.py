"""Acknowledged means replicated (RELAY_REDIS_MIN_REPLICAS_ACK): a write the relay acknowledges is
on the replicas first, else 503. Real redis-servers on loopback: a primary and a replica the test
pauses (SIGSTOP) to make it stop confirming."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from redis.asyncio import Redis

from relay.errors import StoreUnavailable
from relay.metrics import Metrics
from relay.replicas import Replicas
from relay.settings import Settings
from tests.console_client import console_client
from tests.helpers import (
    ADMIN_TOKEN,
    PURCHASE,
    TEST_ENCRYPTION_KEY,
    Merchant,
    StartRelay,
    assert_error,
    eventually,
    open_shop,
    purchase_body,
)
from tests.processes import Processes, RedisCell, relay_cli

pytestmark = pytest.mark.integration
MARKER = "t:replicated"


@pytest.fixture
async def cell(processes: Processes, tmp_path: Path) -> AsyncIterator[RedisCell]:
    """A primary and one replica (no Sentinel); the replica runs again at the end if paused."""
    found = RedisCell(processes, tmp_path / "cell", replicas=1, sentinels=0)
    await found.start()
    yield found
    found.nodes[1].resume()


@pytest.fixture
async def primary(cell: RedisCell) -> AsyncIterator[Redis]:
    client = Redis.from_url(cell.nodes[0].url)
    yield client
    await client.aclose()


@pytest.fixture
async def waits(primary: Redis) -> AsyncIterator[Callable[..., Replicas]]:
    """Makes ``Replicas`` over the cell's primary (marker ``t:replicated``), closed at the end."""
    made: list[Replicas] = []

    def make(replicas: int = 1, timeout: float = 1.0, metrics: Metrics | None = None) -> Replicas:
        made.append(Replicas(primary, replicas=replicas, timeout=timeout, marker=MARKER, metrics=metrics))
        return made[-1]

    yield make
    for each in made:
        await each.aclose()


def confirms(replicas: Replicas) -> Callable[[], Awaitable[bool]]:
    async def confirmed() -> bool:
        try:
            await replicas.confirm()
        except StoreUnavailable:
            return False
        return True

    return confirmed


def primary_url(cell: RedisCell) -> str:
    return cell.nodes[0].url


async def test_confirmed_writes_are_on_the_replica_and_a_burst_shares_rounds(
    cell: RedisCell, primary: Redis, waits: Callable[..., Replicas]
) -> None:
    metrics = Metrics()
    replicas = waits(metrics=metrics)
    # Writes made on other connections, as the ingress's pipelines make them.
    await asyncio.gather(*(primary.set(f"t:{n}", n) for n in range(200)))
    await asyncio.gather(*(replicas.confirm() for _ in range(200)))
    async with Redis(port=cell.nodes[1].port) as replica:
        assert await replica.mget([f"t:{n}" for n in range(200)]) == [str(n).encode() for n in range(200)]
    # 200 callers at once: the first round, and one more for everyone who came meanwhile.
    assert replicas.rounds <= 2
    confirmed = metrics.registry.get_sample_value("relay_replica_waits_total", {"result": "confirmed"})
    assert confirmed == replicas.rounds


async def test_a_replica_that_does_not_confirm_is_503_within_the_timeout(
    cell: RedisCell, primary: Redis, waits: Callable[..., Replicas]
) -> None:
    metrics = Metrics()
    replicas, wants_two = waits(timeout=0.3, metrics=metrics), waits(replicas=2, timeout=0.2)
    await replicas.confirm()
    cell.nodes[1].pause()
    # A write on another connection: the round's own marker must carry WAIT past it.
    await primary.set("t:late", "1")
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="not confirmed by 1 Redis replica"):
        await replicas.confirm()
    assert 0.3 <= time.monotonic() - started < 2.0
    assert metrics.registry.get_sample_value("relay_replica_waits_total", {"result": "timeout"}) == 1
    cell.nodes[1].resume()
    await eventually(confirms(replicas), what="the replica to confirm again")
    with pytest.raises(StoreUnavailable, match="not confirmed by 2 Redis replica"):
        await wants_two.confirm()  # there is one


async def test_a_caller_that_goes_away_leaves_the_round_to_the_others(
    cell: RedisCell, waits: Callable[..., Replicas]
) -> None:
    replicas = waits()
    cell.nodes[1].pause()
    leaving = asyncio.create_task(replicas.confirm())
    staying = asyncio.create_task(replicas.confirm())
    await asyncio.sleep(0.05)
    leaving.cancel()
    cell.nodes[1].resume()
    await staying
    assert leaving.cancelled()


async def test_callers_who_come_while_a_round_is_out_share_the_next_one(
    cell: RedisCell, waits: Callable[..., Replicas]
) -> None:
    replicas = waits(timeout=2.0)
    cell.nodes[1].pause()  # the first round's WAIT stays out
    first = asyncio.create_task(replicas.confirm())
    await asyncio.sleep(0.1)
    assert replicas.rounds == 1
    later = [asyncio.create_task(replicas.confirm()) for _ in range(50)]
    await asyncio.sleep(0.05)
    cell.nodes[1].resume()
    await asyncio.gather(first, *later)
    assert replicas.rounds == 2


async def test_rounds_cancelled_midway_leave_no_caller_hanging(
    cell: RedisCell, waits: Callable[..., Replicas]
) -> None:
    replicas = waits(timeout=2.0)
    cell.nodes[1].pause()
    waiting = [asyncio.create_task(replicas.confirm()) for _ in range(3)]
    await asyncio.sleep(0.1)
    running = replicas._running
    assert running is not None
    running.cancel()  # as when the process stops
    for caller in waiting:
        with pytest.raises(StoreUnavailable):
            await asyncio.wait_for(caller, timeout=1)
    cell.nodes[1].resume()
    await eventually(confirms(replicas), what="rounds to start again")


async def test_with_none_asked_nothing_is_sent() -> None:
    closed = Redis(port=1)  # nothing listens there: a round would fail
    replicas = Replicas(closed, replicas=0, timeout=1.0, marker="t:replicated")
    await replicas.confirm()
    assert replicas.rounds == 0
    await replicas.aclose()
    await closed.aclose()


async def test_what_the_relay_acknowledges_is_on_the_replica_or_503(
    start_relay: StartRelay, merchant: Merchant, cell: RedisCell
) -> None:
    running = await start_relay(
        redis_url=primary_url(cell), redis_min_replicas_ack=1, redis_ack_timeout=1.0, worker=False
    )
    api = running.api
    shop = await open_shop(api, webhook_url=f"{merchant.url}/hook")
    first, second = await shop.buy(), await shop.buy()
    replica = Redis(port=cell.nodes[1].port, decode_responses=True)
    try:
        assert await api.pay(first) == {"status": "ok"}
        # Answered 200: the replica already holds the payment.
        assert await replica.hget(f"relay:purchase:{first['order_id']}", "status") == "paid"

        async with console_client(running.url) as console:
            await console.login()
            csrf = await console.csrf()
            cell.nodes[1].pause()
            body = await api.callback(api.notification(second["order_id"], second["amount"]), expect=503)
            assert_error(body, "StoreUnavailable", mentions="replica")
            project_id = shop.project["id"]
            body = await api.call(
                "POST", f"/api/platform/projects/{project_id}/webhook-secret/rotate", expect=503
            )
            assert_error(body, "StoreUnavailable")
            purchase = purchase_body(shop.project["client_id"], shop.item["id"])
            body = await api.call("POST", PURCHASE, json=purchase, auth=False, expect=503)
            assert_error(body, "StoreUnavailable")
            # A console form's redirect acknowledges its writes too: the HTML error page instead.
            page = await console.post(
                f"/console/projects/{project_id}/purchases/{first['order_id']}/retry",
                {"csrf_token": csrf},
                expect=503,
            )
            assert page.content_type == "text/html"
            # Reads need no confirmation.
            assert (await shop.purchase(first))["status"] == "paid"

        cell.nodes[1].resume()
        assert await api.pay(second) == {"status": "ok"}  # the gateway's resend
        assert await replica.hget(f"relay:purchase:{second['order_id']}", "status") == "paid"
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{running.url}/metrics", headers=headers) as got,
        ):
            text = await got.text()
        assert 'relay_replica_waits_total{result="timeout"}' in text
    finally:
        cell.nodes[1].resume()
        await replica.aclose()


async def test_a_worker_sends_no_event_the_replicas_have_not_confirmed(
    start_relay: StartRelay, merchant: Merchant, cell: RedisCell
) -> None:
    running = await start_relay(
        redis_url=primary_url(cell), redis_min_replicas_ack=1, redis_ack_timeout=1.0, sweep_interval=1
    )
    api = running.api
    shop = await open_shop(api, webhook_url=f"{merchant.url}/hook")
    order = await shop.buy()
    cell.nodes[1].pause()
    try:
        # Stored on the primary and queued, but not on the replica: answered 503, and not sent.
        await api.callback(api.notification(order["order_id"], order["amount"]), expect=503)
        await asyncio.sleep(2.5)  # the worker took the job, and the sweeper gave it back at least once
        assert merchant.hits("/hook") == []
    finally:
        cell.nodes[1].resume()
    assert await api.pay(order) == {"status": "ok"}  # the gateway's resend: the same event
    await shop.wait_status(order, "delivered", timeout=20)
    assert len({hit.headers["webhook-id"] for hit in merchant.hits("/hook")}) == 1


async def test_the_cli_reports_a_write_the_replicas_did_not_confirm(cell: RedisCell) -> None:
    env = {
        "RELAY_REDIS_URL": primary_url(cell),
        "RELAY_ENCRYPTION_KEYS": TEST_ENCRYPTION_KEY,
        "RELAY_REDIS_MIN_REPLICAS_ACK": "1",
        "RELAY_REDIS_ACK_TIMEOUT": "0.3",
    }
    confirmed = await relay_cli("dlq", "replay", "--all", **env)
    assert confirmed.code == 0, confirmed.err
    assert confirmed.out.splitlines()[-1] == "replayed 0"
    cell.nodes[1].pause()
    try:
        refused = await relay_cli("dlq", "replay", "--all", **env)
    finally:
        cell.nodes[1].resume()
    assert refused.code == 1
    assert "not confirmed by 1 Redis replica" in refused.err
    assert "Traceback" not in refused.err


def test_the_embedded_store_has_no_replicas_to_wait_for() -> None:
    with pytest.raises(ValueError, match="RELAY_REDIS_MIN_REPLICAS_ACK: the embedded store has no replicas"):
        Settings(redis_min_replicas_ack=1)
    assert Settings(redis_min_replicas_ack=1, redis_url="redis://127.0.0.1:6379/0").redis_ack_timeout == 1.0
    with pytest.raises(ValueError, match="greater than 0"):
        Settings(redis_ack_timeout=0)
