"""The merchant portal over plain HTTP: signed links (issued, expired, edited, revoked), one
project's pages and actions only, CSRF, the audit log, and a token that never reaches a log.

A real Redis and worker (``start_relay``) and merchants on loopback; the browser test
(``test_portal_browser.py``) walks the same pages in Chromium.
"""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest
from redis.asyncio import Redis

from relay.api.middleware import logged_path
from relay.portal import PortalLinks
from relay.ratelimit import LINK_FAILURES
from tests.console_client import console_client
from tests.helpers import (
    HOOK,
    QUICK,
    Api,
    Merchant,
    Running,
    Shop,
    StartRelay,
    eventually,
    forged_portal_link,
    open_shop,
    portal_b64,
    start_shop,
    verify,
    wait_hits,
)

LINKS = "/api/platform/projects/{}/portal-links"
KEYS = "/api/platform/projects/{}/api-keys"


async def portal_link(api: Api, project_id: str, *, expect: int = 200, **body: Any) -> dict[str, Any]:
    answer: dict[str, Any] = await api.call("POST", LINKS.format(project_id), json=body, expect=expect)
    return answer


def path_of(link: dict[str, Any]) -> str:
    return urlsplit(link["url"]).path


async def test_a_link_opens_its_projects_portal_with_a_plain_get(
    start_relay: StartRelay, merchant: Merchant
) -> None:
    shop = await start_shop(start_relay, merchant, retry_schedule=QUICK)
    order = await shop.order()
    await shop.wait_status(order, "delivered")
    before = datetime.now(UTC)
    link = await portal_link(shop.api, shop.project["id"])
    expires = datetime.fromisoformat(link["expires_at"].replace("Z", "+00:00"))
    assert timedelta(minutes=59) < expires - before <= timedelta(hours=1)
    assert link["url"].startswith(shop.api.url + "/portal/")
    async with console_client(shop.api.url) as browser:
        async with browser.http.get(path_of(link), allow_redirects=False) as response:
            page = await response.text()
            assert response.status == 200
            assert response.content_type == "text/html"
            csp = response.headers["Content-Security-Policy"]
            assert "default-src 'none'" in csp
            assert "script-src" not in csp
            assert response.headers["X-Frame-Options"] == "DENY"
            assert response.headers["Referrer-Policy"] == "no-referrer"
            assert response.headers["Cache-Control"] == "no-store"
        assert shop.project["name"] in page
        assert f'data-order-id="{order["order_id"]}"' in page
        assert "delivered" in page
        # The order's page: its attempt, with the merchant's answer.
        order_page = await browser.get(f"{path_of(link)}/orders/{order['order_id']}")
        assert '<td class="response"><code>ok</code>' in order_page
        assert "portal.css" in order_page
        assert "/console" not in order_page


async def test_expiry_is_settable_shorter_never_longer(relay: Running, shop: Shop) -> None:
    before = datetime.now(UTC)
    link = await portal_link(shop.api, shop.project["id"], expires_in=120)
    expires = datetime.fromisoformat(link["expires_at"].replace("Z", "+00:00"))
    assert timedelta(seconds=110) < expires - before <= timedelta(seconds=121)
    for wrong in (3601, 59, "soon"):
        answer = await portal_link(shop.api, shop.project["id"], expect=400, expires_in=wrong)
        assert answer["error"] == "InvalidInput"
    await portal_link(shop.api, "no-such-project", expect=404)


async def test_expired_edited_and_forged_links_are_403(relay: Running, shop: Shop, redis: Redis) -> None:
    link = path_of(await portal_link(shop.api, shop.project["id"]))
    payload, signature = link.removeprefix("/portal/").split(".")
    other = await open_shop(shop.api)
    now = int(datetime.now(UTC).timestamp())
    project_id = shop.project["id"]
    swapped = portal_b64(
        json.dumps([other.project["id"], *json.loads(base64.urlsafe_b64decode(payload + "==="))[1:]]).encode()
    )
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    refused = [
        f"/portal/{payload}.{flipped}",  # one character of the signature
        f"/portal/{swapped}.{signature}",  # another project's id under this link's signature
        f"/portal/{payload}",  # no signature
        f"/portal/{payload}.{signature}x",
        await forged_portal_link(redis, [project_id, "pl_1", 0, now - 1]),  # signed, but expired
    ]
    async with console_client(shop.api.url) as browser:
        assert "Webhooks" in await browser.get(link)
        assert "Webhooks" in await browser.get(
            await forged_portal_link(redis, [project_id, "pl_1", 0, now + 60])
        )
        for path in refused:
            page = await browser.get(path, expect=403)
            assert "wrong, expired or revoked" in page
            await browser.get(f"{path}/orders/x", expect=403)


async def test_revoke_invalidates_every_link_issued_so_far(relay: Running, shop: Shop) -> None:
    project_id = shop.project["id"]
    first, second = [path_of(await portal_link(shop.api, project_id)) for _ in range(2)]
    other = await open_shop(shop.api)
    others = path_of(await portal_link(shop.api, other.project["id"]))
    answer = await shop.api.call("POST", f"{LINKS.format(project_id)}/revoke")
    assert answer == {"revoked": True, "project_id": project_id}
    async with console_client(shop.api.url) as browser:
        for path in (first, second):
            await browser.get(path, expect=403)
        await browser.get(others)  # another project's links are untouched
        await browser.get(path_of(await portal_link(shop.api, project_id)))  # a new one works


async def test_another_projects_ids_are_404_whatever_the_url_says(
    start_relay: StartRelay, merchant: Merchant
) -> None:
    merchant.script["/dead"] = [503]
    running = await start_relay(retry_schedule=QUICK)
    mine = await open_shop(running.api, webhook_url=f"{merchant.url}{HOOK}")
    theirs = await open_shop(running.api, webhook_url=f"{merchant.url}/dead")
    their_order = await theirs.order()
    their_event = (await theirs.wait_status(their_order, "failed"))["event_id"]
    link = path_of(await portal_link(running.api, mine.project["id"]))
    async with console_client(running.url) as browser:
        csrf = await browser.csrf(link)
        await browser.get(f"{link}/orders/{their_order['order_id']}", expect=404)
        await browser.get(f"{link}/events/{their_event}", expect=404)
        for action in (f"orders/{their_order['order_id']}/retry", f"dead-letters/{their_event}/replay"):
            await browser.post(f"{link}/{action}", {"csrf_token": csrf}, expect=404)
        # Replaying "all" from this portal replays this project's only.
        await browser.post(f"{link}/dead-letters/replay-all", {"csrf_token": csrf})
    assert (await theirs.purchase(their_order))["webhook_status"] == "failed"
    assert len(merchant.hits("/dead")) == 2  # its first round (QUICK: two attempts), nothing since


async def test_forms_need_the_links_csrf_token(relay: Running, shop: Shop) -> None:
    link = path_of(await portal_link(shop.api, shop.project["id"]))
    other_link = path_of(await portal_link(shop.api, shop.project["id"]))
    async with console_client(shop.api.url) as browser:
        wrong = await browser.csrf(other_link)  # another link's token is not this one's
        for form in ({}, {"csrf_token": "x"}, {"csrf_token": wrong}):
            await browser.post(
                f"{link}/webhook-url", form | {"webhook_url": "https://evil.example/x"}, expect=403
            )
    project = (await shop.api.call("GET", f"/api/platform/projects/{shop.project['id']}"))["project"]
    assert project["webhook_url"] == shop.project["webhook_url"]


async def test_the_merchant_retries_rotates_sets_its_url_and_sends_a_test(
    start_relay: StartRelay, merchant: Merchant, redis: Redis
) -> None:
    merchant.script[HOOK] = [503]
    shop = await start_shop(start_relay, merchant, retry_schedule=QUICK)
    order = await shop.order()
    await shop.wait_status(order, "failed")
    link = path_of(await portal_link(shop.api, shop.project["id"]))
    async with console_client(shop.api.url) as browser:
        csrf = await browser.csrf(link)
        # Retry: queued again, delivered once the endpoint answers.
        merchant.script[HOOK] = [200]
        order_page = f"{link}/orders/{order['order_id']}"
        response = await browser.post(
            f"{order_page}/retry", {"csrf_token": csrf, "back": f"{order_page}?x=1"}
        )
        assert response.headers["Location"] == f"{order_page}?done=retried"
        assert "The webhook was queued again." in await browser.get(response.headers["Location"])
        await shop.wait_status(order, "delivered")
        # A back link outside this portal is not followed.
        response = await browser.post(
            f"{order_page}/retry", {"csrf_token": csrf, "back": "https://evil.example/"}
        )
        assert response.headers["Location"] == f"{link}?done=retried"

        # The webhook URL: a bad one is a clear 400 page; a good one is saved.
        page = await browser.post(
            f"{link}/webhook-url", {"csrf_token": csrf, "webhook_url": "ftp://x"}, expect=400
        )
        assert page.content_type == "text/html"
        await browser.post(f"{link}/webhook-url", {"csrf_token": csrf, "webhook_url": f"{merchant.url}/new"})
        project = (await shop.api.call("GET", f"/api/platform/projects/{shop.project['id']}"))["project"]
        assert project["webhook_url"] == f"{merchant.url}/new"

        # Rotation shows the new secret once; the old one keeps signing.
        async with browser.http.post(f"{link}/secret/rotate", data={"csrf_token": csrf}) as answer:
            assert answer.status == 200
            secret_page = await answer.text()
        found = re.search(r'<code id="new-secret">(whsec_[^<]+)</code>', secret_page)
        assert found
        new_secret = found.group(1)
        assert new_secret not in await browser.get(link)

        # A test event: signed with the new secret (and the old), delivered, its answer shown.
        response = await browser.post(f"{link}/test-event", {"csrf_token": csrf})
        event_page = response.headers["Location"]
        assert event_page.startswith(f"{link}/events/evt_")

        async def tested() -> bool:
            return any('"webhook.test"' in hit.body for hit in merchant.hits("/new"))

        await eventually(tested, what="the test event at the new URL")
        [hit] = [hit for hit in merchant.hits("/new") if '"webhook.test"' in hit.body]
        body = verify(hit, new_secret)
        assert verify(hit, shop.secret) == body
        assert body["event"] == "webhook.test"
        assert body["project_id"] == shop.project["id"]

        async def shown() -> bool:
            return '<span class="badge delivered">' in await browser.get(event_page)

        await eventually(shown, what="the test event delivered on its page")
        # One test event per project every 2 s.
        await browser.post(f"{link}/test-event", {"csrf_token": csrf}, expect=429)


async def test_portal_actions_are_audited_without_the_link_and_never_logged(
    relay: Running, shop: Shop, capsys: pytest.CaptureFixture[str]
) -> None:
    link_answer = await portal_link(shop.api, shop.project["id"])
    link = path_of(link_answer)
    token = link.removeprefix("/portal/")
    async with console_client(shop.api.url) as browser:
        csrf = await browser.csrf(link)
        await browser.post(
            f"{link}/webhook-url", {"csrf_token": csrf, "webhook_url": "https://shop.example/hook"}
        )
    entries = (await shop.api.call("GET", "/api/admin/audit"))["entries"]
    by_action = {entry["action"]: entry for entry in entries}
    issued = by_action[f"POST {LINKS.format('{project_id}')}"]
    assert (issued["actor"], issued["target"]["link_id"]) == ("admin", link_answer["id"])
    changed = by_action["POST /portal/{token}/webhook-url"]
    assert changed["actor"] == f"portal:{link_answer['id']}"
    assert changed["project_id"] == shop.project["id"]
    assert token not in json.dumps(entries)
    logged = capsys.readouterr()
    assert "/portal/" in logged.out
    assert token not in logged.out + logged.err


async def test_a_project_key_makes_links_for_its_own_project_only(relay: Running, shop: Shop) -> None:
    key = (await shop.api.call("POST", KEYS.format(shop.project["id"]), json={"name": "backend"}))["api_key"]
    other = await open_shop(shop.api)
    headers = {"Authorization": f"Bearer {key['key']}"}

    async def as_key(path: str, expect: int) -> Any:
        return await shop.api.call("POST", path, auth=False, headers=dict(headers), json={}, expect=expect)

    link = await as_key(LINKS.format(shop.project["id"]), 200)
    await as_key(LINKS.format(other.project["id"]), 404)
    await as_key(f"{LINKS.format(other.project['id'])}/revoke", 404)
    await as_key(f"{LINKS.format(shop.project['id'])}/revoke", 200)
    async with console_client(shop.api.url) as browser:
        await browser.get(path_of(link), expect=403)


async def test_links_are_checked_not_stored(redis: Redis) -> None:
    links = PortalLinks(redis, prefix="t")
    now = datetime(2026, 12, 1, tzinfo=UTC)
    link = await links.issue("p1", now=now, ttl=timedelta(minutes=5))
    assert link.expires_at == now + timedelta(minutes=5)
    assert await links.open(link.token, now=now + timedelta(minutes=4, seconds=59)) == link
    assert await links.open(link.token, now=now + timedelta(minutes=5)) is None
    # A process that never issued it opens it too (the key is shared through Redis).
    assert await PortalLinks(redis, prefix="t").open(link.token, now=now) == link
    await links.revoke("p1")
    assert await links.open(link.token, now=now) is None
    for hostile in ("", ".", "a" * 5000, "é.é", f"{link.token}\n", link.token.replace(".", "..")):
        assert await links.open(hostile, now=now) is None


async def test_item_and_plan_urls_are_set_in_the_portal_for_its_own_project_only(
    start_relay: StartRelay,
) -> None:
    running = await start_relay(worker=False, allow_private_targets=False)
    shop = await open_shop(running.api, webhook_url="https://shop.example/hook")
    plan = (
        await running.api.call(
            "PUT",
            "/api/platform/plans",
            json={"project_id": shop.project["id"], "name": "Pro", "price": 10000, "interval": "month"},
        )
    )["plan"]
    other = await open_shop(running.api)
    link = path_of(await portal_link(running.api, shop.project["id"]))
    async with console_client(running.url) as browser:
        csrf = await browser.csrf(link)
        for kind, entry_id in (("items", shop.item["id"]), ("plans", plan["id"])):
            form = {"csrf_token": csrf, "webhook_url": f"https://{kind}.example/hook"}
            await browser.post(f"{link}/{kind}/{entry_id}/webhook-url", form)
        # A private address is refused here as at the API (the relay refuses private targets).
        for url in ("http://127.0.0.1/hook", "http://10.0.0.1/hook"):
            for path in (f"items/{shop.item['id']}/webhook-url", "webhook-url"):
                page = await browser.post(
                    f"{link}/{path}", {"csrf_token": csrf, "webhook_url": url}, expect=400
                )
                assert page.content_type == "text/html"
        await browser.post(f"{link}/items/{other.item['id']}/webhook-url", {"csrf_token": csrf}, expect=404)
    item = (await running.api.call("GET", f"/api/platform/items/{shop.item['id']}"))["item"]
    assert item["webhook_url"] == "https://items.example/hook"
    plans = (await running.api.call("GET", f"/api/platform/projects/{shop.project['id']}/plans"))["plans"]
    assert [found["webhook_url"] for found in plans] == ["https://plans.example/hook"]
    assert (await running.api.call("GET", f"/api/platform/items/{other.item['id']}"))["item"][
        "webhook_url"
    ] is None
    project = (await running.api.call("GET", f"/api/platform/projects/{shop.project['id']}"))["project"]
    assert project["webhook_url"] == "https://shop.example/hook"


async def test_a_signature_has_one_spelling(relay: Running, shop: Shop) -> None:
    """base64's spare bits in the signature's last character do not make other valid links."""
    link = path_of(await portal_link(shop.api, shop.project["id"]))
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    value = alphabet.index(link[-1])
    # The 43rd character carries 4 bits of the digest and 2 spare ones: its 3 other spellings.
    spellings = [alphabet[(value & ~3) | spare] for spare in range(4) if (value & ~3) | spare != value]
    async with console_client(shop.api.url) as browser:
        await browser.get(link)
        for other in spellings:
            await browser.get(link[:-1] + other, expect=403)


async def test_bad_links_have_their_own_count_and_never_lock_the_operator_out(
    relay: Running, shop: Shop
) -> None:
    async with console_client(shop.api.url) as browser:
        for _ in range(LINK_FAILURES):
            await browser.get("/portal/nope", expect=403)
        await browser.get("/portal/nope", expect=429)
        assert "entries" in await shop.api.call("GET", "/api/admin/audit")  # the admin token
        await browser.login()


async def test_revoking_a_key_revokes_the_projects_links(relay: Running, shop: Shop) -> None:
    key = (await shop.api.call("POST", KEYS.format(shop.project["id"]), json={"name": "backend"}))["api_key"]
    headers = {"Authorization": f"Bearer {key['key']}"}
    made = await shop.api.call("POST", LINKS.format(shop.project["id"]), auth=False, headers=headers, json={})
    async with console_client(shop.api.url) as browser:
        await browser.get(path_of(made))
        await shop.api.call("DELETE", f"{KEYS.format(shop.project['id'])}/{key['id']}")
        await browser.get(path_of(made), expect=403)


async def test_bulk_replays_are_one_a_minute_and_back_links_stay_plain(
    start_relay: StartRelay, merchant: Merchant
) -> None:
    shop = await start_shop(start_relay, merchant, retry_schedule=QUICK)
    order = await shop.order()
    await shop.wait_status(order, "delivered")
    link = path_of(await portal_link(shop.api, shop.project["id"]))
    async with console_client(shop.api.url) as browser:
        csrf = await browser.csrf(link)
        window = {"csrf_token": csrf, "since": "2000-01-01T00:00:00Z"}
        assert (await browser.post(f"{link}/replay", window)).headers["Location"] == f"{link}?done=window"
        await wait_hits(merchant, 2)
        await browser.post(f"{link}/replay", window, expect=429)
        await browser.post(f"{link}/dead-letters/replay-all", {"csrf_token": csrf}, expect=429)
        order_page = f"{link}/orders/{order['order_id']}"
        for back in (f"{order_page}/\r\nX: y", f"{link}/../../console", f"{link}//evil", f"{link}/a\\b"):
            response = await browser.post(f"{order_page}/retry", {"csrf_token": csrf, "back": back})
            assert response.headers["Location"] == f"{link}?done=retried", back


def test_the_request_log_never_holds_a_link_token_however_the_path_is_spelt() -> None:
    token = "eyJwIjoi" + "x" * 60 + "." + "s" * 43
    for path in (f"/portal/{token}", f"/Portal/{token}/orders/o1", f"//PORTAL//{token}"):
        logged = logged_path(path)
        assert token not in logged
        assert "eyJwIjoi…" in logged
    assert logged_path("/api/platform/projects/p1") == "/api/platform/projects/p1"
