"""A real headless Chromium for the web pages' tests (the console, the portal, the sandbox
checkout), driven by Playwright.

Playwright's own browser download is never used: the tests launch ``/usr/bin/chromium`` (Debian's
``chromium`` package; ``.ci/run`` installs it), or ``RELAY_TEST_CHROMIUM``. The ``browser`` fixture
(``tests/conftest.py``) is one launched browser per test.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright

CHROMIUM = os.environ.get("RELAY_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 10_000


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"no Chromium at {CHROMIUM}: apt-get install chromium (.ci/run does), or set RELAY_TEST_CHROMIUM"
        )
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


async def open_page(browser: Browser, base_url: str, *, width: int = 1280) -> Page:
    context = await browser.new_context(base_url=base_url, viewport={"width": width, "height": 800})
    page = await context.new_page()
    page.set_default_timeout(WAIT_MS)
    return page


async def reload_until(page: Page, locator_text: tuple[str, str], *, timeout: float = 10.0) -> None:
    """Reload ``page`` until the element at ``selector`` reads ``text`` (a bounded wait)."""
    selector, text = locator_text
    deadline = asyncio.get_running_loop().time() + timeout
    while (await page.locator(selector).inner_text()).strip() != text:
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"{selector} never read {text!r} within {timeout}s")
        await asyncio.sleep(0.2)
        await page.reload()
