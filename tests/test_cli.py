"""The operator CLI (`relay dlq ...`, `relay purchases ...`) as a subprocess against the test Redis,
next to an in-process relay whose worker makes the deliveries."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import aiohttp

from tests.helpers import (
    ADMIN_TOKEN,
    HOOK,
    QUICK,
    TEST_ENCRYPTION_KEY,
    Api,
    Merchant,
    Shop,
    StartRelay,
    make_settings,
    open_shop,
    start_shop,
    verify,
    wait_hits,
    without_relay_variables,
)
from tests.processes import RELAY, free_port, relay_cli, wait_until_answering


async def dead_shop(
    start_relay: StartRelay, merchant: Merchant, orders: int
) -> tuple[Shop, list[dict[str, Any]]]:
    """A shop whose merchant answers 503 and ``orders`` purchases already dead-lettered."""
    merchant.script[HOOK] = [503]
    shop = await start_shop(start_relay, merchant, retry_schedule=QUICK)
    placed = [await shop.order() for _ in range(orders)]
    for order in placed:
        await shop.wait_status(order, "failed")
    return shop, placed


async def test_dlq_list_json(cli: Any, start_relay: StartRelay, merchant: Merchant) -> None:
    shop, [order] = await dead_shop(start_relay, merchant, 1)
    event_id = (await shop.purchase(order))["event_id"]
    result = await cli("dlq", "list", "--json")
    assert result.code == 0, result.err
    [row] = result.json_lines()
    assert row["event_id"] == event_id
    assert row["order_id"] == order["order_id"]
    assert row["project_id"] == shop.project["id"]
    assert row["attempts"] == len(QUICK) + 1
    assert row["dead_at"]
    assert "503" in row["last_error"]

    other = await cli("dlq", "list", "--json", "--project", "no-such-project")
    assert (other.code, other.json_lines()) == (0, [])
    table = await cli("dlq", "list")
    assert table.code == 0
    assert "EVENT_ID" in table.out
    assert event_id in table.out


async def test_dlq_replay_one(cli: Any, start_relay: StartRelay, merchant: Merchant) -> None:
    shop, [order, kept] = await dead_shop(start_relay, merchant, 2)
    event_id = (await shop.purchase(order))["event_id"]
    merchant.script[HOOK] = [200]
    result = await cli("dlq", "replay", event_id)
    assert result.code == 0, result.err
    assert "replayed 1" in result.out
    await shop.wait_status(order, "delivered")
    hit = merchant.hits(HOOK)[-1]
    assert hit.headers["webhook-id"] == event_id
    assert verify(hit, shop.secret)["order_id"] == order["order_id"]
    assert await shop.api.dead_letter_ids() == [(await shop.purchase(kept))["event_id"]]


async def test_dlq_replay_all_of_a_project(cli: Any, start_relay: StartRelay, merchant: Merchant) -> None:
    shop, orders = await dead_shop(start_relay, merchant, 3)
    merchant.script[HOOK] = [200]
    result = await cli("dlq", "replay", "--all", "--project", shop.project["id"])
    assert result.code == 0, result.err
    assert "replayed 3" in result.out
    for order in orders:
        await shop.wait_status(order, "delivered")
    assert await shop.api.dead_letter_ids() == []


async def test_dlq_replay_needs_a_selection(cli: Any) -> None:
    nothing = await cli("dlq", "replay")
    assert nothing.code == 2
    assert "EVENT_ID" in nothing.err
    mixed = await cli("dlq", "replay", "evt_x", "--project", "p")
    assert mixed.code == 2
    assert "Traceback" not in mixed.err


async def test_dlq_purge_one(cli: Any, start_relay: StartRelay, merchant: Merchant) -> None:
    shop, [order, kept] = await dead_shop(start_relay, merchant, 2)
    event_id = (await shop.purchase(order))["event_id"]
    result = await cli("dlq", "purge", event_id)
    assert result.code == 0, result.err
    assert "purged 1" in result.out
    assert await shop.api.dead_letter_ids() == [(await shop.purchase(kept))["event_id"]]
    again = await cli("dlq", "purge", event_id)
    assert "purged 0" in again.out


async def test_purchases_list_json(cli: Any, start_relay: StartRelay, merchant: Merchant) -> None:
    shop = await start_shop(start_relay, merchant)
    paid = await shop.order()
    unpaid = await shop.order(pay=False)
    await shop.wait_status(paid, "delivered")
    result = await cli("purchases", "list", "--project", shop.project["id"], "--json")
    assert result.code == 0, result.err
    rows = {row["order_id"]: row for row in result.json_lines()}
    assert set(rows) == {paid["order_id"], unpaid["order_id"]}
    states = {order_id: (row["status"], row["webhook_status"]) for order_id, row in rows.items()}
    assert states == {paid["order_id"]: ("paid", "delivered"), unpaid["order_id"]: ("pending", None)}

    delivered = await cli(
        "purchases", "list", "--project", shop.project["id"], "--webhook-status", "delivered", "--json"
    )
    assert [row["order_id"] for row in delivered.json_lines()] == [paid["order_id"]]
    missing = await cli("purchases", "list", "--project", "no-such-project")
    assert missing.code != 0
    assert "does not exist" in missing.err
    assert "Traceback" not in missing.err


async def test_purchases_retry(cli: Any, start_relay: StartRelay, merchant: Merchant) -> None:
    shop = await start_shop(start_relay, merchant)
    order = await shop.order()
    event_id = (await shop.wait_status(order, "delivered"))["event_id"]
    result = await cli("purchases", "retry", "--project", shop.project["id"], order["order_id"])
    assert result.code == 0, result.err
    assert event_id in result.out
    await wait_hits(merchant, 2)
    await shop.wait_status(order, "delivered")
    assert [hit.headers["webhook-id"] for hit in merchant.hits(HOOK)] == [event_id, event_id]
    verify(merchant.hits(HOOK)[1], shop.secret)

    unpaid = await shop.order(pay=False)
    refused = await cli("purchases", "retry", "--project", shop.project["id"], unpaid["order_id"])
    assert refused.code != 0
    assert "no webhook to send" in refused.err
    assert "Traceback" not in refused.err


async def test_operator_commands_need_redis_url() -> None:
    result = await relay_cli("dlq", "list")
    assert result.code == 2
    assert result.out == ""
    [line] = result.err.strip().splitlines()
    assert "RELAY_REDIS_URL" in line


async def test_serve_rejects_a_bad_setting_by_its_env_name(redis_url: str) -> None:
    result = await relay_cli(
        "serve",
        "--port",
        "0",
        RELAY_REDIS_URL=redis_url,
        RELAY_ADMIN_TOKEN=ADMIN_TOKEN,
        RELAY_ENCRYPTION_KEYS=TEST_ENCRYPTION_KEY,
        RELAY_DELIVERY_TIMEOUT="abc",
    )
    assert result.code == 2
    assert "RELAY_DELIVERY_TIMEOUT" in result.err
    assert "Traceback" not in result.err
    assert len(result.err.strip().splitlines()) == 1


async def test_since_takes_the_times_the_cli_prints(
    cli: Any, start_relay: StartRelay, merchant: Merchant
) -> None:
    shop, _ = await dead_shop(start_relay, merchant, 1)
    [row] = (await cli("dlq", "list", "--json")).json_lines()
    dead_at = row["dead_at"]  # printed with milliseconds and a Z
    assert "." in dead_at
    assert dead_at.endswith("Z")
    same = await cli("dlq", "list", "--json", "--since", dead_at)
    assert same.code == 0, same.err
    assert [line["event_id"] for line in same.json_lines()] == [row["event_id"]]
    later = await cli("dlq", "list", "--json", "--project", shop.project["id"], "--since", "2099-01-01")
    assert (later.code, later.json_lines()) == (0, [])
    bad = await cli("dlq", "list", "--since", "yesterday")
    assert bad.code == 2
    assert "ISO 8601" in bad.err
    assert "Traceback" not in bad.err


async def test_help_names_the_time_format_not_strptime_patterns() -> None:
    for command in (("dlq", "list"), ("dlq", "replay")):
        result = await relay_cli(*command, "--help")
        assert result.code == 0, result.err
        assert "ISO-8601" in result.out
        assert "%Y" not in result.out


async def test_a_misspelled_setting_is_named_with_the_closest_real_one() -> None:
    result = await relay_cli("dlq", "list", RELAY_REDIS_ULR="redis://127.0.0.1:1/0")
    assert result.code == 2  # still no RELAY_REDIS_URL
    assert "RELAY_REDIS_ULR is not a relay setting" in result.err
    assert "did you mean RELAY_REDIS_URL?" in result.err


async def test_relay_run_hands_out_invoice_urls_on_the_port_it_listens_on(tmp_path: Path) -> None:
    port = free_port()
    env = without_relay_variables(os.environ) | {"RELAY_ADMIN_TOKEN": ADMIN_TOKEN, "RELAY_LOG_FORMAT": "json"}
    log = (tmp_path / "run.log").open("wb")
    process = await asyncio.create_subprocess_exec(
        RELAY, "run", "--port", str(port), env=env, stdout=log, stderr=asyncio.subprocess.STDOUT
    )
    try:
        async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{port}") as http:
            api = Api(http, make_settings(redis_url=None), f"http://127.0.0.1:{port}", midtrans_key="")
            await wait_until_answering(http, what="relay run")
            shop = await open_shop(api)
            order = await shop.buy()
        assert order["invoice_url"].startswith(f"http://127.0.0.1:{port}/sandbox/checkout/")
    finally:
        process.terminate()
        await process.wait()
        log.close()
