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
    eventually,
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


async def test_purchases_show_prints_the_attempts_with_the_answers(
    cli: Any, start_relay: StartRelay, merchant: Merchant
) -> None:
    merchant.script[HOOK] = [503, 200]
    shop = await start_shop(start_relay, merchant, retry_schedule=QUICK)
    order = await shop.order()
    await shop.wait_status(order, "delivered")
    result = await cli("purchases", "show", "--project", shop.project["id"], order["order_id"], "--json")
    assert result.code == 0, result.err
    [shown] = result.json_lines()
    failed, ok = shown["attempts"]
    assert (failed["status_code"], failed["error_class"], failed["response"]) == (503, "http_status", "no")
    assert (ok["status_code"], ok["error_class"], ok["response"]) == (200, None, "ok")
    assert ok["response_headers"]["content-type"].startswith("text/plain")
    table = await cli("purchases", "show", "--project", shop.project["id"], order["order_id"])
    assert table.code == 0, table.err
    assert "http_status" in table.out
    assert "webhook_status: delivered" in table.out
    missing = await cli("purchases", "show", "--project", shop.project["id"], "no-such-order")
    assert missing.code != 0
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


async def paid_payment_and_subscription(shop: Shop) -> tuple[dict[str, Any], dict[str, Any]]:
    """A shop payment INV-7 and a subscription's first period, both paid; the payment as the API
    showed it before it was paid, and the subscribe answer."""
    api, pid = shop.api, shop.project["id"]
    request = {"order_id": "INV-7", "amount": 75000, "buyer_email": "b@example.com", "description": "Cart"}
    await api.call("POST", f"/api/platform/projects/{pid}/payments", json=request)
    payment = (await api.call("GET", f"/api/platform/projects/{pid}/payments/INV-7"))["payment"]
    await api.pay({"order_id": payment["gateway_order_id"], "amount": 75000})
    plan = (
        await api.call(
            "PUT",
            "/api/platform/plans",
            json={"project_id": pid, "name": "Pro", "price": 99000, "interval": "month"},
        )
    )["plan"]
    started = await api.call(
        "POST",
        "/api/platform/public-plans/subscribe",
        auth=False,
        json={"client_id": shop.project["client_id"], "plan_id": plan["id"], "buyer_email": "s@example.com"},
    )
    await api.pay(started)
    return payment, started


async def test_purchases_list_and_retry_every_kind(
    cli: Any, start_relay: StartRelay, merchant: Merchant
) -> None:
    """A shop payment is listed by the merchant's order id (and retried by it), a subscription's
    order with its subscription; the table names each row's kind."""
    shop = await start_shop(start_relay, merchant)
    item_order = await shop.order()
    payment, started = await paid_payment_and_subscription(shop)
    await wait_hits(merchant, 3)
    pid = shop.project["id"]
    result = await cli("purchases", "list", "--project", pid, "--json")
    assert result.code == 0, result.err
    rows = {row["order_id"]: row for row in result.json_lines()}
    assert set(rows) == {item_order["order_id"], "INV-7", started["order_id"]}
    assert rows["INV-7"]["kind"] == "payment"
    assert rows["INV-7"]["gateway_order_id"] == payment["gateway_order_id"]
    assert rows["INV-7"]["description"] == "Cart"
    assert "merchant_order_id" not in rows["INV-7"]
    assert rows[started["order_id"]]["kind"] == "subscription"
    assert rows[started["order_id"]]["subscription_id"] == started["subscription_id"]
    assert rows[item_order["order_id"]]["kind"] == "item"
    assert rows[item_order["order_id"]]["item_id"] == shop.item["id"]

    table = await cli("purchases", "list", "--project", pid)
    assert table.code == 0, table.err
    header, *lines = table.out.splitlines()
    assert header.split() == [
        *("ORDER_ID", "KIND", "STATUS", "WEBHOOK_STATUS", "AMOUNT", "BUYER_EMAIL", "PAID_AT"),
        "GATEWAY_ORDER_ID",
    ]
    [payment_line] = [line for line in lines if line.startswith("INV-7 ")]
    assert payment_line.split()[1] == "payment"
    assert payment_line.split()[-1] == payment["gateway_order_id"]

    # Retried by the merchant's own order id, or by the gateway's.
    event_id = rows["INV-7"]["event_id"]
    for given in ("INV-7", payment["gateway_order_id"]):
        retried = await cli("purchases", "retry", "--project", pid, given)
        assert retried.code == 0, retried.err
        assert f"queued {event_id} for {given}" in retried.out
    await wait_hits(merchant, 5)
    assert [hit.headers["webhook-id"] for hit in merchant.hits(HOOK)[-2:]] == [event_id] * 2
    missing = await cli("purchases", "retry", "--project", pid, "INV-8")
    assert missing.code != 0
    assert "Traceback" not in missing.err


async def test_dlq_list_names_each_event_type(cli: Any, start_relay: StartRelay, merchant: Merchant) -> None:
    merchant.script[HOOK] = [503]
    shop = await start_shop(start_relay, merchant, retry_schedule=QUICK)
    payment, started = await paid_payment_and_subscription(shop)

    async def dead() -> bool:
        return len(await shop.api.dead_letter_ids()) == 2

    await eventually(dead, what="two dead letters")
    result = await cli("dlq", "list", "--json")
    assert result.code == 0, result.err
    types = {row["order_id"]: row["type"] for row in result.json_lines()}
    assert types == {
        payment["gateway_order_id"]: "payment.paid",
        started["order_id"]: "subscription.activated",
    }
    table = await cli("dlq", "list")
    header, *lines = table.out.splitlines()
    assert header.split()[:2] == ["EVENT_ID", "TYPE"]
    assert sorted(line.split()[1] for line in lines) == ["payment.paid", "subscription.activated"]


async def test_subscriptions_list(cli: Any, start_relay: StartRelay, merchant: Merchant) -> None:
    shop = await start_shop(start_relay, merchant)
    _, started = await paid_payment_and_subscription(shop)
    pid = shop.project["id"]
    path = f"/api/platform/projects/{pid}/subscriptions/{started['subscription_id']}"
    await shop.api.call("POST", path + "/cancel")
    subscription = (await shop.api.call("GET", path))["subscription"]
    result = await cli("subscriptions", "list", "--project", pid, "--json")
    assert result.code == 0, result.err
    assert result.json_lines() == [subscription]
    assert (subscription["status"], subscription["cancel_at_period_end"]) == ("active", True)

    table = await cli("subscriptions", "list", "--project", pid)
    header, line = table.out.splitlines()
    assert header.split() == [
        *("ID", "PLAN_NAME", "STATUS", "CURRENT_PERIOD_END", "CANCEL_AT_PERIOD_END", "BUYER_EMAIL")
    ]
    assert line.split() == [
        *(started["subscription_id"], "Pro", "active", subscription["current_period_end"], "True"),
        "s@example.com",
    ]
    missing = await cli("subscriptions", "list", "--project", "no-such-project")
    assert missing.code != 0
    assert "does not exist" in missing.err
    assert "Traceback" not in missing.err


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


# --- over HTTP: RELAY_URL ----------------------------------------------------------------------------

UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"  # RELAY_URL wins: this is never dialled


async def test_the_operator_commands_work_over_http_without_redis(
    start_relay: StartRelay, merchant: Merchant
) -> None:
    shop, [first, second] = await dead_shop(start_relay, merchant, 2)
    events = [(await shop.purchase(order))["event_id"] for order in (first, second)]
    remote = {
        "RELAY_URL": shop.api.url,
        "RELAY_ADMIN_TOKEN": ADMIN_TOKEN,
        "RELAY_REDIS_URL": UNREACHABLE_REDIS,
    }
    project = shop.project["id"]

    listed = await relay_cli("dlq", "list", "--project", project, "--json", **remote)
    assert listed.code == 0, listed.err
    assert sorted(row["event_id"] for row in listed.json_lines()) == sorted(events)
    assert all("last_error" in row and "last_attempt" not in row for row in listed.json_lines())

    orders = await relay_cli("purchases", "list", "--project", project, "--json", **remote)
    assert orders.code == 0, orders.err
    assert {row["order_id"] for row in orders.json_lines()} == {first["order_id"], second["order_id"]}
    shown = await relay_cli("purchases", "show", "--project", project, first["order_id"], "--json", **remote)
    assert shown.code == 0, shown.err
    assert shown.json_lines()[0]["attempts"][0]["error_class"] == "http_status"

    merchant.script[HOOK] = [200]
    replayed = await relay_cli("dlq", "replay", events[0], **remote)
    assert (replayed.code, replayed.out.strip()) == (0, "replayed 1"), replayed.err
    retried = await relay_cli("purchases", "retry", "--project", project, second["order_id"], **remote)
    assert retried.code == 0, retried.err
    assert f"queued {events[1]}" in retried.out
    for order in (first, second):
        await shop.wait_status(order, "delivered")
    window = await relay_cli(
        "events", "replay", "--project", project, "--since", "2000-01-01T00:00:00Z", **remote
    )
    assert (window.code, window.out.strip()) == (0, "replayed 2"), window.err
    await wait_hits(merchant, 2 * len(QUICK) + 2 + 2 + 2)


async def test_over_http_a_project_key_reaches_its_own_orders_and_errors_are_the_relays(
    start_relay: StartRelay, merchant: Merchant
) -> None:
    shop = await start_shop(start_relay, merchant)
    order = await shop.order()
    await shop.wait_status(order, "delivered")
    key = await shop.api.call(
        "POST", f"/api/platform/projects/{shop.project['id']}/api-keys", json={"name": "cli"}
    )
    remote = {"RELAY_URL": shop.api.url, "RELAY_API_KEY": key["api_key"]["key"]}
    mine = await relay_cli("purchases", "list", "--project", shop.project["id"], "--json", **remote)
    assert mine.code == 0, mine.err
    assert [row["order_id"] for row in mine.json_lines()] == [order["order_id"]]
    other = await open_shop(shop.api)
    theirs = await relay_cli("purchases", "list", "--project", other.project["id"], **remote)
    assert theirs.code != 0
    assert "404 NotFound" in theirs.err
    admin_only = await relay_cli("dlq", "list", **remote)
    assert admin_only.code != 0
    assert "needs RELAY_ADMIN_TOKEN" in admin_only.err
    # With both, the admin commands take the admin token, the project's the key.
    both = remote | {"RELAY_ADMIN_TOKEN": ADMIN_TOKEN}
    assert (await relay_cli("dlq", "list", **both)).code == 0
    assert (await relay_cli("purchases", "list", "--project", shop.project["id"], **both)).code == 0
    for result in (theirs, admin_only):
        assert "Traceback" not in result.err
    nobody = await relay_cli("dlq", "list", RELAY_URL=shop.api.url)
    assert nobody.code != 0
    assert "RELAY_ADMIN_TOKEN or a project's RELAY_API_KEY" in nobody.err
    down = await relay_cli(
        "dlq", "list", RELAY_URL=f"http://127.0.0.1:{free_port()}", RELAY_ADMIN_TOKEN=ADMIN_TOKEN
    )
    assert down.code != 0
    assert "no answer from the relay" in down.err
    assert "Traceback" not in down.err
