"""The merchant portal walked by a merchant in a real headless Chromium (``tests/browser.py``): open
the link, see an order, retry it, rotate the secret, send a test event; and the refusals: an
expired or edited link, another project's ids. A real Redis and worker (``start_relay``) and a
merchant on loopback.
"""

from __future__ import annotations

import re
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from playwright.async_api import Browser, expect
from redis.asyncio import Redis

from tests.browser import open_page, reload_until
from tests.helpers import (
    ADMIN_TOKEN,
    HOOK,
    QUICK,
    Merchant,
    StartRelay,
    eventually,
    forged_portal_link,
    open_shop,
    portal_path,
    start_shop,
    verify,
)

# For a person to look at: the portal after the retry, and on a phone.
SCREENSHOT = Path(tempfile.gettempdir()) / "portal.png"
PHONE_SCREENSHOT = Path(tempfile.gettempdir()) / "portal-phone.png"


async def test_a_merchant_opens_the_link_retries_rotates_and_sends_a_test_event(
    start_relay: StartRelay, merchant: Merchant, browser: Browser
) -> None:
    merchant.script[HOOK] = [503]
    shop = await start_shop(start_relay, merchant, retry_schedule=QUICK)
    await shop.api.project(id=shop.project["id"], name="Toko Template")
    order = await shop.order(buyer_name="Budi")
    failed = await shop.wait_status(order, "failed")
    link = await portal_path(shop.api, shop.project["id"])

    page = await open_page(browser, shop.api.url)
    response = await page.goto(link)
    assert response is not None
    assert response.status == 200
    assert "script-src" not in response.headers["content-security-policy"]
    await expect(page.locator("h1")).to_contain_text("Toko Template")
    row = page.locator(f"tr[data-order-id='{order['order_id']}']")
    await expect(row.locator(".webhook-status")).to_have_text("failed")
    await expect(page.locator(f"#dead-letters tr[data-event-id='{failed['event_id']}']")).to_be_visible()

    # The order's attempts: each 503 with the merchant's answer.
    await row.locator(f"a:has-text('{order['order_id']}')").click()
    await expect(page.locator("#attempts tbody tr")).to_have_count(len(QUICK) + 1)
    await expect(page.locator("#attempts tbody tr").first.locator(".status-code")).to_have_text("503")
    await expect(page.locator("#attempts tbody tr").first.locator(".response > code")).to_have_text("no")

    # Retry, once the endpoint is fixed: the same event, delivered.
    merchant.script[HOOK] = [200]
    await page.get_by_role("button", name="Retry").click()
    await expect(page.locator("#notice")).to_have_text("The webhook was queued again.")
    await reload_until(page, ("#purchase .webhook-status", "delivered"))
    assert merchant.hits(HOOK)[-1].headers["webhook-id"] == failed["event_id"]
    await page.click("a.brand")
    await expect(page.locator("#no-dead-letters")).to_be_visible()
    await page.screenshot(path=str(SCREENSHOT), full_page=True)

    # Rotate the signing secret: shown once, on the answer.
    await page.click("#rotate-secret")
    secret = (await page.locator("#new-secret").inner_text()).strip()
    assert secret.startswith("whsec_")
    assert secret != shop.secret
    await page.click("#back")
    assert secret not in await page.content()

    # A test event: signed with the new secret, its delivery shown as its page refreshes itself.
    await page.click("#send-test")
    await expect(page).to_have_url(re.compile(r"/events/evt_[0-9a-f]+$"))
    await expect(page.locator("#event .webhook-status")).to_have_text("delivered")
    await expect(page.locator("#attempts tbody tr").first.locator(".status-code")).to_have_text("200")
    test_hit = merchant.hits(HOOK)[-1]
    body = verify(test_hit, secret)
    assert body["event"] == "webhook.test"
    assert test_hit.headers["webhook-id"] in page.url

    # On a phone-sized screen the page still lays out (no sideways scroll of the whole page).
    phone = await open_page(browser, shop.api.url, width=390)
    await phone.goto(link)
    width = await phone.evaluate("document.documentElement.scrollWidth")
    await phone.screenshot(path=str(PHONE_SCREENSHOT), full_page=True)
    assert width <= 390 + 1


async def test_expired_edited_and_foreign_links_are_refused_in_the_browser(
    start_relay: StartRelay, merchant: Merchant, browser: Browser, redis: Redis
) -> None:
    merchant.script["/theirs"] = [200]
    shop = await start_shop(start_relay, merchant, retry_schedule=QUICK)
    theirs = await open_shop(shop.api, webhook_url=f"{merchant.url}/theirs")
    their_order = await theirs.order()
    their_event = (await theirs.wait_status(their_order, "delivered"))["event_id"]
    link = await portal_path(shop.api, shop.project["id"])
    payload, signature = link.removeprefix("/portal/").split(".")
    edited = f"/portal/{payload}.{signature[:-2]}{'B' if signature[-2] == 'A' else 'A'}{signature[-1]}"
    expired = await forged_portal_link(
        redis, [shop.project["id"], "pl_1", 0, int(datetime.now(UTC).timestamp()) - 1]
    )

    page = await open_page(browser, shop.api.url)
    for refused in (edited, expired):
        response = await page.goto(refused)
        assert response is not None
        assert response.status == 403
        await expect(page.locator("#error-detail")).to_contain_text("wrong, expired or revoked")
        await expect(page.locator("#error-home")).to_have_count(0)
    for foreign in (f"{link}/orders/{their_order['order_id']}", f"{link}/events/{their_event}"):
        response = await page.goto(foreign)
        assert response is not None
        assert response.status == 404
        await expect(page.locator("#error-home")).to_have_attribute("href", link)
    # Revoked: the page that worked a moment ago is refused.
    assert (await page.goto(link)).status == 200  # type: ignore[union-attr]
    await shop.api.call("POST", f"/api/platform/projects/{shop.project['id']}/portal-links/revoke")
    assert (await page.goto(link)).status == 403  # type: ignore[union-attr]


async def test_the_console_opens_a_projects_portal(
    start_relay: StartRelay, merchant: Merchant, browser: Browser
) -> None:
    shop = await start_shop(start_relay, merchant)
    page = await open_page(browser, shop.api.url)
    await page.goto("/console")
    await page.fill("#token", ADMIN_TOKEN)
    await page.click("#login")
    await page.goto(f"/console/projects/{shop.project['id']}")
    await page.click("#open-portal")
    await expect(page).to_have_url(re.compile(r"/portal/[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$"))
    await expect(page.locator("#settings")).to_be_visible()

    async def audited() -> bool:
        entries = (await shop.api.call("GET", "/api/admin/audit"))["entries"]
        return any(entry["action"] == "POST /console/projects/{project_id}/portal" for entry in entries)

    await eventually(audited, what="the console's portal link in the audit log")
