"""What the tests share: settings, a fake clock, a merchant on loopback, the relay's API as a client,
and a shop (a project with an item) to buy from. Fixtures are in ``conftest.py``; test modules
import helpers from here only, never from each other.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal, Protocol

import aiohttp
import pytest
from aiohttp import web
from arq.connections import ArqRedis
from redis.asyncio import Redis
from standardwebhooks import Webhook

from relay.connections import Connections
from relay.crypto import SecretBox, generate_key
from relay.events import EventStore
from relay.gateways.midtrans import settlement_payload, sign_notification
from relay.ingest import Ingested, apply_outcome
from relay.models import EventRecord, Item, PaymentOutcome, Project, Purchase, PurchaseStatus, new_event_id
from relay.runner import Relay
from relay.schema import Keys
from relay.settings import Settings
from relay.signing import new_webhook_secret
from relay.store import Store
from workers.arq_compat import SWEEP

if TYPE_CHECKING:
    from workers.delivery import Deps

ADMIN_TOKEN = "test-admin-token-0123456789"
TEST_ENCRYPTION_KEY = "Jx0m6nq2Gq9bT6b3VdOQ2i0xq3o8nXf3cXq8Yt1f2aQ="
HOOK = "/hook"
# One quick retry: a 503 merchant dead-letters an event after two attempts, fast.
QUICK = (0.01,)


class SessionRedis:
    """Where the tests' Redis is: ``RELAY_TEST_REDIS_URL``, or a throwaway ``redis-server`` that
    ``conftest.py`` starts for the session. Set once, before any test runs."""

    url = ""


def redis_url_for_tests() -> str:
    assert SessionRedis.url, "conftest.py sets the test Redis before tests run"
    return SessionRedis.url


def without_relay_variables(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` minus every ``RELAY_*`` variable: a developer's settings must not leak into tests."""
    return {key: value for key, value in environ.items() if not key.upper().startswith("RELAY_")}


def make_settings(**overrides: Any) -> Settings:
    """Settings for tests: explicit values, so a developer's RELAY_* environment does not leak in."""
    values: dict[str, Any] = {
        "redis_url": redis_url_for_tests(),
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


# --- servers on loopback ------------------------------------------------------------------------


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


async def wait_hits(merchant: Merchant, count: int, path: str | None = HOOK, *, timeout: float = 10) -> None:
    async def arrived() -> bool:
        return len(merchant.hits(path)) >= count

    await eventually(arrived, timeout=timeout, what=f"{count} merchant hits on {path}")


def verify(hit: Received, secret: str) -> dict[str, Any]:
    """The webhook as a merchant verifying with the public standardwebhooks library sees it."""
    payload: dict[str, Any] = Webhook(secret).verify(hit.body, hit.headers)
    return payload


# --- the relay's API as a client ------------------------------------------------------------------


class Api:
    """The relay's HTTP API as a test client: admin calls carry the bearer token."""

    def __init__(
        self, http: aiohttp.ClientSession, settings: Settings, url: str, *, midtrans_key: str
    ) -> None:
        self.http = http
        self.settings = settings
        self.url = url
        self.midtrans_key = midtrans_key  # what Midtrans notifications are signed with

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
        body = await self.call("POST", PURCHASE, json=purchase_body(client_id, item_id, **fields), auth=False)
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
        return sign_notification(payload, self.midtrans_key)

    async def callback(self, payload: dict[str, Any] | bytes | str, *, expect: int = 200) -> Any:
        data = payload if isinstance(payload, bytes | str) else None
        kwargs: dict[str, Any] = {"data": data} if data is not None else {"json": payload}
        return await self.call("POST", "/callbacks/midtrans", expect=expect, auth=False, **kwargs)

    async def pay(self, order: dict[str, Any], **extra: Any) -> Any:
        return await self.callback(self.notification(order["order_id"], order["amount"], **extra))

    async def dead_letters(self, **query: Any) -> dict[str, Any]:
        params = {key: str(value) for key, value in query.items() if value is not None}
        body: dict[str, Any] = await self.call("GET", "/api/admin/dead-letters", params=params)
        return body

    async def dead_letter_ids(self, **query: Any) -> list[str]:
        return [row["event_id"] for row in (await self.dead_letters(**query))["dead_letters"]]


def purchase_body(client_id: str, item_id: str, **fields: Any) -> dict[str, Any]:
    """A buyer's purchase of ``item_id`` (``POST PURCHASE``)."""
    return {"client_id": client_id, "item_id": item_id, "buyer_email": "buyer@example.com", **fields}


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
class Running:
    relay: Relay
    api: Api
    settings: Settings

    @property
    def url(self) -> str:
        return self.relay.url


StartRelay = Callable[..., Awaitable[Running]]


# --- a shop: a project with one item --------------------------------------------------------------


@dataclass
class Shop:
    """A project with one item on a running relay, and shortcuts for what the tests do to it."""

    api: Api
    project: dict[str, Any]
    item: dict[str, Any]

    @property
    def secret(self) -> str:
        return str(self.project["webhook_secret"])

    async def buy(self, **fields: Any) -> dict[str, Any]:
        return await self.api.buy(self.project["client_id"], self.item["id"], **fields)

    async def order(self, *, pay: bool = True, **fields: Any) -> dict[str, Any]:
        """Buy the item (and, unless ``pay=False``, settle it with a signed Midtrans callback)."""
        order = await self.buy(**fields)
        if pay:
            assert await self.api.pay(order) == {"status": "ok"}
        return order

    async def purchase(self, order: dict[str, Any]) -> dict[str, Any]:
        return await self.api.purchase(self.project["id"], order["order_id"])

    async def status(self, order: dict[str, Any]) -> str:
        return str((await self.purchase(order))["status"])

    async def wait_status(self, order: dict[str, Any], status: str, *, timeout: float = 10) -> dict[str, Any]:
        """Wait until the purchase's webhook_status is ``status``; return the purchase."""
        seen: list[dict[str, Any]] = []

        async def reached() -> bool:
            seen.append(await self.purchase(order))
            return seen[-1]["webhook_status"] == status

        await eventually(reached, timeout=timeout, what=f"webhook_status {status!r} of {order['order_id']}")
        return seen[-1]

    async def wait_attempts(
        self, order: dict[str, Any], count: int, *, timeout: float = 10
    ) -> dict[str, Any]:
        """Wait until the purchase's attempt log has at least ``count`` entries; return the purchase."""
        seen: list[dict[str, Any]] = []

        async def logged() -> bool:
            seen.append(await self.purchase(order))
            return len(seen[-1]["attempts"]) >= count

        await eventually(logged, timeout=timeout, what=f"{count} attempts of {order['order_id']}")
        return seen[-1]

    async def set_item_url(self, url: str | None, **fields: Any) -> None:
        self.item = await self.api.item(self.project["id"], id=self.item["id"], webhook_url=url, **fields)


async def open_shop(api: Api, **project_fields: Any) -> Shop:
    """A new project with one item, on the relay ``api`` talks to."""
    project = await api.project(**project_fields)
    return Shop(api, project, await api.item(project["id"]))


async def start_shop(
    start_relay: StartRelay,
    merchant: Merchant,
    *,
    project_path: str | None = HOOK,
    item_path: str | None = None,
    **settings: Any,
) -> Shop:
    """Start a relay with ``settings`` (and ``rng``, the worker's jitter) and open a shop whose
    webhook URLs point at ``merchant`` paths (None: no URL)."""
    running = await start_relay(**settings)
    project_fields = {"webhook_url": f"{merchant.url}{project_path}"} if project_path else {}
    project = await running.api.project(**project_fields)
    item_fields = {"webhook_url": f"{merchant.url}{item_path}"} if item_path else {}
    item = await running.api.item(project["id"], **item_fields)
    return Shop(running.api, project, item)


# --- the ingress's routes, and what a callback leaves in Redis (tests/test_api_*.py) --------------

PREFIX = "relay"
ARQ_QUEUE = "arq:queue"
PROJECTS = "/api/platform/projects"
ITEMS = "/api/platform/items"
PUBLIC_ITEMS = "/api/platform/public-items"
PURCHASE = "/api/platform/public-items/purchase"


def parse_utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def stored_events(redis: Redis, order_id: str | None = None) -> list[dict[str, str]]:
    """Event hashes (``{prefix}:event:{id}``), optionally only those of ``order_id``."""
    found = []
    async for key in redis.scan_iter(match=f"{PREFIX}:event:*", count=1000):
        if key.endswith(":attempts"):
            continue
        event = await redis.hgetall(key)
        if order_id is None or event.get("order_id") == order_id:
            found.append(event)
    return found


async def outbox(redis: Redis) -> list[str]:
    return list(await redis.zrange(f"{PREFIX}:outbox", 0, -1))


async def queued_jobs(redis: Redis) -> list[str]:
    """Delivery jobs in the arq queue (a running worker also keeps its sweeper's cron job there)."""
    return [job for job in await redis.zrange(ARQ_QUEUE, 0, -1) if not job.startswith(f"{SWEEP}:")]


async def assert_one_event(redis: Redis, order_id: str, *, queued: bool) -> dict[str, str]:
    """Exactly one event for ``order_id``, in the outbox and (``queued``) as the one arq job."""
    events = await stored_events(redis, order_id)
    assert len(events) == 1, events
    [event] = events
    assert event["id"].startswith("evt_")
    assert await outbox(redis) == [event["id"]]
    if queued:
        assert await queued_jobs(redis) == [event["id"]]
    return event


async def get_status(api: Api, path: str) -> tuple[int, Any]:
    async with api.http.get(path) as response:
        return response.status, await response.json(content_type=None)


# --- relay.store and relay.events on each backend (tests/test_store.py, test_events.py, test_ingest.py) -

KEY_PREFIX = "t"
T0 = datetime(2026, 5, 6, 10, 0, tzinfo=UTC)


@dataclass
class Backend:
    """relay.store and relay.events on one backend, embedded or real (the ``stores`` fixture):
    ``redis`` answers ``str``, ``arq`` bytes."""

    redis: Redis
    arq: ArqRedis
    store: Store
    events: EventStore
    encryption_key: str  # the one key the store's secrets are sealed with


def stores_on(connections: Connections) -> Backend:
    redis, key = connections.redis, generate_key()
    store = Store(redis, prefix=KEY_PREFIX, box=SecretBox([key]))
    return Backend(redis, connections.arq, store, EventStore(redis, prefix=KEY_PREFIX), key)


def make_purchase(order_id: str, project_id: str = "shop", *, created_at: datetime = T0) -> Purchase:
    return Purchase(
        order_id=order_id,
        item_id="tmpl",
        project_id=project_id,
        item_name="Premium Template",
        amount=50000,
        currency="IDR",
        buyer_email="buyer@example.com",
        buyer_name="John Doe",
        metadata={"ref": "campaign-42", "nested": {"n": 1}},
        created_at=created_at,
        updated_at=created_at,
    )


def make_outcome(
    order_id: str,
    status: PurchaseStatus = PurchaseStatus.PAID,
    *,
    amount: str = "50000",
    gateway: str = "midtrans",
    rule: Literal["exact", "at_least"] = "exact",
) -> PaymentOutcome:
    return PaymentOutcome(
        gateway=gateway,
        order_id=order_id,
        status=status,
        amount=Decimal(amount),
        paid_at=None,
        raw_status=status.value,
        amount_rule=rule,
    )


async def settle(stores: Stored, order_id: str, *, event_id: str, **fields: Any) -> tuple[str, str]:
    """Ingest a settlement of ``order_id`` at T0 (``fields`` shape the outcome): its code and detail."""
    code, detail, _ = await stores.store.ingest(
        make_outcome(order_id, **fields), now=T0, paid_at=T0, event_id=event_id
    )
    return code, detail


class Stored(Protocol):
    """What ``paid_event`` needs: a ``Backend``, or stores a test made with settings of its own."""

    store: Store
    events: EventStore


async def paid_event(
    stores: Stored, order_id: str, project_id: str = "shop", *, event_id: str | None = None
) -> EventRecord:
    """A purchase moved to paid at T0 by the ingest script alone, with its event in the outbox
    (seq 0) and no delivery job (``paid_delivery`` queues one)."""
    await stores.store.create_purchase(make_purchase(order_id, project_id))
    event_id = event_id or new_event_id()
    assert await settle(stores, order_id, event_id=event_id) == ("applied", "paid")
    event = await stores.events.get(event_id)
    assert event is not None
    return event


async def zset(stores: Backend, key: str) -> dict[str, int]:
    """A sorted set's members and their scores (ms)."""
    rows = await stores.redis.zrange(key, 0, -1, withscores=True)
    return {member: int(score) for member, score in rows}


async def outbox_scores(stores: Backend) -> dict[str, int]:
    """The outbox: event id -> when its next attempt is due (ms)."""
    return await zset(stores, stores.store.keys.outbox)


# The admin bearer token as a header, for routes called without ``Api.call`` (``/metrics``).
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


# --- raw HTTP: bytes exactly as given, headers aiohttp's client would refuse or re-encode ----------


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]  # names lower-cased
    body: bytes
    closed: bool | None  # whether the server closed the connection after answering (None: not asked)


async def raw_request(
    url: str, request: bytes, *, timeout: float = 5.0, close_wait: float | None = None
) -> RawResponse:
    """Send ``request`` (a request line, headers and as much of a body as it holds) to the relay at
    ``url`` on a new connection and read one answer within ``timeout`` seconds; with
    ``close_wait``, also wait that long to see whether the server closes the connection."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host.strip("[]"), int(port))
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(timeout):
            head = await reader.readuntil(b"\r\n\r\n")
            status_line, *lines = head.decode("latin-1").split("\r\n")
            headers = {}
            for line in lines:
                name, _, value = line.partition(":")
                if name:
                    headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
        closed = None
        if close_wait is not None:
            try:
                closed = await asyncio.wait_for(reader.read(1), close_wait) == b""
            except ConnectionError:  # reset: closed too
                closed = True
            except TimeoutError:
                closed = False
        return RawResponse(int(status_line.split()[1]), headers, body, closed)
    finally:
        writer.close()


async def midtrans_key_of(redis_url: str, settings: Settings) -> str:
    """The key a relay on ``redis_url`` verifies Midtrans notifications with: the server key, or
    in sandbox mode the random sandbox key the relay keeps in Redis (once it has started)."""
    if settings.midtrans_server_key is not None:
        return settings.midtrans_server_key.get_secret_value()
    client = Redis.from_url(redis_url, decode_responses=True)
    try:
        key = await client.get(Keys(settings.key_prefix).sandbox_key)
    finally:
        await client.aclose()
    assert key, "the relay has not made its sandbox key yet"
    return str(key)


# --- a delivery's dependencies, for workers.delivery called directly --------------------------------


@asynccontextmanager
async def delivery_deps(
    redis: Redis, settings: Settings, clock: Callable[[], datetime]
) -> AsyncIterator[Deps]:
    """What ``workers.delivery.deliver`` needs, on ``redis`` (the stores) and ``settings``' Redis
    (arq), with ``clock`` and no jitter (``rng`` 0.5: each delay is exactly the schedule's)."""
    from redis.asyncio import ConnectionPool

    from relay.metrics import Metrics
    from relay.stores import make_stores
    from workers.delivery import Deps

    assert settings.redis_url is not None
    stores = make_stores(redis, settings)
    arq = ArqRedis(ConnectionPool.from_url(settings.redis_url))
    try:
        async with aiohttp.ClientSession() as http:
            yield Deps.over(
                stores, arq=arq, http=http, settings=settings, metrics=Metrics(), clock=clock, rng=lambda: 0.5
            )
    finally:
        await arq.aclose(close_connection_pool=True)


class Paying(Protocol):
    """What ``put_shop`` and ``paid_delivery`` need: a delivery's ``Deps``."""

    store: Store
    events: EventStore
    arq: ArqRedis
    clock: Callable[[], datetime]


async def put_shop(owner: Paying, webhook_url: str | None) -> Project:
    """Project ``shop`` and its item ``tmpl``, written straight to the store (no HTTP)."""
    now = owner.clock()
    project = Project(
        id="shop",
        name="Shop",
        webhook_url=webhook_url,
        client_id="cl_shop",
        webhook_secret=new_webhook_secret(),
        created_at=now,
        updated_at=now,
    )
    await owner.store.put_project(project)
    item = Item(id="tmpl", project_id="shop", name="Template", price=50000, created_at=now, updated_at=now)
    await owner.store.put_item(item, set_stock=True)
    return project


async def paid_delivery(owner: Paying, order_id: str = "order-1") -> EventRecord:
    """A purchase of the shop's item, made and paid at ``owner.clock()`` as a callback pays it: its
    event, in the outbox, its first delivery job queued."""
    now = owner.clock()
    await owner.store.create_purchase(make_purchase(order_id, created_at=now))
    outcome = make_outcome(order_id)
    assert await apply_outcome(owner.store, owner.arq, outcome, clock=owner.clock) is Ingested.PAID
    paid = await owner.store.get_purchase(order_id)
    assert paid is not None
    assert paid.event_id is not None
    event = await owner.events.get(paid.event_id)
    assert event is not None
    return event


async def reread(owner: Paying, event: EventRecord) -> EventRecord:
    found = await owner.events.get(event.id)
    assert found is not None
    return found


# --- the merchant portal (tests/test_portal*.py) ----------------------------------------------------

PORTAL_LINKS = "/api/platform/projects/{}/portal-links"


async def portal_path(api: Api, project_id: str, **body: Any) -> str:
    """The path of a new portal link of the project (the URL's host is the relay's)."""
    answer = await api.call("POST", PORTAL_LINKS.format(project_id), json=body)
    return str(answer["url"]).removeprefix(api.url)


def portal_b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


async def forged_portal_link(redis: Redis, payload: list[Any]) -> str:
    """A link for ``payload`` ([project id, link id, generation, expires at]) signed with the
    relay's own portal key, read from Redis: only the relay could make it."""
    key = await redis.get(f"{PREFIX}:portal:key")
    assert key is not None, "no portal key yet: issue a link first"
    encoded = portal_b64(json.dumps(payload, separators=(",", ":")).encode())
    signature = hmac.new(key.encode(), f"portal link {encoded}".encode(), hashlib.sha256).digest()
    return f"/portal/{encoded}.{portal_b64(signature)}"
