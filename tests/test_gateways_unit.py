"""relay/gateways/{xendit,tripay,doku,duitku}.py against the published recipes and the examples in
tests/vectors/: each signature verifies with exactly those inputs, anything it does not cover is
refused, statuses map as documented, and a stale DOKU timestamp is refused."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from relay.errors import InvalidInput, VerificationError
from relay.gateways import doku, duitku, tripay
from relay.gateways.doku import Doku
from relay.gateways.duitku import Duitku
from relay.gateways.tripay import Tripay
from relay.gateways.xendit import Xendit
from relay.models import PurchaseStatus
from tests.helpers import FakeClock

VECTORS = Path(__file__).parent / "vectors"


def vector(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((VECTORS / f"{name}.json").read_text(encoding="utf-8"))
    return loaded


XENDIT, TRIPAY, DOKU, DUITKU = vector("xendit"), vector("tripay"), vector("doku"), vector("duitku")
XENDIT_TOKEN = "xnd-callback-token-0123456789"
DOKU_SENT_AT = datetime(2020, 8, 11, 8, 45, 42, tzinfo=UTC)  # the vector's Request-Timestamp


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings reads RELAY_* variables: start every test from none, whatever the developer has set."""
    for name in list(os.environ):
        if name.upper().startswith("RELAY_"):
            monkeypatch.delenv(name)


# --- Xendit ---------------------------------------------------------------------------------------


def xendit_body(**changes: Any) -> bytes:
    body = dict(XENDIT["paid"]) | changes
    return json.dumps({key: value for key, value in body.items() if value is not None}).encode()


def test_xendit_published_callback_verifies_with_the_token() -> None:
    gateway = Xendit(callback_token=XENDIT_TOKEN)
    payload = gateway.verify(xendit_body(), {"X-Callback-Token": XENDIT_TOKEN})
    outcome = gateway.normalise(payload)
    assert (outcome.order_id, outcome.status, outcome.raw_status) == (
        "testing-invoice",
        PurchaseStatus.PAID,
        "PAID",
    )
    assert outcome.amount == Decimal(2000000)
    assert outcome.amount_rule == "at_least"
    assert outcome.paid_at == datetime(2020, 1, 14, 2, 32, 50, 912000, tzinfo=UTC)
    assert outcome.reference == "593f4ed1c3d3bb7f39733d83"


@pytest.mark.parametrize("headers", [{}, {"x-callback-token": ""}, {"x-callback-token": XENDIT_TOKEN + "x"}])
def test_xendit_refuses_a_missing_or_wrong_token(headers: dict[str, str]) -> None:
    with pytest.raises(VerificationError):
        Xendit(callback_token=XENDIT_TOKEN).verify(xendit_body(), headers)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("PAID", PurchaseStatus.PAID),
        ("SETTLED", PurchaseStatus.PAID),
        ("PENDING", PurchaseStatus.PENDING),
        ("EXPIRED", PurchaseStatus.EXPIRED),
    ],
)
def test_xendit_status_table(status: str, expected: PurchaseStatus) -> None:
    assert set(XENDIT["status_rules"]) == {"PAID", "SETTLED", "PENDING", "EXPIRED"}
    gateway = Xendit(callback_token=XENDIT_TOKEN)
    outcome = gateway.normalise(json.loads(xendit_body(status=status)))
    assert outcome.status is expected


def test_xendit_unpaid_statuses_use_the_invoice_amount_exactly() -> None:
    gateway = Xendit(callback_token=XENDIT_TOKEN)
    outcome = gateway.normalise(json.loads(xendit_body(status="EXPIRED", paid_amount=None, paid_at=None)))
    assert (outcome.amount, outcome.amount_rule, outcome.paid_at) == (Decimal(2000000), "exact", None)


@pytest.mark.parametrize(
    "changes",
    [
        {"status": "paid"},
        {"status": "VOIDED"},
        {"paid_amount": None},
        {"paid_amount": "lots"},
    ],
)
def test_xendit_refuses_what_it_cannot_map(changes: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput):
        Xendit(callback_token=XENDIT_TOKEN).normalise(json.loads(xendit_body(**changes)))


# --- Tripay ---------------------------------------------------------------------------------------


def tripay_headers(signature: str, event: str = "payment_status") -> dict[str, str]:
    return {"X-Callback-Signature": signature, "X-Callback-Event": event}


def test_tripay_vector_signature_is_the_published_recipe() -> None:
    raw = TRIPAY["raw_body"].encode()
    assert tripay.signature(raw, TRIPAY["private_key"]) == TRIPAY["signature"]


def test_tripay_vector_verifies_and_normalises() -> None:
    gateway = Tripay(private_key=TRIPAY["private_key"])
    payload = gateway.verify(TRIPAY["raw_body"].encode(), tripay_headers(TRIPAY["signature"]))
    outcome = gateway.normalise(payload)
    assert (outcome.order_id, outcome.status, outcome.amount) == ("INV345675", PurchaseStatus.PAID, 200000)
    assert outcome.reference == "T0001000000000000006"
    assert gateway.ok_body == TRIPAY["expected_response"] == {"success": True}


@pytest.mark.parametrize(
    ("body", "signature"),
    [
        pytest.param(TRIPAY["raw_body"].replace("200000", "200001"), TRIPAY["signature"], id="changed-body"),
        pytest.param(TRIPAY["raw_body"] + " ", TRIPAY["signature"], id="reformatted-body"),
        pytest.param(TRIPAY["raw_body"], TRIPAY["signature"][:-1] + "0", id="changed-signature"),
        pytest.param(TRIPAY["raw_body"], "", id="empty-signature"),
    ],
)
def test_tripay_refuses_a_signature_that_does_not_cover_the_raw_body(body: str, signature: str) -> None:
    with pytest.raises(VerificationError):
        Tripay(private_key=TRIPAY["private_key"]).verify(body.encode(), tripay_headers(signature))


def test_tripay_refuses_another_private_key() -> None:
    with pytest.raises(VerificationError):
        Tripay(private_key="someone-else").verify(
            TRIPAY["raw_body"].encode(), tripay_headers(TRIPAY["signature"])
        )


def test_tripay_needs_the_payment_status_event() -> None:
    gateway = Tripay(private_key=TRIPAY["private_key"])
    with pytest.raises(InvalidInput):
        gateway.verify(TRIPAY["raw_body"].encode(), tripay_headers(TRIPAY["signature"], event="other"))


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("PAID", PurchaseStatus.PAID),
        ("UNPAID", PurchaseStatus.PENDING),
        ("EXPIRED", PurchaseStatus.EXPIRED),
        ("FAILED", PurchaseStatus.FAILED),
        ("REFUND", PurchaseStatus.REFUNDED),
    ],
)
def test_tripay_status_table(status: str, expected: PurchaseStatus) -> None:
    assert set(TRIPAY["status_rules"]) == {"PAID", "UNPAID", "EXPIRED", "FAILED", "REFUND"}
    payload = json.loads(TRIPAY["raw_body"]) | {"status": status, "paid_at": 1608133017}
    outcome = Tripay(private_key=TRIPAY["private_key"]).normalise(payload)
    assert outcome.status is expected
    assert outcome.paid_at == (datetime(2020, 12, 16, 15, 36, 57, tzinfo=UTC) if status == "PAID" else None)


# --- DOKU -----------------------------------------------------------------------------------------


def doku_gateway(clock: Any = None, *, target: str | None = None, tolerance: float = 300) -> Doku:
    return Doku(
        client_id=DOKU["headers"]["Client-Id"],
        secret_key=DOKU["secret_key"],
        request_target=target or DOKU["request_target"],
        tolerance=tolerance,
        clock=clock or FakeClock(DOKU_SENT_AT),
    )


def doku_headers(**changes: str) -> dict[str, str]:
    return dict(DOKU["headers"]) | {"Signature": DOKU["signature"]} | changes


def test_doku_vector_digest_and_signature_are_the_published_recipe() -> None:
    raw = DOKU["raw_body"].encode()
    assert doku.digest(raw) == DOKU["digest"]
    headers = DOKU["headers"]
    computed = doku.signature(
        client_id=headers["Client-Id"],
        request_id=headers["Request-Id"],
        timestamp=headers["Request-Timestamp"],
        target=DOKU["request_target"],
        body=raw,
        secret_key=DOKU["secret_key"],
    )
    assert computed == DOKU["signature"]


def test_doku_vector_verifies_at_its_own_time_and_normalises() -> None:
    gateway = doku_gateway()
    outcome = gateway.normalise(gateway.verify(DOKU["raw_body"].encode(), doku_headers()))
    assert (outcome.order_id, outcome.status, outcome.amount) == (
        "INV-20210124-0001",
        PurchaseStatus.PAID,
        150000,
    )
    assert outcome.paid_at is None  # the example has no transaction.date


def test_doku_vector_is_stale_now() -> None:
    """The real clock: a 2020 notification is a replay."""
    gateway = doku_gateway(lambda: datetime.now(UTC))
    with pytest.raises(VerificationError, match="Request-Timestamp"):
        gateway.verify(DOKU["raw_body"].encode(), doku_headers())


@pytest.mark.parametrize(("offset", "accepted"), [(-300, True), (300, True), (301, False), (-301, False)])
def test_doku_timestamp_tolerance(offset: int, accepted: bool) -> None:
    gateway = doku_gateway(FakeClock(DOKU_SENT_AT + timedelta(seconds=offset)), tolerance=300)
    if accepted:
        gateway.verify(DOKU["raw_body"].encode(), doku_headers())
    else:
        with pytest.raises(VerificationError):
            gateway.verify(DOKU["raw_body"].encode(), doku_headers())


@pytest.mark.parametrize(
    ("headers", "body", "target"),
    [
        pytest.param(doku_headers(), DOKU["raw_body"].replace("150000", "150001"), None, id="changed-body"),
        pytest.param(doku_headers(), DOKU["raw_body"], "/callbacks/doku", id="other-request-target"),
        pytest.param(doku_headers(**{"Request-Id": "x"}), DOKU["raw_body"], None, id="changed-request-id"),
        pytest.param(doku_headers(Signature="HMACSHA256=AAAA"), DOKU["raw_body"], None, id="wrong-signature"),
        pytest.param(
            {k: v for k, v in doku_headers().items() if k != "Signature"},
            DOKU["raw_body"],
            None,
            id="unsigned",
        ),
    ],
)
def test_doku_refuses_what_the_signature_does_not_cover(
    headers: dict[str, str], body: str, target: str | None
) -> None:
    with pytest.raises(VerificationError):
        doku_gateway(target=target).verify(body.encode(), headers)


def test_doku_refuses_another_merchants_client_id() -> None:
    """Signed correctly with this secret, but for another Client-Id."""
    gateway = Doku(
        client_id="MCH-0001-OTHER",
        secret_key=DOKU["secret_key"],
        request_target=DOKU["request_target"],
        tolerance=300,
        clock=FakeClock(DOKU_SENT_AT),
    )
    with pytest.raises(VerificationError, match="Client-Id"):
        gateway.verify(DOKU["raw_body"].encode(), doku_headers())


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("SUCCESS", PurchaseStatus.PAID),
        ("PENDING", PurchaseStatus.PENDING),
        ("TIMEOUT", PurchaseStatus.PENDING),
        ("REDIRECT", PurchaseStatus.PENDING),
        ("FAILED", PurchaseStatus.FAILED),
        ("EXPIRED", PurchaseStatus.EXPIRED),
        ("REFUNDED", PurchaseStatus.REFUNDED),
    ],
)
def test_doku_status_table(status: str, expected: PurchaseStatus) -> None:
    payload = json.loads(DOKU["raw_body"])
    payload["transaction"] = {"status": status, "date": "2021-01-27T03:24:23Z"}
    outcome = doku_gateway().normalise(payload)
    assert outcome.status is expected
    assert outcome.paid_at == (datetime(2021, 1, 27, 3, 24, 23, tzinfo=UTC) if status == "SUCCESS" else None)


# --- Duitku ---------------------------------------------------------------------------------------


def duitku_gateway(merchant_code: str = "D0001") -> Duitku:
    return Duitku(merchant_code=merchant_code, api_key=DUITKU["api_key"], api_base=None)


def duitku_form(**changes: Any) -> bytes:
    return urlencode(dict(DUITKU["callback"]) | changes).encode()


def test_duitku_published_signature_is_the_recipe() -> None:
    callback = DUITKU["callback"]
    computed = duitku.callback_signature(
        callback["merchantCode"], str(callback["amount"]), callback["merchantOrderId"], DUITKU["api_key"]
    )
    assert computed == callback["signature"]


def test_duitku_published_callback_verifies_form_encoded() -> None:
    gateway = duitku_gateway()
    outcome = gateway.normalise(gateway.verify(duitku_form(), {}))
    assert (outcome.order_id, outcome.status, outcome.amount) == ("12345", PurchaseStatus.PAID, 10000)
    assert outcome.reference == "D00015HL5BJKRM27MCUS"


@pytest.mark.parametrize(
    "changes",
    [{"amount": 10001}, {"merchantOrderId": "12346"}, {"signature": "0" * 32}, {"merchantCode": "D0002"}],
)
def test_duitku_refuses_a_changed_signed_field(changes: dict[str, Any]) -> None:
    with pytest.raises(VerificationError):
        duitku_gateway().verify(duitku_form(**changes), {})


def test_duitku_refuses_another_merchant_code() -> None:
    with pytest.raises(VerificationError, match="merchantCode"):
        duitku_gateway("D9999").verify(duitku_form(), {})


@pytest.mark.parametrize("body", [b"", b"merchantCode=D0001", b'{"merchantCode": "D0001"}', b"\xff\xfe"])
def test_duitku_refuses_malformed_forms(body: bytes) -> None:
    with pytest.raises(InvalidInput):
        duitku_gateway().verify(body, {})


@pytest.mark.parametrize(
    ("code", "expected"),
    [("00", PurchaseStatus.PAID), ("01", PurchaseStatus.PENDING), ("02", PurchaseStatus.FAILED)],
)
def test_duitku_result_codes(code: str, expected: PurchaseStatus) -> None:
    assert set(DUITKU["status_rules"]) == {"00", "01", "02"}
    payload = {key: str(value) for key, value in DUITKU["callback"].items()} | {"resultCode": code}
    assert duitku_gateway().normalise(payload).status is expected
