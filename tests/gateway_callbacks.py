"""Callbacks signed the way Xendit, Tripay, DOKU, Duitku and a generic HMAC source sign them, by the
recipes in tests/vectors/ and independently of relay's own signing code; and the shop helpers the
gateway integration tests share."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from redis.asyncio import Redis

from tests.helpers import Api, Shop

VECTORS = Path(__file__).parent / "vectors"
XENDIT, TRIPAY, DOKU, DUITKU = (
    json.loads((VECTORS / f"{name}.json").read_text(encoding="utf-8"))
    for name in ("xendit", "tripay", "doku", "duitku")
)

KEYS = {
    "xendit": "xnd-callback-token-0123456789",
    "tripay": "tripay-private-key-0123456789",
    "doku": "SK-doku-secret-0123456789",
    "duitku": "duitku-api-key-0123456789",
    "custom/shop": "shop-hmac-secret-0123456789",
}
DOKU_CLIENT_ID = "MCH-0001-TEST"
DUITKU_CODE = "DTEST"
SOURCE = {
    "secret": KEYS["custom/shop"],
    "header": "X-Shop-Signature",
    "algorithm": "sha512",
    "encoding": "base64",
    "timestamp_header": "X-Shop-Timestamp",
    "tolerance": 300,
    "paths": {
        "order_id": "data.order_id",
        "status": "data.state",
        "amount": "data.total",
        "paid_at": "data.at",
    },
    "statuses": {"succeeded": "paid", "waiting": "pending", "lapsed": "expired"},
}
# Test keys of every gateway, and the sandbox on purpose (with real keys set it is off by default):
# the shops of these tests buy through the sandbox's Midtrans.
GATEWAY_SETTINGS: dict[str, Any] = {
    "sandbox": True,
    "xendit_callback_token": KEYS["xendit"],
    "tripay_private_key": KEYS["tripay"],
    "doku_client_id": DOKU_CLIENT_ID,
    "doku_secret_key": KEYS["doku"],
    "duitku_merchant_code": DUITKU_CODE,
    "duitku_api_key": KEYS["duitku"],
    "custom_sources": {"shop": SOURCE},
}
GATEWAYS = ["xendit", "tripay", "doku", "duitku", "custom/shop"]
# What each gateway calls paid, pending and expired (Duitku has no expiry: 02 fails the purchase).
RAW = {
    "xendit": {"paid": "PAID", "pending": "PENDING", "expired": "EXPIRED"},
    "tripay": {"paid": "PAID", "pending": "UNPAID", "expired": "EXPIRED"},
    "doku": {"paid": "SUCCESS", "pending": "PENDING", "expired": "EXPIRED"},
    "duitku": {"paid": "00", "pending": "01", "expired": "02"},
    "custom/shop": {"paid": "succeeded", "pending": "waiting", "expired": "lapsed"},
}
EXPIRED_AS = {"duitku": "failed"}
OK_BODY = {"tripay": {"success": True}}
AT_LEAST = {"xendit", "tripay"}  # amounts that include fees the buyer paid may exceed the price
PREFIX = "relay"


# --- signing callbacks the way each gateway does ------------------------------------------------


@dataclass
class Callback:
    path: str
    body: bytes
    headers: dict[str, str]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def xendit(order_id: str, amount: int, raw: str, key: str) -> Callback:
    payload = dict(XENDIT["paid"]) | {"external_id": order_id, "status": raw, "amount": amount}
    payload |= (
        {"paid_amount": amount} if raw in {"PAID", "SETTLED"} else {"paid_amount": None, "paid_at": None}
    )
    body = json.dumps({name: value for name, value in payload.items() if value is not None}).encode()
    return Callback("/callbacks/xendit", body, {"x-callback-token": key, "content-type": "application/json"})


def tripay(order_id: str, amount: int, raw: str, key: str) -> Callback:
    payload = json.loads(TRIPAY["raw_body"]) | {
        "merchant_ref": order_id,
        "status": raw,
        "total_amount": amount,
    }
    body = json.dumps(payload).encode()
    signature = hmac.new(key.encode(), body, hashlib.sha256).hexdigest()
    headers = {"X-Callback-Signature": signature, "X-Callback-Event": "payment_status"}
    return Callback("/callbacks/tripay", body, headers)


def doku(order_id: str, amount: int, raw: str, key: str, *, target: str = "/callbacks/doku") -> Callback:
    payload = {"order": {"invoice_number": order_id, "amount": amount}, "transaction": {"status": raw}}
    body = json.dumps(payload).encode()
    request_id, stamp = str(uuid.uuid4()), datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    digest = b64(hashlib.sha256(body).digest())
    lines = f"Client-Id:{DOKU_CLIENT_ID}\nRequest-Id:{request_id}\nRequest-Timestamp:{stamp}\n"
    lines += f"Request-Target:{target}\nDigest:{digest}"
    signature = "HMACSHA256=" + b64(hmac.new(key.encode(), lines.encode(), hashlib.sha256).digest())
    headers = {"Client-Id": DOKU_CLIENT_ID, "Request-Id": request_id, "Request-Timestamp": stamp}
    return Callback("/callbacks/doku", body, headers | {"Signature": signature})


def duitku(order_id: str, amount: int, raw: str, key: str) -> Callback:
    signature = hashlib.md5(f"{DUITKU_CODE}{amount}{order_id}{key}".encode()).hexdigest()  # noqa: S324
    form = dict(DUITKU["callback"]) | {
        "merchantCode": DUITKU_CODE,
        "amount": amount,
        "merchantOrderId": order_id,
        "resultCode": raw,
        "signature": signature,
    }
    headers = {"content-type": "application/x-www-form-urlencoded"}
    return Callback("/callbacks/duitku", urlencode(form).encode(), headers)


def custom_paid_at() -> datetime:
    """What the custom source says the payment time was: now, in its own zone (+07:00), to the
    second (a gateway's time outside [order created, now] is clamped into it)."""
    return datetime.now(UTC).replace(microsecond=0).astimezone(timezone(timedelta(hours=7)))


def custom(order_id: str, amount: int, raw: str, key: str) -> Callback:
    data = {"order_id": order_id, "state": raw, "total": amount, "at": custom_paid_at().isoformat()}
    body = json.dumps({"data": data}).encode()
    stamp = str(int(datetime.now(UTC).timestamp()))
    signature = b64(hmac.new(key.encode(), f"{stamp}.".encode() + body, hashlib.sha512).digest())
    headers = {"X-Shop-Signature": signature, "X-Shop-Timestamp": stamp}
    return Callback("/callbacks/custom/shop", body, headers)


SIGNERS: dict[str, Callable[[str, int, str, str], Callback]] = {
    "xendit": xendit,
    "tripay": tripay,
    "doku": doku,
    "duitku": duitku,
    "custom/shop": custom,
}


async def post(api: Api, callback: Callback, *, expect: int = 200) -> Any:
    async with api.http.post(callback.path, data=callback.body, headers=callback.headers) as response:
        body = await response.json(content_type=None)
        assert response.status == expect, f"{callback.path}: {response.status} {body}"
        return body


async def send(
    api: Api,
    gateway: str,
    order: dict[str, Any],
    kind: str,
    *,
    amount: int | None = None,
    key: str | None = None,
    expect: int = 200,
) -> Any:
    raw = RAW[gateway][kind]
    callback = SIGNERS[gateway](
        order["order_id"], order["amount"] if amount is None else amount, raw, key or KEYS[gateway]
    )
    return await post(api, callback, expect=expect)


async def events_of(redis: Redis, order_id: str) -> list[dict[str, str]]:
    found = []
    async for key in redis.scan_iter(match=f"{PREFIX}:event:*", count=1000):
        if not key.endswith(":attempts"):
            event = await redis.hgetall(key)
            if event.get("order_id") == order_id:
                found.append(event)
    return found


async def assert_one_event(redis: Redis, shop: Shop, order: dict[str, Any]) -> None:
    events = await events_of(redis, order["order_id"])
    assert len(events) == 1, events
    assert (await shop.purchase(order))["event_id"] == events[0]["id"]


async def assert_untouched(redis: Redis, shop: Shop, order: dict[str, Any]) -> None:
    purchase = await shop.purchase(order)
    assert (purchase["status"], purchase["paid_at"], purchase["webhook_status"]) == ("pending", None, None)
    assert await events_of(redis, order["order_id"]) == []


async def unmatched(redis: Redis) -> list[str]:
    return [json.loads(raw)["order_id"] for raw in await redis.lrange(f"{PREFIX}:unmatched", 0, -1)]
