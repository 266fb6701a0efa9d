"""SIGTERM on `relay serve` drains: a request in flight when the signal lands still gets its answer."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tests.helpers import Api, local_server, make_settings, midtrans_key_of
from tests.processes import Processes, free_port, relay_env, wait_until_answering

SNAP_DELAY = 1.5


@pytest.fixture
async def slow_snap() -> AsyncIterator[str]:
    async def snap(request: web.Request) -> web.Response:
        await asyncio.sleep(SNAP_DELAY)
        return web.json_response({"token": "t", "redirect_url": "https://example.test/pay/slow"})

    app = web.Application()
    app.router.add_post("/snap/v1/transactions", snap)
    async with local_server(app) as url:
        yield url


@pytest.mark.timeout(60)
async def test_sigterm_drains_in_flight_requests(redis_url: str, slow_snap: str, tmp_path: Path) -> None:
    env = relay_env(
        redis_url, RELAY_MIDTRANS_SERVER_KEY="SB-Mid-server-drain", RELAY_MIDTRANS_API_BASE=slow_snap
    )
    processes = Processes(tmp_path, env)
    port = free_port()
    try:
        serve = await processes.start("serve", "serve", "--port", str(port))
        async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{port}") as http:
            await wait_until_answering(http, what="relay serve")
            settings = make_settings(redis_url=redis_url, midtrans_server_key="SB-Mid-server-drain")
            key = await midtrans_key_of(redis_url, settings)
            api = Api(http, settings, f"http://127.0.0.1:{port}", midtrans_key=key)
            project = await api.project()
            item = await api.item(project["id"])
            in_flight = asyncio.create_task(api.buy(project["client_id"], item["id"]))
            await asyncio.sleep(SNAP_DELAY / 3)  # the purchase is waiting on Snap now
            serve.send_signal(signal.SIGTERM)
            order = await asyncio.wait_for(in_flight, timeout=10)
            assert order["invoice_url"] == "https://example.test/pay/slow"
            assert await asyncio.wait_for(serve.wait(), timeout=10) == 0
    finally:
        print(processes.tail())
        await processes.kill_all()
