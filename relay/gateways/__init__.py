"""Payment gateways: each verifies its callbacks and normalises them to one ``PaymentOutcome``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

from relay.models import PurchaseStatus


@dataclass(frozen=True)
class PaymentOutcome:
    """What a gateway says happened to one order, in the relay's terms."""

    gateway: str
    order_id: str
    status: PurchaseStatus
    amount: Decimal
    paid_at: datetime | None
    raw_status: str
    reference: str | None = None


class Gateway(Protocol):
    name: str

    def verify(self, body: bytes, headers: Mapping[str, str]) -> dict[str, Any]:
        """Parse and authenticate a callback; raise InvalidInput or VerificationError."""
        ...

    def normalise(self, payload: dict[str, Any]) -> PaymentOutcome:
        """Map a verified payload to an outcome; raise InvalidInput for what cannot be mapped."""
        ...
