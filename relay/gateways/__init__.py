"""Payment gateways: each verifies its callbacks and normalises them to one ``PaymentOutcome``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal, Protocol

import aiohttp

from relay.models import Purchase, PurchaseStatus


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
    # paid_amount includes fees the buyer chose to pay). Checked by the ingest script (relay.store).
    amount_rule: Literal["exact", "at_least"] = "exact"


class Gateway(Protocol):
    name: str
    # The body a gateway expects once the callback is stored (Tripay wants {"success": true}); a
    # class attribute (relay.api.callbacks serialises it once per class).
    ok_body: dict[str, Any]

    def verify(self, body: bytes, headers: Mapping[str, str]) -> dict[str, Any]:
        """Parse and authenticate a callback; raise InvalidInput or VerificationError."""
        ...

    def normalise(self, payload: dict[str, Any]) -> PaymentOutcome:
        """Map a verified payload to an outcome; raise InvalidInput for what cannot be mapped."""
        ...

    async def confirm(self, outcome: PaymentOutcome, http: aiohttp.ClientSession) -> PaymentOutcome:
        """Settle what the callback leaves open through the gateway's status API (Duitku's
        resultCode 01); most gateways return ``outcome`` unchanged. Raise GatewayUnavailable when
        the status API cannot answer, so the gateway retries the callback."""
        ...

    def sandbox_callback(
        self, purchase: Purchase, status: PurchaseStatus, now: datetime
    ) -> tuple[bytes, dict[str, str]]:
        """A correctly signed callback (body and headers) saying ``purchase`` reached ``status``:
        what the sandbox checkout posts to the relay's own route, and what tests send."""
        ...
