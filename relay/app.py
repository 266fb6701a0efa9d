"""The ingress application factory. No module-level state: everything hangs off the app."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

import aiohttp
from aiohttp import web

from relay import console
from relay.api import admin, builder, callbacks, public, sandbox, service
from relay.api.context import (
    ARQ,
    CLOCK,
    CONNECTIONS,
    EVENTS,
    GATEWAYS,
    HTTP,
    METRICS,
    PURCHASE_LIMIT,
    SETTINGS,
    STORE,
)
from relay.api.middleware import errors_middleware
from relay.autopipeline import AutoPipelineRedis
from relay.connections import open_connections
from relay.crypto import SecretBox
from relay.events import EventStore
from relay.gateways.registry import configured_gateways
from relay.metrics import Metrics
from relay.models import utcnow
from relay.ratelimit import RateLimit
from relay.settings import Settings
from relay.store import Store

UPSTREAM_TIMEOUT = aiohttp.ClientTimeout(total=15, connect=5)


# How `relay serve` pipelines its Redis calls (relay.autopipeline), measured with tests/perf (P1):
# up to 8 batches of at most 16 calls out at once. With one batch of up to 256, requests waited
# for Redis to run a whole batch of scripts and the process sat idle a sixth of the time; this
# keeps it busy (about a fifth more callbacks/s).
INGRESS_BATCHES = 8
INGRESS_BATCH_SIZE = 16


def create_app(
    settings: Settings,
    *,
    server: Any = None,
    clock: Callable[[], datetime] = utcnow,
    metrics: Metrics | None = None,
) -> web.Application:
    """The ingress app. ``server`` is the embedded fakeredis server when RELAY_REDIS_URL is unset."""
    app = web.Application(middlewares=[errors_middleware], client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[CLOCK] = clock
    app[METRICS] = metrics or Metrics()
    app[GATEWAYS] = configured_gateways(settings, clock=clock)

    async def resources(app: web.Application) -> AsyncIterator[None]:
        connections = open_connections(settings, server=server)
        app[CONNECTIONS] = connections
        # Concurrent requests' Redis calls (a callback's one script) share round trips.
        pipelined = AutoPipelineRedis(
            connections.redis.connection_pool, in_flight=INGRESS_BATCHES, max_batch=INGRESS_BATCH_SIZE
        )
        app[STORE] = Store(pipelined, prefix=settings.key_prefix, box=SecretBox(settings.fernet_keys))
        app[EVENTS] = EventStore(pipelined, prefix=settings.key_prefix)
        app[ARQ] = connections.arq
        app[PURCHASE_LIMIT] = RateLimit(
            connections.redis, prefix=settings.key_prefix, limit=settings.purchase_rate_limit
        )
        async with aiohttp.ClientSession(timeout=UPSTREAM_TIMEOUT, trust_env=False) as http:
            app[HTTP] = http
            yield
        await pipelined.aclose()
        await connections.close()

    app.cleanup_ctx.append(resources)
    for module in (service, callbacks, public, builder, admin):
        app.router.add_routes(module.routes)
    if settings.sandbox:
        app.router.add_routes(sandbox.routes)
    console.setup(app)
    return app
