"""Service routes: liveness, readiness (Redis answers) and Prometheus metrics."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from relay.api.context import CONNECTIONS, METRICS

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
async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"content-type": CONTENT_TYPE_LATEST})
