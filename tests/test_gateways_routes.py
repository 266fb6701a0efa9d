"""The published gateway examples through the real routes, DOKU's clock and Request-Target, and
Duitku's transactionStatus confirmation (of every resultCode: the signature does not cover it)
against a local fake of its API."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
from aiohttp import web
from redis.asyncio import Redis

from relay.app import create_app
from tests.gateway_callbacks import (
    DOKU,
    DUITKU,
    DUITKU_CODE,
    GATEWAY_SETTINGS,
    KEYS,
    TRIPAY,
    XENDIT,
    Callback,
    assert_untouched,
    doku,
    events_of,
    post,
    send,
    unmatched,
)
from tests.helpers import (
    FakeClock,
    Running,
    StartRelay,
    assert_error,
    local_server,
    make_settings,
    open_shop,
)


async def test_published_examples_verify_through_the_routes(start_relay: StartRelay, redis: Redis) -> None:
    """Exactly the vectors' bytes and keys: each verifies, and (no such order) is recorded unmatched."""
    running = await start_relay(
        worker=False,
        xendit_callback_token=KEYS["xendit"],
        tripay_private_key=TRIPAY["private_key"],
        duitku_merchant_code=DUITKU["callback"]["merchantCode"],
        duitku_api_key=DUITKU["api_key"],
        sandbox=True,  # test keys: Duitku without its status API runs only in a sandbox
    )
    tripay_headers = {"X-Callback-Signature": TRIPAY["signature"], "X-Callback-Event": "payment_status"}
    examples = [
        Callback(
            "/callbacks/xendit", json.dumps(XENDIT["paid"]).encode(), {"x-callback-token": KEYS["xendit"]}
        ),
        Callback("/callbacks/tripay", TRIPAY["raw_body"].encode(), tripay_headers),
        Callback("/callbacks/duitku", urlencode(DUITKU["callback"]).encode(), {}),
    ]
    answers = [await post(running.api, example) for example in examples]
    assert answers == [{"status": "ok"}, {"success": True}, {"status": "ok"}]
    assert await unmatched(redis) == ["12345", "INV345675", "testing-invoice"]


@pytest.fixture
async def doku_at_2020(redis_url: str) -> AsyncIterator[str]:
    """A relay whose clock reads the DOKU example's Request-Timestamp, configured as the example."""
    settings = make_settings(
        doku_client_id=DOKU["headers"]["Client-Id"],
        doku_secret_key=DOKU["secret_key"],
        doku_request_target=DOKU["request_target"],
    )
    runner = web.AppRunner(
        create_app(settings, clock=FakeClock(datetime(2020, 8, 11, 8, 45, 50, tzinfo=UTC)))
    )
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    yield f"http://{host}:{port}"
    await runner.cleanup()


async def test_doku_example_verifies_at_its_time_and_is_stale_now(
    doku_at_2020: str, start_relay: StartRelay, redis: Redis
) -> None:
    example = Callback(
        "/callbacks/doku", DOKU["raw_body"].encode(), dict(DOKU["headers"]) | {"Signature": DOKU["signature"]}
    )
    async with (
        aiohttp.ClientSession(base_url=doku_at_2020) as http,
        http.post(example.path, data=example.body, headers=example.headers) as response,
    ):
        assert response.status == 200, await response.text()
        assert await response.json() == {"status": "ok"}
    assert await unmatched(redis) == ["INV-20210124-0001"]
    running = await start_relay(
        worker=False,
        doku_client_id=DOKU["headers"]["Client-Id"],
        doku_secret_key=DOKU["secret_key"],
        doku_request_target=DOKU["request_target"],
    )
    body = await post(running.api, example, expect=401)
    assert_error(body, "VerificationError")
    assert "Request-Timestamp" in body["detail"]


async def test_doku_request_target_is_the_configured_path(start_relay: StartRelay, redis: Redis) -> None:
    running = await start_relay(
        worker=False, **GATEWAY_SETTINGS | {"doku_request_target": "/payments/notify"}
    )
    shop = await open_shop(running.api)
    order = await shop.buy(gateway="doku")
    wrong = doku(order["order_id"], order["amount"], "SUCCESS", KEYS["doku"])  # signed for /callbacks/doku
    assert_error(await post(running.api, wrong, expect=401), "VerificationError")
    right = doku(order["order_id"], order["amount"], "SUCCESS", KEYS["doku"], target="/payments/notify")
    await post(running.api, right)
    assert await shop.status(order) == "paid"


# --- Duitku resultCode 01: confirmed through the transactionStatus API ----------------------------


@dataclass
class FakeDuitku:
    """Duitku's transactionStatus API on loopback: records each request, answers ``answer``."""

    url: str = ""
    status: int = 200
    answer: dict[str, Any] = field(default_factory=dict)
    text: str | None = None
    calls: list[Any] = field(default_factory=list)

    async def transaction_status(self, request: web.Request) -> web.Response:
        self.calls.append(await request.json())
        if self.text is not None:
            return web.Response(text=self.text, status=self.status, content_type="text/html")
        return web.json_response(self.answer, status=self.status)


@pytest.fixture
async def duitku_api() -> AsyncIterator[FakeDuitku]:
    fake = FakeDuitku()
    app = web.Application()
    app.router.add_post("/webapi/api/merchant/transactionStatus", fake.transaction_status)
    async with local_server(app) as fake.url:
        yield fake


def status_answer(order: dict[str, Any], code: str, amount: int | None = None) -> dict[str, Any]:
    return {
        "merchantOrderId": order["order_id"],
        "reference": "DSANDBOX123",
        "amount": str(order["amount"] if amount is None else amount),
        "statusCode": code,
        "statusMessage": {"00": "SUCCESS", "01": "PROCESS", "02": "FAILED"}[code],
    }


@pytest.mark.parametrize(("code", "expected"), [("00", "paid"), ("01", "pending"), ("02", "failed")])
async def test_duitku_01_is_settled_by_the_status_api(
    start_relay: StartRelay, duitku_api: FakeDuitku, redis: Redis, code: str, expected: str
) -> None:
    running = await start_relay(worker=False, **GATEWAY_SETTINGS, duitku_api_base=duitku_api.url + "/")
    shop = await open_shop(running.api)
    order = await shop.buy(gateway="duitku")
    duitku_api.answer = status_answer(order, code)
    assert await send(running.api, "duitku", order, "pending") == {"status": "ok"}
    signature = hashlib.md5(f"{DUITKU_CODE}{order['order_id']}{KEYS['duitku']}".encode()).hexdigest()  # noqa: S324
    assert duitku_api.calls == [
        {"merchantCode": DUITKU_CODE, "merchantOrderId": order["order_id"], "signature": signature}
    ]
    assert await shop.status(order) == expected
    assert len(await events_of(redis, order["order_id"])) == (1 if expected == "paid" else 0)


async def test_duitku_status_api_amount_is_checked(
    start_relay: StartRelay, duitku_api: FakeDuitku, redis: Redis
) -> None:
    running = await start_relay(worker=False, **GATEWAY_SETTINGS, duitku_api_base=duitku_api.url)
    shop = await open_shop(running.api)
    order = await shop.buy(gateway="duitku")
    duitku_api.answer = status_answer(order, "00", amount=order["amount"] - 1)
    assert_error(await send(running.api, "duitku", order, "pending", expect=409), "AmountMismatch")
    await assert_untouched(redis, shop, order)


@pytest.mark.parametrize("outage", ["http-500", "not-json", "no-amount", "unreachable"])
async def test_duitku_status_api_failure_is_503_so_duitku_retries(
    start_relay: StartRelay, duitku_api: FakeDuitku, redis: Redis, outage: str
) -> None:
    base = "http://127.0.0.1:1" if outage == "unreachable" else duitku_api.url
    running = await start_relay(worker=False, **GATEWAY_SETTINGS, duitku_api_base=base)
    shop = await open_shop(running.api)
    order = await shop.buy(gateway="duitku")
    duitku_api.answer = status_answer(order, "00")
    if outage == "http-500":
        duitku_api.status = 500
    elif outage == "not-json":
        duitku_api.text = "<html>maintenance</html>"
    elif outage == "no-amount":
        del duitku_api.answer["amount"]
    body = await send(running.api, "duitku", order, "pending", expect=503)
    assert_error(body, "GatewayUnavailable")
    await assert_untouched(redis, shop, order)
    if outage != "unreachable":  # Duitku sends it again once the API answers: then it pays
        duitku_api.status, duitku_api.text, duitku_api.answer = 200, None, status_answer(order, "00")
        await send(running.api, "duitku", order, "pending")
        assert await shop.status(order) == "paid"


async def test_duitku_01_without_a_status_api_stays_pending(
    ingress_without_status_api: Running, duitku_api: FakeDuitku, redis: Redis
) -> None:
    shop = await open_shop(ingress_without_status_api.api)
    order = await shop.buy(gateway="duitku")
    await send(ingress_without_status_api.api, "duitku", order, "pending")
    await assert_untouched(redis, shop, order)
    assert duitku_api.calls == []
    await send(ingress_without_status_api.api, "duitku", order, "paid")
    assert await shop.status(order) == "paid"


@pytest.fixture
async def ingress_without_status_api(start_relay: StartRelay) -> Running:
    return await start_relay(worker=False, **GATEWAY_SETTINGS)


@pytest.mark.parametrize(
    ("sent", "answer", "expected"),
    [
        pytest.param("paid", "01", "pending", id="01-flipped-to-00-does-not-pay"),
        pytest.param("paid", "02", "failed", id="00-that-duitku-says-failed"),
        pytest.param("paid", "00", "paid", id="00-confirmed"),
        pytest.param("expired", "01", "pending", id="01-flipped-to-02-does-not-fail"),
        pytest.param("expired", "02", "failed", id="02-confirmed"),
    ],
)
async def test_duitku_00_and_02_are_confirmed_too(
    start_relay: StartRelay, duitku_api: FakeDuitku, redis: Redis, sent: str, answer: str, expected: str
) -> None:
    """resultCode is not signed: a captured 01 callback replayed as 00 (or 02) is applied only as
    far as the transactionStatus API agrees."""
    running = await start_relay(worker=False, **GATEWAY_SETTINGS, duitku_api_base=duitku_api.url)
    shop = await open_shop(running.api)
    order = await shop.buy(gateway="duitku")
    duitku_api.answer = status_answer(order, answer)
    assert await send(running.api, "duitku", order, sent) == {"status": "ok"}
    assert [call["merchantOrderId"] for call in duitku_api.calls] == [order["order_id"]]
    assert await shop.status(order) == expected
    assert len(await events_of(redis, order["order_id"])) == (1 if expected == "paid" else 0)


@pytest.mark.parametrize("code", ["03", "", None, 0])
async def test_duitku_status_api_unknown_code_is_503(
    start_relay: StartRelay, duitku_api: FakeDuitku, redis: Redis, code: object
) -> None:
    running = await start_relay(worker=False, **GATEWAY_SETTINGS, duitku_api_base=duitku_api.url)
    shop = await open_shop(running.api)
    order = await shop.buy(gateway="duitku")
    duitku_api.answer = status_answer(order, "00") | {"statusCode": code}
    assert_error(await send(running.api, "duitku", order, "paid", expect=503), "GatewayUnavailable")
    await assert_untouched(redis, shop, order)
