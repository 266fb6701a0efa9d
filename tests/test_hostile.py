"""Hostile input, property-based: whatever arrives, the relay answers 4xx (or 200 where the contract
says so), never 5xx, and no purchase changes unless the callback is correctly signed and matches."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from relay.gateways.midtrans import sign_notification
from tests.helpers import ADMIN_TOKEN, Running, StartRelay

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=20,
)
FIELDS = [
    "order_id",
    "status_code",
    "gross_amount",
    "signature_key",
    "transaction_status",
    "fraud_status",
    "settlement_time",
    "transaction_time",
    "currency",
]
notification_like = st.dictionaries(st.sampled_from(FIELDS), json_values | st.text(max_size=80), max_size=9)
STATUSES = ["settlement", "capture", "pending", "expire", "deny", "refund", "chargeback", "weird", ""]


class Target:
    """A relay (no worker) with one pending purchase that nothing unsigned may change."""

    def __init__(
        self, running: Running, redis: Redis, project: dict[str, Any], order: dict[str, Any]
    ) -> None:
        self.running = running
        self.redis = redis
        self.project = project
        self.order = order

    async def post(self, path: str, data: bytes | str, *, auth: bool = False, method: str = "POST") -> int:
        headers = {"content-type": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {ADMIN_TOKEN}"
        async with self.running.api.http.request(method, path, data=data, headers=headers) as response:
            body = await response.json(content_type=None)
            assert response.status < 500, (path, data, response.status, body)
            assert set(body) >= ({"error", "detail"} if response.status >= 400 else set()), body
            return response.status

    async def events(self) -> int:
        return len([key async for key in self.redis.scan_iter(match="relay:event:*")])

    async def status(self) -> str:
        return str((await self.running.api.purchase(self.project["id"], self.order["order_id"]))["status"])


@pytest.fixture
async def target(start_relay: StartRelay, redis_url: str) -> AsyncIterator[Target]:
    running = await start_relay(worker=False)
    project = await running.api.project()
    item = await running.api.item(project["id"])
    order = await running.api.buy(project["client_id"], item["id"])
    redis = Redis.from_url(redis_url, decode_responses=True)
    yield Target(running, redis, project, order)
    await redis.aclose()


async def assert_untouched(target: Target) -> None:
    assert await target.status() == "pending"
    assert await target.events() == 0


@FUZZ
@given(body=json_values)
async def test_random_json_callbacks(target: Target, body: Any) -> None:
    status = await target.post("/callbacks/midtrans", json.dumps(body))
    assert status in {400, 401}
    await assert_untouched(target)


@FUZZ
@given(body=st.binary(max_size=300))
async def test_random_bytes_callbacks(target: Target, body: bytes) -> None:
    assert await target.post("/callbacks/midtrans", body) in {400, 401}
    await assert_untouched(target)


@FUZZ
@given(payload=notification_like)
async def test_notification_shaped_but_unsigned(target: Target, payload: dict[str, Any]) -> None:
    payload.setdefault("order_id", target.order["order_id"])
    assert await target.post("/callbacks/midtrans", json.dumps(payload)) in {400, 401}
    await assert_untouched(target)


@FUZZ
@given(
    amount=st.text(max_size=30) | st.integers(min_value=0, max_value=10**30).map(str),
    status=st.sampled_from(STATUSES),
    status_code=st.sampled_from(["200", "201", "202", "", "x"]),
    stamp=st.text(max_size=25),
)
async def test_signed_with_hostile_values(
    target: Target, amount: str, status: str, status_code: str, stamp: str
) -> None:
    """Correctly signed, but the amount never matches the purchase: nothing may change."""
    if amount.strip() in {"50000", "50000.0", "50000.00"}:
        amount = "1"
    payload = sign_notification(
        {
            "order_id": target.order["order_id"],
            "status_code": status_code,
            "gross_amount": amount,
            "transaction_status": status,
            "settlement_time": stamp,
        },
        target.running.api.midtrans_key,
    )
    assert await target.post("/callbacks/midtrans", json.dumps(payload)) in {400, 409}
    await assert_untouched(target)


async def test_duplicated_keys_cannot_smuggle_an_order(target: Target) -> None:
    """JSON with a duplicated order_id: the relay reads one value (the last) everywhere, so a
    signature over one order cannot pay another."""
    decoy = sign_notification(
        {
            "order_id": "item-decoy000-00000000",
            "status_code": "200",
            "gross_amount": "50000.00",
            "transaction_status": "settlement",
        },
        target.running.api.midtrans_key,
    )
    fields = ", ".join(f'"{key}": {json.dumps(value)}' for key, value in decoy.items() if key != "order_id")
    text = f'{{"order_id": "{target.order["order_id"]}", {fields}, "order_id": "item-decoy000-00000000"}}'
    assert await target.post("/callbacks/midtrans", text) == 200  # the decoy: unknown order
    await assert_untouched(target)
    text = f'{{"order_id": "item-decoy000-00000000", {fields}, "order_id": "{target.order["order_id"]}"}}'
    assert await target.post("/callbacks/midtrans", text) == 401
    await assert_untouched(target)


async def test_deep_nesting_is_400(target: Target) -> None:
    for body in ("[" * 60_000, '{"a":' * 10_000 + "1" + "}" * 10_000):
        assert await target.post("/callbacks/midtrans", body) == 400
    assert await target.post("/api/platform/projects", "[" * 60_000, auth=True, method="PUT") == 400
    await assert_untouched(target)


API_ROUTES = [
    ("PUT", "/api/platform/projects", True),
    ("PUT", "/api/platform/items", True),
    ("POST", "/api/platform/public-items/purchase", False),
    ("POST", "/api/admin/dead-letters/replay", True),
]


@FUZZ
@given(body=json_values, route=st.sampled_from(API_ROUTES))
async def test_random_api_bodies(target: Target, body: Any, route: tuple[str, str, bool]) -> None:
    method, path, auth = route
    # A random body may happen to be valid (e.g. {"name": "a"}); the property is: never 5xx, and the
    # purchase is untouched.
    assert await target.post(path, json.dumps(body), auth=auth, method=method) in {200, 400, 404}
    await assert_untouched(target)


@FUZZ
@given(
    fields=st.fixed_dictionaries(
        {},
        optional={
            "client_id": json_values,
            "item_id": json_values,
            "buyer_email": st.emails() | json_values,
            "buyer_name": json_values,
            "amount": json_values,
            "metadata": json_values,
        },
    )
)
async def test_purchase_bodies(target: Target, fields: dict[str, Any]) -> None:
    status = await target.post("/api/platform/public-items/purchase", json.dumps(fields))
    assert status in {400, 404}
    await assert_untouched(target)
