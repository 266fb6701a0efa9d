"""Generic HMAC sources (relay/gateways/custom.py) and RELAY_CUSTOM_SOURCES validation, the gateway
settings and registry, and every gateway's sandbox callback verifying through its own checks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from relay.errors import InvalidInput, VerificationError
from relay.gateways import Gateway
from relay.gateways.custom import CustomSource, parse_sources
from relay.gateways.doku import Doku
from relay.gateways.duitku import Duitku
from relay.gateways.midtrans import Midtrans
from relay.gateways.registry import configured_gateways
from relay.gateways.tripay import Tripay
from relay.gateways.xendit import Xendit
from relay.models import Purchase, PurchaseStatus
from relay.settings import Settings, describe_validation_error
from tests.helpers import FakeClock

XENDIT_TOKEN = "xnd-callback-token-0123456789"
SECRET = "custom-source-secret-0123456789"


# Settings reads RELAY_* variables: every test starts from none, whatever the developer has set.
pytestmark = pytest.mark.usefixtures("clean_environment")


def purchase(order_id: str = "item-abc12345-1a2b3c4d", amount: int = 50000) -> Purchase:
    now = datetime(2026, 5, 6, 10, 0, tzinfo=UTC)
    return Purchase(
        order_id=order_id,
        item_id="abc12345",
        project_id="shop",
        item_name="Premium Template",
        amount=amount,
        currency="IDR",
        buyer_email="buyer@example.com",
        created_at=now,
        updated_at=now,
    )


# --- generic HMAC sources -------------------------------------------------------------------------


def source_config(**changes: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "secret": SECRET,
        "header": "X-Shop-Signature",
        "algorithm": "sha256",
        "encoding": "hex",
        "paths": {"order_id": "data.order.id", "status": "data.state", "amount": "data.order.total"},
        "statuses": {"succeeded": "paid", "waiting": "pending", "lapsed": "expired"},
    }
    return config | changes


def source(clock: Any = None, **changes: Any) -> CustomSource:
    config = parse_sources({"shop": source_config(**changes)})["shop"]
    return CustomSource("shop", config, clock=clock or FakeClock())


def shop_body(state: str = "succeeded", **order: Any) -> bytes:
    document = {"data": {"state": state, "order": {"id": "item-abc12345-1a2b3c4d", "total": 50000} | order}}
    return json.dumps(document).encode()


def test_custom_source_hex_sha256_over_the_raw_body() -> None:
    body = shop_body()
    signature = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    gateway = source()
    outcome = gateway.normalise(gateway.verify(body, {"x-shop-signature": signature}))
    assert outcome.gateway == gateway.name == "custom/shop"
    assert (outcome.order_id, outcome.status, outcome.amount) == (
        "item-abc12345-1a2b3c4d",
        PurchaseStatus.PAID,
        50000,
    )


def test_custom_source_base64_sha512_over_timestamp_and_body() -> None:
    clock = FakeClock()
    gateway = source(clock, algorithm="sha512", encoding="base64", timestamp_header="X-Shop-Time")
    body, stamp = shop_body(), str(int(clock().timestamp()))
    mac = hmac.new(SECRET.encode(), f"{stamp}.".encode() + body, hashlib.sha512).digest()
    headers = {"X-Shop-Signature": base64.b64encode(mac).decode(), "X-Shop-Time": stamp}
    assert gateway.verify(body, headers)["data"]["state"] == "succeeded"
    # signed over the body alone, it does not verify: the timestamp is part of the message
    alone = base64.b64encode(hmac.new(SECRET.encode(), body, hashlib.sha512).digest()).decode()
    with pytest.raises(VerificationError):
        gateway.verify(body, headers | {"X-Shop-Signature": alone})
    clock.advance(301)
    with pytest.raises(VerificationError, match="X-Shop-Time"):
        gateway.verify(body, headers)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Shop-Signature": "00"},
        {"X-Shop-Signature": hmac.new(b"other-secret", b"", "sha256").hexdigest()},
    ],
)
def test_custom_source_refuses_a_wrong_signature(headers: dict[str, str]) -> None:
    with pytest.raises(VerificationError):
        source().verify(shop_body(), headers)


def test_custom_source_paid_at_and_unknown_status() -> None:
    gateway = source(paths=source_config()["paths"] | {"paid_at": "data.order.paid"})
    iso = gateway.normalise(json.loads(shop_body(paid="2026-05-06T17:00:00+07:00")))
    assert iso.paid_at == datetime(2026, 5, 6, 10, 0, tzinfo=UTC)
    unix = gateway.normalise(json.loads(shop_body(paid=1778061600)))
    assert unix.paid_at == datetime(2026, 5, 6, 10, 0, tzinfo=UTC)
    assert gateway.normalise(json.loads(shop_body("waiting"))).status is PurchaseStatus.PENDING
    with pytest.raises(InvalidInput, match="unknown status"):
        gateway.normalise(json.loads(shop_body("refunded")))


def test_custom_sources_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELAY_CUSTOM_SOURCES", json.dumps({"shop": source_config(), "b2": source_config()}))
    sources = Settings().custom_sources
    assert set(sources) == {"shop", "b2"}
    assert sources["shop"].tolerance == 300
    assert sources["shop"].statuses["lapsed"] is PurchaseStatus.EXPIRED


@pytest.mark.parametrize(
    ("value", "mentions"),
    [
        ("not json", "JSON object"),
        ("[]", "dictionary"),
        (json.dumps({"Shop!": source_config()}), "Shop!"),
        (json.dumps({"shop": source_config(algorithm="md5")}), "shop.algorithm"),
        (json.dumps({"shop": source_config(encoding="base32")}), "shop.encoding"),
        (json.dumps({"shop": source_config(secret="short")}), "16 characters"),
        (json.dumps({"shop": source_config(paths={"order_id": "id"})}), "shop.paths.status"),
        (json.dumps({"shop": source_config(statuses={})}), "shop.statuses"),
        (json.dumps({"shop": source_config(statuses={"ok": "settled"})}), "shop.statuses.ok"),
        (json.dumps({"shop": source_config(header="X Bad")}), "shop.header"),
        (json.dumps({"shop": source_config(tolerance=0)}), "shop.tolerance"),
        (json.dumps({"shop": source_config(extra=1)}), "shop.extra"),
    ],
)
def test_bad_custom_sources_fail_at_start_in_one_line(
    monkeypatch: pytest.MonkeyPatch, value: str, mentions: str
) -> None:
    monkeypatch.setenv("RELAY_CUSTOM_SOURCES", value)
    with pytest.raises(ValidationError) as caught:
        Settings()
    message = describe_validation_error(caught.value)
    assert message.startswith("RELAY_CUSTOM_SOURCES: "), message
    assert mentions in message
    assert "\n" not in message
    assert SECRET not in message


def test_custom_source_secret_never_appears_in_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELAY_CUSTOM_SOURCES", json.dumps({"shop": source_config(secret=12345678901234567)}))
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert "12345678901234567" not in describe_validation_error(caught.value)


# --- settings and the registry --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"RELAY_DOKU_CLIENT_ID": "MCH-1"}, "RELAY_DOKU_SECRET_KEY"),
        ({"RELAY_DOKU_SECRET_KEY": "SK-1"}, "RELAY_DOKU_SECRET_KEY"),
        ({"RELAY_DUITKU_MERCHANT_CODE": "D0001"}, "RELAY_DUITKU_API_KEY"),
        ({"RELAY_DUITKU_API_KEY": "k"}, "RELAY_DUITKU_API_KEY"),
        ({"RELAY_DUITKU_API_BASE": "ftp://x"}, "RELAY_DUITKU_API_BASE"),
        ({"RELAY_DOKU_REQUEST_TARGET": "callbacks/doku"}, "RELAY_DOKU_REQUEST_TARGET"),
        ({"RELAY_DOKU_TIMESTAMP_TOLERANCE": "0"}, "RELAY_DOKU_TIMESTAMP_TOLERANCE"),
    ],
)
def test_bad_gateway_settings_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], named: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert describe_validation_error(caught.value).startswith(f"{named}: ")


def test_only_configured_gateways_are_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    sandbox_key = "SB-Mid-server-" + "0" * 48
    # No key at all: the sandbox runs, and Midtrans with the sandbox's key.
    assert set(configured_gateways(Settings(), sandbox_key=lambda: sandbox_key)) == {"midtrans"}
    with pytest.raises(ValueError, match="sandbox key"):
        configured_gateways(Settings())
    # an empty key is "not configured", never "the empty string is the key"
    monkeypatch.setenv("RELAY_XENDIT_CALLBACK_TOKEN", "")
    monkeypatch.setenv("RELAY_TRIPAY_PRIVATE_KEY", "  ")
    assert set(configured_gateways(Settings(), sandbox_key=lambda: sandbox_key)) == {"midtrans"}
    settings = Settings(
        xendit_callback_token=XENDIT_TOKEN,
        tripay_private_key="tripay-key",
        doku_client_id="MCH-1",
        doku_secret_key="SK-1",
        duitku_merchant_code="D0001",
        duitku_api_key="key",
        duitku_api_base="https://sandbox.duitku.com",
        custom_sources={"shop": source_config()},
    )
    gateways = configured_gateways(settings)
    # Real keys and no Midtrans key: the sandbox is off, and so is Midtrans.
    assert set(gateways) == {"xendit", "tripay", "doku", "duitku", "custom/shop"}
    assert all(gateway.name == key for key, gateway in gateways.items())
    assert XENDIT_TOKEN not in repr(settings)


# --- the sandbox's callbacks verify through the same code -----------------------------------------


def every_gateway() -> list[Gateway]:
    return [
        Midtrans(server_key="SB-Mid-server-test"),
        Xendit(callback_token=XENDIT_TOKEN),
        Tripay(private_key="tripay-private-key"),
        Doku(
            client_id="MCH-1",
            secret_key="SK-1",
            request_target="/callbacks/doku",
            tolerance=300,
            clock=FakeClock(),
        ),
        Duitku(merchant_code="D0001", api_key="duitku-key", api_base=None),
        source(timestamp_header="X-Shop-Time", paths=source_config()["paths"] | {"paid_at": "data.paid"}),
    ]


@pytest.mark.parametrize("gateway", every_gateway(), ids=lambda gateway: gateway.name)
@pytest.mark.parametrize("status", [PurchaseStatus.PAID, PurchaseStatus.EXPIRED])
def test_sandbox_callbacks_verify_and_normalise(gateway: Gateway, status: PurchaseStatus) -> None:
    bought = purchase()
    body, headers = gateway.sandbox_callback(bought, status, FakeClock()())
    outcome = gateway.normalise(gateway.verify(body, headers))
    expected = (
        PurchaseStatus.FAILED if gateway.name == "duitku" and status is PurchaseStatus.EXPIRED else status
    )
    assert (outcome.gateway, outcome.order_id, outcome.status) == (gateway.name, bought.order_id, expected)
    assert outcome.amount == bought.amount
    if status is PurchaseStatus.PAID and gateway.name != "duitku":
        assert outcome.paid_at == FakeClock()()
