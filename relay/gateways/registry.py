"""Which gateways this relay accepts callbacks from, built from settings once at start."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from relay.gateways import Gateway
from relay.gateways.custom import ROUTE_PREFIX, CustomSource
from relay.gateways.doku import Doku
from relay.gateways.duitku import Duitku
from relay.gateways.midtrans import Midtrans
from relay.gateways.tripay import Tripay
from relay.gateways.xendit import Xendit
from relay.models import utcnow
from relay.settings import Settings

# The built-in gateways, by the name of their route (``/callbacks/{name}``): what the OpenAPI
# document lists. Generic HMAC sources come from RELAY_CUSTOM_SOURCES, as ``custom/{source}``.
BUILT_IN: tuple[str, ...] = tuple(gateway.name for gateway in (Midtrans, Xendit, Tripay, Doku, Duitku))


def configured_gateways(
    settings: Settings,
    *,
    clock: Callable[[], datetime] = utcnow,
    sandbox_key: Callable[[], str] | None = None,
) -> dict[str, Gateway]:
    """Gateways by route name (``/callbacks/{name}``). Midtrans is there with its server key, or
    with the sandbox key in sandbox mode; a gateway whose keys are not configured is absent: its
    route answers 404 and a purchase through it 400. Generic sources are keyed
    ``custom/{source}``. ``clock`` checks the timestamps of DOKU and of generic sources that send
    one. ``sandbox_key`` (``relay.api.sandbox.load_key``) is needed in sandbox mode."""
    gateways: dict[str, Gateway] = {}
    midtrans_key: str | Callable[[], str] | None = (
        settings.midtrans_server_key.get_secret_value() if settings.midtrans_server_key else None
    )
    if settings.sandbox_mode and midtrans_key is None:
        if sandbox_key is None:
            raise ValueError("sandbox mode needs the sandbox key")
        midtrans_key = sandbox_key
    if midtrans_key is not None:
        gateways["midtrans"] = Midtrans(
            server_key=midtrans_key,
            api_base=settings.midtrans_api_base,
            snap_base=settings.snap_base,
            confirm=settings.midtrans_confirm and not settings.sandbox_mode,
        )
    if settings.xendit_callback_token is not None:
        gateways["xendit"] = Xendit(callback_token=settings.xendit_callback_token.get_secret_value())
    if settings.tripay_private_key is not None:
        gateways["tripay"] = Tripay(private_key=settings.tripay_private_key.get_secret_value())
    if settings.doku_client_id is not None and settings.doku_secret_key is not None:
        gateways["doku"] = Doku(
            client_id=settings.doku_client_id,
            secret_key=settings.doku_secret_key.get_secret_value(),
            request_target=settings.doku_request_target,
            tolerance=settings.doku_timestamp_tolerance,
            clock=clock,
        )
    if settings.duitku_merchant_code is not None and settings.duitku_api_key is not None:
        gateways["duitku"] = Duitku(
            merchant_code=settings.duitku_merchant_code,
            api_key=settings.duitku_api_key.get_secret_value(),
            api_base=settings.duitku_api_base,
        )
    for source, config in settings.custom_sources.items():
        gateways[ROUTE_PREFIX + source] = CustomSource(source, config, clock=clock)
    return gateways
