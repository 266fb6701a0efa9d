"""Midtrans HTTP notifications and the Snap API.

The notification's ``signature_key`` is ``SHA512(order_id + status_code + gross_amount + server_key)``
over the raw strings as sent. It does not cover ``transaction_status``, so it is a first filter:

- ``status_code`` is three digits and ``gross_amount`` Midtrans's exact form (``50000.00``: no
  leading zero, two decimals), so characters cannot move between the concatenated fields;
- a notification that pays (``settlement``, an accepted ``capture``) or refunds (``refund``,
  ``chargeback`` and their partial forms) must carry ``status_code`` 200, which is signed: a
  captured 201 (pending) or 202 (deny, expire) notification cannot be replayed as a settlement or
  a refund. Other statuses are never refused over their code, only logged when the pairing is not
  one Midtrans documents (``STATUS_CODES``). A captured 200 notification can still be replayed
  with another 200 status (a settlement as a refund): only RELAY_MIDTRANS_CONFIRM stops that;
- the amount is checked against the stored purchase afterwards (``relay/lua/ingest.lua``);
- with RELAY_MIDTRANS_CONFIRM every final status is asked of the status API (``confirm``).

Invoices are Snap transactions (``create_invoice``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import aiohttp
import structlog

from relay.errors import GatewayUnavailable, InvalidInput, UpstreamUnavailable, VerificationError
from relay.gateways.fields import amount, currency, paid_time, same, text
from relay.jsonutil import parse_object
from relay.models import PaymentOutcome, Purchase, PurchaseStatus

log = structlog.get_logger("relay.gateways.midtrans")
JAKARTA = ZoneInfo("Asia/Jakarta")
SIGNED_FIELDS = ("order_id", "status_code", "gross_amount")

STATUS_CODE = re.compile(r"[0-9]{3}")
GROSS_AMOUNT = re.compile(r"(0|[1-9][0-9]{0,17})\.[0-9]{2}")
SIGNATURE_KEY = re.compile(r"[0-9a-fA-F]{128}")
PAID_CODE = "200"

# The status_code Midtrans sends with each transaction_status: its code list (200 success, 201
# pending or challenged by fraud detection, 202 denied / failed / expired, 407 expired as the
# status and expire APIs answer), the status cycle and the notification samples. Only the paying
# pairings are enforced (PAID_CODE); the others are logged when they differ from these.
STATUS_CODES: dict[str, frozenset[str]] = {
    "settlement": frozenset({"200"}),
    "capture": frozenset({"200", "201"}),  # 201: fraud_status challenge
    "authorize": frozenset({"200", "201"}),
    "pending": frozenset({"201"}),
    "deny": frozenset({"202"}),
    "cancel": frozenset({"200", "202"}),
    "failure": frozenset({"202"}),
    "expire": frozenset({"202", "407"}),
    "refund": frozenset({"200"}),
    "partial_refund": frozenset({"200"}),
    "chargeback": frozenset({"200"}),
    "partial_chargeback": frozenset({"200"}),
}

STATUS_MAP = {
    "settlement": PurchaseStatus.PAID,
    "pending": PurchaseStatus.PENDING,
    "authorize": PurchaseStatus.PENDING,
    "deny": PurchaseStatus.FAILED,
    "cancel": PurchaseStatus.FAILED,
    "failure": PurchaseStatus.FAILED,
    "expire": PurchaseStatus.EXPIRED,
    "refund": PurchaseStatus.REFUNDED,
    "partial_refund": PurchaseStatus.REFUNDED,
    "chargeback": PurchaseStatus.REFUNDED,
    "partial_chargeback": PurchaseStatus.REFUNDED,
}


def signature(order_id: str, status_code: str, gross_amount: str, server_key: str) -> str:
    return hashlib.sha512(f"{order_id}{status_code}{gross_amount}{server_key}".encode()).hexdigest()


def sign_notification(payload: dict[str, Any], server_key: str) -> dict[str, Any]:
    """Return ``payload`` with its ``signature_key`` set (sandbox checkout, demo, tests)."""
    signed = dict(payload)
    signed["signature_key"] = signature(
        str(payload["order_id"]), str(payload["status_code"]), str(payload["gross_amount"]), server_key
    )
    return signed


def jakarta_to_utc(value: Any, field: str = "time") -> datetime:
    """Midtrans times are ``YYYY-MM-DD HH:MM:SS`` in Asia/Jakarta."""
    # fromisoformat is ten times faster than strptime but takes more forms: hold it to this one.
    try:
        if (
            not isinstance(value, str)
            or len(value) != 19
            or value[10] != " "
            or not (value[:4].isascii() and value[:4].isdigit())
        ):
            raise ValueError(value)
        return datetime.fromisoformat(value).replace(tzinfo=JAKARTA).astimezone(UTC)
    except (ValueError, OverflowError):  # OverflowError: 0001-01-01 00:00:00 is before year 1 in UTC
        raise InvalidInput(f"{field} {str(value)[:40]!r} is not 'YYYY-MM-DD HH:MM:SS'") from None


def _require_strings(payload: dict[str, Any], fields: tuple[str, ...]) -> None:
    for field in fields:
        text(payload, field)


def _status(payload: dict[str, Any]) -> PurchaseStatus | None:
    """What ``transaction_status`` (with ``fraud_status`` for a capture) means, None if unknown."""
    raw_status = payload["transaction_status"]
    if raw_status == "capture":
        fraud = payload.get("fraud_status")
        return PurchaseStatus.PAID if fraud in (None, "", "accept") else PurchaseStatus.PENDING
    return STATUS_MAP.get(raw_status)


def check_status_code(payload: dict[str, Any]) -> None:
    """Refuse a paying or refunding transaction_status that its signed status_code does not vouch
    for (Midtrans sends those with 200 only); log a pairing of another status that Midtrans does
    not document (and accept it)."""
    raw_status, code = payload["transaction_status"], payload["status_code"]
    if _status(payload) in (PurchaseStatus.PAID, PurchaseStatus.REFUNDED):
        if code != PAID_CODE:
            raise InvalidInput(
                f"transaction_status {raw_status!r} does not go with status_code {code!r}: "
                f"Midtrans pays and refunds with {PAID_CODE}"
            )
    elif code not in STATUS_CODES.get(raw_status, frozenset()):
        log.warning("midtrans_status_code_unexpected", status_code=code, transaction_status=raw_status[:40])


class Midtrans:
    name = "midtrans"
    ok_body: dict[str, Any] = {"status": "ok"}

    def __init__(
        self,
        *,
        server_key: str | Callable[[], str],
        api_base: str = "",
        snap_base: str = "",
        confirm: bool = False,
    ) -> None:
        # The sandbox's key is read when it is needed: it is loaded from Redis once Redis answers.
        self._key = server_key if callable(server_key) else (lambda: server_key)
        self._api_base = api_base
        self._snap_base = snap_base or api_base
        self._confirm = confirm

    def verify(self, body: bytes, headers: Mapping[str, str]) -> dict[str, Any]:
        payload = parse_object(body)
        _require_strings(payload, (*SIGNED_FIELDS, "signature_key", "transaction_status"))
        if not STATUS_CODE.fullmatch(payload["status_code"]):
            raise InvalidInput("status_code must be three digits")
        if not GROSS_AMOUNT.fullmatch(payload["gross_amount"]):
            raise InvalidInput("gross_amount must be digits, a dot and two decimals, e.g. '50000.00'")
        if not SIGNATURE_KEY.fullmatch(payload["signature_key"]):
            raise VerificationError("signature_key is not a SHA-512 hex digest")
        expected = signature(
            payload["order_id"], payload["status_code"], payload["gross_amount"], self._key()
        )
        if not same(expected, payload["signature_key"].lower()):
            raise VerificationError("signature_key does not match")
        check_status_code(payload)
        return payload

    def normalise(self, payload: dict[str, Any]) -> PaymentOutcome:
        raw_status = payload["transaction_status"]
        status = _status(payload)
        if status is None:
            raise InvalidInput(f"unknown transaction_status {raw_status[:40]!r}")
        paid_at = None
        if status is PurchaseStatus.PAID:
            field = "settlement_time" if payload.get("settlement_time") else "transaction_time"
            paid_at = paid_time(payload.get(field), field, jakarta_to_utc)
        reference = payload.get("transaction_id")
        refund = refund_details(payload) if status is PurchaseStatus.REFUNDED else {}
        return PaymentOutcome(
            gateway=self.name,
            order_id=payload["order_id"],
            status=status,
            amount=amount(payload["gross_amount"], "gross_amount"),
            paid_at=paid_at,
            raw_status=raw_status,
            reference=reference if isinstance(reference, str) else None,
            currency=currency(payload.get("currency"), "currency"),
            **refund,
        )

    async def create_invoice(self, purchase: Purchase, http: aiohttp.ClientSession) -> str:
        return await create_snap_transaction(
            http, base=self._snap_base, server_key=self._key(), purchase=purchase
        )

    async def confirm(self, outcome: PaymentOutcome, http: aiohttp.ClientSession) -> PaymentOutcome:
        """With RELAY_MIDTRANS_CONFIRM, ask the status API before any final status (paid, failed,
        expired, refunded) is applied: the notification's signature does not cover
        transaction_status, the status API's answer does not depend on the notification at all.
        The API's outcome replaces the notification's; a transaction Midtrans does not know
        changes nothing. A pending notification changes nothing either way, so it is not asked."""
        if not self._confirm or outcome.status is PurchaseStatus.PENDING:
            return outcome
        payload = await self._transaction_status(http, outcome.order_id)
        if payload is None:
            log.warning("midtrans_confirm_unknown_transaction", notified=outcome.raw_status[:40])
            return replace(outcome, status=PurchaseStatus.PENDING, paid_at=None)
        if payload.get("order_id") != outcome.order_id:
            raise GatewayUnavailable("Midtrans status API answered for another order; retry the callback")
        confirmed = self.normalise(payload)
        if confirmed.status is PurchaseStatus.REFUNDED:
            # Refunded after a settlement whose callback may never have come: the API vouches for it.
            settled = paid_time(payload.get("settlement_time"), "settlement_time", jakarta_to_utc)
            confirmed = replace(confirmed, settled_at=settled)
        return confirmed

    async def _transaction_status(self, http: aiohttp.ClientSession, order_id: str) -> dict[str, Any] | None:
        """The status API's answer, None when Midtrans knows no such transaction."""
        url = f"{self._api_base}/v2/{quote(order_id, safe='')}/status"
        auth = base64.b64encode(f"{self._key()}:".encode()).decode()
        headers = {"Authorization": f"Basic {auth}", "Accept": "application/json"}
        try:
            async with http.get(url, headers=headers) as response:
                data = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as error:
            raise GatewayUnavailable(
                f"Midtrans status API unreachable ({type(error).__name__}); retry"
            ) from None
        if response.status >= 500 or not isinstance(data, dict):
            raise GatewayUnavailable(f"Midtrans status API answered {response.status}; retry the callback")
        if str(data.get("status_code")) == "404" or response.status == 404:
            return None
        try:
            _require_strings(data, ("order_id", "gross_amount", "transaction_status"))
        except InvalidInput:
            raise GatewayUnavailable("Midtrans status API answered without a transaction; retry") from None
        return data

    def sandbox_callback(
        self, purchase: Purchase, status: PurchaseStatus, now: datetime
    ) -> tuple[bytes, dict[str, str]]:
        raw = {PurchaseStatus.PAID: "settlement", PurchaseStatus.EXPIRED: "expire"}.get(status)
        if raw is None:
            raise InvalidInput(f"the sandbox cannot send a Midtrans {status.value} notification")
        signed = sign_notification(settlement_payload(purchase, status=raw, now=now), self._key())
        return json.dumps(signed).encode(), {"content-type": "application/json"}


def refund_details(payload: dict[str, Any]) -> dict[str, Any]:
    """What a refund or chargeback notification says of its latest refund: its ``refunds`` list's
    last entry, else the top-level ``refund_amount`` and ``refund_key``. Each part it does not say,
    or says unreadably, is left out: a refund without details is a full refund of the gross amount,
    now, keyed by its status and amount (relay.store.Store.ingest)."""
    entries = payload.get("refunds")
    latest = (
        entries[-1] if isinstance(entries, list) and entries and isinstance(entries[-1], dict) else payload
    )
    details: dict[str, Any] = {}
    gross = amount(payload["gross_amount"], "gross_amount")
    raw_amount = latest.get("refund_amount")
    if raw_amount not in (None, ""):
        try:
            refunded = amount(raw_amount, "refund_amount")
        except InvalidInput:
            refunded = None
        if refunded is not None and 0 < refunded <= gross:
            details["refund_amount"] = refunded.to_integral_value()
        else:
            log.warning("midtrans_refund_amount_ignored", refund_amount=str(raw_amount)[:40])
    reason = latest.get("reason")
    if isinstance(reason, str) and reason.strip():
        details["refund_reason"] = reason.strip()[:255]
    details["refunded_at"] = paid_time(latest.get("created_at"), "refunds.created_at", jakarta_to_utc)
    # The refund's id, else its refund_key: one that is null or empty does not hide the other.
    for name in ("refund_chargeback_id", "refund_key"):
        key = latest.get(name)
        if isinstance(key, int | str) and not isinstance(key, bool) and str(key).strip():
            details["refund_key"] = f"midtrans:{str(key).strip()[:100]}"
            break
    return details


SNAP_LONGEST_MINUTES = 7 * 24 * 60


def notified_code(status: str) -> str:
    """The status_code a notification of ``status`` carries (the lowest Midtrans documents)."""
    return min(STATUS_CODES.get(status, frozenset({"202"})))


def settlement_payload(purchase: Purchase, *, status: str = "settlement", now: datetime) -> dict[str, Any]:
    """A Midtrans-format notification for ``purchase`` (unsigned), as the sandbox sends it."""
    local = now.astimezone(JAKARTA).strftime("%Y-%m-%d %H:%M:%S")
    payload: dict[str, Any] = {
        "transaction_time": local,
        "transaction_status": status,
        "transaction_id": f"sandbox-{purchase.order_id}",
        "status_message": "midtrans payment notification",
        "status_code": notified_code(status),
        "payment_type": "sandbox",
        "order_id": purchase.order_id,
        "merchant_id": "SANDBOX",
        "gross_amount": f"{purchase.amount}.00",
        "fraud_status": "accept",
        "currency": purchase.currency,
    }
    if status == "settlement":
        payload["settlement_time"] = local
    return payload


async def create_snap_transaction(
    http: aiohttp.ClientSession, *, base: str, server_key: str, purchase: Purchase
) -> str:
    """Create a Snap transaction and return its ``redirect_url`` (the invoice URL)."""
    auth = base64.b64encode(f"{server_key}:".encode()).decode()
    body = {
        "transaction_details": {"order_id": purchase.order_id, "gross_amount": purchase.amount},
        "item_details": [
            {
                "id": purchase.item_id or purchase.plan_id or purchase.order_id,
                "price": purchase.amount,
                "quantity": 1,
                "name": (purchase.item_name or purchase.description or "Payment")[:50],
            }
        ],
        "customer_details": {"email": purchase.buyer_email, "first_name": purchase.buyer_name or ""},
    }
    if purchase.pay_by is not None:
        # Payable until pay_by (a renewal: until its subscription would expire), not Snap's 24 h;
        # Snap's pages last at most 7 days.
        minutes = int((purchase.pay_by - purchase.created_at).total_seconds() // 60)
        minutes = max(1, min(minutes, SNAP_LONGEST_MINUTES))
        body["expiry"] = {"unit": "minutes", "duration": minutes}
        body["page_expiry"] = {"unit": "minutes", "duration": minutes}
    headers = {"Authorization": f"Basic {auth}", "Accept": "application/json"}
    try:
        async with http.post(f"{base}/snap/v1/transactions", json=body, headers=headers) as response:
            data = await response.json(content_type=None)
            if response.status >= 300 or not isinstance(data, dict) or "redirect_url" not in data:
                raise UpstreamUnavailable(f"Midtrans Snap answered {response.status}")
            return str(data["redirect_url"])
    except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError) as error:
        raise UpstreamUnavailable(f"Midtrans Snap is unreachable: {type(error).__name__}") from None
