"""The ingress application factory. No module-level state: everything hangs off the app."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

import aiohttp
from aiohttp import web

from relay.api import admin, builder, callbacks, public, sandbox, service
from relay.api.context import (
    ARQ,
    CLOCK,
    CONNECTIONS,
    EVENTS,
    GATEWAYS,
    HTTP,
    METRICS,
    OPERATIONS,
    PURCHASE_LIMIT,
    SESSIONS,
    SETTINGS,
    STORE,
    TEMPLATES,
)
from relay.api.middleware import request_middleware
from relay.autopipeline import AutoPipelineRedis
from relay.connections import open_connections
from relay.console import create_console
from relay.gateways.registry import configured_gateways
from relay.metrics import Metrics
from relay.models import utcnow
from relay.replay import Operations
from relay.settings import Settings
from relay.stores import make_stores
from relay.templating import make_templates

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
    app = web.Application(middlewares=[request_middleware], client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[CLOCK] = clock
    app[METRICS] = metrics or Metrics()
    app[GATEWAYS] = configured_gateways(settings, clock=clock)
    app[TEMPLATES] = make_templates()

    async def resources(app: web.Application) -> AsyncIterator[None]:
        connections = open_connections(settings, server=server)
        app[CONNECTIONS] = connections
        # Concurrent requests' Redis calls (a callback's one script) share round trips.
        pipelined = AutoPipelineRedis(
            connections.redis.connection_pool, in_flight=INGRESS_BATCHES, max_batch=INGRESS_BATCH_SIZE
        )
        stores = make_stores(pipelined, settings)
        app[STORE], app[EVENTS], app[SESSIONS] = stores.store, stores.events, stores.sessions
        app[PURCHASE_LIMIT] = stores.purchase_limit
        app[ARQ] = connections.arq
        app[OPERATIONS] = Operations(stores, connections.arq, clock=clock, metrics=app[METRICS])
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
    app.add_subapp("/console", create_console())
    return app
