"""An operator's browser, minus the browser: a cookie-keeping HTTP client for the console."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp

from tests.helpers import ADMIN_TOKEN

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


class ConsoleClient:
    def __init__(self, http: aiohttp.ClientSession) -> None:
        self.http = http

    async def get(self, path: str, *, expect: int = 200, **kwargs: Any) -> str:
        async with self.http.get(path, allow_redirects=False, **kwargs) as response:
            body = await response.text()
            assert response.status == expect, f"GET {path}: {response.status} {body[:300]}"
            return body

    async def post(self, path: str, data: dict[str, str], *, expect: int = 303) -> aiohttp.ClientResponse:
        async with self.http.post(path, data=data, allow_redirects=False) as response:
            body = await response.text()
            assert response.status == expect, f"POST {path}: {response.status} {body[:300]}"
            return response

    async def login(self, token: str = ADMIN_TOKEN) -> aiohttp.ClientResponse:
        return await self.post("/console/login", {"token": token})

    async def csrf(self, path: str = "/console") -> str:
        found = CSRF.search(await self.get(path))
        assert found, f"no CSRF token on {path}"
        return found.group(1)

    def cookie(self) -> str | None:
        for cookie in self.http.cookie_jar:
            if cookie.key == "relay_console":
                return cookie.value
        return None


@asynccontextmanager
async def console_client(base_url: str) -> AsyncIterator[ConsoleClient]:
    # unsafe=True: keep cookies for an IP-address host (the relay listens on 127.0.0.1).
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(base_url=base_url, cookie_jar=jar) as http:
        yield ConsoleClient(http)
