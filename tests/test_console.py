"""The operator console over plain HTTP: login, session cookie, CSRF, headers, escaping, pages.

A real Redis and worker (``start_relay``) and a merchant on loopback; the browser test
(``test_console_browser.py``) clicks through the same pages in Chromium.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from http.cookies import SimpleCookie

from markupsafe import escape
from redis.asyncio import Redis

from tests.console_client import console_client
from tests.helpers import (
    ADMIN_TOKEN,
    HOOK,
    QUICK,
    Merchant,
    Running,
    Shop,
    StartRelay,
    eventually,
    start_shop,
    wait_hits,
)

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


async def failed_purchase(shop: Shop) -> dict[str, str]:
    """A paid purchase whose webhook went through its retries into the dead-letter queue."""
    order = await shop.order()
    purchase = await shop.wait_status(order, "failed")
    return {"order_id": order["order_id"], "event_id": purchase["event_id"]}


def retry_path(shop: Shop, order_id: str) -> str:
    return f"/console/projects/{shop.project['id']}/purchases/{order_id}/retry"


async def test_pages_need_a_session(start_relay: StartRelay) -> None:
    running = await start_relay(worker=False)
    async with console_client(running.url) as console:
        async with console.http.get("/console/", allow_redirects=False) as response:
            assert response.headers["Location"] == "/console"
        for path in (
            "/console",
            "/console/dead-letters",
            "/console/projects/p1",
            "/console/projects/p1/purchases/x",
        ):
            async with console.http.get(path, allow_redirects=False) as response:
                assert response.status == 303, path
                assert response.headers["Location"] == "/console/login"
        # A form posted without a session is refused, with an HTML page, not JSON.
        response = await console.post("/console/dead-letters/replay-all", {"csrf_token": "x"}, expect=403)
        assert response.content_type == "text/html"
        assert "login" in await console.get("/console/login")


async def test_wrong_token_is_refused(start_relay: StartRelay) -> None:
    running = await start_relay(worker=False)
    async with console_client(running.url) as console:
        for token in ("wrong-token-0123456789", "", running.api.midtrans_key):
            async with console.http.post("/console/login", data={"token": token}) as response:
                body = await response.text()
                assert response.status == 401
                assert "Set-Cookie" not in response.headers
                assert "That is not the admin token." in body
        assert console.cookie() is None
        await console.get("/console", expect=303)


async def test_login_sets_a_strict_httponly_session_cookie(start_relay: StartRelay, redis_url: str) -> None:
    running = await start_relay(worker=False)
    project = await running.api.project(name="Toko Buku")
    async with console_client(running.url) as console:
        response = await console.login(f"  {ADMIN_TOKEN}  ")  # pasted with spaces
        assert response.headers["Location"] == "/console"
        [header] = response.headers.getall("Set-Cookie")
        morsel = SimpleCookie(header)["relay_console"]
        assert morsel["httponly"] is True
        assert morsel["samesite"] == "Strict"
        assert morsel["path"] == "/console"
        assert not morsel["secure"]  # plain http on loopback; https sets Secure
        assert int(morsel["max-age"]) == 8 * 3600
        session_id = morsel.value
        assert len(session_id) >= 40

        page = await console.get("/console")
        assert "Toko Buku" in page
        assert f'href="/console/projects/{project["id"]}"' in page
        # Logged in, the login form sends you to the console.
        await console.get("/console/login", expect=303)

        # Redis holds a hash of the session id, never the id, and the session expires.
        client = Redis.from_url(redis_url, decode_responses=True)
        try:
            keys = [key async for key in client.scan_iter(match="relay:console:session:*")]
            assert len(keys) == 1
            assert session_id not in keys[0]
            assert 0 < await client.ttl(keys[0]) <= 8 * 3600
            # Logging in again replaces the session: a new id, the old one gone.
            await console.login()
            assert console.cookie() not in (None, session_id)
            assert [key async for key in client.scan_iter(match="relay:console:session:*")] != keys
            assert len([key async for key in client.scan_iter(match="relay:console:session:*")]) == 1
        finally:
            await client.aclose()

        # Logging out needs the CSRF token, ends the session and clears the cookie.
        await console.post("/console/logout", {}, expect=403)
        await console.get("/console")
        current = console.cookie()
        await console.post("/console/logout", {"csrf_token": await console.csrf()})
        assert console.cookie() in (None, "")
        async with console.http.get(
            "/console", allow_redirects=False, cookies={"relay_console": str(current)}
        ) as stale:
            assert stale.status == 303


async def test_cookie_is_a_secure_host_cookie_when_the_console_is_served_over_https(
    start_relay: StartRelay,
) -> None:
    running = await start_relay(worker=False, public_base_url="https://relay.example.com")
    async with console_client(running.url) as console:
        response = await console.login()
        morsel = SimpleCookie(response.headers["Set-Cookie"])["__Host-relay_console"]
        assert morsel["secure"] is True
        assert morsel["httponly"] is True
        assert morsel["path"] == "/"
        assert not morsel["domain"]
        # The session it names works (the client sends it back only over https, so by hand here).
        async with console.http.get(
            "/console", allow_redirects=False, cookies={"__Host-relay_console": morsel.value}
        ) as page:
            assert page.status == 200
        async with console.http.get(  # the plain-http cookie's name is not read over https
            "/console", allow_redirects=False, cookies={"relay_console": morsel.value}
        ) as page:
            assert page.status == 303


async def test_forms_without_the_right_csrf_token_are_403_and_change_nothing(
    start_relay: StartRelay, merchant: Merchant
) -> None:
    merchant.script[HOOK] = [503]
    shop = await start_shop(start_relay, merchant, retry_schedule=QUICK)
    failed = await failed_purchase(shop)
    hits = len(merchant.hits(HOOK))
    async with console_client(shop.api.url) as console:
        await console.login()
        token = await console.csrf()
        altered = token[:-1] + ("B" if token.endswith("A") else "A")  # one character off
        forms = [
            "/console/dead-letters/replay-all",
            f"/console/dead-letters/{failed['event_id']}/replay",
            retry_path(shop, failed["order_id"]),
        ]
        for path in forms:
            for data in ({}, {"csrf_token": ""}, {"csrf_token": altered}, {"csrf_token": token * 2}):
                response = await console.post(path, data, expect=403)
                assert response.content_type == "text/html"
        # Another session's token is not this session's.
        async with console_client(shop.api.url) as other:
            await other.login()
            for path in forms:
                await other.post(path, {"csrf_token": token}, expect=403)

        assert await shop.api.dead_letter_ids() == [failed["event_id"]]
        assert (await shop.purchase(failed))["webhook_status"] == "failed"
        assert len(merchant.hits(HOOK)) == hits

        # With the token, the same form replays it, with the same webhook-id.
        merchant.script[HOOK] = [200]
        response = await console.post(forms[1], {"csrf_token": token, "back": "/console/dead-letters"})
        assert response.headers["Location"] == "/console/dead-letters"
        await shop.wait_status(failed, "delivered")
        assert merchant.hits(HOOK)[-1].headers["webhook-id"] == failed["event_id"]
        assert "replayed" in await console.get("/console/dead-letters")


async def test_security_headers_on_every_console_response(start_relay: StartRelay) -> None:
    running = await start_relay(worker=False)
    async with console_client(running.url) as console:
        paths = ["/console/login", "/console/console.css", "/console/nope"]
        for path in paths:
            async with console.http.get(path, allow_redirects=False) as response:
                headers = response.headers
                csp = headers["Content-Security-Policy"]
                assert "default-src 'none'" in csp
                assert "frame-ancestors 'none'" in csp
                assert "form-action 'self'" in csp
                assert "script" not in csp
                assert "unsafe" not in csp
                assert headers["X-Frame-Options"] == "DENY"
                assert headers["Referrer-Policy"] == "no-referrer"
                assert headers["Cache-Control"] == "no-store"
                assert headers["X-Content-Type-Options"] == "nosniff"
        await console.login()
        async with console.http.get("/console") as response:
            assert response.headers["X-Frame-Options"] == "DENY"
            assert "<script" not in await response.text()


async def test_hostile_names_are_escaped(start_relay: StartRelay, merchant: Merchant) -> None:
    shop = await start_shop(start_relay, merchant)
    await shop.api.project(id=shop.project["id"], name=HOSTILE)
    await shop.set_item_url(None, name=HOSTILE)
    order = await shop.order(buyer_name=HOSTILE, metadata={"note": HOSTILE})
    await shop.wait_status(order, "delivered")
    async with console_client(shop.api.url) as console:
        await console.login()
        pages = [
            "/console",
            f"/console/projects/{shop.project['id']}",
            f"/console/projects/{shop.project['id']}/purchases/{order['order_id']}",
            "/console/dead-letters",
        ]
        for path in pages:
            page = await console.get(path)
            assert "<script" not in page, path
            assert "<img" not in page, path
        project_page = await console.get(pages[1])
        assert str(escape(HOSTILE)) in project_page  # shown, as text


async def test_errors_are_html_pages_and_the_api_keeps_json(start_relay: StartRelay) -> None:
    running = await start_relay(worker=False)
    project = await running.api.project()
    async with console_client(running.url) as console:
        await console.login()
        for path, status in [
            ("/console/projects/nope", 404),
            ("/console/projects/nope/purchases/item-x-1", 404),
            ("/console/no/such/page", 404),
            (f"/console/projects/{project['id']}?webhook_status=bogus", 400),
            ("/console/dead-letters?since=yesterday", 400),
        ]:
            async with console.http.get(path, allow_redirects=False) as response:
                assert response.status == status, path
                assert response.content_type == "text/html", path
                assert "<h1>" in await response.text()
    async with running.api.http.get("/api/platform/projects/nope") as response:
        assert response.status == 401
        assert (await response.json())["error"] == "Unauthorized"
    assert (await running.api.call("GET", "/api/platform/projects/nope", expect=404))["error"] == "NotFound"


async def test_project_page_filters_by_webhook_status_and_retry_resends(
    start_relay: StartRelay, merchant: Merchant
) -> None:
    merchant.script[HOOK] = [200]
    shop = await start_shop(start_relay, merchant, retry_schedule=QUICK)
    delivered = await shop.order()
    await shop.wait_status(delivered, "delivered")
    merchant.script[HOOK] = [503]
    failed = await failed_purchase(shop)
    project_path = f"/console/projects/{shop.project['id']}"
    async with console_client(shop.api.url) as console:
        await console.login()
        everything = await console.get(project_path)
        assert delivered["order_id"] in everything
        assert failed["order_id"] in everything
        only_failed = await console.get(f"{project_path}?webhook_status=failed")
        assert failed["order_id"] in only_failed
        assert delivered["order_id"] not in only_failed
        detail = await console.get(f"{project_path}/purchases/{failed['order_id']}")
        assert detail.count("503") >= len(QUICK) + 1  # the attempt log

        merchant.script[HOOK] = [200]
        back = f"{project_path}?webhook_status=failed"
        response = await console.post(
            retry_path(shop, failed["order_id"]), {"csrf_token": await console.csrf(), "back": back}
        )
        assert response.headers["Location"] == back
        purchase = await shop.wait_status(failed, "delivered")
        assert purchase["event_id"] == failed["event_id"]
        assert merchant.hits(HOOK)[-1].headers["webhook-id"] == failed["event_id"]

        # "back" only ever leads to a console page on this site.
        for elsewhere in ("https://evil.example/", "//evil.example/console", "/api/admin/dead-letters"):
            response = await console.post(
                retry_path(shop, delivered["order_id"]),
                {"csrf_token": await console.csrf(), "back": elsewhere},
            )
            assert response.headers["Location"] == project_path

        # An unpaid purchase has no webhook to retry.
        pending = await shop.order(pay=False)
        await console.post(
            retry_path(shop, pending["order_id"]), {"csrf_token": await console.csrf()}, expect=409
        )


async def test_replay_all_replays_only_what_the_filter_shows(
    start_relay: StartRelay, merchant: Merchant
) -> None:
    merchant.script[HOOK] = [503]
    shop = await start_shop(start_relay, merchant, retry_schedule=QUICK)
    other_project = await shop.api.project(name="Other", webhook_url=f"{merchant.url}{HOOK}")
    other_item = await shop.api.item(other_project["id"])
    mine = [await failed_purchase(shop) for _ in range(2)]
    theirs_order = await shop.api.buy(other_project["client_id"], other_item["id"])
    await shop.api.pay(theirs_order)
    theirs = await shop.api.purchase(other_project["id"], theirs_order["order_id"])

    async def theirs_failed() -> bool:
        purchase = await shop.api.purchase(other_project["id"], theirs_order["order_id"])
        return purchase["webhook_status"] == "failed"

    await eventually(theirs_failed, what="the other project's dead letter")
    async with console_client(shop.api.url) as console:
        await console.login()
        filtered = await console.get(f"/console/dead-letters?project_id={shop.project['id']}")
        assert all(row["event_id"] in filtered for row in mine)
        assert theirs["event_id"] not in filtered
        assert "Replay all 2 matching" in filtered
        future = (datetime.now(UTC) + timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
        assert "The dead-letter queue is empty" in await console.get(f"/console/dead-letters?since={future}")

        merchant.script[HOOK] = [200]
        token = await console.csrf("/console/dead-letters")
        response = await console.post(
            "/console/dead-letters/replay-all",
            {"csrf_token": token, "project_id": shop.project["id"], "since": ""},
        )
        assert response.headers["Location"] == f"/console/dead-letters?project_id={shop.project['id']}"
        assert "Replayed 2 dead letters." in await console.get(response.headers["Location"])
        for row in mine:
            await shop.wait_status(row, "delivered")
        assert await shop.api.dead_letter_ids() == [theirs["event_id"]]
        attempts_before = 3 * (len(QUICK) + 1)  # three dead letters' attempts
        await wait_hits(merchant, attempts_before + len(mine))


async def test_project_page_shows_endpoint_health_and_enables_a_disabled_endpoint(
    start_relay: StartRelay, merchant: Merchant
) -> None:
    merchant.script[HOOK] = [503]
    shop = await start_shop(start_relay, merchant, endpoint_disable_after=0.3, retry_schedule=(0.2, 0.2, 0.2))
    order = await shop.order()
    await shop.wait_status(order, "failed", timeout=15)
    project_path = f"/console/projects/{shop.project['id']}"
    url = f"{merchant.url}{HOOK}"
    async with console_client(shop.api.url) as console:
        await console.login()
        page = await console.get(project_path)
        assert 'id="endpoints"' in page
        assert f'data-url="{url}"' in page
        assert '<span class="badge disabled">disabled</span>' in page
        assert "HTTP 503" in page

        form = {"csrf_token": await console.csrf(project_path), "url": url}
        await console.post(f"{project_path}/endpoints/enable", {"url": url}, expect=403)  # no CSRF token
        response = await console.post(f"{project_path}/endpoints/enable", form)
        assert response.headers["Location"] == project_path
        page = await console.get(project_path)
        assert '<span class="badge healthy">healthy</span>' in page
        assert "enabled" in page  # the notice
        form["url"] = "https://never.example/hook"
        await console.post(f"{project_path}/endpoints/enable", form, expect=404)


async def test_unmatched_callbacks_page_lists_them_escaped(start_relay: StartRelay) -> None:
    running = await start_relay(worker=False)
    api = running.api
    assert await api.callback(api.notification("<b>nobody</b>", 1000)) == {"status": "ok"}
    async with console_client(running.url) as console:
        await console.get("/console/unmatched", expect=303)  # a session first
        await console.login()
        page = await console.get("/console/unmatched")
        assert "&lt;b&gt;nobody&lt;/b&gt;" in page
        assert "<b>nobody</b>" not in page
        assert "settlement" in page


async def test_every_kind_of_order_its_refunds_plans_and_subscriptions(
    start_relay: StartRelay, merchant: Merchant
) -> None:
    """A shop payment paid and refunded and a subscription's first period, every webhook
    dead-lettered: the project page shows each kind (a payment by the merchant's order id), the
    plans and subscriptions; an order's page its refunds; the dead letters their types. Names the
    merchant chose are shown as text."""
    merchant.script[HOOK] = [503]
    shop = await start_shop(start_relay, merchant, retry_schedule=QUICK)
    api, pid = shop.api, shop.project["id"]
    await api.call(
        "POST",
        f"/api/platform/projects/{pid}/payments",
        json={
            "order_id": "INV-1001",
            "amount": 75000,
            "buyer_email": "b@example.com",
            "description": HOSTILE,
        },
    )
    payment = (await api.call("GET", f"/api/platform/projects/{pid}/payments/INV-1001"))["payment"]
    gateway_order = {"order_id": payment["gateway_order_id"], "amount": 75000}
    await api.pay(gateway_order)
    await shop.wait_status(gateway_order, "failed")
    refund = api.notification(
        gateway_order["order_id"],
        75000,
        status="partial_refund",
        refunds=[{"refund_chargeback_id": 7, "refund_amount": "25000.00", "reason": HOSTILE}],
    )
    await api.callback(refund)
    plan = (
        await api.call(
            "PUT",
            "/api/platform/plans",
            json={
                "project_id": pid,
                "name": HOSTILE,
                "price": 99000,
                "interval": "month",
                "interval_count": 3,
            },
        )
    )["plan"]
    started = await api.call(
        "POST",
        "/api/platform/public-plans/subscribe",
        auth=False,
        json={"client_id": shop.project["client_id"], "plan_id": plan["id"], "buyer_email": "s@example.com"},
    )
    await api.pay(started)
    subscription_path = f"/api/platform/projects/{pid}/subscriptions/{started['subscription_id']}"
    await api.call("POST", subscription_path + "/cancel")

    async def all_dead() -> bool:
        return len(await api.dead_letter_ids()) == 3

    await eventually(all_dead, what="three dead letters")
    types = {row["type"]: row["event_id"] for row in (await api.dead_letters())["dead_letters"]}
    assert set(types) == {"payment.paid", "payment.refunded", "subscription.activated"}

    project_path = f"/console/projects/{pid}"
    payment_path = f"{project_path}/purchases/{gateway_order['order_id']}"
    async with console_client(api.url) as console:
        await console.login()
        page = await console.get(project_path)
        assert "<script" not in page
        assert "<img" not in page
        assert f'data-order-id="{gateway_order["order_id"]}" data-kind="payment"' in page
        assert f'href="{payment_path}"><code>INV-1001</code></a>' in page  # the merchant's id
        assert f"gateway <code>{gateway_order['order_id']}</code>" in page
        assert f'data-order-id="{started["order_id"]}" data-kind="subscription"' in page
        assert f'<code class="muted subscription-id">{started["subscription_id"]}</code>' in page
        assert page.count(str(escape(HOSTILE))) >= 3  # description, plan name in orders, subscriptions, plans
        subscription = (await api.call("GET", subscription_path))["subscription"]
        period_end = subscription["current_period_end"].replace("T", " ")
        assert f'data-subscription-id="{started["subscription_id"]}"' in page
        assert '<td class="subscription-status"><span class="badge active">active</span></td>' in page
        assert f'<td class="nowrap period-end">{period_end}</td>' in page
        assert '<td class="cancel-at-period-end">yes</td>' in page
        assert f'data-plan-id="{plan["id"]}"' in page
        assert '<td class="interval">3 months</td>' in page

        dead = await console.get("/console/dead-letters")
        for name in types:
            assert f'<td class="type">{name}</td>' in dead

        detail = await console.get(payment_path)
        assert "<script" not in detail
        assert '<code class="merchant-order-id">INV-1001</code>' in detail
        assert f'<code class="gateway-order-id">{gateway_order["order_id"]}</code>' in detail
        assert f'<td class="description">{escape(HOSTILE)}</td>' in detail
        assert 'id="refunds"' in detail
        assert f'data-event-id="{types["payment.refunded"]}"' in detail
        assert '<td class="type">payment.refunded</td>' in detail
        assert "IDR 25,000" in detail
        assert f'<td class="reason">{escape(HOSTILE)}</td>' in detail
        assert "of its payment.paid webhook" in detail

        sub_detail = await console.get(f"{project_path}/purchases/{started['order_id']}")
        assert f'<code class="subscription-id">{started["subscription_id"]}</code>' in sub_detail
        assert "subscription.activated" in sub_detail
        assert 'id="refunds"' not in sub_detail

        # The refund's Replay sends that event again, and only it.
        merchant.script[HOOK] = [200]
        hits = len(merchant.hits(HOOK))
        response = await console.post(
            f"/console/dead-letters/{types['payment.refunded']}/replay",
            {"csrf_token": await console.csrf(payment_path), "back": payment_path},
        )
        assert response.headers["Location"] == payment_path
        await wait_hits(merchant, hits + 1)
        assert merchant.hits(HOOK)[-1].headers["webhook-id"] == types["payment.refunded"]
        assert sorted(await api.dead_letter_ids()) == sorted(
            [types["payment.paid"], types["subscription.activated"]]
        )


def order_ids(page: str) -> list[str]:
    return re.findall(r'data-order-id="([^"]+)"', page)


async def test_orders_are_searched_filtered_and_paged(start_relay: StartRelay, merchant: Merchant) -> None:
    shop = await start_shop(start_relay, merchant, retry_schedule=QUICK)
    orders = [await shop.order(buyer_email=f"buyer{n}@Example.com") for n in range(5)]
    for order in orders:
        await shop.wait_status(order, "delivered")
    unpaid = await shop.order(pay=False, buyer_email="late@example.com")
    event_id = (await shop.purchase(orders[1]))["event_id"]
    project_path = f"/console/projects/{shop.project['id']}"
    async with console_client(shop.api.url) as console:
        await console.login()
        everything = await console.get(project_path)
        assert order_ids(everything)[0] == unpaid["order_id"]  # newest first
        assert 'class="nowrap created-at"' in everything
        # A pending webhook on the page: it reloads itself; none waiting, it does not.
        assert '<meta http-equiv="refresh" content="5">' not in everything  # the unpaid order sent nothing
        assert order_ids(await console.get(f"{project_path}?q=BUYER3%40example")) == [orders[3]["order_id"]]
        assert order_ids(await console.get(f"{project_path}?q={event_id}")) == [orders[1]["order_id"]]
        assert order_ids(await console.get(f"{project_path}?q={orders[2]['order_id']}")) == [
            orders[2]["order_id"]
        ]
        assert "no-purchases" in await console.get(f"{project_path}?q=evt_nothing")
        # Not an id: part of a buyer's email. An id outside the time window: not shown.
        assert order_ids(await console.get(f"{project_path}?q=buyer4")) == [orders[4]["order_id"]]
        assert "no-purchases" in await console.get(
            f"{project_path}?q={orders[2]['order_id']}&until=2000-01-01"
        )
        assert order_ids(await console.get(f"{project_path}?status=pending")) == [unpaid["order_id"]]
        assert "no-purchases" in await console.get(f"{project_path}?kind=payment")
        # Every order once, through the pages.
        seen, path = [], f"{project_path}?limit=2&webhook_status=delivered"
        while path:
            page = await console.get(path)
            seen += order_ids(page)
            found = re.search(r'href="([^"]+)" id="next-orders"', page)
            path = found.group(1).replace("&amp;", "&") if found else ""
        assert sorted(seen) == sorted(order["order_id"] for order in orders)
        for bad in ("kind=nope", "status=nope", "until=yesterday", "cursor=nonsense"):
            assert "InvalidInput" in await console.get(f"{project_path}?{bad}", expect=400)
        # The order's page: what is sent, and each attempt with the answer's headers.
        detail = await console.get(f"{project_path}/purchases/{orders[1]['order_id']}")
        assert f"webhook-id: {event_id}" in detail
        assert escape(json.dumps(orders[1]["order_id"]))[1:-1] in detail
        assert "content-type: text/plain" in detail


async def test_a_page_with_webhooks_on_their_way_reloads_itself(relay: Running, shop: Shop) -> None:
    order = await shop.order()  # the relay has no worker: its webhook stays pending
    async with console_client(shop.api.url) as console:
        await console.login()
        page = await console.get(f"/console/projects/{shop.project['id']}")
        assert order["order_id"] in page
        assert '<meta http-equiv="refresh" content="5">' in page


async def test_projects_are_listed_a_page_at_a_time(relay: Running) -> None:
    made = [(await relay.api.project(name=f"Shop {n}"))["id"] for n in range(3)]
    async with console_client(relay.url) as console:
        await console.login()
        seen, path = [], "/console"
        while path:
            page = await console.get(path)
            seen += re.findall(r'data-project-id="([^"]+)"', page)
            found = re.search(r'href="([^"]+)" id="next-page"', page)
            path = found.group(1).replace("&amp;", "&") if found else ""
        assert sorted(seen) == sorted(made)
