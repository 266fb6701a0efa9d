"""workers/egress.py: which addresses webhooks may reach, checked on the socket actually opened."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import aiohttp
import pytest
from aiohttp import web

from relay.errors import PermanentDelivery
from workers import egress
from workers.delivery import send


@pytest.mark.parametrize(
    ("address", "public"),
    [
        # loopback
        ("127.0.0.1", False),
        ("127.1.2.3", False),
        ("::1", False),
        # private IPv4
        ("10.0.0.1", False),
        ("10.255.255.255", False),
        ("172.16.0.1", False),
        ("172.31.255.254", False),
        ("192.168.1.1", False),
        # link-local, cloud metadata
        ("169.254.169.254", False),
        # carrier-grade NAT
        ("100.64.0.1", False),
        # unspecified
        ("0.0.0.0", False),  # noqa: S104 - an address under test, nothing binds to it
        ("::", False),
        # multicast
        ("224.0.0.1", False),
        ("ff02::1", False),
        # reserved, broadcast
        ("240.0.0.1", False),
        ("255.255.255.255", False),
        # IPv6 unique local, link-local
        ("fc00::1", False),
        ("fd12::1", False),
        ("fe80::1", False),
        # IPv4 hidden inside IPv6
        ("::ffff:127.0.0.1", False),
        ("::ffff:10.0.0.1", False),
        ("64:ff9b::7f00:1", False),
        ("2002:7f00:1::", False),
        # public
        ("8.8.8.8", True),
        ("1.1.1.1", True),
        ("2606:4700:4700::1111", True),
        ("::ffff:8.8.8.8", True),
        ("64:ff9b::808:808", True),
        ("2002:808:808::", True),
    ],
)
def test_is_public(address: str, public: bool) -> None:
    assert egress.is_public(ipaddress.ip_address(address)) is public


def test_public_neighbours_of_private_ranges_are_allowed() -> None:
    """The private ranges are not drawn too wide: the addresses just outside them are public."""
    for address in ("172.15.255.254", "172.32.0.1", "100.63.255.254", "100.128.0.1", "11.0.0.1"):
        assert egress.is_public(ipaddress.ip_address(address)), address


@dataclass
class CountingServer:
    port: int
    requests: int = 0


@pytest.fixture
async def server() -> AsyncIterator[CountingServer]:
    """A merchant on 127.0.0.1 that counts every request reaching it."""
    found = CountingServer(port=0)

    async def handle(request: web.Request) -> web.Response:
        found.requests += 1
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    found.port = runner.addresses[0][1]
    yield found
    await runner.cleanup()


async def post(session: aiohttp.ClientSession, url: str) -> int:
    async with session.post(
        url, data=b"{}", allow_redirects=False, timeout=aiohttp.ClientTimeout(total=5)
    ) as response:
        return response.status


# Spellings of 127.0.0.1 that reach the socket factory, which refuses them.
BLOCKED_SPELLINGS = [
    "127.0.0.1",
    "localhost",
    "[::ffff:127.0.0.1]",
    "[::ffff:7f00:1]",
    "[0:0:0:0:0:ffff:127.0.0.1]",
    "[64:ff9b::7f00:1]",
    "[2002:7f00:1::]",
    "0x7f000001",
    "0x7f.0.0.1",
]
# Spellings yarl refuses as "not a canonical IPv4 address" before any connection is made.
INVALID_SPELLINGS = ["2130706433", "127.1", "0177.0.0.1", "017700000001", "127.0.0.1."]


@pytest.mark.parametrize("host", BLOCKED_SPELLINGS)
async def test_blocked_session_refuses_loopback(server: CountingServer, host: str) -> None:
    async with egress.create_session(allow_private=False, max_connections=10) as session:
        with pytest.raises(aiohttp.ClientConnectorError) as caught:
            await post(session, f"http://{host}:{server.port}/")
    assert isinstance(caught.value.os_error, egress.BlockedTarget)
    assert server.requests == 0


@pytest.mark.parametrize("host", INVALID_SPELLINGS)
async def test_non_canonical_ipv4_is_an_invalid_url(server: CountingServer, host: str) -> None:
    async with egress.create_session(allow_private=False, max_connections=10) as session:
        with pytest.raises(aiohttp.InvalidURL):
            await post(session, f"http://{host}:{server.port}/")
    assert server.requests == 0


async def test_allow_private_reaches_loopback(server: CountingServer) -> None:
    async with egress.create_session(allow_private=True, max_connections=10) as session:
        assert await post(session, f"http://127.0.0.1:{server.port}/") == 200
    assert server.requests == 1


async def test_send_turns_a_blocked_target_into_a_permanent_failure(server: CountingServer) -> None:
    async with egress.create_session(allow_private=False, max_connections=10) as session:
        with pytest.raises(PermanentDelivery) as caught:
            await send(
                session,
                f"http://127.0.0.1:{server.port}/hook",
                body="{}",
                headers={"content-type": "application/json"},
                timeout_s=5,
                now=datetime.now(UTC),
            )
    assert "refused target" in caught.value.reason
    assert caught.value.status_code is None
    assert server.requests == 0


async def test_send_turns_an_invalid_url_into_a_permanent_failure(server: CountingServer) -> None:
    async with egress.create_session(allow_private=False, max_connections=10) as session:
        with pytest.raises(PermanentDelivery, match="invalid webhook URL"):
            await send(
                session,
                f"http://2130706433:{server.port}/hook",
                body="{}",
                headers={},
                timeout_s=5,
                now=datetime.now(UTC),
            )
    assert server.requests == 0
