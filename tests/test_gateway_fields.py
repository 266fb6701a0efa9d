"""relay/gateways/fields.py and what every gateway makes of hostile values (issue 12, item 6): text
that UTF-8 cannot carry is never a token, signature or order id and never raises, and a gateway's
time of payment that cannot be read or believed is no ``paid_at`` (the relay's clock stands in),
never a refused callback."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from structlog.testing import capture_logs

from relay.errors import InvalidInput, VerificationError
from relay.gateways.custom import CustomSource, CustomSourceConfig
from relay.gateways.doku import Doku
from relay.gateways.doku import signature as doku_signature
from relay.gateways.fields import header, iso_time, paid_time, same, text, unix_or_iso_time, unix_time
from relay.gateways.tripay import Tripay
from relay.gateways.xendit import Xendit
from relay.models import PaymentOutcome, PurchaseStatus
from tests.gateway_callbacks import DOKU_CLIENT_ID, KEYS, SOURCE
from tests.helpers import FakeClock

# What aiohttp hands over for header bytes that are not UTF-8 (decoded with surrogateescape).
UNDECODABLE = b"\xff\xfe token".decode("utf-8", "surrogateescape")
NOW = datetime(2026, 5, 6, 10, 0, tzinfo=UTC)


def test_same_never_raises_and_tells_strings_apart() -> None:
    assert same("secret", "secret")
    assert not same("secret", UNDECODABLE)
    assert not same("secret", "\ud800")
    assert not same("\udcff", "\udcfe")
    assert same("\udcff", "\udcff")


def test_an_undecodable_header_counts_as_absent() -> None:
    assert header({"X-Token": UNDECODABLE}, "x-token") is None
    assert header({"x-token": "caf\u00e9"}, "X-Token") == "caf\u00e9"


@pytest.mark.parametrize("value", ["\ud800", "item-\udcff", "", "x" * 257, 5, None])
def test_text_refuses_what_cannot_be_an_id(value: Any) -> None:
    with pytest.raises(InvalidInput):
        text({"order_id": value}, "order_id")


@pytest.mark.parametrize(
    ("parse", "value"),
    [
        (iso_time, "0001-01-01T00:00:00+01:00"),  # before year 1 in UTC
        (iso_time, "9999-12-31T23:59:59-05:00"),  # after year 9999 in UTC
        (iso_time, "2026-05-06T10:00:00"),  # no zone
        (iso_time, "\ud800"),
        (unix_time, "9" * 5000),  # more digits than Python converts
        (unix_time, 10**12),
        (unix_time, True),
        (unix_or_iso_time, "1" * 5000),
    ],
)
def test_time_parsers_refuse_with_invalid_input(parse: Any, value: Any) -> None:
    with pytest.raises(InvalidInput):
        parse(value, "paid_at")


@pytest.mark.parametrize(
    "value",
    ["0001-01-01T00:00:00+07:00", "9999-12-31T23:59:59Z", "1970-01-01T00:00:00Z", "yesterday", 42, ["x"]],
)
def test_paid_time_ignores_and_logs_what_it_cannot_believe(value: Any) -> None:
    with capture_logs() as logs:
        assert paid_time(value, "paid_at", unix_or_iso_time) is None
    [entry] = logs
    assert (entry["event"], entry["field"]) == ("gateway_time_ignored", "paid_at")


def test_paid_time_keeps_a_plausible_time() -> None:
    assert paid_time("2026-05-06T10:00:00Z", "paid_at", iso_time) == NOW
    assert paid_time(None, "paid_at", iso_time) is None


# --- every gateway: an extreme paid-at time pays, at the relay's clock ------------------------------

EXTREMES = ["0001-01-01T00:00:00+07:00", "9999-12-31T23:59:59-05:00", "9999-12-31T23:59:59Z", "not a time"]


def doku_gateway() -> Doku:
    return Doku(
        client_id=DOKU_CLIENT_ID,
        secret_key=KEYS["doku"],
        request_target="/callbacks/doku",
        tolerance=300,
        clock=FakeClock(NOW),
    )


def xendit_outcome(stamp: Any) -> PaymentOutcome:
    payload = {"external_id": "item-1", "status": "PAID", "paid_amount": 50000, "paid_at": stamp}
    return Xendit(callback_token=KEYS["xendit"]).normalise(payload)


def tripay_outcome(stamp: Any) -> PaymentOutcome:
    payload = {"merchant_ref": "item-1", "status": "PAID", "total_amount": 50000, "paid_at": stamp}
    return Tripay(private_key=KEYS["tripay"]).normalise(payload)


def doku_outcome(stamp: Any) -> PaymentOutcome:
    gateway = doku_gateway()
    payload = {
        "order": {"invoice_number": "item-1", "amount": 50000},
        "transaction": {"status": "SUCCESS", "date": stamp},
    }
    return gateway.normalise(payload)


def custom_outcome(stamp: Any) -> PaymentOutcome:
    source = CustomSource("shop", CustomSourceConfig.model_validate(SOURCE), clock=FakeClock(NOW))
    return source.normalise(
        {"data": {"order_id": "item-1", "state": "succeeded", "total": 50000, "at": stamp}}
    )


@pytest.mark.parametrize("outcome_of", [xendit_outcome, doku_outcome, custom_outcome])
@pytest.mark.parametrize("stamp", EXTREMES)
def test_an_extreme_iso_paid_at_still_pays(outcome_of: Any, stamp: str) -> None:
    outcome = outcome_of(stamp)
    assert (outcome.status, outcome.paid_at) == (PurchaseStatus.PAID, None)


@pytest.mark.parametrize("stamp", [0, -1, 10**11, "9" * 5000, "soon", 253402300800])
def test_an_extreme_unix_paid_at_still_pays(stamp: Any) -> None:
    for outcome_of in (tripay_outcome, custom_outcome):
        outcome = outcome_of(stamp)
        assert (outcome.status, outcome.paid_at) == (PurchaseStatus.PAID, None)


def test_a_plausible_paid_at_is_kept() -> None:
    assert xendit_outcome("2026-05-06T10:00:00Z").paid_at == NOW
    assert tripay_outcome(int(NOW.timestamp())).paid_at == NOW
    assert doku_outcome("2026-05-06T10:00:00Z").paid_at == NOW
    assert custom_outcome(int(NOW.timestamp())).paid_at == NOW


# --- the currency a callback states -----------------------------------------------------------------


def test_gateways_report_the_currency_their_callback_states() -> None:
    xendit = Xendit(callback_token=KEYS["xendit"]).normalise(
        {"external_id": "item-1", "status": "PAID", "paid_amount": 1, "currency": "IDR"}
    )
    assert xendit.currency == "IDR"
    assert xendit_outcome("2026-05-06T10:00:00Z").currency is None  # states none
    assert tripay_outcome(None).currency is None
    doku = doku_gateway().normalise(
        {
            "order": {"invoice_number": "i", "amount": 1, "currency": "idr"},
            "transaction": {"status": "SUCCESS"},
        }
    )
    assert doku.currency == "idr"  # the ingest script compares case-insensitively
    config = CustomSourceConfig.model_validate(SOURCE | {"paths": SOURCE["paths"] | {"currency": "data.ccy"}})
    source = CustomSource("shop", config, clock=FakeClock(NOW))
    payload = {"data": {"order_id": "item-1", "state": "succeeded", "total": 1, "ccy": "USD"}}
    assert source.normalise(payload).currency == "USD"


@pytest.mark.parametrize("value", [5, ["IDR"], "I" * 17, "\ud800"])
def test_a_currency_that_is_no_code_is_400(value: Any) -> None:
    with pytest.raises(InvalidInput, match="currency"):
        Xendit(callback_token=KEYS["xendit"]).normalise(
            {"external_id": "item-1", "status": "PAID", "paid_amount": 1, "currency": value}
        )


# --- headers that are not UTF-8: refused as a signature matter, never a crash -----------------------


def test_undecodable_auth_headers_are_401() -> None:
    body = json.dumps({"external_id": "item-1", "status": "PAID"}).encode()
    with pytest.raises(VerificationError):
        Xendit(callback_token=KEYS["xendit"]).verify(body, {"x-callback-token": UNDECODABLE})
    with pytest.raises(VerificationError):
        Tripay(private_key=KEYS["tripay"]).verify(body, {"X-Callback-Signature": UNDECODABLE})
    doku = doku_gateway()
    for name in ("Client-Id", "Request-Id", "Request-Timestamp", "Signature"):
        headers = {
            "Client-Id": DOKU_CLIENT_ID,
            "Request-Id": "r",
            "Request-Timestamp": "2026-05-06T10:00:00Z",
            "Signature": "HMACSHA256=x",
        }
        with pytest.raises(VerificationError):
            doku.verify(body, headers | {name: UNDECODABLE})
    source = CustomSource("shop", CustomSourceConfig.model_validate(SOURCE), clock=FakeClock(NOW))
    for name in ("X-Shop-Signature", "X-Shop-Timestamp"):
        headers = {"X-Shop-Signature": "x", "X-Shop-Timestamp": str(int(NOW.timestamp()))}
        with pytest.raises(VerificationError):
            source.verify(body, headers | {name: UNDECODABLE})


@pytest.mark.parametrize("stamp", ["0001-01-01T00:00:00+07:00", "9999-12-31T23:59:59-05:00"])
def test_an_extreme_doku_request_timestamp_is_401(stamp: str) -> None:
    """Request-Timestamp is what stops a replay: unreadable, it fails verification (never a 500)."""
    doku = doku_gateway()
    body = b"{}"
    headers = {"Client-Id": DOKU_CLIENT_ID, "Request-Id": "r", "Request-Timestamp": stamp}
    headers["Signature"] = doku_signature(
        client_id=DOKU_CLIENT_ID,
        request_id="r",
        timestamp=stamp,
        target="/callbacks/doku",
        body=body,
        secret_key=KEYS["doku"],
    )
    with pytest.raises(VerificationError, match="Request-Timestamp"):
        doku.verify(body, headers)
