"""Redis through Sentinel (RELAY_REDIS_SENTINELS): the ingress, the worker and the CLI find the
primary through a real ``redis-server --sentinel`` on loopback, with no host of Redis in any URL."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from relay.settings import Settings
from tests.helpers import HOOK, TEST_ENCRYPTION_KEY, Merchant, StartRelay, open_shop, wait_hits
from tests.processes import RedisCell, relay_cli


async def test_the_relay_and_the_cli_find_the_primary_through_the_sentinels(
    start_relay: StartRelay, merchant: Merchant, sentinel_cell: RedisCell
) -> None:
    running = await start_relay(redis_url=None, redis_sentinels=sentinel_cell.sentinels)
    shop = await open_shop(running.api, webhook_url=f"{merchant.url}{HOOK}")
    order = await shop.order()
    await wait_hits(merchant, 1)
    assert (await shop.wait_status(order, "delivered"))["event_id"]
    # What was written is in the primary the Sentinel names.
    primary = Redis(port=await sentinel_cell.primary_port(), decode_responses=True)
    try:
        assert await primary.exists(f"relay:purchase:{order['order_id']}") == 1
    finally:
        await primary.aclose()
    listed = await relay_cli(
        "purchases",
        "list",
        "--project",
        shop.project["id"],
        "--json",
        RELAY_REDIS_SENTINELS=sentinel_cell.sentinels,
        RELAY_ENCRYPTION_KEYS=TEST_ENCRYPTION_KEY,
    )
    assert listed.code == 0, listed.err
    assert [row["order_id"] for row in listed.json_lines()] == [order["order_id"]]


@pytest.mark.parametrize("given", ["", " , ", "redis.internal", "host:port", "host:0", "[::1]:99999"])
def test_sentinels_that_are_no_host_port_are_refused(given: str) -> None:
    with pytest.raises(ValueError, match=r"host:port|comma-separated"):
        Settings(redis_sentinels=given)


def test_sentinels_parse_as_hosts_and_ports() -> None:
    settings = Settings(redis_sentinels="10.0.0.1:26379, sentinel-b:26380,[::1]:26381")
    assert settings.sentinels == [("10.0.0.1", 26379), ("sentinel-b", 26380), ("::1", 26381)]
    assert not settings.embedded
