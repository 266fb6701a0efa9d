"""Payment gateways: each verifies its callbacks and normalises them to one ``PaymentOutcome``,
and may create the hosted invoice a buyer pays (``create_invoice``)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol

import aiohttp

from relay.models import PaymentOutcome, Purchase, PurchaseStatus


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
        """Check what the callback's signature does not cover against the gateway's status API
        and return the outcome the API states (Duitku's every resultCode with
        RELAY_DUITKU_API_BASE; Midtrans's final statuses with RELAY_MIDTRANS_CONFIRM); most
        gateways return ``outcome`` unchanged. Raise GatewayUnavailable when the status API cannot
        answer, so the gateway retries the callback."""
        ...

    async def create_invoice(self, purchase: Purchase, http: aiohttp.ClientSession) -> str | None:
        """The hosted payment page for ``purchase`` (Midtrans Snap), or None when the merchant
        creates the invoice at the gateway itself. Raise UpstreamUnavailable when the gateway's
        API fails."""
        ...

    def sandbox_callback(
        self, purchase: Purchase, status: PurchaseStatus, now: datetime
    ) -> tuple[bytes, dict[str, str]]:
        """A correctly signed callback (body and headers) saying ``purchase`` reached ``status``:
        what the sandbox checkout posts to the relay's own route, and what tests send."""
        ...


class GatewayDefaults:
    """What a gateway without a status API or an invoice API does: a callback says all there is to
    know, and the merchant creates the invoice at the gateway. Gateways that have either override."""

    async def confirm(self, outcome: PaymentOutcome, http: aiohttp.ClientSession) -> PaymentOutcome:
        return outcome

    async def create_invoice(self, purchase: Purchase, http: aiohttp.ClientSession) -> str | None:
        return None
