"""A fast local merchant for the benchmark: answers 200 to every POST and records when each webhook
arrived (monotonic clock, comparable across processes on Linux). ``--hang`` never answers.

    python -m tests.perf.merchant --port 9001 [--host 127.0.0.1] [--hang]

GET /stats -> {"count", "first", "last", "gone"}; GET /receipts -> {order_id: time}; POST /reset.
POST /gone/... answers 410 Gone (relay dead-letters at once), counted in "gone" only; POST
/snap/v1/transactions plays Midtrans Snap (RELAY_MIDTRANS_API_BASE pointed here), counted nowhere.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time

from aiohttp import web

try:
    import uvloop
except ImportError:  # the harness runs without it, a little slower
    uvloop = None


class State:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.count = 0
        self.gone = 0
        self.first = 0.0
        self.last = 0.0
        self.receipts: dict[str, float] = {}


def build(hang: bool) -> web.Application:
    state = State()

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        if hang:
            await asyncio.sleep(3600)
        now = time.monotonic()
        state.count += 1
        if state.count == 1:
            state.first = now
        state.last = now
        with contextlib.suppress(ValueError, KeyError, TypeError):
            state.receipts[json.loads(body)["order_id"]] = now
        return web.Response(text="ok")

    async def gone(request: web.Request) -> web.Response:
        await request.read()
        state.gone += 1
        return web.Response(status=410, text="gone")

    async def snap(request: web.Request) -> web.Response:
        order_id = (await request.json())["transaction_details"]["order_id"]
        return web.json_response({"token": order_id, "redirect_url": f"http://snap.invalid/{order_id}"})

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(
            {"count": state.count, "first": state.first, "last": state.last, "gone": state.gone}
        )

    async def receipts(request: web.Request) -> web.Response:
        return web.json_response(state.receipts)

    async def reset(request: web.Request) -> web.Response:
        state.reset()
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/reset", reset)
    app.router.add_post("/gone/{tail:.*}", gone)
    app.router.add_post("/snap/v1/transactions", snap)
    app.router.add_post("/{tail:.*}", hook)
    app.router.add_get("/stats", stats)
    app.router.add_get("/receipts", receipts)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1", help="an address, or several comma-separated")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--hang", action="store_true")
    args = parser.parse_args()
    hosts = args.host.split(",")
    web.run_app(build(args.hang), host=hosts, port=args.port, access_log=None, print=None, loop=_loop())


def _loop() -> asyncio.AbstractEventLoop:
    return uvloop.new_event_loop() if uvloop is not None else asyncio.new_event_loop()


if __name__ == "__main__":
    main()
