"""Redis restarts mid-run (AOF on): ingress answers 503 while it is down, never 200-then-lost;
the gateway's retry is accepted once it is back; the worker reconnects by itself and delivers."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest
from redis.asyncio import Redis

from tests.helpers import Api, Merchant, StartRelay, eventually, make_settings, midtrans_key_of
from tests.processes import PrivateRedis, Processes, free_port, relay_env, wait_until_answering


@pytest.mark.timeout(120)
async def test_redis_restart_loses_nothing(processes: Processes, merchant: Merchant, tmp_path: Path) -> None:
    data = tmp_path / "redis-data"
    data.mkdir()
    redis = PrivateRedis(processes, data)
    await redis.start()
    port = free_port()
    processes.env = relay_env(
        redis.url, RELAY_RETRY_SCHEDULE="0.2,0.5,1,2,2,2,2,2", RELAY_WORKER_METRICS_PORT=str(free_port())
    )
    serve = await processes.start("serve", "serve", "--port", str(port))
    worker = await processes.start("worker", "worker")
    async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{port}") as http:
        await wait_until_answering(http, "/readyz", what="relay serve")
        settings = make_settings(redis_url=redis.url)
        key = await midtrans_key_of(redis.url, settings)
        api = Api(http, settings, f"http://127.0.0.1:{port}", midtrans_key=key)
        project = await api.project(webhook_url=f"{merchant.url}/hook")
        item = await api.item(project["id"])
        orders = [await api.buy(project["client_id"], item["id"]) for _ in range(20)]
        before, after = orders[:10], orders[10:]
        for order in before:
            await api.pay(order)

        async def delivered(count: int) -> bool:
            return len({hit.headers["webhook-id"] for hit in merchant.hits("/hook")}) >= count

        await eventually(lambda: delivered(10), timeout=20, what="the first ten deliveries")
        await asyncio.sleep(1.5)  # past appendfsync everysec: what was acknowledged is on disk
        await redis.crash()

        for order in after:  # Midtrans's callbacks while Redis is down: 503, never 200
            body = await api.callback(api.notification(order["order_id"], order["amount"]), expect=503)
            assert body["error"] == "StoreUnavailable"
        async with http.get("/readyz") as response:
            assert response.status == 503

        await redis.start()  # same AOF directory
        await wait_until_answering(http, "/readyz", what="relay serve, Redis back,")
        for order in after:  # Midtrans retries
            assert await api.pay(order) == {"status": "ok"}
        await eventually(lambda: delivered(20), timeout=60, what="every delivery after the restart")
        for order in orders:
            purchase = await api.purchase(project["id"], order["order_id"])
            assert purchase["status"] == "paid"
            assert purchase["webhook_status"] == "delivered"
        assert serve.returncode is None, processes.tail()
        assert worker.returncode is None, processes.tail()  # reconnected by itself, no restart
        ids = [hit.headers["webhook-id"] for hit in merchant.hits("/hook")]
        print(f"deliveries: {len(ids)}, distinct: {len(set(ids))}, duplicates: {len(ids) - len(set(ids))}")
        assert len(set(ids)) == 20


async def test_redis_refusing_writes_is_503(
    processes: Processes, tmp_path: Path, start_relay: StartRelay
) -> None:
    """Out of memory (maxmemory with noeviction): the callback is not stored, so it answers 503 and
    the gateway retries, rather than a 500."""
    data = tmp_path / "redis-data"
    data.mkdir()
    redis = PrivateRedis(processes, data)
    await redis.start()
    running = await start_relay(worker=False, redis_url=redis.url)
    project = await running.api.project()
    item = await running.api.item(project["id"])
    order = await running.api.buy(project["client_id"], item["id"])
    client = Redis.from_url(redis.url)
    await client.config_set("maxmemory-policy", "noeviction")
    await client.config_set("maxmemory", "1")
    try:
        body = await running.api.callback(
            running.api.notification(order["order_id"], order["amount"]), expect=503
        )
        assert body["error"] == "StoreUnavailable"
    finally:
        await client.config_set("maxmemory", "0")
        await client.aclose()
    assert (await running.api.purchase(project["id"], order["order_id"]))["status"] == "pending"
