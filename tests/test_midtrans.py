"""relay/gateways/midtrans.py against the published recipe and vectors in tests/vectors/midtrans.json,
and the checks that make up for what the signature leaves out (issue 12, item 2)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from relay.errors import InvalidInput, VerificationError
from relay.gateways.midtrans import STATUS_CODES, Midtrans, sign_notification, signature
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
        ("gross_amount", "154600.01"),
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
        pytest.param(signed_with(order_id="Order-\ud800"), id="lone-surrogate-order_id"),
        pytest.param(signed_with(gross_amount="154600"), id="gross_amount-without-decimals"),
        pytest.param(signed_with(gross_amount="154600.0"), id="gross_amount-one-decimal"),
        pytest.param(signed_with(gross_amount="0154600.00"), id="gross_amount-leading-zero"),
        pytest.param(signed_with(gross_amount="154,600.00"), id="gross_amount-separator"),
        pytest.param(signed_with(gross_amount="1.546e5"), id="gross_amount-exponent"),
        pytest.param(signed_with(gross_amount=" 154600.00"), id="gross_amount-space"),
        pytest.param(
            signed_with(gross_amount="\uff11\uff15\uff14\uff16\uff10\uff10.00"), id="gross_amount-fullwidth"
        ),
        pytest.param(signed_with(status_code="20"), id="status_code-two-digits"),
        pytest.param(signed_with(status_code="2000"), id="status_code-four-digits"),
        pytest.param(signed_with(status_code="\uff12\uff10\uff10"), id="status_code-fullwidth"),
        pytest.param(signed_with(status_code="20x"), id="status_code-letter"),
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


@pytest.mark.parametrize(
    "stamp",
    [
        "2021-06-15T18:45:28Z",  # not Midtrans's form
        "2021-13-01 00:00:00",
        "0001-01-01 00:00:00",  # before year 1 in UTC: OverflowError
        "9999-12-31 23:59:59",  # implausible
        "1999-12-31 23:59:59",
    ],
)
def test_an_unreadable_or_implausible_settlement_time_is_no_paid_at(stamp: str) -> None:
    """A gateway's clock never fails a correctly signed callback: no paid_at (the relay's clock
    stands in), and the ignored value is logged."""
    with capture_logs() as logs:
        outcome = Midtrans(server_key=SERVER_KEY).normalise(settlement(settlement_time=stamp))
    assert (outcome.status, outcome.paid_at) == (PurchaseStatus.PAID, None)
    assert [entry["field"] for entry in logs if entry["event"] == "gateway_time_ignored"] == [
        "settlement_time"
    ]


# --- status_code against transaction_status (the status is not signed, the code is) --------------


def forged(status: str, code: str, **changes: Any) -> bytes:
    """A correctly signed notification with ``code``, its transaction_status changed to ``status``."""
    return encode(
        sign_notification(settlement(status_code=code), SERVER_KEY) | {"transaction_status": status} | changes
    )


@pytest.mark.parametrize(
    ("status", "code", "changes"),
    [
        pytest.param("settlement", "201", {}, id="pending-flipped-to-settlement"),
        pytest.param("capture", "202", {"fraud_status": "accept"}, id="deny-flipped-to-capture"),
        pytest.param("capture", "202", {"fraud_status": None}, id="deny-flipped-to-capture-no-fraud"),
        pytest.param("settlement", "202", {}, id="expire-replayed-as-settlement"),
        pytest.param("settlement", "407", {}, id="expire-api-code-as-settlement"),
        pytest.param("refund", "201", {}, id="pending-flipped-to-refund"),
        pytest.param("chargeback", "202", {}, id="deny-flipped-to-chargeback"),
        pytest.param("partial_refund", "407", {}, id="expire-flipped-to-partial-refund"),
    ],
)
def test_a_paying_status_needs_status_code_200(status: str, code: str, changes: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput, match="status_code"):
        Midtrans(server_key=SERVER_KEY).verify(forged(status, code, **changes), {})


@pytest.mark.parametrize(
    ("status", "code"),
    sorted((status, code) for status, codes in STATUS_CODES.items() for code in codes),
)
def test_every_documented_pairing_verifies(status: str, code: str) -> None:
    """Never refuse a genuine notification: every pairing Midtrans documents passes (a capture
    with 201 is one under fraud review: pending)."""
    fraud = "challenge" if (status, code) == ("capture", "201") else "accept"
    body = encode(
        sign_notification(
            settlement(transaction_status=status, status_code=code, fraud_status=fraud), SERVER_KEY
        )
    )
    with capture_logs() as logs:
        payload = Midtrans(server_key=SERVER_KEY).verify(body, {})
    assert payload["transaction_status"] == status
    assert not [entry for entry in logs if entry["event"] == "midtrans_status_code_unexpected"]


@pytest.mark.parametrize(
    ("status", "code"), [("expire", "200"), ("deny", "200"), ("cancel", "407"), ("pending", "200")]
)
def test_an_undocumented_pairing_that_pays_nothing_is_accepted_and_logged(status: str, code: str) -> None:
    with capture_logs() as logs:
        Midtrans(server_key=SERVER_KEY).verify(forged(status, code), {})
    [warning] = [entry for entry in logs if entry["event"] == "midtrans_status_code_unexpected"]
    assert (warning["status_code"], warning["transaction_status"]) == (code, status)


def test_characters_cannot_move_between_the_signed_fields() -> None:
    """The signature covers order_id + status_code + gross_amount with no separators: moving a
    digit from one field to the next keeps it valid, so the formats must forbid the result."""
    original = sign_notification(settlement(order_id="Order-51002", gross_amount="154600.00"), SERVER_KEY)
    shifted = original | {"order_id": "Order-5100", "status_code": "220", "gross_amount": "0154600.00"}
    assert signature("Order-5100", "220", "0154600.00", SERVER_KEY) == original["signature_key"]
    with pytest.raises(InvalidInput, match="gross_amount"):
        Midtrans(server_key=SERVER_KEY).verify(encode(shifted), {})


@pytest.mark.parametrize("key", ["", "abc", "z" * 128, "a" * 127, "a" * 129])
def test_a_signature_key_that_is_no_sha512_digest_is_refused(key: str) -> None:
    body = encode(sign_notification(settlement(), SERVER_KEY) | {"signature_key": key})
    with pytest.raises((VerificationError, InvalidInput)):
        Midtrans(server_key=SERVER_KEY).verify(body, {})
