"""A relay that runs for years, end to end on a real Redis with relays on loopback: retention brings
Redis back to its baseline, a window of events is replayed with its webhook-ids, endpoints that fail
too long are disabled and enabled again, callbacks for unknown orders are readable, and the CLI
exports orders and replays windows."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from redis.asyncio import Redis

from tests.helpers import (
    HOOK,
    Merchant,
    Shop,
    StartRelay,
    assert_error,
    eventually,
    start_shop,
    verify,
    wait_hits,
)

FAST = {"retry_schedule": (0.1,), "purchase_rate_limit": 0, "sweep_interval": 1}


async def wait_delivered(shop: Shop, orders: list[dict[str, Any]]) -> None:
    for order in orders:
        await shop.wait_status(order, "delivered")


async def delivered_shop(
    start_relay: StartRelay, merchant: Merchant, paid: int
) -> tuple[Shop, datetime, list[dict[str, Any]]]:
    """A shop, the time just before its orders, and ``paid`` orders delivered."""
    shop = await start_shop(start_relay, merchant, **FAST)
    start = datetime.now(UTC) - timedelta(seconds=1)
    orders = [await shop.order() for _ in range(paid)]
    await wait_delivered(shop, orders)
    return shop, start, orders


async def lasting_keys(redis: Redis) -> int:
    """Keys without an expiry: what would fill Redis if nothing deleted it (arq's claims, rate-limit
    windows and console sessions expire by themselves)."""
    keys = [key async for key in redis.scan_iter(count=1000)]
    async with redis.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.ttl(key)
        ttls = await pipe.execute()
    return sum(1 for ttl in ttls if ttl == -1)


async def test_retention_in_seconds_brings_keys_and_memory_back_to_their_baseline(
    start_relay: StartRelay, merchant: Merchant, redis: Redis
) -> None:
    shop = await start_shop(
        start_relay, merchant, retention=1, dead_letter_retention=1, purchase_expiry=1, **FAST
    )

    async def round_of(count: int) -> None:
        # Delivered: counted at the merchant, as retention in seconds may delete an order before
        # it could be read back.
        before = len(merchant.hits())
        for number in range(count):
            await shop.order(pay=number % 5 != 0)
        await wait_hits(merchant, before + sum(1 for number in range(count) if number % 5 != 0), timeout=30)

    async def drained() -> bool:
        return await redis.hget("relay:stats", "orders") == "0"

    # A first round makes the keys that stay (the counter, the endpoint's health, arq's own).
    await round_of(10)
    await eventually(drained, timeout=20, what="the first round deleted")
    baseline_keys = await lasting_keys(redis)
    baseline_memory = (await redis.info("memory"))["used_memory"]

    # The peak while the round runs (retention in seconds deletes its first orders before its last
    # are made, sooner on a busy machine): purchases, events, attempt logs.
    peak_keys, grown = 0, 0
    writing = asyncio.create_task(round_of(200))
    while not writing.done():
        peak_keys = max(peak_keys, await lasting_keys(redis))
        grown = max(grown, (await redis.info("memory"))["used_memory"])
        await asyncio.sleep(0.05)
    await writing
    assert peak_keys > baseline_keys + 300
    assert grown > baseline_memory + 100_000

    await eventually(drained, timeout=30, what="every order deleted")

    async def back_to_baseline() -> bool:
        return await lasting_keys(redis) <= baseline_keys

    await eventually(back_to_baseline, timeout=10, what="the key count back to its baseline")
    memory = (await redis.info("memory"))["used_memory"]
    assert memory < baseline_memory + 0.1 * (grown - baseline_memory), (baseline_memory, grown, memory)
    assert await redis.zcard(f"relay:project:{shop.project['id']}:purchases") == 0
    assert await redis.zcard("relay:retention") == 0


async def test_a_window_of_events_is_sent_again_with_its_webhook_ids(
    start_relay: StartRelay, merchant: Merchant
) -> None:
    shop, before, orders = await delivered_shop(start_relay, merchant, 3)
    event_ids = {(await shop.purchase(order))["event_id"] for order in orders}
    api, project_id = shop.api, shop.project["id"]

    body = {"project_id": project_id, "since": before.isoformat()}
    assert await api.call("POST", "/api/admin/events/replay", json=body) == {"replayed": 3}
    await wait_hits(merchant, 6)
    resent = merchant.hits(HOOK)[3:]
    assert {hit.headers["webhook-id"] for hit in resent} == event_ids
    for hit in resent:
        verify(hit, shop.secret)  # signed afresh, verifiable
    await wait_delivered(shop, orders)

    # A state filter, and a window that ends before them: nothing.
    failed = body | {"webhook_status": "failed"}
    assert await api.call("POST", "/api/admin/events/replay", json=failed) == {"replayed": 0}
    early = {"project_id": project_id, "since": "2020-01-01T00:00:00", "until": before.isoformat()}
    assert await api.call("POST", "/api/admin/events/replay", json=early) == {"replayed": 0}

    backwards = body | {"until": (before - timedelta(days=1)).isoformat()}
    refused = await api.call("POST", "/api/admin/events/replay", json=backwards, expect=400)
    assert_error(refused, "InvalidInput", mentions="until")
    missing = {"project_id": "no-such-project", "since": before.isoformat()}
    assert_error(await api.call("POST", "/api/admin/events/replay", json=missing, expect=404), "NotFound")
    no_since = {"project_id": project_id}
    assert_error(
        await api.call("POST", "/api/admin/events/replay", json=no_since, expect=400), "InvalidInput"
    )


async def test_an_endpoint_failing_too_long_is_disabled_then_enabled_and_replayed(
    start_relay: StartRelay, merchant: Merchant
) -> None:
    merchant.script[HOOK] = [503]
    shop = await start_shop(
        start_relay, merchant, endpoint_disable_after=0.5, retry_schedule=(0.3, 0.3, 0.3, 0.3)
    )
    api, project_id = shop.api, shop.project["id"]
    first = await shop.order()
    await shop.wait_status(first, "failed", timeout=15)
    [health] = (await api.call("GET", f"/api/platform/projects/{project_id}/endpoints"))["endpoints"]
    assert health["url"] == f"{merchant.url}{HOOK}"
    assert health["state"] == "disabled"
    assert health["failing_since"]
    assert health["disabled_at"]

    sent = len(merchant.hits(HOOK))
    second = await shop.order()
    await shop.wait_status(second, "failed")
    assert len(merchant.hits(HOOK)) == sent  # nothing sent to a disabled endpoint
    [row] = [
        row for row in (await api.dead_letters())["dead_letters"] if row["order_id"] == second["order_id"]
    ]
    assert row["reason"] == "endpoint_disabled"

    unknown = {"url": "https://never-used.example/hook"}
    path = f"/api/platform/projects/{project_id}/endpoints/enable"
    assert_error(await api.call("POST", path, json=unknown, expect=404), "NotFound")
    merchant.script[HOOK] = [200]
    enabled = await api.call("POST", path, json={"url": health["url"]})
    assert enabled["endpoint"]["state"] == "healthy"
    assert enabled["endpoint"]["failing_since"] is None
    replay = {"all": True, "project_id": project_id}
    assert await api.call("POST", "/api/admin/dead-letters/replay", json=replay) == {"replayed": 2}
    await wait_delivered(shop, [first, second])
    [health] = (await api.call("GET", f"/api/platform/projects/{project_id}/endpoints"))["endpoints"]
    assert health["state"] == "healthy"
    assert health["last_success_at"]


async def test_callbacks_for_unknown_orders_are_listed_newest_first(start_relay: StartRelay) -> None:
    running = await start_relay(worker=False)
    api = running.api
    for order_id in ("nobody-1", "nobody-2"):
        assert await api.callback(api.notification(order_id, 1000)) == {"status": "ok"}
    found = (await api.call("GET", "/api/admin/unmatched-callbacks"))["callbacks"]
    assert [entry["order_id"] for entry in found] == ["nobody-2", "nobody-1"]
    assert found[0]["gateway"] == "midtrans"
    assert found[0]["status"] == "settlement"
    one = (await api.call("GET", "/api/admin/unmatched-callbacks", params={"limit": "1"}))["callbacks"]
    assert [entry["order_id"] for entry in one] == ["nobody-2"]
    await api.call("GET", "/api/admin/unmatched-callbacks", auth=False, expect=401)


async def test_export_writes_each_order_with_its_events_and_attempts(
    cli: Any,
    start_relay: StartRelay,
    merchant: Merchant,
) -> None:
    shop, start, paid = await delivered_shop(start_relay, merchant, 3)
    unpaid = await shop.order(pay=False)

    result = await cli("export", "--since", start.isoformat(), "--project", shop.project["id"])
    assert result.code == 0, result.err
    lines = result.json_lines()
    assert [line["order"]["order_id"] for line in lines] == [order["order_id"] for order in [*paid, unpaid]]
    for line, order in zip(lines, paid, strict=False):
        [event] = line["events"]
        assert json.loads(event["body"])["order_id"] == order["order_id"]
        assert event["state"] == "delivered"
        assert [attempt["status_code"] for attempt in event["attempts"]] == [200]
    assert lines[-1]["events"] == []
    assert "exported 4 orders" in result.err

    later = await cli("export", "--since", datetime.now(UTC).isoformat())
    assert (later.code, later.json_lines()) == (0, [])
    bad = await cli("export", "--since", "yesterday")
    assert bad.code != 0
    assert "since" in bad.err.lower()


async def test_cli_events_replay_sends_a_window_again(
    cli: Any,
    start_relay: StartRelay,
    merchant: Merchant,
) -> None:
    shop, start, _ = await delivered_shop(start_relay, merchant, 2)

    result = await cli("events", "replay", "--project", shop.project["id"], "--since", start.isoformat())
    assert result.code == 0, result.err
    assert "replayed 2" in result.out
    await wait_hits(merchant, 4)
    await asyncio.sleep(0)
    first_ids = [hit.headers["webhook-id"] for hit in merchant.hits(HOOK)[:2]]
    assert sorted(hit.headers["webhook-id"] for hit in merchant.hits(HOOK)[2:]) == sorted(first_ids)

    missing = await cli("events", "replay", "--project", "no-such", "--since", start.isoformat())
    assert missing.code == 1
    assert "no-such" in missing.err


async def test_cli_retention_backfill_schedules_orders_an_older_relay_left(
    cli: Any,
    start_relay: StartRelay,
    merchant: Merchant,
    redis: Redis,
) -> None:
    shop = await start_shop(start_relay, merchant, **FAST)
    delivered = await shop.order()
    unpaid = await shop.order(pay=False)
    await shop.wait_status(delivered, "delivered")
    await redis.delete("relay:expiry", "relay:retention", "relay:stats")  # as an older relay left them

    result = await cli("retention", "backfill")
    assert result.code == 0, result.err
    assert "scheduled 1 to expire and 1 for deletion; 2 orders stored" in result.out
    assert await redis.zscore("relay:expiry", unpaid["order_id"]) is not None
    assert await redis.zscore("relay:retention", f"o:{delivered['order_id']}") is not None
    again = await cli("retention", "backfill")
    assert "scheduled 0 to expire and 0 for deletion; 2 orders stored" in again.out
