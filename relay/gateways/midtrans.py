"""Midtrans HTTP notifications and the Snap API.

The notification's ``signature_key`` is ``SHA512(order_id + status_code + gross_amount + server_key)``
over the raw strings as sent. It does not cover ``transaction_status``, so it is a first filter;
the amount is checked against the stored purchase afterwards (``relay/lua/ingest.lua``).
Invoices are Snap transactions (``create_invoice``).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import aiohttp
import structlog

from relay.errors import GatewayUnavailable, InvalidInput, UpstreamUnavailable, VerificationError
from relay.gateways.fields import amount, same, text
from relay.jsonutil import parse_object
from relay.models import PaymentOutcome, Purchase, PurchaseStatus

log = structlog.get_logger("relay.gateways.midtrans")
JAKARTA = ZoneInfo("Asia/Jakarta")
SIGNED_FIELDS = ("order_id", "status_code", "gross_amount")

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


def jakarta_to_utc(text: str) -> datetime:
    """Midtrans times are ``YYYY-MM-DD HH:MM:SS`` in Asia/Jakarta."""
    # fromisoformat is ten times faster than strptime but takes more forms: hold it to this one.
    try:
        if len(text) != 19 or text[10] != " " or not text[:4].isdigit():
            raise ValueError(text)
        local = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"time {text[:40]!r} is not 'YYYY-MM-DD HH:MM:SS'") from None
    return local.replace(tzinfo=JAKARTA).astimezone(UTC)


def _require_strings(payload: dict[str, Any], fields: tuple[str, ...]) -> None:
    for field in fields:
        text(payload, field)


class Midtrans:
    name = "midtrans"
    ok_body: dict[str, Any] = {"status": "ok"}

    def __init__(
        self, *, server_key: str, api_base: str = "", snap_base: str = "", confirm: bool = False
    ) -> None:
        self._server_key = server_key
        self._api_base = api_base
        self._snap_base = snap_base or api_base
        self._confirm = confirm

    def verify(self, body: bytes, headers: Mapping[str, str]) -> dict[str, Any]:
        payload = parse_object(body)
        _require_strings(payload, (*SIGNED_FIELDS, "signature_key", "transaction_status"))
        expected = signature(
            payload["order_id"], payload["status_code"], payload["gross_amount"], self._server_key
        )
        if not same(expected, payload["signature_key"].lower()):
            raise VerificationError("signature_key does not match")
        return payload

    def normalise(self, payload: dict[str, Any]) -> PaymentOutcome:
        raw_status = payload["transaction_status"]
        status = STATUS_MAP.get(raw_status)
        if raw_status == "capture":
            fraud = payload.get("fraud_status")
            status = PurchaseStatus.PAID if fraud in (None, "", "accept") else PurchaseStatus.PENDING
        if status is None:
            raise InvalidInput(f"unknown transaction_status {raw_status[:40]!r}")
        paid_at = None
        if status is PurchaseStatus.PAID:
            stamp = payload.get("settlement_time") or payload.get("transaction_time")
            paid_at = jakarta_to_utc(stamp) if isinstance(stamp, str) and stamp else None
        reference = payload.get("transaction_id")
        return PaymentOutcome(
            gateway=self.name,
            order_id=payload["order_id"],
            status=status,
            amount=amount(payload["gross_amount"], "gross_amount"),
            paid_at=paid_at,
            raw_status=raw_status,
            reference=reference if isinstance(reference, str) else None,
        )

    async def create_invoice(self, purchase: Purchase, http: aiohttp.ClientSession) -> str:
        return await create_snap_transaction(
            http, base=self._snap_base, server_key=self._server_key, purchase=purchase
        )

    async def confirm(self, outcome: PaymentOutcome, http: aiohttp.ClientSession) -> PaymentOutcome:
        """With RELAY_MIDTRANS_CONFIRM, ask the status API before anything becomes paid: the
        notification's signature does not cover transaction_status, the status API's answer does
        not depend on the notification at all. The API's outcome replaces the notification's."""
        if not self._confirm or outcome.status is not PurchaseStatus.PAID:
            return outcome
        payload = await self._status(http, outcome.order_id)
        if payload is None:
            log.warning("midtrans_confirm_unknown_transaction", order_id=outcome.order_id)
            return replace(outcome, status=PurchaseStatus.PENDING, paid_at=None)
        if payload.get("order_id") != outcome.order_id:
            raise GatewayUnavailable("Midtrans status API answered for another order; retry the callback")
        return self.normalise(payload)

    async def _status(self, http: aiohttp.ClientSession, order_id: str) -> dict[str, Any] | None:
        """The status API's answer, None when Midtrans knows no such transaction."""
        url = f"{self._api_base}/v2/{quote(order_id, safe='')}/status"
        auth = base64.b64encode(f"{self._server_key}:".encode()).decode()
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
        signed = sign_notification(settlement_payload(purchase, status=raw, now=now), self._server_key)
        return json.dumps(signed).encode(), {"content-type": "application/json"}


def settlement_payload(purchase: Purchase, *, status: str = "settlement", now: datetime) -> dict[str, Any]:
    """A Midtrans-format notification for ``purchase`` (unsigned), as the sandbox sends it."""
    local = now.astimezone(JAKARTA).strftime("%Y-%m-%d %H:%M:%S")
    codes = {"settlement": "200", "capture": "200", "pending": "201"}
    payload: dict[str, Any] = {
        "transaction_time": local,
        "transaction_status": status,
        "transaction_id": f"sandbox-{purchase.order_id}",
        "status_message": "midtrans payment notification",
        "status_code": codes.get(status, "202"),
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
            {"id": purchase.item_id, "price": purchase.amount, "quantity": 1, "name": purchase.item_name[:50]}
        ],
        "customer_details": {"email": purchase.buyer_email, "first_name": purchase.buyer_name or ""},
    }
    headers = {"Authorization": f"Basic {auth}", "Accept": "application/json"}
    try:
        async with http.post(f"{base}/snap/v1/transactions", json=body, headers=headers) as response:
            data = await response.json(content_type=None)
            if response.status >= 300 or not isinstance(data, dict) or "redirect_url" not in data:
                raise UpstreamUnavailable(f"Midtrans Snap answered {response.status}")
            return str(data["redirect_url"])
    except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError) as error:
        raise UpstreamUnavailable(f"Midtrans Snap is unreachable: {type(error).__name__}") from None
