"""The ingress middleware (relay/api/middleware.py): JSON 404 and 405 in the error shape, the
request id on responses and in the canonical log line whatever happens, bodies over the limit and
in flight, the Server header and percent-encoded paths."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import orjson
import pytest
import structlog
from aiohttp import web

from relay.api.middleware import ADDRESS_SHARE, IN_FLIGHT_BODIES
from relay.app import create_app
from relay.connections import embedded_server
from tests.helpers import (
    ADMIN_TOKEN,
    PROJECTS,
    PURCHASE,
    Running,
    StartRelay,
    assert_error,
    eventually,
    local_server,
    make_settings,
    raw_request,
)

CALLBACK = "/callbacks/midtrans"


@pytest.mark.parametrize("path", ["/nope", "/api/platform/nothing"])
async def test_unknown_route_is_json_404(relay: Running, path: str) -> None:
    body = await relay.api.call("GET", path, auth=False, expect=404)
    assert_error(body, "NotFound")


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", CALLBACK), ("DELETE", PROJECTS), ("POST", "/healthz"), ("GET", PURCHASE)],
)
async def test_wrong_method_is_json_405(relay: Running, method: str, path: str) -> None:
    body = await relay.api.call(method, path, auth=False, expect=405)
    assert_error(body, "MethodNotAllowed")


async def test_errors_carry_a_request_id(relay: Running) -> None:
    async with relay.api.http.get("/nope", headers={"x-request-id": "abc-123"}) as response:
        assert response.status == 404
        assert response.headers["x-request-id"] == "abc-123"
        assert response.content_type == "application/json"


# --- issue 12: request ids and the canonical line (item 7) ----------------------------------------

HEX_ID = re.compile(r"[0-9a-f]{32}")


@pytest.fixture
def json_lines() -> Iterator[list[str]]:
    """Log lines as production renders them (orjson, which refuses what UTF-8 cannot carry)."""
    lines: list[str] = []

    class Collect:
        def msg(self, message: str) -> None:
            lines.append(message)

        info = warning = error = debug = critical = exception = msg

    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.JSONRenderer(
                serializer=lambda value, **kw: orjson.dumps(value, **kw).decode()
            ),
        ],
        logger_factory=lambda *args: Collect(),
        cache_logger_on_first_use=False,
    )
    yield lines
    structlog.reset_defaults()


def request_lines(lines: list[str]) -> list[dict[str, Any]]:
    """The canonical ``request`` lines among ``lines``, parsed."""
    return [parsed for parsed in map(json.loads, lines) if parsed["event"] == "request"]


def http(method: str, path: str, headers: dict[str, bytes] | None = None, body: bytes = b"") -> bytes:
    """A request exactly as these bytes (header values too: aiohttp's client would re-encode them)."""
    head = f"{method} {path} HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n".encode()
    for name, value in ({"Content-Length": str(len(body)).encode()} | (headers or {})).items():
        head += name.encode() + b": " + value + b"\r\n"
    return head + b"\r\n" + body


@pytest.mark.parametrize("given", [b"", b"has space", b"a" * 65, b"\xff\xfe", b"caf\xc3\xa9", b"a/b", b"{x}"])
async def test_an_unsafe_request_id_is_replaced_and_the_change_is_logged(
    relay: Running, json_lines: list[str], given: bytes
) -> None:
    """An admin change with a hostile X-Request-Id: applied, answered, and on the log (it was
    applied, then logging the id failed, so no line recorded it)."""
    headers = {
        "Authorization": f"Bearer {ADMIN_TOKEN}".encode(),
        "Content-Type": b"application/json",
        "X-Request-Id": given,
    }
    answer = await raw_request(relay.url, http("PUT", PROJECTS, headers, b'{"name": "audited"}'))
    assert answer.status == 200, answer.body
    assert HEX_ID.fullmatch(answer.headers["x-request-id"])
    [line] = [line for line in request_lines(json_lines) if line["method"] == "PUT"]
    assert (line["request_id"], line["status"], line["path"]) == (
        answer.headers["x-request-id"],
        200,
        PROJECTS,
    )


@pytest.mark.parametrize("given", ["abc-123", "A.b_c-9", "x" * 64])
async def test_a_safe_request_id_is_kept(relay: Running, json_lines: list[str], given: str) -> None:
    async with relay.api.http.get("/healthz", headers={"x-request-id": given}) as response:
        assert response.headers["x-request-id"] == given
    [line] = request_lines(json_lines)
    assert line["request_id"] == given


@pytest.fixture
async def odd_app() -> AsyncIterator[str]:
    """The ingress app (embedded store) with routes that misbehave in ways no real route does."""
    app = create_app(make_settings(redis_url=None), server=embedded_server())

    async def unloggable(request: web.Request) -> web.Response:
        structlog.contextvars.bind_contextvars(order_id="item-\ud800")
        return web.json_response({"status": "ok"})

    async def cancelled(request: web.Request) -> web.Response:
        raise asyncio.CancelledError

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPSeeOther("/healthz")

    app.router.add_get("/test/unloggable", unloggable)
    app.router.add_get("/test/cancelled", cancelled)
    app.router.add_get("/test/redirect", redirect)
    async with local_server(app) as url:
        yield url


async def test_the_line_is_written_when_a_field_cannot_be_rendered(
    odd_app: str, json_lines: list[str]
) -> None:
    async with aiohttp.ClientSession() as client, client.get(f"{odd_app}/test/unloggable") as response:
        assert response.status == 200
    [line] = request_lines(json_lines)
    assert (line["status"], line["order_id"], line["escaped"]) == (200, "item-\\ud800", True)


async def test_the_line_is_written_when_the_handler_is_cancelled(odd_app: str, json_lines: list[str]) -> None:
    async with aiohttp.ClientSession() as client:
        with pytest.raises(aiohttp.ClientError):
            await client.get(f"{odd_app}/test/cancelled")
    lines = request_lines(json_lines)
    assert lines, "no line"
    assert {(line["status"], line["error"], line["path"]) for line in lines} == {
        (499, "Cancelled", "/test/cancelled")
    }


async def test_a_redirect_has_its_line_and_request_id(odd_app: str, json_lines: list[str]) -> None:
    async with (
        aiohttp.ClientSession() as client,
        client.get(f"{odd_app}/test/redirect", allow_redirects=False) as response,
    ):
        assert response.status == 303
        request_id = response.headers["x-request-id"]
    [line] = request_lines(json_lines)
    assert (line["status"], line["error"], line["request_id"]) == (303, None, request_id)


async def test_console_requests_have_their_line(relay: Running, json_lines: list[str]) -> None:
    async with relay.api.http.get("/console/login") as response:
        assert response.status == 200
    [line] = request_lines(json_lines)
    assert (line["path"], line["status"]) == ("/console/login", 200)


# --- issue 12: bodies over the limit and bodies in flight (item 10) ------------------------------


@pytest.mark.parametrize(
    ("path", "content_type"),
    [(CALLBACK, "application/json"), (PURCHASE, "application/json"), ("/console/login", "text/html")],
)
async def test_a_declared_length_over_the_limit_is_413_at_once(
    relay: Running, path: str, content_type: str
) -> None:
    """Before: the relay waited RELAY_BODY_TIMEOUT (10 s) for a body it would refuse, then 408."""
    declared = relay.settings.max_body_bytes + 1
    headers = {"Content-Type": b"application/json", "Content-Length": str(declared).encode()}
    started = time.monotonic()
    answer = await raw_request(relay.url, http("POST", path, headers), timeout=3)
    assert time.monotonic() - started < 3
    assert answer.status == 413
    assert answer.headers["content-type"].startswith(content_type)
    if content_type == "application/json":
        assert_error(json.loads(answer.body), "PayloadTooLarge")
    # Not kept alive: what follows is the refused body (aiohttp discards it briefly, then closes).
    assert answer.headers["connection"] == "close"


async def test_bodies_in_flight_are_capped(start_relay: StartRelay) -> None:
    """Connections holding bodies one byte short fill the process's budget (IN_FLIGHT_BODIES x
    RELAY_MAX_BODY_BYTES); past it a request is 503 Overloaded at once, until they go."""
    # Loopback is a trusted proxy here: each holder comes from an address of its own.
    running = await start_relay(
        worker=False, max_body_bytes=1024, body_timeout=60, trusted_proxies="127.0.0.0/8"
    )
    host, port = running.url.removeprefix("http://").rsplit(":", 1)
    holders = []
    for number in range(IN_FLIGHT_BODIES):
        held = http(
            "POST",
            CALLBACK,
            {
                "Content-Length": b"1024",
                "Content-Type": b"application/json",
                "X-Forwarded-For": f"198.51.{number // 250}.{number % 250 + 1}".encode(),
            },
        )
        _, writer = await asyncio.open_connection(host, int(port))
        writer.write(held + b" " * 1023)
        holders.append(writer)
    complete = http("POST", CALLBACK, {"Content-Type": b"application/json"}, b"{}")
    seen: list[Any] = []

    async def answered(status: int) -> bool:
        seen.append(await raw_request(running.url, complete))
        return bool(seen[-1].status == status)

    try:
        await eventually(lambda: answered(503), what="the body budget to fill")
        assert_error(json.loads(seen[-1].body), "Overloaded")
        assert seen[-1].headers["retry-after"] == "1"
    finally:
        for writer in holders:
            writer.close()
    await eventually(lambda: answered(400), what="the budget to be given back")


async def test_one_address_holds_at_most_a_sixteenth_of_the_budget(start_relay: StartRelay) -> None:
    """One client idling on declared bodies cannot refuse everyone else's requests."""
    running = await start_relay(
        worker=False, max_body_bytes=1024, body_timeout=60, trusted_proxies="127.0.0.0/8"
    )
    host, port = running.url.removeprefix("http://").rsplit(":", 1)
    share = IN_FLIGHT_BODIES // ADDRESS_SHARE
    holders = []
    for _ in range(share):
        held = http("POST", CALLBACK, {"Content-Length": b"1024", "X-Forwarded-For": b"203.0.113.7"})
        _, writer = await asyncio.open_connection(host, int(port))
        writer.write(held + b" " * 1023)
        holders.append(writer)
    try:

        async def refused(address: bytes, status: int) -> bool:
            answer = await raw_request(
                running.url, http("POST", CALLBACK, {"X-Forwarded-For": address}, b"{}")
            )
            return bool(answer.status == status)

        await eventually(lambda: refused(b"203.0.113.7", 503), what="the address's share to fill")
        assert await refused(b"198.51.100.9", 400)  # anyone else is served (a bad body: 400)
    finally:
        for writer in holders:
            writer.close()


# --- issue 12: what the edge shows and lets through (item 14) ------------------------------------


@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/healthz"), ("GET", "/nope"), ("GET", "/console/login"), ("POST", CALLBACK)]
)
async def test_the_server_header_names_no_version(relay: Running, method: str, path: str) -> None:
    async with relay.api.http.request(method, path) as response:
        assert response.headers["Server"] == "relay"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/%6detrics"),
        ("GET", "/metric%73"),
        ("GET", "/heal%74hz"),
        ("GET", "/%68ealthz?x=%6d"),
        ("POST", "/callbacks/%6didtrans"),
        ("POST", "/callbacks%2Fmidtrans"),
        ("GET", "/api/admin/dead%2Dletters"),
        ("GET", "/console/%6cogin"),
    ],
)
async def test_a_path_disguised_by_percent_encoding_matches_nothing(
    relay: Running, method: str, path: str
) -> None:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}".encode(), "Content-Type": b"application/json"}
    answer = await raw_request(relay.url, http(method, path, headers, b"{}" if method == "POST" else b""))
    assert answer.status == 404
    assert_error(json.loads(answer.body), "NotFound", mentions="no such route")


async def test_encoding_what_needs_encoding_still_reaches_the_route(relay: Running) -> None:
    answer = await raw_request(relay.url, http("GET", "/healthz?x=%6d"))
    assert answer.status == 200
    answer = await raw_request(relay.url, http("GET", "/sandbox/checkout/item-%C3%A9?token=x"))
    assert answer.status == 404
    assert_error(json.loads(answer.body), "NotFound", mentions="order")
