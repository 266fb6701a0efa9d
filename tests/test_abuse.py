"""Abuse limits: rate limit on public purchases, slow bodies, oversized headers and bodies."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

from tests.helpers import Running, StartRelay


async def raw_request(running: Running, data: bytes, *, then_wait: float = 0.0) -> bytes:
    """Send raw bytes on one connection and return what the relay answers."""
    parts = urlsplit(running.url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    writer.write(data)
    await writer.drain()
    if then_wait:
        await asyncio.sleep(then_wait)
    answer = await asyncio.wait_for(reader.read(65536), timeout=10)
    writer.close()
    await writer.wait_closed()
    return answer


async def test_public_purchase_is_rate_limited_per_client(start_relay: StartRelay) -> None:
    running = await start_relay(worker=False, purchase_rate_limit=3)
    api = running.api
    project = await api.project()
    other = await api.project(name="other shop")
    item = await api.item(project["id"])
    other_item = await api.item(other["id"])
    for _ in range(3):
        await api.buy(project["client_id"], item["id"])
    payload = {"client_id": project["client_id"], "item_id": item["id"], "buyer_email": "b@example.com"}
    async with api.http.post("/api/platform/public-items/purchase", json=payload) as response:
        assert response.status == 429
        assert 1 <= int(response.headers["Retry-After"]) <= 60
        body = await response.json()
    assert body["error"] == "TooManyRequests"
    # Another client is not affected.
    await api.buy(other["client_id"], other_item["id"])


async def test_slow_body_is_cut_off(start_relay: StartRelay) -> None:
    running = await start_relay(worker=False, body_timeout=0.5)
    head = (
        b"POST /callbacks/midtrans HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n{"
    )
    answer = await raw_request(running, head, then_wait=1.0)
    assert answer.startswith(b"HTTP/1.1 408")
    assert b'"RequestTimeout"' in answer


async def test_oversized_header_is_refused(start_relay: StartRelay) -> None:
    running = await start_relay(worker=False)
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 10000 + b"\r\n\r\n"
    answer = await raw_request(running, request)
    assert answer.split(b" ", 2)[1].startswith(b"4")


async def test_too_many_headers_are_refused(start_relay: StartRelay) -> None:
    running = await start_relay(worker=False)
    headers = b"".join(b"X-H%d: v\r\n" % n for n in range(100))
    answer = await raw_request(running, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
    assert answer.split(b" ", 2)[1].startswith(b"4")


async def test_every_route_caps_its_body(start_relay: StartRelay) -> None:
    running = await start_relay(worker=False, max_body_bytes=2048)
    big = b"{" + b" " * 4096 + b"}"
    for method, path in [
        ("PUT", "/api/platform/projects"),
        ("PUT", "/api/platform/items"),
        ("POST", "/api/platform/public-items/purchase"),
        ("POST", "/api/admin/dead-letters/replay"),
        ("POST", "/callbacks/midtrans"),
    ]:
        body = await running.api.call(method, path, data=big, expect=413)
        assert body["error"] == "PayloadTooLarge", path
