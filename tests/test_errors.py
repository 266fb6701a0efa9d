"""relay/errors.py: ``classify``, the one mapping from an exception to what a client is told, and
the JSON API and the console rendering it alike (a Redis refusing writes is 503 in both)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from redis.asyncio import Redis
from redis.exceptions import BusyLoadingError, OutOfMemoryError, ReadOnlyError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from relay.errors import (
    Conflict,
    HTTPError,
    InternalError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    RelayError,
    StoreUnavailable,
    classify,
)
from relay.runner import Relay
from tests.console_client import console_client
from tests.helpers import ADMIN_TOKEN, Api, assert_error, make_settings
from tests.processes import PrivateRedis, Processes


@pytest.mark.parametrize(
    ("error", "kind", "status"),
    [
        (Conflict("taken"), Conflict, 409),
        (RedisConnectionError("Error 111 connecting"), StoreUnavailable, 503),
        (RedisTimeoutError("Timeout reading"), StoreUnavailable, 503),
        (BusyLoadingError("LOADING Redis is loading the dataset"), StoreUnavailable, 503),
        (ReadOnlyError("READONLY You can't write against a read only replica."), StoreUnavailable, 503),
        (OutOfMemoryError("OOM command not allowed when used memory > 'maxmemory'."), StoreUnavailable, 503),
        (ResponseError("MISCONF Redis is configured to save RDB snapshots"), StoreUnavailable, 503),
        (ResponseError("NOREPLICAS Not enough good replicas to write."), StoreUnavailable, 503),
        (
            ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"),
            InternalError,
            500,
        ),
        (web.HTTPNotFound(), NotFound, 404),
        (web.HTTPMethodNotAllowed("PUT", ["GET"]), MethodNotAllowed, 405),
        (web.HTTPRequestEntityTooLarge(max_size=10, actual_size=20), PayloadTooLarge, 413),
        (web.HTTPUnsupportedMediaType(), HTTPError, 415),
        (ValueError("a bug"), InternalError, 500),
        (KeyError("a bug"), InternalError, 500),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else None,
)
def test_classify(error: BaseException, kind: type[RelayError], status: int) -> None:
    classified = classify(error)
    assert type(classified) is kind
    assert classified.status == status
    assert classified.detail
    if isinstance(error, RelayError):
        assert classified is error
    if kind is InternalError:
        assert "bug" not in classified.detail  # what went wrong stays in the log


@pytest.fixture
async def refusing_relay(tmp_path: Path) -> AsyncIterator[tuple[Relay, Redis]]:
    """A relay (ingress only) on a Redis of its own, and a client to make that Redis refuse writes."""
    processes = Processes(tmp_path, {})
    redis = PrivateRedis(processes, tmp_path, appendonly=False)
    await redis.start()
    client = Redis.from_url(redis.url)
    relay = Relay(make_settings(redis_url=redis.url))
    await relay.start(host="127.0.0.1", port=0, worker=False)
    try:
        yield relay, client
    finally:
        await relay.stop()
        await client.aclose()
        await processes.kill_all()


async def test_a_redis_refusing_writes_is_503_in_the_api_and_in_the_console(
    refusing_relay: tuple[Relay, Redis],
) -> None:
    relay, redis = refusing_relay
    await redis.config_set("maxmemory-policy", "noeviction")
    await redis.config_set("maxmemory", "1")  # every write is refused: OOM
    async with aiohttp.ClientSession(base_url=relay.url) as http:
        api = Api(http, relay.settings, relay.url, midtrans_key="")
        body = await api.call("PUT", "/api/platform/projects", json={"name": "Shop"}, expect=503)
        assert_error(body, "StoreUnavailable")
    async with console_client(relay.url) as console:
        await console.get("/console/login")  # a read: still served
        async with console.http.post(
            "/console/login", data={"token": ADMIN_TOKEN}, allow_redirects=False
        ) as response:  # a write: the session
            assert response.status == 503
            assert response.content_type == "text/html"
            page = await response.text()
        assert "StoreUnavailable" in page
        assert response.headers["Content-Security-Policy"].startswith("default-src 'none'")
    await redis.config_set("maxmemory", "0")
    async with console_client(relay.url) as console:
        await console.login()  # writes again: logged in
        assert console.cookie()
