"""Payment gateways: each verifies its callbacks and normalises them to one ``PaymentOutcome``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal, Protocol

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
    # "exact": the amount must equal the purchase amount; "at_least": it may exceed it (Xendit's
    # paid_amount includes fees the buyer chose to pay).
    amount_rule: Literal["exact", "at_least"] = "exact"

    def amount_accepted(self, purchase_amount: int) -> bool:
        if self.amount_rule == "at_least":
            return self.amount >= purchase_amount
        return self.amount == purchase_amount


class Gateway(Protocol):
    name: str
    # The body a gateway expects once the callback is stored (Tripay wants {"success": true}).
    ok_body: dict[str, Any]

    def verify(self, body: bytes, headers: Mapping[str, str]) -> dict[str, Any]:
        """Parse and authenticate a callback; raise InvalidInput or VerificationError."""
        ...

    def normalise(self, payload: dict[str, Any]) -> PaymentOutcome:
        """Map a verified payload to an outcome; raise InvalidInput for what cannot be mapped."""
        ...
