"""DOKU Checkout / Jokul (non-SNAP) HTTP notifications (``POST /callbacks/doku``).

``Digest`` is base64(SHA-256(raw body)); the ``Signature`` header is ``HMACSHA256=`` +
base64(HMAC-SHA256(secret key, components)), the components being these lines joined by ``\\n``
with no trailing newline::

    Client-Id:<Client-Id header>
    Request-Id:<Request-Id header>
    Request-Timestamp:<Request-Timestamp header>
    Request-Target:<path of the notification URL registered at DOKU>
    Digest:<digest of the body>

So the signature covers the body. ``Client-Id`` must be the configured one, and
``Request-Timestamp`` (ISO 8601 UTC) within the tolerance of the injected clock, so a captured
notification cannot be replayed later. The Request-Target is configured
(``RELAY_DOKU_REQUEST_TARGET``), because behind a proxy the registered path can differ from this
route's.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from relay.errors import InvalidInput, VerificationError
from relay.gateways import GatewayDefaults
from relay.gateways.fields import amount, currency, dig, header, iso_time, mapped, paid_time, same, text
from relay.jsonutil import parse_object
from relay.models import PaymentOutcome, Purchase, PurchaseStatus, iso_z

SIGNATURE_PREFIX = "HMACSHA256="

# transaction.status as DOKU's check-status documentation lists them.
STATUS_MAP = {
    "SUCCESS": PurchaseStatus.PAID,
    "PENDING": PurchaseStatus.PENDING,
    "REDIRECT": PurchaseStatus.PENDING,
    "TIMEOUT": PurchaseStatus.PENDING,
    "FAILED": PurchaseStatus.FAILED,
    "EXPIRED": PurchaseStatus.EXPIRED,
    "REFUNDED": PurchaseStatus.REFUNDED,
}


def digest(body: bytes) -> str:
    return base64.b64encode(hashlib.sha256(body).digest()).decode()


def signature(
    *, client_id: str, request_id: str, timestamp: str, target: str, body: bytes, secret_key: str
) -> str:
    components = "\n".join(
        [
            f"Client-Id:{client_id}",
            f"Request-Id:{request_id}",
            f"Request-Timestamp:{timestamp}",
            f"Request-Target:{target}",
            f"Digest:{digest(body)}",
        ]
    )
    mac = hmac.new(secret_key.encode(), components.encode(), hashlib.sha256).digest()
    return SIGNATURE_PREFIX + base64.b64encode(mac).decode()


class Doku(GatewayDefaults):
    name = "doku"
    ok_body: dict[str, Any] = {"status": "ok"}

    def __init__(
        self,
        *,
        client_id: str,
        secret_key: str,
        request_target: str,
        tolerance: float,
        clock: Callable[[], datetime],
    ) -> None:
        self._client_id = client_id
        self._secret_key = secret_key
        self._target = request_target
        self._tolerance = timedelta(seconds=tolerance)
        self._clock = clock

    def verify(self, body: bytes, headers: Mapping[str, str]) -> dict[str, Any]:
        values = {}
        for name in ("Client-Id", "Request-Id", "Request-Timestamp", "Signature"):
            value = header(headers, name)
            if not value or len(value) > 256:
                raise VerificationError(f"the {name} header is missing or unreadable")
            values[name] = value
        expected = signature(
            client_id=values["Client-Id"],
            request_id=values["Request-Id"],
            timestamp=values["Request-Timestamp"],
            target=self._target,
            body=body,
            secret_key=self._secret_key,
        )
        if not same(expected, values["Signature"].strip()):
            raise VerificationError("Signature does not match")
        if not same(self._client_id, values["Client-Id"]):
            raise VerificationError("Client-Id is not this merchant's")
        try:
            sent = iso_time(values["Request-Timestamp"], "Request-Timestamp")
        except InvalidInput as error:
            raise VerificationError(error.detail) from None
        if abs(self._clock() - sent) > self._tolerance:
            raise VerificationError(
                f"Request-Timestamp is more than {int(self._tolerance.total_seconds())} s away from now"
            )
        payload = parse_object(body)
        text(payload, "order.invoice_number")
        text(payload, "transaction.status")
        return payload

    def normalise(self, payload: dict[str, Any]) -> PaymentOutcome:
        raw_status = text(payload, "transaction.status")
        status = mapped(STATUS_MAP, raw_status, "transaction.status")
        paid_at = None
        if status is PurchaseStatus.PAID:
            paid_at = paid_time(dig(payload, "transaction.date"), "transaction.date", iso_time)
        reference = dig(payload, "transaction.original_request_id")
        return PaymentOutcome(
            gateway=self.name,
            order_id=text(payload, "order.invoice_number"),
            status=status,
            amount=amount(dig(payload, "order.amount"), "order.amount"),
            paid_at=paid_at,
            raw_status=raw_status,
            reference=reference if isinstance(reference, str) else None,
            currency=currency(dig(payload, "order.currency"), "order.currency"),
        )

    def sandbox_callback(
        self, purchase: Purchase, status: PurchaseStatus, now: datetime
    ) -> tuple[bytes, dict[str, str]]:
        raw = {PurchaseStatus.PAID: "SUCCESS", PurchaseStatus.EXPIRED: "EXPIRED"}.get(status)
        if raw is None:
            raise InvalidInput(f"the sandbox cannot send a DOKU {status.value} notification")
        payload = {
            "service": {"id": "VIRTUAL_ACCOUNT"},
            "acquirer": {"id": "SANDBOX"},
            "channel": {"id": "VIRTUAL_ACCOUNT_SANDBOX"},
            "order": {"invoice_number": purchase.order_id, "amount": purchase.amount},
            "transaction": {"status": raw, "date": iso_z(now), "original_request_id": str(uuid.uuid4())},
        }
        body = json.dumps(payload).encode()
        request_id, timestamp = str(uuid.uuid4()), iso_z(now)
        headers = {
            "content-type": "application/json",
            "Client-Id": self._client_id,
            "Request-Id": request_id,
            "Request-Timestamp": timestamp,
            "Signature": signature(
                client_id=self._client_id,
                request_id=request_id,
                timestamp=timestamp,
                target=self._target,
                body=body,
                secret_key=self._secret_key,
            ),
        }
        return body, headers
