"""Unauthenticated input that was answered 500 with a traceback (issue 12, item 6), each through the
running relay: now a 4xx in the error shape (HTML on the console), or, for a gateway's own
timestamps, a correctly signed callback that pays at the relay's clock. No ``unhandled_error``."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from redis.asyncio import Redis
from structlog.testing import capture_logs

from tests.gateway_callbacks import DOKU_CLIENT_ID, GATEWAY_SETTINGS, KEYS, Callback, b64, post
from tests.helpers import (
    ADMIN_TOKEN,
    PROJECTS,
    PURCHASE,
    Running,
    StartRelay,
    assert_error,
    open_shop,
    raw_request,
)

UNDECODABLE = b"\xff\xfe\xed\xa0\x80"  # not UTF-8: aiohttp hands such header bytes over as surrogates


@pytest.fixture
async def ingress(start_relay: StartRelay) -> Running:
    return await start_relay(worker=False, **GATEWAY_SETTINGS)


@pytest.fixture(autouse=True)
def no_unhandled_errors() -> Iterator[None]:
    with capture_logs() as logs:
        yield
    assert [entry for entry in logs if entry["event"] == "unhandled_error"] == []


def http(method: str, path: str, headers: dict[str, bytes] | None = None, body: bytes = b"") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n".encode()
    for name, value in ({"Content-Length": str(len(body)).encode()} | (headers or {})).items():
        head += name.encode() + b": " + value + b"\r\n"
    return head + b"\r\n" + body


async def answer(running: Running, request: bytes, status: int, error: str) -> Any:
    got = await raw_request(running.url, request)
    assert got.status == status, got.body
    if got.headers["content-type"].startswith("text/html"):
        assert error in got.body.decode()
        return got.body.decode()
    body = json.loads(got.body)
    assert_error(body, error)
    return body


JSON = {"Content-Type": b"application/json"}
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}".encode()}


@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [
        ("POST", "/callbacks/midtrans", JSON),
        ("POST", "/callbacks/xendit", JSON | {"x-callback-token": KEYS["xendit"].encode()}),
        ("POST", PURCHASE, JSON),
        ("PUT", PROJECTS, JSON | ADMIN),
    ],
)
async def test_an_integer_of_more_than_4300_digits_is_400(
    ingress: Running, method: str, path: str, headers: dict[str, bytes]
) -> None:
    body = b'{"amount": ' + b"9" * 5000 + b', "name": "x"}'
    await answer(ingress, http(method, path, headers, body), 400, "InvalidInput")


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/callbacks/xendit", {"x-callback-token": UNDECODABLE}),
        ("/callbacks/tripay", {"X-Callback-Signature": UNDECODABLE, "X-Callback-Event": b"payment_status"}),
        (
            "/callbacks/doku",
            {
                "Client-Id": DOKU_CLIENT_ID.encode(),
                "Request-Id": UNDECODABLE,
                "Request-Timestamp": b"2026-05-06T10:00:00Z",
                "Signature": UNDECODABLE,
            },
        ),
        ("/callbacks/custom/shop", {"X-Shop-Signature": UNDECODABLE, "X-Shop-Timestamp": UNDECODABLE}),
    ],
)
async def test_undecodable_signature_headers_are_401(
    ingress: Running, path: str, headers: dict[str, bytes]
) -> None:
    await answer(ingress, http("POST", path, JSON | headers, b"{}"), 401, "VerificationError")


@pytest.mark.parametrize("value", [b"Bearer " + UNDECODABLE, UNDECODABLE, b"Bearer caf\xc3\xa9"])
async def test_an_undecodable_authorization_is_401(ingress: Running, value: bytes) -> None:
    for path in ("/api/admin/dead-letters", f"{PROJECTS}/p1"):
        await answer(ingress, http("GET", path, {"Authorization": value}), 401, "Unauthorized")


async def test_an_undecodable_console_cookie_is_no_session(ingress: Running) -> None:
    for name in (b"relay_console", b"__Host-relay_console"):
        got = await raw_request(ingress.url, http("GET", "/console", {"Cookie": name + b"=" + UNDECODABLE}))
        assert (got.status, got.headers["location"]) == (303, "/console/login")
        got = await raw_request(
            ingress.url, http("GET", "/console/login", {"Cookie": name + b"=" + UNDECODABLE})
        )
        assert got.status == 200


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        (b"application/x-www-form-urlencoded", b"token=" + UNDECODABLE),
        (b"application/x-www-form-urlencoded; charset=no-such-charset", b"token=x"),
        (
            b"multipart/form-data; boundary=x",
            b'--x\r\nContent-Disposition: form-data; name="token"\r\n\r\nx\r\n--x--\r\n',
        ),
        (b"multipart/form-data", b"garbage"),
    ],
)
async def test_an_unreadable_login_form_is_400(ingress: Running, content_type: bytes, body: bytes) -> None:
    page = await answer(
        ingress, http("POST", "/console/login", {"Content-Type": content_type}, body), 400, "InvalidInput"
    )
    assert "form" in page


async def test_a_lone_surrogate_in_an_order_id_is_400(ingress: Running) -> None:
    notification = ingress.api.notification("item-0", 50000) | {"order_id": "item-\ud800"}
    body = json.dumps(notification).encode()  # ensure_ascii: the surrogate travels as \\ud800
    await answer(ingress, http("POST", "/callbacks/midtrans", JSON, body), 400, "InvalidInput")
    shop = await open_shop(ingress.api)
    purchase = {"client_id": shop.project["client_id"], "item_id": "\ud800", "buyer_email": "b@example.com"}
    await answer(ingress, http("POST", PURCHASE, JSON, json.dumps(purchase).encode()), 400, "InvalidInput")
    xendit = {"external_id": "\ud800", "status": "PAID", "paid_amount": 1}
    headers = JSON | {"x-callback-token": KEYS["xendit"].encode()}
    await answer(
        ingress, http("POST", "/callbacks/xendit", headers, json.dumps(xendit).encode()), 400, "InvalidInput"
    )


@pytest.mark.parametrize(
    "path",
    [f"{PROJECTS}/%ED%A0%80", f"{PROJECTS}/p/item-purchases/%ED%A0%80", "/api/admin/dead-letters/%ED%A0%80"],
)
async def test_undecodable_path_ids_are_404(ingress: Running, path: str) -> None:
    method = "DELETE" if path.startswith("/api/admin") else "GET"
    await answer(ingress, http(method, path, ADMIN), 404, "NotFound")


async def test_an_undecodable_sandbox_order_id_is_404(relay: Running) -> None:
    await answer(relay, http("GET", "/sandbox/checkout/%ED%A0%80?token=%ED%A0%80"), 404, "NotFound")


async def test_metadata_nested_hundreds_of_levels_is_400(ingress: Running) -> None:
    shop = await open_shop(ingress.api)
    nested: dict[str, Any] = {}
    for _ in range(400):
        nested = {"a": nested}
    body = {
        "client_id": shop.project["client_id"],
        "item_id": shop.item["id"],
        "buyer_email": "b@example.com",
    }
    encoded = json.dumps(body | {"metadata": nested}).encode()
    detail = (await answer(ingress, http("POST", PURCHASE, JSON, encoded), 400, "InvalidInput"))["detail"]
    assert "nested" in detail


# --- a gateway's extreme timestamps: a correctly signed callback still pays ----------------------

EXTREME = ["0001-01-01T00:00:00+07:00", "9999-12-31T23:59:59-05:00"]


def xendit_paid(order: dict[str, Any], stamp: str) -> Callback:
    body = {
        "external_id": order["order_id"],
        "status": "PAID",
        "paid_amount": order["amount"],
        "paid_at": stamp,
    }
    return Callback("/callbacks/xendit", json.dumps(body).encode(), {"x-callback-token": KEYS["xendit"]})


def custom_paid(order: dict[str, Any], stamp: str) -> Callback:
    data = {"order_id": order["order_id"], "state": "succeeded", "total": order["amount"], "at": stamp}
    body = json.dumps({"data": data}).encode()
    now = str(int(datetime.now(UTC).timestamp()))
    signature = b64(
        hmac.new(KEYS["custom/shop"].encode(), f"{now}.".encode() + body, hashlib.sha512).digest()
    )
    return Callback("/callbacks/custom/shop", body, {"X-Shop-Signature": signature, "X-Shop-Timestamp": now})


def tripay_paid(order: dict[str, Any], stamp: str) -> Callback:
    body = json.dumps(
        {
            "merchant_ref": order["order_id"],
            "status": "PAID",
            "total_amount": order["amount"],
            "paid_at": stamp,
        }
    )
    signature = hmac.new(KEYS["tripay"].encode(), body.encode(), hashlib.sha256).hexdigest()
    headers = {"X-Callback-Signature": signature, "X-Callback-Event": "payment_status"}
    return Callback("/callbacks/tripay", body.encode(), headers)


@pytest.mark.parametrize("stamp", EXTREME)
@pytest.mark.parametrize(("gateway", "callback"), [("xendit", xendit_paid), ("custom/shop", custom_paid)])
async def test_an_extreme_paid_at_pays_at_the_relays_clock(
    ingress: Running, redis: Redis, gateway: str, callback: Any, stamp: str
) -> None:
    shop = await open_shop(ingress.api)
    order = await shop.buy(gateway=gateway)
    before = datetime.now(UTC).replace(microsecond=0)
    await post(ingress.api, callback(order, stamp))
    purchase = await shop.purchase(order)
    assert purchase["status"] == "paid"
    assert before <= datetime.fromisoformat(purchase["paid_at"]) <= datetime.now(UTC)


@pytest.mark.parametrize("stamp", ["9" * 5000, "0", "99999999999999"])
async def test_an_extreme_unix_paid_at_pays_at_the_relays_clock(ingress: Running, stamp: str) -> None:
    shop = await open_shop(ingress.api)
    order = await shop.buy(gateway="tripay")
    await post(ingress.api, tripay_paid(order, stamp), expect=200)
    assert await shop.status(order) == "paid"


@pytest.mark.parametrize("stamp", EXTREME)
async def test_an_extreme_doku_request_timestamp_is_401(ingress: Running, stamp: str) -> None:
    body = json.dumps(
        {"order": {"invoice_number": "item-x", "amount": 1}, "transaction": {"status": "SUCCESS"}}
    )
    digest = b64(hashlib.sha256(body.encode()).digest())
    lines = f"Client-Id:{DOKU_CLIENT_ID}\nRequest-Id:r1\nRequest-Timestamp:{stamp}\n"
    lines += f"Request-Target:/callbacks/doku\nDigest:{digest}"
    signature = "HMACSHA256=" + b64(hmac.new(KEYS["doku"].encode(), lines.encode(), hashlib.sha256).digest())
    headers = {
        "Client-Id": DOKU_CLIENT_ID,
        "Request-Id": "r1",
        "Request-Timestamp": stamp,
        "Signature": signature,
    }
    assert_error(
        await post(ingress.api, Callback("/callbacks/doku", body.encode(), headers), expect=401),
        "VerificationError",
    )


@pytest.mark.parametrize(
    "path",
    ["/api/admin/dead-letters?limit=%C2%B2", "/api/admin/dead-letters?cursor=%C2%B2:evt_a"],
    ids=["limit", "cursor"],
)
async def test_a_superscript_digit_in_a_number_is_400(ingress: Running, path: str) -> None:
    """``'²'.isdigit()`` is true, and ``int('²')`` raises: a number must be ASCII digits."""
    assert_error(await ingress.api.call("GET", path, expect=400), "InvalidInput")
