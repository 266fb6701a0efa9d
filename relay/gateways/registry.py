"""Which gateways this relay accepts callbacks from, built from settings once at start."""

from __future__ import annotations

from relay.gateways import Gateway
from relay.gateways.midtrans import Midtrans
from relay.settings import Settings


def configured_gateways(settings: Settings) -> dict[str, Gateway]:
    """Gateways by route name. Midtrans is always there (with the sandbox key when no server key
    is set); a gateway whose keys are not configured is absent, and its route answers 404."""
    gateways: dict[str, Gateway] = {"midtrans": Midtrans(server_key=settings.midtrans_key)}
    return gateways
