"""Fixtures: a real Redis, a local merchant, relays on loopback, a clean environment.

The Redis is ``RELAY_TEST_REDIS_URL`` when given (its database is flushed by the tests), else a
throwaway ``redis-server`` on a free loopback port, started for the session and stopped after, so
the suite needs ``redis-server`` installed but no Redis running. Every test that uses Redis is
marked ``integration`` here, from the fixtures it asks for: ``pytest -m "not integration"`` runs the
rest.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from playwright.async_api import Browser
from redis.asyncio import Redis

from relay.connections import Connections, embedded_server, open_connections
from relay.runner import Relay
from tests.browser import chromium
from tests.helpers import (
    TEST_ENCRYPTION_KEY,
    Api,
    Backend,
    Merchant,
    Running,
    SessionRedis,
    Shop,
    StartRelay,
    local_server,
    make_settings,
    open_shop,
    redis_url_for_tests,
    stores_on,
)
from tests.processes import Processes, RedisCell, Result, relay_cli

REDIS_FIXTURES = {"redis_url", "redis"}
THROWAWAY_REDIS = pytest.StashKey[subprocess.Popen[bytes]]()


def pytest_configure(config: pytest.Config) -> None:
    given = os.environ.get("RELAY_TEST_REDIS_URL")
    if given:
        SessionRedis.url = given
        return
    server, port = start_throwaway_redis()
    config.stash[THROWAWAY_REDIS] = server
    SessionRedis.url = f"redis://127.0.0.1:{port}/0"


def pytest_unconfigure(config: pytest.Config) -> None:
    server = config.stash.get(THROWAWAY_REDIS, None)
    if server is not None:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if REDIS_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


def start_throwaway_redis() -> tuple[subprocess.Popen[bytes], int]:
    """A ``redis-server`` that keeps nothing on disk, on a free loopback port."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise pytest.UsageError(
            "the tests need redis-server installed (apt-get install redis-server), "
            "or RELAY_TEST_REDIS_URL naming a Redis whose data they may flush"
        )
    workdir = tempfile.mkdtemp(prefix="relay-test-redis-")
    for _ in range(5):
        port = free_port()
        server = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                workdir,
                "--logfile",
                str(Path(workdir) / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
        )
        if answers(port, deadline=10.0, server=server):
            return server, port
        server.kill()
        server.wait()
    raise pytest.UsageError(f"redis-server did not start; see {workdir}/redis.log")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def answers(port: int, *, deadline: float, server: subprocess.Popen[bytes]) -> bool:
    until = time.monotonic() + deadline
    while time.monotonic() < until and server.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as connection:
                connection.sendall(b"PING\r\n")
                if connection.recv(16).startswith(b"+PONG"):
                    return True
        except OSError:
            time.sleep(0.05)
    return False


@pytest.fixture
async def redis_url() -> AsyncIterator[str]:
    """A real, empty Redis database. Fails (never skips) when Redis is not there."""
    url = redis_url_for_tests()
    client = Redis.from_url(url)
    try:
        await client.ping()
    except Exception as error:  # any failure here means the same thing
        pytest.fail(f"no Redis at {url} ({error}); start one or set RELAY_TEST_REDIS_URL")
    await client.flushdb()
    yield url
    await client.flushdb()
    await client.aclose()


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    """A client on the test database (``redis_url`` empties it), answering ``str``."""
    client = Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings reads RELAY_* variables: start from none, whatever the developer has set."""
    for name in list(os.environ):
        if name.upper().startswith("RELAY_"):
            monkeypatch.delenv(name)


@pytest.fixture
async def merchant() -> AsyncIterator[Merchant]:
    found = Merchant()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", found.handle)
    async with local_server(app) as found.url:
        yield found


@pytest.fixture
async def start_relay(redis_url: str) -> AsyncIterator[StartRelay]:
    """Start relays on loopback (ingress, and a worker unless ``worker=False``; ``rng`` fixes the
    worker's jitter); all stop at teardown."""
    started: list[tuple[Relay, aiohttp.ClientSession]] = []

    async def start(
        *, worker: bool = True, rng: Callable[[], float] | None = None, **overrides: object
    ) -> Running:
        settings = make_settings(**overrides)
        relay = Relay(settings) if rng is None else Relay(settings, rng=rng)
        await relay.start(host="127.0.0.1", port=0, worker=worker)
        http = aiohttp.ClientSession(base_url=relay.url)
        started.append((relay, http))
        server_key = settings.midtrans_server_key
        key = server_key.get_secret_value() if server_key else relay.sandbox_key or ""
        return Running(relay, Api(http, settings, relay.url, midtrans_key=key), settings)

    yield start
    for relay, http in reversed(started):
        await http.close()
        await relay.stop()


@pytest.fixture
async def relay(start_relay: StartRelay) -> Running:
    """Ingress only (sandbox gateway): stored events stay undelivered for inspection."""
    return await start_relay(worker=False)


@pytest.fixture
async def shop(relay: Running) -> Shop:
    """A project with one item on ``relay``."""
    return await open_shop(relay.api)


# --- the stores on each backend relay runs on: the embedded store and a real Redis -----------------


@pytest.fixture(params=[pytest.param("embedded"), pytest.param("redis", marks=pytest.mark.integration)])
def backend_url(request: pytest.FixtureRequest) -> str | None:
    """None for the embedded store (fakeredis with Lua); for a real Redis, ``redis_url`` (an empty
    database). A plain fixture: an async one cannot ask for the async ``redis_url`` by name."""
    return str(request.getfixturevalue("redis_url")) if request.param == "redis" else None


@pytest.fixture
async def connections(backend_url: str | None) -> AsyncIterator[Connections]:
    """Clients for the stores (``str``) and for arq (``bytes``) as relay opens them: on a private
    embedded server, or on the real Redis. Closed before ``redis_url`` empties the database."""
    server = embedded_server() if backend_url is None else None
    opened = open_connections(make_settings(redis_url=backend_url), server=server)
    yield opened
    await opened.close()


@pytest.fixture
def stores(connections: Connections) -> Backend:
    return stores_on(connections)


@pytest.fixture
def cli(redis_url: str) -> Callable[..., Awaitable[Result]]:
    """``relay_cli`` with RELAY_REDIS_URL pointing at the test database (and the tests' key)."""

    async def run(*args: str, **env: str) -> Result:
        return await relay_cli(
            *args, RELAY_REDIS_URL=redis_url, RELAY_ENCRYPTION_KEYS=TEST_ENCRYPTION_KEY, **env
        )

    return run


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """The system's Chromium, headless (``tests/browser.py``)."""
    async with chromium() as launched:
        yield launched


@pytest.fixture
async def processes(tmp_path: Path) -> AsyncIterator[Processes]:
    """Subprocesses a test starts (redis-servers, relays), SIGKILLed at its end; their logs in
    ``tmp_path``."""
    found = Processes(tmp_path, {})
    try:
        yield found
    finally:
        await found.kill_all()


@pytest.fixture
async def sentinel_cell(processes: Processes, tmp_path: Path) -> RedisCell:
    """A primary ``redis-server`` watched by one Sentinel, on loopback: the service ``relay``."""
    cell = RedisCell(processes, tmp_path / "cell", replicas=0, sentinels=1)
    await cell.start()
    return cell
