"""Gateway callbacks: verify, normalise, confirm, apply. The signature is the authentication.

``POST /callbacks/{gateway}`` serves the built-in gateways and ``POST /callbacks/custom/{source}``
the generic HMAC sources of RELAY_CUSTOM_SOURCES; both go through ``handle_callback``. A gateway
or source that is not configured answers 404.
"""

from __future__ import annotations

import functools
import json

import structlog
from aiohttp import web

from relay.api.context import ARQ, CLOCK, GATEWAYS, HTTP, METRICS, STORE
from relay.errors import RelayError, not_found
from relay.gateways import Gateway
from relay.gateways.custom import ROUTE_PREFIX
from relay.ingest import apply_outcome

routes = web.RouteTableDef()


@routes.post("/callbacks/{gateway}")
async def callback(request: web.Request) -> web.Response:
    return await handle_callback(request, request.match_info["gateway"])


@routes.post("/callbacks/custom/{source}")
async def custom_callback(request: web.Request) -> web.Response:
    return await handle_callback(request, ROUTE_PREFIX + request.match_info["source"])


@functools.cache
def _ok_json(gateway: type[Gateway]) -> bytes:
    return json.dumps(gateway.ok_body).encode()


def ok_body(gateway: Gateway) -> bytes:
    """The body a gateway expects once its callback is stored, serialised once per gateway class."""
    return _ok_json(type(gateway))


async def handle_callback(request: web.Request, name: str) -> web.Response:
    gateway = request.app[GATEWAYS].get(name)
    if gateway is None:
        raise not_found("gateway", name)
    metrics = request.app[METRICS]
    result_label, error_label = "refused", "InternalError"
    try:
        payload = gateway.verify(await request.read(), request.headers)
        outcome = gateway.normalise(payload)
        # Bound, these ride on the request's one log line (relay.api.middleware): the callback's
        # canonical line, with its outcome.
        structlog.contextvars.bind_contextvars(
            order_id=outcome.order_id, gateway=gateway.name, gateway_status=outcome.raw_status
        )
        outcome = await gateway.confirm(outcome, request.app[HTTP])
        result = await apply_outcome(
            request.app[STORE], request.app[ARQ], outcome, clock=request.app[CLOCK], metrics=metrics
        )
        result_label, error_label = result.value, ""
        structlog.contextvars.bind_contextvars(result=result.value)
        return web.Response(body=ok_body(gateway), content_type="application/json")
    except RelayError as error:
        error_label = type(error).__name__
        raise
    finally:
        metrics.callbacks.labels(gateway.name, result_label, error_label).inc()
