"""relay/gateways/midtrans.py against the published recipe and vectors in tests/vectors/midtrans.json."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from relay.errors import InvalidInput, VerificationError
from relay.gateways.midtrans import Midtrans, sign_notification, signature
from relay.models import PurchaseStatus, iso_z

VECTORS = json.loads((Path(__file__).parent / "vectors" / "midtrans.json").read_text(encoding="utf-8"))
SERVER_KEY = "SB-Mid-server-test-key-0123456789"


def settlement(**changes: Any) -> dict[str, Any]:
    """The documented GoPay settlement body, with ``changes`` applied (None removes a field)."""
    body = dict(VECTORS["settlement_shape"]["body"]) | changes
    return {key: value for key, value in body.items() if value is not None}


def encode(payload: Any) -> bytes:
    return json.dumps(payload).encode()


def test_docs_example_signature() -> None:
    example = VECTORS["docs_example"]
    computed = signature(
        example["order_id"], example["status_code"], example["gross_amount"], example["server_key"]
    )
    assert computed == example["signature_key"]


def test_signature_covers_the_raw_amount_string() -> None:
    example = VECTORS["docs_example"]
    assert signature("1111", "200", "100000", example["server_key"]) != example["signature_key"]


def test_verify_accepts_a_signed_notification() -> None:
    signed = sign_notification(settlement(), SERVER_KEY)
    assert Midtrans(server_key=SERVER_KEY).verify(encode(signed), {}) == signed


def test_verify_accepts_an_uppercase_signature() -> None:
    signed = sign_notification(settlement(), SERVER_KEY)
    signed["signature_key"] = signed["signature_key"].upper()
    assert Midtrans(server_key=SERVER_KEY).verify(encode(signed), {})["order_id"] == "Order-5100"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("gross_amount", "1546000.00"),
        ("gross_amount", "154600"),
        ("order_id", "Order-5101"),
        ("status_code", "201"),
    ],
)
def test_verify_rejects_a_changed_signed_field(field: str, value: str) -> None:
    signed = sign_notification(settlement(), SERVER_KEY) | {field: value}
    with pytest.raises(VerificationError):
        Midtrans(server_key=SERVER_KEY).verify(encode(signed), {})


def test_verify_rejects_another_server_key() -> None:
    signed = sign_notification(settlement(), "SB-Mid-server-someone-else")
    with pytest.raises(VerificationError):
        Midtrans(server_key=SERVER_KEY).verify(encode(signed), {})


def test_signature_does_not_cover_transaction_status() -> None:
    """Documented limitation: the status is not signed, so the amount check downstream matters."""
    signed = sign_notification(settlement(), SERVER_KEY) | {"transaction_status": "expire"}
    assert Midtrans(server_key=SERVER_KEY).verify(encode(signed), {})["transaction_status"] == "expire"


def signed_without(field: str) -> bytes:
    signed = sign_notification(settlement(), SERVER_KEY)
    del signed[field]
    return encode(signed)


def signed_with(**changes: Any) -> bytes:
    return encode(sign_notification(settlement(), SERVER_KEY) | changes)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"not json", id="not-json"),
        pytest.param(b'{"order_id": ', id="truncated"),
        pytest.param(b"\xff\xfe\x00", id="not-utf8"),
        pytest.param(b"[" * 10_000, id="deeply-nested"),  # well under RELAY_MAX_BODY_BYTES
        pytest.param(b"[]", id="array"),
        pytest.param(b'"settlement"', id="string"),
        pytest.param(b"null", id="null"),
        pytest.param(b"42", id="number"),
        pytest.param(signed_without("order_id"), id="missing-order_id"),
        pytest.param(signed_without("status_code"), id="missing-status_code"),
        pytest.param(signed_without("gross_amount"), id="missing-gross_amount"),
        pytest.param(signed_without("signature_key"), id="missing-signature_key"),
        pytest.param(signed_without("transaction_status"), id="missing-transaction_status"),
        pytest.param(signed_with(gross_amount=154600), id="numeric-gross_amount"),
        pytest.param(signed_with(status_code=200), id="numeric-status_code"),
        pytest.param(signed_with(order_id=5100), id="numeric-order_id"),
        pytest.param(signed_with(transaction_status=None), id="null-transaction_status"),
        pytest.param(signed_with(order_id=""), id="empty-order_id"),
        pytest.param(signed_with(order_id="x" * 257), id="long-order_id"),
    ],
)
def test_verify_rejects_malformed_bodies(body: bytes) -> None:
    with pytest.raises(InvalidInput):
        Midtrans(server_key=SERVER_KEY).verify(body, {})


@pytest.mark.parametrize(
    ("transaction_status", "fraud_status", "expected"),
    [
        ("settlement", "accept", PurchaseStatus.PAID),
        ("settlement", None, PurchaseStatus.PAID),
        ("capture", "accept", PurchaseStatus.PAID),
        ("capture", None, PurchaseStatus.PAID),
        ("capture", "challenge", PurchaseStatus.PENDING),
        ("pending", None, PurchaseStatus.PENDING),
        ("authorize", None, PurchaseStatus.PENDING),
        ("deny", "deny", PurchaseStatus.FAILED),
        ("cancel", None, PurchaseStatus.FAILED),
        ("failure", None, PurchaseStatus.FAILED),
        ("expire", None, PurchaseStatus.EXPIRED),
        ("refund", None, PurchaseStatus.REFUNDED),
        ("partial_refund", None, PurchaseStatus.REFUNDED),
        ("chargeback", None, PurchaseStatus.REFUNDED),
        ("partial_chargeback", None, PurchaseStatus.REFUNDED),
    ],
)
def test_normalise_status(
    transaction_status: str, fraud_status: str | None, expected: PurchaseStatus
) -> None:
    payload = settlement(transaction_status=transaction_status, fraud_status=fraud_status)
    outcome = Midtrans(server_key=SERVER_KEY).normalise(payload)
    assert outcome.status is expected
    assert outcome.raw_status == transaction_status


def test_status_table_covers_every_status_in_the_vectors() -> None:
    """Every transaction_status the vectors file names is one test_normalise_status maps."""
    rules = VECTORS["status_rules"]
    named = {
        rule.split()[0] for group in ("paid", "not_paid_yet", "failed", "reversed") for rule in rules[group]
    }
    assert named == {
        "settlement",
        "capture",
        "pending",
        "authorize",
        "deny",
        "cancel",
        "expire",
        "failure",
        "refund",
        "partial_refund",
        "chargeback",
        "partial_chargeback",
    }


@pytest.mark.parametrize("transaction_status", ["unknown", "SETTLEMENT", "settled", ""])
def test_normalise_rejects_an_unknown_status(transaction_status: str) -> None:
    with pytest.raises(InvalidInput):
        Midtrans(server_key=SERVER_KEY).normalise(settlement(transaction_status=transaction_status))


def test_normalise_settlement_shape() -> None:
    outcome = Midtrans(server_key=SERVER_KEY).normalise(settlement())
    assert outcome.gateway == "midtrans"
    assert outcome.order_id == "Order-5100"
    assert outcome.amount == Decimal(154600)
    assert outcome.paid_at is not None
    assert outcome.paid_at == datetime(2021, 6, 15, 11, 45, 28, tzinfo=UTC)
    assert iso_z(outcome.paid_at) == "2021-06-15T11:45:28Z"
    assert outcome.reference == "513f1f01-c9da-474c-9fc9-d5c64364b709"


def test_capture_paid_at_falls_back_to_transaction_time() -> None:
    payload = settlement(transaction_status="capture", settlement_time=None)
    outcome = Midtrans(server_key=SERVER_KEY).normalise(payload)
    assert outcome.paid_at == datetime(2021, 6, 15, 11, 45, 13, tzinfo=UTC)


def test_paid_at_only_for_paid() -> None:
    outcome = Midtrans(server_key=SERVER_KEY).normalise(settlement(transaction_status="pending"))
    assert outcome.paid_at is None


@pytest.mark.parametrize("gross_amount", ["abc", "NaN", "Infinity", ""])
def test_normalise_rejects_a_non_numeric_amount(gross_amount: str) -> None:
    with pytest.raises(InvalidInput):
        Midtrans(server_key=SERVER_KEY).normalise(settlement(gross_amount=gross_amount))


def test_normalise_rejects_a_malformed_settlement_time() -> None:
    with pytest.raises(InvalidInput):
        Midtrans(server_key=SERVER_KEY).normalise(settlement(settlement_time="2021-06-15T18:45:28Z"))
