"""Integration tests of the delivery half: a real Redis, a real arq worker and a merchant on loopback.

Every delivered webhook is checked with the public ``standardwebhooks`` library, never with relay's
own signing code.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
from aiohttp import web
from redis.asyncio import Redis
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from tests.helpers import (
    HOOK,
    QUICK,
    Api,
    Merchant,
    Shop,
    StartRelay,
    eventually,
    start_shop,
    verify,
    wait_hits,
)

BODY_KEYS = [
    "event",
    "order_id",
    "item_id",
    "item_name",
    "buyer_email",
    "buyer_name",
    "amount",
    "currency",
    "paid_at",
    "metadata",
]
# Attempt times are stored with millisecond precision (truncated), so differences are off by <= 2 ms.
MS = 0.002


# --- helpers ------------------------------------------------------------------------------------


def moment(raw: str) -> datetime:
    return datetime.fromisoformat(raw)


def scheduled_delay(attempt: dict[str, Any]) -> float:
    """Seconds from an attempt to the next one it scheduled, from the attempt log."""
    return (moment(attempt["next_attempt_at"]) - moment(attempt["at"])).total_seconds()


def gap(earlier: dict[str, Any], later: dict[str, Any]) -> float:
    return (moment(later["at"]) - moment(earlier["at"])).total_seconds()


async def replay(api: Api, body: dict[str, Any], *, expect: int = 200) -> dict[str, Any]:
    answer: dict[str, Any] = await api.call(
        "POST", "/api/admin/dead-letters/replay", json=body, expect=expect
    )
    return answer


# --- 1. the webhook itself ---------------------------------------------------------------------


async def test_webhook_is_signed_and_shaped_as_the_contract_says(
    start_relay: StartRelay, merchant: Merchant
) -> None:
    shop = await start_shop(start_relay, merchant)
    before = time.time()
    order = await shop.order(buyer_name="John Doe", metadata={"ref": "campaign-42"})
    await wait_hits(merchant, 1)
    purchase = await shop.wait_status(order, "delivered")

    [hit] = merchant.hits(HOOK)
    payload = verify(hit, shop.secret)
    assert list(json.loads(hit.body)) == BODY_KEYS
    assert payload == {
        "event": "item.purchased",
        "order_id": order["order_id"],
        "item_id": shop.item["id"],
        "item_name": "Premium Template",
        "buyer_email": "buyer@example.com",
        "buyer_name": "John Doe",
        "amount": 50000,
        "currency": "IDR",
        "paid_at": payload["paid_at"],
        "metadata": {"ref": "campaign-42"},
    }
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", payload["paid_at"])
    assert hit.headers["webhook-id"] == purchase["event_id"]
    assert hit.headers["webhook-id"].startswith("evt_")
    assert before - 2 <= int(hit.headers["webhook-timestamp"]) <= time.time() + 1
    assert re.fullmatch(r"v1,[A-Za-z0-9+/]+=*", hit.headers["webhook-signature"])
    assert hit.headers["Content-Type"] == "application/json"
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + "A" * 43 + "=").verify(hit.body, hit.headers)


async def test_tampered_body_does_not_verify(start_relay: StartRelay, merchant: Merchant) -> None:
    shop = await start_shop(start_relay, merchant)
    await shop.order()
    await wait_hits(merchant, 1)
    [hit] = merchant.hits(HOOK)
    with pytest.raises(WebhookVerificationError):
        Webhook(shop.secret).verify(hit.body.replace("50000", "1"), hit.headers)


# --- 2. which URL -----------------------------------------------------------------------------


async def test_item_webhook_url_wins_over_project_url(start_relay: StartRelay, merchant: Merchant) -> None:
    shop = await start_shop(start_relay, merchant, project_path="/project", item_path="/item")
    order = await shop.order()
    purchase = await shop.wait_status(order, "delivered")
    assert len(merchant.hits("/item")) == 1
    assert merchant.hits("/project") == []
    assert purchase["attempts"][0]["url"] == f"{merchant.url}/item"
    verify(merchant.hits("/item")[0], shop.secret)


async def test_project_url_used_when_item_has_none(start_relay: StartRelay, merchant: Merchant) -> None:
    shop = await start_shop(start_relay, merchant, project_path="/project", item_path=None)
    order = await shop.order()
    await shop.wait_status(order, "delivered")
    assert len(merchant.hits("/project")) == 1
    assert verify(merchant.hits("/project")[0], shop.secret)["order_id"] == order["order_id"]


async def test_no_url_anywhere_means_no_endpoint(start_relay: StartRelay, merchant: Merchant) -> None:
    shop = await start_shop(start_relay, merchant, project_path=None, item_path=None)
    order = await shop.order()
    purchase = await shop.wait_status(order, "no_endpoint")
    assert purchase["status"] == "paid"
    assert purchase["attempts"] == []
    assert merchant.received == []
    assert await shop.api.dead_letter_ids() == []


async def test_url_is_resolved_again_at_each_attempt(start_relay: StartRelay, merchant: Merchant) -> None:
    merchant.script["/broken"] = [503]
    shop = await start_shop(
        start_relay, merchant, project_path=None, item_path="/broken", retry_schedule=(1.0, 1.0)
    )
    order = await shop.order()
    # The status first: a view reads the purchase, then its attempts, so an attempt logged between
    # the two reads shows beside the status before it (finish.lua writes both at once).
    first = await shop.wait_status(order, "retrying")
    assert [attempt["url"] for attempt in first["attempts"]] == [f"{merchant.url}/broken"]
    # A rename does not touch the event: its body was fixed (and signed) when the purchase was paid.
    await shop.set_item_url(f"{merchant.url}/fixed", name="Renamed Template")

    purchase = await shop.wait_status(order, "delivered")
    assert [attempt["url"] for attempt in purchase["attempts"]] == [
        f"{merchant.url}/broken",
        f"{merchant.url}/fixed",
    ]
    assert len(merchant.hits("/broken")) == 1
    [hit] = merchant.hits("/fixed")
    assert verify(hit, shop.secret)["order_id"] == order["order_id"]
    assert hit.headers["webhook-id"] == merchant.hits("/broken")[0].headers["webhook-id"]
    assert hit.body == merchant.hits("/broken")[0].body
    assert verify(hit, shop.secret)["item_name"] == "Premium Template"


# --- 3. retries and the attempt log -----------------------------------------------------------


async def test_500_then_200_is_delivered_on_the_second_attempt(
    start_relay: StartRelay, merchant: Merchant
) -> None:
    merchant.script[HOOK] = [500, 200]
    shop = await start_shop(start_relay, merchant)
    order = await shop.order()
    purchase = await shop.wait_status(order, "delivered")

    failed, ok = purchase["attempts"]
    url = f"{merchant.url}{HOOK}"
    assert failed["url"] == ok["url"] == url
    assert failed["status_code"] == 500
    assert "500" in failed["error"]
    assert failed["next_attempt_at"] is not None
    assert 0.04 - MS <= scheduled_delay(failed) <= 0.06 + MS  # 0.05 s +-20%
    assert gap(failed, ok) >= scheduled_delay(failed) - MS
    assert ok["status_code"] == 200
    assert ok["error"] is None
    assert ok["next_attempt_at"] is None
    for attempt in (failed, ok):
        assert set(attempt) == {
            "at",
            "url",
            "status_code",
            "error",
            "duration_ms",
            "next_attempt_at",
            "response",
            "response_headers",
            "error_class",
        }
        assert isinstance(attempt["duration_ms"], int)
        assert attempt["duration_ms"] >= 0
    # The merchant's answers' bodies, as the attempts keep them.
    assert (failed["response"], ok["response"]) == ("no", "ok")
    assert (failed["error_class"], ok["error_class"]) == ("http_status", None)
    for attempt in (failed, ok):
        assert attempt["response_headers"]["content-type"].startswith("text/plain")
    hits = merchant.hits(HOOK)
    assert len(hits) == 2
    assert {hit.headers["webhook-id"] for hit in hits} == {purchase["event_id"]}
    for hit in hits:
        verify(hit, shop.secret)


# --- 4. dead letters --------------------------------------------------------------------------


async def test_always_503_is_dead_lettered_after_schedule_plus_one_attempts(
    start_relay: StartRelay, merchant: Merchant
) -> None:
    merchant.script[HOOK] = [503]
    shop = await start_shop(start_relay, merchant)
    schedule = shop.api.settings.retry_schedule
    order = await shop.order()
    purchase = await shop.wait_status(order, "failed")

    assert len(merchant.hits(HOOK)) == len(schedule) + 1
    assert [attempt["status_code"] for attempt in purchase["attempts"]] == [503] * (len(schedule) + 1)
    assert purchase["attempts"][-1]["next_attempt_at"] is None
    listing = await shop.api.dead_letters()
    [row] = listing["dead_letters"]
    assert listing["next_cursor"] is None
    assert row["event_id"] == purchase["event_id"]
    assert row["order_id"] == order["order_id"]
    assert row["project_id"] == shop.project["id"]
    assert row["attempts"] == len(schedule) + 1
    assert row["dead_at"] is not None
    assert row["last_attempt"]["status_code"] == 503

    merchant.script[HOOK] = [200]
    assert await replay(shop.api, {"event_ids": [purchase["event_id"]]}) == {"replayed": 1}
    await wait_hits(merchant, len(schedule) + 2)
    replayed = await shop.wait_status(order, "delivered")
    last = merchant.hits(HOOK)[-1]
    assert last.headers["webhook-id"] == purchase["event_id"]
    assert verify(last, shop.secret)["order_id"] == order["order_id"]
    assert replayed["attempts"][-1]["status_code"] == 200
    assert await shop.api.dead_letter_ids() == []


async def test_replay_all_of_one_project(start_relay: StartRelay, merchant: Merchant) -> None:
    merchant.script[HOOK] = [503]
    shop = await start_shop(start_relay, merchant, retry_schedule=QUICK)
    other_project = await shop.api.project(name="Other", webhook_url=f"{merchant.url}{HOOK}")
    other_item = await shop.api.item(other_project["id"])
    other = Shop(shop.api, other_project, other_item)

    mine = [await shop.order() for _ in range(2)]
    theirs = await other.order()
    for order in mine:
        await shop.wait_status(order, "failed")
    await other.wait_status(theirs, "failed")
    assert len(await shop.api.dead_letter_ids()) == 3
    assert len(await shop.api.dead_letter_ids(project_id=shop.project["id"])) == 2

    merchant.script[HOOK] = [200]
    answer = await replay(shop.api, {"all": True, "project_id": shop.project["id"]})
    assert answer == {"replayed": 2}
    for order in mine:
        await shop.wait_status(order, "delivered")
    [left] = await shop.api.dead_letter_ids()
    assert left == (await other.purchase(theirs))["event_id"]
    assert (await other.purchase(theirs))["webhook_status"] == "failed"


async def test_replay_rejects_unknown_event_and_bad_bodies(
    start_relay: StartRelay, merchant: Merchant
) -> None:
    shop = await start_shop(start_relay, merchant)
    missing = await replay(shop.api, {"event_ids": ["evt_nope"]}, expect=404)
    assert missing["error"] == "NotFound"
    both = await replay(shop.api, {"event_ids": ["evt_nope"], "all": True}, expect=400)
    assert both["error"] == "InvalidInput"
    assert (await replay(shop.api, {}, expect=400))["error"] == "InvalidInput"


async def test_delete_dead_letter(start_relay: StartRelay, merchant: Merchant) -> None:
    merchant.script[HOOK] = [503]
    shop = await start_shop(start_relay, merchant, retry_schedule=QUICK)
    order = await shop.order()
    purchase = await shop.wait_status(order, "failed")
    event_id = purchase["event_id"]
    assert await shop.api.dead_letter_ids() == [event_id]

    path = f"/api/admin/dead-letters/{event_id}"
    assert await shop.api.call("DELETE", path) == {"deleted": event_id}
    assert await shop.api.dead_letter_ids() == []
    assert await shop.api.dead_letter_ids(project_id=shop.project["id"]) == []
    again = await shop.api.call("DELETE", path, expect=404)
    assert again["error"] == "NotFound"
    # the purchase keeps its history
    assert len((await shop.purchase(order))["attempts"]) == len(QUICK) + 1


async def test_dead_letter_pagination_sees_each_exactly_once(
    start_relay: StartRelay, merchant: Merchant
) -> None:
    merchant.script[HOOK] = [503]
    shop = await start_shop(start_relay, merchant, retry_schedule=QUICK)
    orders = [await shop.order() for _ in range(5)]
    expected = {(await shop.wait_status(order, "failed"))["event_id"] for order in orders}

    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = await shop.api.dead_letters(limit=2, cursor=cursor)
        pages += 1
        assert len(page["dead_letters"]) <= 2
        seen += [row["event_id"] for row in page["dead_letters"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert pages < 10, "next_cursor never became null"
    assert pages == 3
    assert len(seen) == len(set(seen)) == 5
    assert set(seen) == expected
    assert seen == await shop.api.dead_letter_ids()  # the same order as one big page


async def test_dead_letter_list_since_filter(start_relay: StartRelay, merchant: Merchant) -> None:
    merchant.script[HOOK] = [503]
    shop = await start_shop(start_relay, merchant, retry_schedule=QUICK)
    order = await shop.order()
    event_id = (await shop.wait_status(order, "failed"))["event_id"]
    past = (datetime.now(UTC) - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    future = (datetime.now(UTC) + timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert await shop.api.dead_letter_ids(since=past) == [event_id]
    assert await shop.api.dead_letter_ids(since=future) == []
    assert await replay(shop.api, {"all": True, "since": future}) == {"replayed": 0}
    bad = await shop.api.call("GET", "/api/admin/dead-letters", params={"since": "yesterday"}, expect=400)
    assert bad["error"] == "InvalidInput"
    bad_cursor = await shop.api.call("GET", "/api/admin/dead-letters", params={"cursor": "x"}, expect=400)
    assert bad_cursor["error"] == "InvalidInput"


async def test_dead_letter_pagination_with_equal_timestamps(
    start_relay: StartRelay, merchant: Merchant, redis_url: str
) -> None:
    """Dead letters sharing a millisecond are ordered by id and still each seen exactly once."""
    merchant.script[HOOK] = [503]
    shop = await start_shop(start_relay, merchant, retry_schedule=QUICK)
    orders = [await shop.order() for _ in range(5)]
    ids = {(await shop.wait_status(order, "failed"))["event_id"] for order in orders}
    client = Redis.from_url(redis_url, decode_responses=True)
    try:
        same = 1_700_000_000_000
        await client.zadd("relay:dlq", dict.fromkeys(ids, same))
    finally:
        await client.aclose()

    seen: list[str] = []
    cursor = None
    for _ in range(10):
        page = await shop.api.dead_letters(limit=2, cursor=cursor)
        seen += [row["event_id"] for row in page["dead_letters"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(ids)


# --- 5. retry-webhook -------------------------------------------------------------------------


async def test_retry_webhook_resends_a_delivered_purchase(
    start_relay: StartRelay, merchant: Merchant
) -> None:
    shop = await start_shop(start_relay, merchant)
    order = await shop.order()
    purchase = await shop.wait_status(order, "delivered")
    await wait_hits(merchant, 1)

    path = f"/api/platform/projects/{shop.project['id']}/item-purchases/{order['order_id']}/retry-webhook"
    answer = await shop.api.call("POST", path)
    assert answer["purchase"]["order_id"] == order["order_id"]
    await wait_hits(merchant, 2)
    again = await shop.wait_status(order, "delivered")
    first, second = merchant.hits(HOOK)
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == purchase["event_id"]
    assert verify(second, shop.secret) == verify(first, shop.secret)
    assert [attempt["status_code"] for attempt in again["attempts"]] == [200, 200]


async def test_retry_webhook_after_configuring_a_url_delivers_a_no_endpoint_purchase(
    start_relay: StartRelay, merchant: Merchant
) -> None:
    shop = await start_shop(start_relay, merchant, project_path=None)
    order = await shop.order()
    event_id = (await shop.wait_status(order, "no_endpoint"))["event_id"]
    await shop.set_item_url(f"{merchant.url}/late")
    path = f"/api/platform/projects/{shop.project['id']}/item-purchases/{order['order_id']}/retry-webhook"
    await shop.api.call("POST", path)
    purchase = await shop.wait_status(order, "delivered")
    [hit] = merchant.hits("/late")
    assert hit.headers["webhook-id"] == event_id
    assert verify(hit, shop.secret)["order_id"] == order["order_id"]
    assert [attempt["url"] for attempt in purchase["attempts"]] == [f"{merchant.url}/late"]


async def test_retry_webhook_on_unpaid_purchase_is_409(start_relay: StartRelay, merchant: Merchant) -> None:
    shop = await start_shop(start_relay, merchant)
    order = await shop.order(pay=False)
    path = f"/api/platform/projects/{shop.project['id']}/item-purchases/{order['order_id']}/retry-webhook"
    answer = await shop.api.call("POST", path, expect=409)
    assert answer["error"] == "Conflict"
    assert (await shop.purchase(order))["webhook_status"] is None
    missing = f"/api/platform/projects/{shop.project['id']}/item-purchases/item-nope-00000000/retry-webhook"
    assert (await shop.api.call("POST", missing, expect=404))["error"] == "NotFound"
    assert merchant.received == []


# --- 6. Retry-After ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("retry_after", "schedule", "low", "high"),
    [
        # clamped to at most 2 x scheduled (1.0 s +-20% jitter -> <= 2.4 s)
        pytest.param("100", (1.0,), 1.6, 2.4, id="too-long-clamped-to-twice-schedule"),
        # clamped to at least the scheduled delay
        pytest.param("0", (1.0,), 0.8, 1.2, id="zero-clamped-up-to-schedule"),
        # inside [scheduled, 2 x scheduled] for any jitter (0.64..0.96, 1.28..1.92): used as is
        pytest.param("1", (0.8,), 1.0, 1.0, id="within-range-honoured-exactly"),
    ],
)
async def test_retry_after_seconds_is_honoured_within_the_clamp(
    start_relay: StartRelay,
    merchant: Merchant,
    retry_after: str,
    schedule: tuple[float, ...],
    low: float,
    high: float,
) -> None:
    merchant.script[HOOK] = [(429, {"Retry-After": retry_after}), 200]
    shop = await start_shop(start_relay, merchant, retry_schedule=schedule)
    order = await shop.order()
    purchase = await shop.wait_status(order, "delivered", timeout=15)
    limited, ok = purchase["attempts"]
    assert limited["status_code"] == 429
    delay = scheduled_delay(limited)
    assert low - MS <= delay <= high + MS
    assert gap(limited, ok) >= delay - MS
    assert ok["status_code"] == 200


async def test_retry_after_http_date_is_honoured(start_relay: StartRelay, merchant: Merchant) -> None:
    sent: list[datetime] = []

    async def limited(request: web.Request) -> web.Response:
        when = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=2)
        sent.append(when)
        return web.Response(status=503, headers={"Retry-After": format_datetime(when, usegmt=True)})

    merchant.script[HOOK] = [limited, 200]
    # No jitter (rng 0.5), so the scheduled delay is exactly 1.0 s and the clamp is [1.0, 2.0].
    shop = await start_shop(start_relay, merchant, retry_schedule=(1.0,), rng=lambda: 0.5)
    order = await shop.order()
    purchase = await shop.wait_status(order, "delivered", timeout=15)
    first, second = purchase["attempts"]
    asked = (sent[0] - moment(first["at"])).total_seconds()  # 1.0 < asked <= 2.0 + a little
    assert asked > 1.0
    assert scheduled_delay(first) == pytest.approx(min(asked, 2.0), abs=MS)
    assert gap(first, second) >= scheduled_delay(first) - MS


# --- 7. 410, redirects, timeouts --------------------------------------------------------------


async def test_410_gone_dead_letters_at_once(start_relay: StartRelay, merchant: Merchant) -> None:
    merchant.script[HOOK] = [410, 200]
    shop = await start_shop(start_relay, merchant)
    order = await shop.order()
    purchase = await shop.wait_status(order, "failed")
    [attempt] = purchase["attempts"]
    assert attempt["status_code"] == 410
    assert attempt["error"]
    assert attempt["next_attempt_at"] is None
    assert len(merchant.hits(HOOK)) == 1
    assert await shop.api.dead_letter_ids() == [purchase["event_id"]]


async def test_redirect_is_not_followed_and_counts_as_failure(
    start_relay: StartRelay, merchant: Merchant
) -> None:
    merchant.script[HOOK] = [(302, {"Location": "/elsewhere"})]
    shop = await start_shop(start_relay, merchant)
    schedule = shop.api.settings.retry_schedule
    order = await shop.order()
    purchase = await shop.wait_status(order, "failed")
    assert merchant.hits("/elsewhere") == []
    assert len(merchant.hits(HOOK)) == len(schedule) + 1
    assert [attempt["status_code"] for attempt in purchase["attempts"]] == [302] * (len(schedule) + 1)
    assert all(attempt["error"] for attempt in purchase["attempts"])


async def test_hanging_merchant_times_out_and_is_retried(start_relay: StartRelay, merchant: Merchant) -> None:
    async def hang(request: web.Request) -> web.Response:
        await asyncio.sleep(1.5)
        return web.Response(text="too late")

    merchant.script[HOOK] = [hang, 200]
    shop = await start_shop(start_relay, merchant, delivery_timeout=0.5)
    order = await shop.order()
    purchase = await shop.wait_status(order, "delivered")
    timed_out, ok = purchase["attempts"]
    assert timed_out["status_code"] is None
    assert "timed out" in timed_out["error"] or "timeout" in timed_out["error"].lower()
    assert 450 <= timed_out["duration_ms"] < 1500
    assert timed_out["next_attempt_at"] is not None
    assert ok["status_code"] == 200
    assert len(merchant.hits(HOOK)) == 2


async def test_unreachable_merchant_is_retried_then_dead_lettered(
    start_relay: StartRelay, merchant: Merchant
) -> None:
    shop = await start_shop(start_relay, merchant, project_path=None)
    await shop.set_item_url("http://127.0.0.1:9/closed")  # the discard port: nothing listens
    order = await shop.order()
    purchase = await shop.wait_status(order, "failed")
    schedule = shop.api.settings.retry_schedule
    assert len(purchase["attempts"]) == len(schedule) + 1
    assert all(attempt["status_code"] is None and attempt["error"] for attempt in purchase["attempts"])


# --- 8. secret rotation -----------------------------------------------------------------------


async def test_rotation_signs_with_old_and_new_secret(start_relay: StartRelay, merchant: Merchant) -> None:
    shop = await start_shop(start_relay, merchant)
    old = shop.secret
    await shop.order()
    await wait_hits(merchant, 1)
    assert len(merchant.hits(HOOK)[0].headers["webhook-signature"].split(" ")) == 1

    rotate = f"/api/platform/projects/{shop.project['id']}/webhook-secret/rotate"
    rotated = await shop.api.call("POST", rotate)
    new = rotated["project"]["webhook_secret"]
    assert new.startswith("whsec_")
    assert new != old
    order = await shop.order()
    await wait_hits(merchant, 2)
    hit = merchant.hits(HOOK)[1]
    signatures = hit.headers["webhook-signature"].split(" ")
    assert len(signatures) == 2
    assert all(signature.startswith("v1,") for signature in signatures)
    assert verify(hit, old)["order_id"] == order["order_id"]
    assert verify(hit, new)["order_id"] == order["order_id"]
    # Each signature on its own belongs to exactly one of the secrets.
    for signature in signatures:
        alone = hit.headers | {"webhook-signature": signature}
        results = []
        for secret in (old, new):
            try:
                Webhook(secret).verify(hit.body, alone)
                results.append(True)
            except WebhookVerificationError:
                results.append(False)
        assert results.count(True) == 1


# --- 9. the sweeper ---------------------------------------------------------------------------


async def test_sweeper_delivers_an_event_whose_job_was_lost(
    start_relay: StartRelay, merchant: Merchant, redis_url: str
) -> None:
    shop = await start_shop(start_relay, merchant, worker=False)
    order = await shop.order()
    event_id = (await shop.purchase(order))["event_id"]

    client = Redis.from_url(redis_url)
    try:
        # The crash between the durable write and the enqueue: the job never made it to arq.
        assert await client.zscore("arq:queue", event_id) is not None
        assert await client.zrem("arq:queue", event_id) == 1
        assert await client.delete(f"arq:job:{event_id}") == 1
    finally:
        await client.aclose()

    await start_relay(worker=True)
    await wait_hits(merchant, 1, timeout=15)
    [hit] = merchant.hits(HOOK)
    assert hit.headers["webhook-id"] == event_id
    assert verify(hit, shop.secret)["order_id"] == order["order_id"]
    await shop.wait_status(order, "delivered")


async def test_sweeper_reschedules_a_lost_retry_job(
    start_relay: StartRelay, merchant: Merchant, redis_url: str
) -> None:
    """The periodic sweep (not only the one at worker start) repairs a retry job that vanished."""
    merchant.script[HOOK] = [503, 200]
    shop = await start_shop(start_relay, merchant, retry_schedule=(1.5,))
    order = await shop.order()
    first = await shop.wait_attempts(order, 1)
    event_id = first["event_id"]
    retry_job = f"{event_id}:1"

    client = Redis.from_url(redis_url)
    try:

        async def queued() -> bool:  # the job is enqueued just after the attempt is logged
            return await client.zscore("arq:queue", retry_job) is not None

        await eventually(queued, what="the retry job")
        assert await client.zrem("arq:queue", retry_job) == 1
        assert await client.delete(f"arq:job:{retry_job}") == 1
    finally:
        await client.aclose()

    purchase = await shop.wait_status(order, "delivered", timeout=10)
    failed, ok = purchase["attempts"]
    assert (failed["status_code"], ok["status_code"]) == (503, 200)
    assert gap(failed, ok) >= scheduled_delay(failed) - MS
    assert [hit.headers["webhook-id"] for hit in merchant.hits(HOOK)] == [event_id, event_id]
