"""The operator console end to end in a real headless Chromium (``tests/browser.py``). A real
Redis and worker (``start_relay``) and a merchant on loopback that first answers 503, then 200.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from playwright.async_api import Browser, Page, expect

from tests.browser import open_page, reload_until
from tests.helpers import ADMIN_TOKEN, HOOK, QUICK, Merchant, Shop, StartRelay, start_shop

# For a person to look at: the project page after the retry delivered.
SCREENSHOT = Path(tempfile.gettempdir()) / "console.png"


async def log_in(page: Page) -> None:
    await page.goto("/console")
    await expect(page).to_have_url(re.compile(r"/console/login$"))
    await page.fill("#token", ADMIN_TOKEN)
    await page.click("#login")
    await expect(page).to_have_url(re.compile(r"/console$"))
    await expect(page.locator("h1")).to_have_text("Projects")


async def failing_shop(start_relay: StartRelay, merchant: Merchant) -> Shop:
    merchant.script[HOOK] = [503]
    shop = await start_shop(start_relay, merchant, retry_schedule=QUICK)
    await shop.api.project(id=shop.project["id"], name="Toko Template")
    await shop.set_item_url(None, name="Premium Template")
    return shop


async def test_log_in_see_a_failed_purchase_retry_it_and_see_it_delivered(
    start_relay: StartRelay, merchant: Merchant, browser: Browser
) -> None:
    shop = await failing_shop(start_relay, merchant)
    merchant.script[HOOK] = [200]
    delivered = await shop.order(buyer_name="Siti")
    await shop.wait_status(delivered, "delivered")
    merchant.script[HOOK] = [503]
    order = await shop.order(buyer_name="Budi")
    failed = await shop.wait_status(order, "failed")

    page = await open_page(browser, shop.api.url)
    await log_in(page)
    await page.click("text=Toko Template")
    await expect(page).to_have_url(re.compile(rf"/console/projects/{shop.project['id']}$"))
    row = page.locator(f"tr[data-order-id='{order['order_id']}']")
    await expect(row.locator(".webhook-status")).to_have_text("failed")
    await expect(row.locator(".status")).to_have_text("paid")

    # The attempt log shows why.
    await row.locator(f"a:has-text('{order['order_id']}')").click()
    await expect(page.locator("#attempts tbody tr")).to_have_count(len(QUICK) + 1)
    await expect(page.locator("#attempts tbody tr").first).to_contain_text("503")
    await page.go_back()

    # The merchant is fixed; Retry sends the same event again.
    merchant.script[HOOK] = [200]
    await row.get_by_role("button", name="Retry").click()
    await expect(page.locator("#notice")).to_contain_text(f"Webhook of {order['order_id']} queued again.")
    await reload_until(page, (f"tr[data-order-id='{order['order_id']}'] .webhook-status", "delivered"))
    await page.screenshot(path=str(SCREENSHOT), full_page=True)

    assert merchant.hits(HOOK)[-1].headers["webhook-id"] == failed["event_id"]
    assert (await shop.purchase(order))["webhook_status"] == "delivered"

    # Filtering by webhook status, then logging out.
    await page.select_option("#webhook_status", "delivered")
    await page.click("#filter")
    await expect(page.locator("#purchases tbody tr")).to_have_count(2)
    await page.click("#logout")
    await expect(page).to_have_url(re.compile(r"/console/login$"))
    await page.goto("/console/dead-letters")
    await expect(page).to_have_url(re.compile(r"/console/login$"))


async def test_dead_letter_page_replays_all_with_the_filter(
    start_relay: StartRelay, merchant: Merchant, browser: Browser
) -> None:
    shop = await failing_shop(start_relay, merchant)
    orders = [await shop.order() for _ in range(2)]
    event_ids = [(await shop.wait_status(order, "failed"))["event_id"] for order in orders]

    page = await open_page(browser, shop.api.url)
    await log_in(page)
    await page.click("nav >> text=Dead letters")
    await expect(page.locator("#dead-letters tbody tr")).to_have_count(2)
    await page.select_option("#project_id", shop.project["id"])
    await page.click("#filter")
    await expect(page).to_have_url(re.compile(r"project_id="))
    await expect(page.locator("#replay-all")).to_have_text("Replay all 2 matching")

    merchant.script[HOOK] = [200]
    await page.click("#replay-all")
    await expect(page.locator("#notice")).to_have_text("Replayed 2 dead letters.")
    await expect(page).to_have_url(re.compile(rf"project_id={shop.project['id']}"))
    for order in orders:
        await shop.wait_status(order, "delivered")
    await page.reload()
    await expect(page.locator("#no-dead-letters")).to_be_visible()
    await expect(page.locator("#replay-all")).to_be_disabled()
    assert await shop.api.dead_letter_ids() == []
    assert sorted(hit.headers["webhook-id"] for hit in merchant.hits(HOOK)[-2:]) == sorted(event_ids)


async def test_the_sandbox_checkout_pays_in_a_browser_under_its_strict_csp(
    browser: Browser, start_relay: StartRelay, merchant: Merchant
) -> None:
    """The sandbox page's Pay button works from its external script, with no inline script
    allowed (the page sends a Content-Security-Policy without 'unsafe-inline')."""
    shop = await start_shop(start_relay, merchant)
    order = await shop.buy()
    page = await open_page(browser, shop.api.url)
    messages: list[str] = []
    page.on("console", lambda message: messages.append(message.text))
    response = await page.goto(order["invoice_url"])
    assert response is not None
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    await expect(page.locator("#status")).to_have_text("pending")
    await page.click("#pay")
    await expect(page.locator("#status")).to_have_text("paid")
    assert not [text for text in messages if "Content Security" in text]
    await shop.wait_status(order, "delivered")


# For a person to look at, as the test output: the console on a desktop and on a phone.
SCREENSHOTS = Path(tempfile.gettempdir()) / "relay-console-screenshots"


async def test_search_pages_pictures_and_an_order_page_on_a_desktop_and_a_phone(
    start_relay: StartRelay, merchant: Merchant, browser: Browser
) -> None:
    shop = await failing_shop(start_relay, merchant)
    merchant.script[HOOK] = [503, 200]  # the first order's first attempt fails, everything else is delivered
    orders = [await shop.order(buyer_email=f"buyer{n}@example.com") for n in range(3)]
    for order in orders:
        await shop.wait_status(order, "delivered")
    SCREENSHOTS.mkdir(exist_ok=True)
    page = await open_page(browser, shop.api.url)
    await log_in(page)
    await page.goto(f"/console/projects/{shop.project['id']}")
    for chart in ("#chart-success", "#chart-latency", "#chart-volume"):
        await expect(page.locator(chart)).to_be_visible()
    await expect(page.locator("#chart-volume rect.bar.retry")).to_have_count(1)  # this hour's retries
    await page.screenshot(path=str(SCREENSHOTS / "project.png"), full_page=True)

    await page.fill("#q", "buyer1@")
    await page.click("#filter")
    await expect(page.locator("#purchases tbody tr")).to_have_count(1)
    await page.click("#clear")
    await page.goto(f"/console/projects/{shop.project['id']}?limit=2")
    await expect(page.locator("#purchases tbody tr")).to_have_count(2)
    await page.click("#next-orders")
    await expect(page.locator("#purchases tbody tr")).to_have_count(1)

    row = page.locator("#purchases tbody tr").first
    await row.locator(".order a").click()
    await expect(page.locator("#event-body")).to_contain_text('"event":"item.purchased"')
    attempts = page.locator("#attempts tbody tr")
    await expect(attempts).to_have_count(2)
    await expect(attempts.first.locator(".error-class")).to_have_text("http_status")
    await attempts.first.locator("details.headers summary").click()
    await expect(attempts.first.locator("details.headers code")).to_contain_text("content-type: text/plain")
    await page.screenshot(path=str(SCREENSHOTS / "order.png"), full_page=True)

    phone = await open_page(browser, shop.api.url, width=390)
    await log_in(phone)
    for path, name in (
        (f"/console/projects/{shop.project['id']}", "project-phone.png"),
        (page.url, "order-phone.png"),
    ):
        await phone.goto(path)
        await phone.screenshot(path=str(SCREENSHOTS / name), full_page=True)
        assert await phone.evaluate("document.documentElement.scrollWidth") <= 391, name
    print(f"screenshots: {sorted(str(path) for path in SCREENSHOTS.glob('*.png'))}")
