"""The ingress floor: a bare aiohttp handler that parses the same Midtrans JSON and does one Redis
SET, then answers like relay does. Same aiohttp, same redis-py client, same event loop as
``relay serve`` (``relay.cli.use_fast_event_loop``): what one process can do at best with the same stack.

    python -m tests.perf.floor --port 9002 --redis redis://127.0.0.1:6379/10
"""

from __future__ import annotations

import argparse
import json
from collections.abc import AsyncIterator

from aiohttp import web
from redis.asyncio import Redis

from tests.perf.loop import same_event_loop_as_relay

REDIS = web.AppKey("redis", Redis)


def build(redis_url: str) -> web.Application:
    async def callback(request: web.Request) -> web.Response:
        payload = json.loads(await request.read())
        await request.app[REDIS].set(f"floor:{payload['order_id']}", payload["transaction_status"])
        return web.json_response({"status": "ok"})

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def resources(app: web.Application) -> AsyncIterator[None]:
        app[REDIS] = Redis.from_url(redis_url, decode_responses=True, max_connections=256)
        yield
        await app[REDIS].aclose()

    app = web.Application()
    app.cleanup_ctx.append(resources)
    app.router.add_post("/callbacks/midtrans", callback)
    app.router.add_get("/readyz", healthz)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis", required=True)
    args = parser.parse_args()
    same_event_loop_as_relay()  # the same event loop as `relay serve`
    web.run_app(build(args.redis), host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
