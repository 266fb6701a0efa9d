"""Shared fixtures: a real Redis (RELAY_TEST_REDIS_URL), a local merchant, and a relay on loopback."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from redis.asyncio import Redis

from relay.gateways.midtrans import settlement_payload, sign_notification
from relay.models import Purchase
from relay.runner import Relay
from relay.settings import Settings

TEST_REDIS_URL = os.environ.get("RELAY_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
ADMIN_TOKEN = "test-admin-token-0123456789"
TEST_ENCRYPTION_KEY = "Jx0m6nq2Gq9bT6b3VdOQ2i0xq3o8nXf3cXq8Yt1f2aQ="


def make_settings(**overrides: Any) -> Settings:
    """Settings for tests: explicit values, so a developer's RELAY_* environment does not leak in."""
    values: dict[str, Any] = {
        "redis_url": TEST_REDIS_URL,
        "admin_token": ADMIN_TOKEN,
        "midtrans_server_key": None,
        "allow_private_targets": True,
        "retry_schedule": (0.05, 0.1),
        "delivery_timeout": 2,
        "log_format": "json",
        "sweep_interval": 1,
        "encryption_keys": TEST_ENCRYPTION_KEY,
    }
    return Settings(**(values | overrides))


class FakeClock:
    def __init__(self, start: datetime | None = None) -> None:
        self.current = start or datetime(2026, 5, 6, 10, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.current

    def advance(self, seconds: float) -> None:
        self.current += timedelta(seconds=seconds)


async def eventually(check: Callable[[], Awaitable[bool]], *, timeout: float = 10.0, what: str = "") -> None:
    """Poll ``check`` until it is true; fail the test after ``timeout`` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or check}")
        await asyncio.sleep(0.02)


@pytest.fixture
async def redis_url() -> AsyncIterator[str]:
    """A real, empty Redis database. Fails (never skips) when Redis is not there: CI has one."""
    client = Redis.from_url(TEST_REDIS_URL)
    try:
        await client.ping()
    except Exception as error:  # any failure here means the same thing
        pytest.fail(f"no Redis at {TEST_REDIS_URL} ({error}); start one or set RELAY_TEST_REDIS_URL")
    await client.flushdb()
    yield TEST_REDIS_URL
    await client.flushdb()
    await client.aclose()


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    """A client on the test database (``redis_url`` empties it), answering ``str``."""
    client = Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: str


@dataclass
class Merchant:
    """A merchant backend on loopback. ``script[path]`` is a list of responses handed out in order
    (the last one repeats); each is a status code or (status, headers) or an async callable."""

    url: str = ""
    received: list[Received] = field(default_factory=list)
    script: dict[str, list[Any]] = field(default_factory=dict)

    def hits(self, path: str | None = None) -> list[Received]:
        return [hit for hit in self.received if path is None or hit.path == path]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.text()
        self.received.append(Received(request.path, dict(request.headers), body))
        responses = self.script.get(request.path, [200])
        response = responses.pop(0) if len(responses) > 1 else responses[0]
        if callable(response):
            result: web.StreamResponse = await response(request)
            return result
        status, headers = response if isinstance(response, tuple) else (response, {})
        return web.Response(status=status, headers=headers, text="ok" if status < 300 else "no")


@asynccontextmanager
async def local_server(app: web.Application, **runner_options: Any) -> AsyncIterator[str]:
    """Serve ``app`` on a free loopback port for the ``with`` block; yields its base URL."""
    runner = web.AppRunner(app, access_log=None, **runner_options)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def merchant() -> AsyncIterator[Merchant]:
    found = Merchant()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", found.handle)
    async with local_server(app) as found.url:
        yield found


class Api:
    """The relay's HTTP API as a test client: admin calls carry the bearer token."""

    def __init__(self, http: aiohttp.ClientSession, settings: Settings) -> None:
        self.http = http
        self.settings = settings

    async def call(
        self, method: str, path: str, *, expect: int = 200, auth: bool = True, **kwargs: Any
    ) -> Any:
        headers = kwargs.pop("headers", {})
        if auth:
            headers["Authorization"] = f"Bearer {ADMIN_TOKEN}"
        async with self.http.request(method, path, headers=headers, **kwargs) as response:
            body = await response.json(content_type=None)
            assert response.status == expect, f"{method} {path}: {response.status} {body}"
            return body

    async def project(self, **fields: Any) -> dict[str, Any]:
        body = await self.call("PUT", "/api/platform/projects", json={"name": "Shop", **fields})
        return dict(body["project"])

    async def item(self, project_id: str, **fields: Any) -> dict[str, Any]:
        payload = {"project_id": project_id, "name": "Premium Template", "price": 50000, "currency": "IDR"}
        body = await self.call("PUT", "/api/platform/items", json=payload | fields)
        return dict(body["item"])

    async def buy(self, client_id: str, item_id: str, **fields: Any) -> dict[str, Any]:
        payload = {"client_id": client_id, "item_id": item_id, "buyer_email": "buyer@example.com"}
        body = await self.call(
            "POST", "/api/platform/public-items/purchase", json=payload | fields, auth=False
        )
        return dict(body)

    async def purchase(self, project_id: str, order_id: str) -> dict[str, Any]:
        body = await self.call("GET", f"/api/platform/projects/{project_id}/item-purchases/{order_id}")
        return dict(body["purchase"])

    def notification(
        self, order_id: str, amount: int, *, status: str = "settlement", **extra: Any
    ) -> dict[str, Any]:
        """A correctly signed Midtrans notification for ``order_id``."""
        stub = Purchase(
            order_id=order_id,
            item_id="x",
            project_id="x",
            item_name="x",
            amount=amount,
            currency="IDR",
            buyer_email="b@example.com",
            created_at=datetime.now(UTC),
            updated_at=datetime.now(UTC),
        )
        payload = settlement_payload(stub, status=status, now=datetime.now(UTC)) | extra
        return sign_notification(payload, self.settings.midtrans_key)

    async def callback(self, payload: dict[str, Any] | bytes | str, *, expect: int = 200) -> Any:
        data = payload if isinstance(payload, bytes | str) else None
        kwargs: dict[str, Any] = {"data": data} if data is not None else {"json": payload}
        return await self.call("POST", "/callbacks/midtrans", expect=expect, auth=False, **kwargs)

    async def pay(self, order: dict[str, Any], **extra: Any) -> Any:
        return await self.callback(self.notification(order["order_id"], order["amount"], **extra))


@dataclass
class Running:
    relay: Relay
    api: Api
    settings: Settings

    @property
    def url(self) -> str:
        return self.relay.url


StartRelay = Callable[..., Awaitable[Running]]


@pytest.fixture
async def start_relay(redis_url: str) -> AsyncIterator[StartRelay]:
    """Start relays on loopback (ingress, and a worker unless ``worker=False``); all stop at teardown."""
    started: list[tuple[Relay, aiohttp.ClientSession]] = []

    async def start(
        *, worker: bool = True, worker_options: dict[str, Any] | None = None, **overrides: Any
    ) -> Running:
        settings = make_settings(**overrides)
        relay = Relay(settings, worker_options=worker_options)
        await relay.start(host="127.0.0.1", port=0, worker=worker)
        http = aiohttp.ClientSession(base_url=relay.url)
        started.append((relay, http))
        return Running(relay, Api(http, settings), settings)

    yield start
    for relay, http in reversed(started):
        await http.close()
        await relay.stop()


def assert_error(body: Any, error: str, *, mentions: str | None = None) -> None:
    """``body`` is the contract's error shape, naming ``error`` (and ``mentions`` in its detail)."""
    assert isinstance(body, dict), body
    assert set(body) == {"error", "detail"}, body
    assert body["error"] == error, body
    assert isinstance(body["detail"], str), body
    assert body["detail"], body
    if mentions is not None:
        assert mentions in body["detail"], body


@dataclass
class Shop:
    """A project with one item, bought through ``api``."""

    api: Api
    project: dict[str, Any]
    item: dict[str, Any]

    async def buy(self, **fields: Any) -> dict[str, Any]:
        return await self.api.buy(self.project["client_id"], self.item["id"], **fields)

    async def purchase(self, order: dict[str, Any]) -> dict[str, Any]:
        return await self.api.purchase(self.project["id"], order["order_id"])

    async def status(self, order: dict[str, Any]) -> str:
        return str((await self.purchase(order))["status"])


async def open_shop(api: Api, **project_fields: Any) -> Shop:
    project = await api.project(**project_fields)
    return Shop(api, project, await api.item(project["id"]))
