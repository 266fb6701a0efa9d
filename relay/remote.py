"""The CLI's operator commands over HTTP: ``relay dlq ...``, ``relay purchases ...`` and ``relay
events replay`` against a running relay at RELAY_URL, with RELAY_ADMIN_TOKEN or a project's
RELAY_API_KEY, for operators who may not reach Redis. The answers have the shapes the local
commands print (``relay.cli``); an error answer becomes ``RemoteError`` with the relay's own
``detail``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any
from urllib.parse import quote

import aiohttp

from relay.models import iso_ms

PAGE = 1000  # rows per listing request (the API's largest page)
TIMEOUT = aiohttp.ClientTimeout(total=120)  # a window replay of 10,000 events takes a while


class RemoteError(Exception):
    """The relay answered an error: its status, name and detail."""

    def __init__(self, status: int, name: str, detail: str) -> None:
        super().__init__(f"{status} {name}: {detail}")
        self.status = status


def _part(value: str) -> str:
    return quote(value, safe="")


def _object(answer: dict[str, Any], name: str) -> dict[str, Any]:
    found = answer.get(name)
    if not isinstance(found, dict):
        raise RemoteError(200, "UnexpectedAnswer", f"the answer has no {name!r}: is RELAY_URL a relay?")
    return found


def _count(answer: dict[str, Any], name: str) -> int:
    found = answer.get(name)
    if not isinstance(found, int):
        raise RemoteError(200, "UnexpectedAnswer", f"the answer has no count {name!r}: is RELAY_URL a relay?")
    return found


class Remote:
    def __init__(self, http: aiohttp.ClientSession, base: str) -> None:
        self.http = http
        self.base = base.rstrip("/")  # RELAY_URL, a path prefix included (a relay behind a proxy)

    async def call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            async with self.http.request(method, self.base + path, **kwargs) as response:
                text = await response.text(errors="replace")
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as error:
            raise RemoteError(0, type(error).__name__, f"no answer from the relay: {error}") from None
        try:
            body = json.loads(text)
        except ValueError:
            body = None
        if status >= 400 or not isinstance(body, dict):
            shown = body if isinstance(body, dict) else {"detail": f"not the relay's JSON: {text[:200]!r}"}
            raise RemoteError(status, str(shown.get("error", "Error")), str(shown.get("detail", "")))
        return body

    async def rows(self, method: str, path: str, name: str, **kwargs: Any) -> list[dict[str, Any]]:
        """The list ``name`` of an answer, or RemoteError when the answer has none."""
        found = (await self.call(method, path, **kwargs)).get(name)
        if not isinstance(found, list):
            raise RemoteError(
                200, "UnexpectedAnswer", f"the answer has no list {name!r}: is RELAY_URL a relay?"
            )
        return found

    # --- dead letters -------------------------------------------------------------------------

    async def dead_letters(self, *, project_id: str | None, since: datetime | None) -> list[dict[str, Any]]:
        """Every dead letter matching the filter, oldest first, a page at a time."""
        rows: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            query = {"limit": str(PAGE)}
            query |= {"project_id": project_id} if project_id else {}
            query |= {"since": iso_ms(since)} if since else {}
            query |= {"cursor": cursor} if cursor else {}
            page = await self.call("GET", "/api/admin/dead-letters", params=query)
            rows += page.get("dead_letters") or []
            cursor = page.get("next_cursor")
            if cursor is None:
                return rows

    async def replay_dead_letters(
        self, event_ids: list[str], *, everything: bool, project_id: str | None, since: datetime | None
    ) -> int:
        body: dict[str, Any] = {"event_ids": event_ids}
        if everything:
            body = {"all": True} | ({"project_id": project_id} if project_id else {})
            body |= {"since": iso_ms(since)} if since else {}
        return _count(await self.call("POST", "/api/admin/dead-letters/replay", json=body), "replayed")

    async def purge(self, event_id: str) -> bool:
        """Whether the dead letter was there to purge (404: it was not, or no longer)."""
        try:
            await self.call("DELETE", f"/api/admin/dead-letters/{_part(event_id)}")
        except RemoteError as error:
            if error.status == 404:
                return False
            raise
        return True

    # --- orders and events --------------------------------------------------------------------

    async def purchases(self, project_id: str, *, webhook_status: str | None) -> list[dict[str, Any]]:
        query = {"limit": str(PAGE)} | ({"webhook_status": webhook_status} if webhook_status else {})
        path = f"/api/platform/projects/{_part(project_id)}/item-purchases"
        return await self.rows("GET", path, "purchases", params=query)

    async def purchase(self, project_id: str, order_id: str) -> dict[str, Any]:
        path = f"/api/platform/projects/{_part(project_id)}/item-purchases/{_part(order_id)}"
        return _object(await self.call("GET", path), "purchase")

    async def retry(self, project_id: str, order_id: str) -> dict[str, Any]:
        path = f"/api/platform/projects/{_part(project_id)}/item-purchases/{_part(order_id)}/retry-webhook"
        return _object(await self.call("POST", path), "purchase")

    async def replay_window(
        self, project_id: str, *, since: datetime, until: datetime | None, webhook_status: str | None
    ) -> int:
        body: dict[str, Any] = {"project_id": project_id, "since": iso_ms(since)}
        body |= {"until": iso_ms(until)} if until else {}
        body |= {"webhook_status": webhook_status} if webhook_status else {}
        return _count(await self.call("POST", "/api/admin/events/replay", json=body), "replayed")


@asynccontextmanager
async def remote(url: str, token: str) -> AsyncIterator[Remote]:
    headers = {"Authorization": f"Bearer {token}", "User-Agent": "relay-cli"}
    async with aiohttp.ClientSession(headers=headers, timeout=TIMEOUT, trust_env=False) as http:
        yield Remote(http, url)
