"""Service routes: liveness, readiness (Redis answers), Prometheus metrics (admin token: they show
sales volume) and the OpenAPI document."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from relay.api.auth import admin_only
from relay.api.context import CLOCK, CONNECTIONS, METRICS, STORE
from relay.openapi import document_bytes

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    connections = request.app[CONNECTIONS]
    await connections.redis.ping()  # failing, it becomes 503 StoreUnavailable in the middleware
    return web.json_response({"status": "ready", "embedded": connections.embedded})


@routes.get("/metrics")
@admin_only
async def metrics(request: web.Request) -> web.Response:
    body = await request.app[METRICS].render(
        request.app[STORE].redis, request.app[STORE].keys, now=request.app[CLOCK]()
    )
    return web.Response(body=body, headers={"content-type": CONTENT_TYPE_LATEST})


@routes.get("/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=document_bytes(), content_type="application/json")
