"""Duitku callbacks (``POST /callbacks/duitku``, form-encoded) and the transactionStatus API.

``signature`` is the hex ``MD5(merchantCode + amount + merchantOrderId + apiKey)`` over the raw
strings as sent; it does not cover ``resultCode``, so, as with Midtrans, it is a first filter and the
amount is checked against the stored purchase. ``merchantCode`` must be the configured one.

``resultCode`` ``00`` pays and ``02`` fails the purchase; ``01`` is not final. Because the signature
does not cover ``resultCode``, a captured ``01`` callback could be replayed as ``00``: when
``RELAY_DUITKU_API_BASE`` is set, ``confirm`` asks the transactionStatus API about every callback,
whatever its ``resultCode``, and applies the API's ``statusCode`` (``00`` paid, ``01`` still
pending, ``02`` failed) and ``amount`` instead; when that API cannot answer (or answers a code it
does not document) the callback gets a 503 so Duitku sends it again. Unset, ``00`` pays, ``02``
fails and ``01`` leaves the purchase pending.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode

import aiohttp
import structlog

from relay.errors import GatewayUnavailable, InvalidInput, VerificationError
from relay.gateways import GatewayDefaults
from relay.gateways.fields import amount, mapped, same, text
from relay.models import PaymentOutcome, Purchase, PurchaseStatus

log = structlog.get_logger("relay.gateways.duitku")

SIGNED_FIELDS = ("merchantCode", "amount", "merchantOrderId")
STATUS_PATH = "/webapi/api/merchant/transactionStatus"

RESULT_MAP = {"00": PurchaseStatus.PAID, "01": PurchaseStatus.PENDING, "02": PurchaseStatus.FAILED}
STATUS_API_MAP = RESULT_MAP  # the transactionStatus API's statusCode uses the same codes


def md5_hex(text: str) -> str:
    # MD5 is Duitku's published recipe, not a choice made here.
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def callback_signature(merchant_code: str, amount: str, order_id: str, api_key: str) -> str:
    return md5_hex(f"{merchant_code}{amount}{order_id}{api_key}")


def status_signature(merchant_code: str, order_id: str, api_key: str) -> str:
    return md5_hex(f"{merchant_code}{order_id}{api_key}")


def parse_form(body: bytes) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body; the first of repeated fields wins."""
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=100)
    except (UnicodeDecodeError, ValueError):
        raise InvalidInput("body is not a form-encoded Duitku callback") from None
    form: dict[str, str] = {}
    for key, value in pairs:
        form.setdefault(key, value)
    return form


class Duitku(GatewayDefaults):
    name = "duitku"
    ok_body: dict[str, Any] = {"status": "ok"}

    def __init__(self, *, merchant_code: str, api_key: str, api_base: str | None) -> None:
        self._merchant_code = merchant_code
        self._api_key = api_key
        self._api_base = api_base

    def verify(self, body: bytes, headers: Mapping[str, str]) -> dict[str, Any]:
        form = parse_form(body)
        for field in (*SIGNED_FIELDS, "resultCode", "signature"):
            text(form, field)
        expected = callback_signature(
            form["merchantCode"], form["amount"], form["merchantOrderId"], self._api_key
        )
        if not same(expected, form["signature"].strip().lower()):
            raise VerificationError("signature does not match")
        if not same(self._merchant_code, form["merchantCode"]):
            raise VerificationError("merchantCode is not this merchant's")
        return dict(form)

    def normalise(self, payload: dict[str, Any]) -> PaymentOutcome:
        raw_status = text(payload, "resultCode")
        status = mapped(RESULT_MAP, raw_status, "resultCode")
        reference = payload.get("reference")
        return PaymentOutcome(
            gateway=self.name,
            order_id=text(payload, "merchantOrderId"),
            status=status,
            amount=amount(payload.get("amount"), "amount"),
            paid_at=None,  # the callback carries no payment time: the relay's clock stamps it
            raw_status=raw_status,
            reference=reference if isinstance(reference, str) and reference else None,
        )

    async def confirm(self, outcome: PaymentOutcome, http: aiohttp.ClientSession) -> PaymentOutcome:
        """With RELAY_DUITKU_API_BASE, the transactionStatus API's answer replaces the callback's,
        whatever its resultCode (00 and 02 included: the signature does not cover it)."""
        if self._api_base is None:
            return outcome
        data = await self._transaction_status(http, outcome.order_id)
        code = data.get("statusCode")
        status = STATUS_API_MAP.get(code) if isinstance(code, str) else None
        if status is None:
            log.warning("duitku_status_unknown", status_code=str(code)[:16])
            raise GatewayUnavailable("Duitku's transactionStatus API answered an unknown statusCode; retry")
        if data.get("merchantOrderId", outcome.order_id) != outcome.order_id:
            raise GatewayUnavailable("Duitku's transactionStatus API answered for another order")
        try:
            confirmed = amount(data.get("amount"), "amount")
        except InvalidInput:
            raise GatewayUnavailable("Duitku's transactionStatus API answered without an amount") from None
        return dataclasses.replace(
            outcome, status=status, amount=confirmed, raw_status=f"{outcome.raw_status}/status {code}"
        )

    async def _transaction_status(self, http: aiohttp.ClientSession, order_id: str) -> dict[str, Any]:
        body = {
            "merchantCode": self._merchant_code,
            "merchantOrderId": order_id,
            "signature": status_signature(self._merchant_code, order_id, self._api_key),
        }
        try:
            async with http.post(f"{self._api_base}{STATUS_PATH}", json=body) as response:
                data = await response.json(content_type=None)
                answered = response.status
        except (aiohttp.ClientError, TimeoutError, ValueError) as error:
            raise GatewayUnavailable(
                f"Duitku's transactionStatus API is unreachable ({type(error).__name__}); retry the callback"
            ) from None
        if answered >= 300 or not isinstance(data, dict):
            raise GatewayUnavailable(
                f"Duitku's transactionStatus API answered {answered}; retry the callback"
            )
        return data

    def sandbox_callback(
        self, purchase: Purchase, status: PurchaseStatus, now: datetime
    ) -> tuple[bytes, dict[str, str]]:
        # Duitku has no expiry code: an expired payment comes back as 02 (failed).
        code = {PurchaseStatus.PAID: "00", PurchaseStatus.EXPIRED: "02", PurchaseStatus.FAILED: "02"}.get(
            status
        )
        if code is None:
            raise InvalidInput(f"the sandbox cannot send a Duitku {status.value} callback")
        form = {
            "merchantCode": self._merchant_code,
            "amount": str(purchase.amount),
            "merchantOrderId": purchase.order_id,
            "productDetail": purchase.item_name,
            "additionalParam": "",
            "paymentCode": "SANDBOX",
            "resultCode": code,
            "merchantUserId": purchase.buyer_email,
            "reference": f"SANDBOX{now.strftime('%Y%m%d%H%M%S')}",
            "signature": callback_signature(
                self._merchant_code, str(purchase.amount), purchase.order_id, self._api_key
            ),
        }
        return urlencode(form).encode(), {"content-type": "application/x-www-form-urlencoded"}
