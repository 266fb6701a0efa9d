"""Xendit invoice callbacks (``POST /callbacks/xendit``).

Xendit signs nothing: every callback carries the account's static verification token in the
``x-callback-token`` header, compared here in constant time. The token proves the sender, not the
body, so the amount is still checked against the stored purchase (``relay/lua/ingest.lua``). A paid
invoice's ``paid_amount`` may exceed the invoice amount (fees the buyer chose to pay), so it must be
at least the purchase amount; other statuses carry the invoice ``amount``, which must equal it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from relay.errors import InvalidInput, VerificationError
from relay.gateways import GatewayDefaults
from relay.gateways.fields import amount, currency, header, iso_time, mapped, paid_time, same, text
from relay.jsonutil import parse_object
from relay.models import PaymentOutcome, Purchase, PurchaseStatus, iso_ms

AUTH_HEADER = "x-callback-token"

STATUS_MAP = {
    "PAID": PurchaseStatus.PAID,
    "SETTLED": PurchaseStatus.PAID,
    "PENDING": PurchaseStatus.PENDING,
    "EXPIRED": PurchaseStatus.EXPIRED,
}


class Xendit(GatewayDefaults):
    name = "xendit"
    ok_body: dict[str, Any] = {"status": "ok"}

    def __init__(self, *, callback_token: str) -> None:
        self._token = callback_token

    def verify(self, body: bytes, headers: Mapping[str, str]) -> dict[str, Any]:
        given = header(headers, AUTH_HEADER)
        if not given or not same(self._token, given):
            raise VerificationError(f"{AUTH_HEADER} is missing or wrong")
        payload = parse_object(body)
        text(payload, "external_id")
        text(payload, "status")
        return payload

    def normalise(self, payload: dict[str, Any]) -> PaymentOutcome:
        raw_status = text(payload, "status")
        status = mapped(STATUS_MAP, raw_status, "status")
        paid = status is PurchaseStatus.PAID
        field = "paid_amount" if paid else "amount"
        paid_at = paid_time(payload.get("paid_at"), "paid_at", iso_time) if paid else None
        reference = payload.get("id")
        return PaymentOutcome(
            gateway=self.name,
            order_id=text(payload, "external_id"),
            status=status,
            amount=amount(payload.get(field), field),
            paid_at=paid_at,
            raw_status=raw_status,
            reference=reference if isinstance(reference, str) else None,
            amount_rule="at_least" if paid else "exact",
            currency=currency(payload.get("currency"), "currency"),
        )

    def sandbox_callback(
        self, purchase: Purchase, status: PurchaseStatus, now: datetime
    ) -> tuple[bytes, dict[str, str]]:
        raw = {PurchaseStatus.PAID: "PAID", PurchaseStatus.EXPIRED: "EXPIRED"}.get(status)
        if raw is None:
            raise InvalidInput(f"the sandbox cannot send a Xendit {status.value} callback")
        payload: dict[str, Any] = {
            "id": f"sandbox-{purchase.order_id}",
            "external_id": purchase.order_id,
            "status": raw,
            "amount": purchase.amount,
            "currency": purchase.currency,
            "payer_email": purchase.buyer_email,
            "updated": iso_ms(now),
        }
        if status is PurchaseStatus.PAID:
            payload |= {"paid_amount": purchase.amount, "paid_at": iso_ms(now), "payment_method": "SANDBOX"}
        headers = {"content-type": "application/json", AUTH_HEADER: self._token}
        return json.dumps(payload).encode(), headers
