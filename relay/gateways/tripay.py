"""Tripay payment callbacks (``POST /callbacks/tripay``).

``X-Callback-Signature`` is the lowercase hex HMAC-SHA256 of the raw request body, keyed with the
merchant's private key, so it covers every field. ``X-Callback-Event`` must be ``payment_status``.
``total_amount`` includes any fee charged to the buyer, so it must be at least the purchase amount.
Tripay expects ``{"success": true}`` once the callback is stored.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from relay.errors import InvalidInput, VerificationError
from relay.gateways import GatewayDefaults
from relay.gateways.fields import amount, header, mapped, paid_time, same, text, unix_time
from relay.jsonutil import parse_object
from relay.models import PaymentOutcome, Purchase, PurchaseStatus

SIGNATURE_HEADER = "X-Callback-Signature"
EVENT_HEADER = "X-Callback-Event"
EVENT = "payment_status"

STATUS_MAP = {
    "PAID": PurchaseStatus.PAID,
    "UNPAID": PurchaseStatus.PENDING,
    "EXPIRED": PurchaseStatus.EXPIRED,
    "FAILED": PurchaseStatus.FAILED,
    "REFUND": PurchaseStatus.REFUNDED,
}


def signature(body: bytes, private_key: str) -> str:
    return hmac.new(private_key.encode(), body, hashlib.sha256).hexdigest()


class Tripay(GatewayDefaults):
    name = "tripay"
    ok_body: dict[str, Any] = {"success": True}

    def __init__(self, *, private_key: str) -> None:
        self._key = private_key

    def verify(self, body: bytes, headers: Mapping[str, str]) -> dict[str, Any]:
        given = header(headers, SIGNATURE_HEADER)
        if not given or not same(signature(body, self._key), given.strip().lower()):
            raise VerificationError(f"{SIGNATURE_HEADER} is missing or does not match the body")
        event = header(headers, EVENT_HEADER)
        if event != EVENT:
            raise InvalidInput(f"{EVENT_HEADER} must be {EVENT!r}")
        payload = parse_object(body)
        text(payload, "merchant_ref")
        text(payload, "status")
        return payload

    def normalise(self, payload: dict[str, Any]) -> PaymentOutcome:
        raw_status = text(payload, "status")
        status = mapped(STATUS_MAP, raw_status, "status")
        paid_at = None
        if status is PurchaseStatus.PAID:
            paid_at = paid_time(payload.get("paid_at"), "paid_at", unix_time)
        reference = payload.get("reference")
        return PaymentOutcome(
            gateway=self.name,
            order_id=text(payload, "merchant_ref"),
            status=status,
            amount=amount(payload.get("total_amount"), "total_amount"),
            paid_at=paid_at,
            raw_status=raw_status,
            reference=reference if isinstance(reference, str) else None,
            amount_rule="at_least",
        )

    def sandbox_callback(
        self, purchase: Purchase, status: PurchaseStatus, now: datetime
    ) -> tuple[bytes, dict[str, str]]:
        raw = {PurchaseStatus.PAID: "PAID", PurchaseStatus.EXPIRED: "EXPIRED"}.get(status)
        if raw is None:
            raise InvalidInput(f"the sandbox cannot send a Tripay {status.value} callback")
        payload = {
            "reference": f"SANDBOX-{purchase.order_id}",
            "merchant_ref": purchase.order_id,
            "payment_method": "SANDBOX",
            "payment_method_code": "SANDBOX",
            "total_amount": purchase.amount,
            "fee_merchant": 0,
            "fee_customer": 0,
            "total_fee": 0,
            "amount_received": purchase.amount,
            "is_closed_payment": 1,
            "status": raw,
            "paid_at": int(now.timestamp()) if status is PurchaseStatus.PAID else None,
            "note": None,
        }
        body = json.dumps(payload).encode()
        headers = {
            "content-type": "application/json",
            EVENT_HEADER: EVENT,
            SIGNATURE_HEADER: signature(body, self._key),
        }
        return body, headers
