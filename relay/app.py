"""The ingress application factory. No module-level state: everything hangs off the app."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import suppress
from datetime import datetime
from typing import Any

import aiohttp
from aiohttp import web

from relay.api import admin, billing, builder, callbacks, catalogue, public, sandbox, service
from relay.api.clients import UNTRUSTED_PROXIES_SEEN
from relay.api.context import (
    API_KEYS,
    ARQ,
    AUDIT,
    CATEGORIES,
    CLOCK,
    CONNECTIONS,
    EVENTS,
    FAILED_AUTH,
    FAILED_LINKS,
    GATEWAYS,
    HTTP,
    METRICS,
    OPERATIONS,
    PORTAL_LINKS,
    PURCHASE_LIMIT,
    REPLICAS,
    SANDBOX_KEY,
    SESSIONS,
    SETTINGS,
    STORE,
    SUBSCRIPTIONS,
    TEMPLATES,
)
from relay.api.middleware import BODY_BUDGET, BodyBudget, request_middleware
from relay.autopipeline import AutoPipelineRedis
from relay.connections import open_connections
from relay.console import create_console, create_portal
from relay.gateways.registry import configured_gateways
from relay.metrics import Metrics
from relay.models import utcnow
from relay.replay import Operations
from relay.replicas import Replicas
from relay.settings import Settings
from relay.stores import make_stores
from relay.templating import make_templates

UPSTREAM_TIMEOUT = aiohttp.ClientTimeout(total=15, connect=5)
SERVER = "relay"


# How `relay serve` pipelines its Redis calls (relay.autopipeline), measured with tests/perf (P1):
# up to 8 batches of at most 16 calls out at once. With one batch of up to 256, requests waited
# for Redis to run a whole batch of scripts and the process sat idle a sixth of the time; this
# keeps it busy (about a fifth more callbacks/s).
INGRESS_BATCHES = 8
# How long the ingress waits at start for Redis to give it the sandbox key (sandbox mode only).
KEY_WAIT = 3.0
INGRESS_BATCH_SIZE = 16


async def plain_server_header(request: web.Request, response: web.StreamResponse) -> None:
    """``Server: relay``, where aiohttp would name its own and Python's versions. (A request too
    malformed to reach the app, answered by aiohttp's protocol layer, still gets aiohttp's.)"""
    response.headers["Server"] = SERVER


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
    app[TEMPLATES] = make_templates()
    app[UNTRUSTED_PROXIES_SEEN] = set()
    app[BODY_BUDGET] = BodyBudget.for_max_body(settings.max_body_bytes)
    app.on_response_prepare.append(plain_server_header)

    async def resources(app: web.Application) -> AsyncIterator[None]:
        connections = open_connections(settings, server=server)
        app[CONNECTIONS] = connections
        # Concurrent requests' Redis calls (a callback's one script) share round trips.
        pipelined = AutoPipelineRedis(
            connections.redis.connection_pool, in_flight=INGRESS_BATCHES, max_batch=INGRESS_BATCH_SIZE
        )
        stores = make_stores(pipelined, settings)
        app[STORE], app[EVENTS], app[SESSIONS] = stores.store, stores.events, stores.sessions
        app[PURCHASE_LIMIT], app[FAILED_AUTH] = stores.purchase_limit, stores.failed_auth
        app[FAILED_LINKS] = stores.failed_links
        app[SUBSCRIPTIONS] = stores.subscriptions
        app[API_KEYS] = stores.api_keys
        app[AUDIT] = stores.audit
        app[PORTAL_LINKS] = stores.portal_links
        app[CATEGORIES] = stores.categories
        app[ARQ] = connections.arq
        app[REPLICAS] = replicas = Replicas.configured(connections.redis, settings, metrics=app[METRICS])
        app[OPERATIONS] = Operations(stores, connections.arq, clock=clock, metrics=app[METRICS])
        sandbox_key: sandbox.SandboxKey | None = None
        loading: asyncio.Task[None] | None = None
        if settings.sandbox_mode:  # the sandbox signs with a random key every process shares
            sandbox_key = sandbox.SandboxKey()
            read_key: Callable[[], str] = sandbox_key
            app[SANDBOX_KEY] = read_key
            loading = asyncio.create_task(sandbox_key.keep_loading(connections.redis, stores.keys))
            await asyncio.wait({loading}, timeout=KEY_WAIT)  # Redis down: the relay starts all the same
        app[GATEWAYS] = configured_gateways(settings, clock=clock, sandbox_key=sandbox_key)
        async with aiohttp.ClientSession(timeout=UPSTREAM_TIMEOUT, trust_env=False) as http:
            app[HTTP] = http
            yield
        if loading is not None:
            loading.cancel()
            with suppress(asyncio.CancelledError):
                await loading
        await replicas.aclose()
        await pipelined.aclose()
        await connections.close()

    app.cleanup_ctx.append(resources)
    for module in (service, callbacks, public, builder, catalogue, billing, admin):
        app.router.add_routes(module.routes)
    if settings.sandbox_mode:
        app.router.add_routes(sandbox.routes)
    app.add_subapp("/console", create_console())
    app.add_subapp("/portal", create_portal())
    return app
