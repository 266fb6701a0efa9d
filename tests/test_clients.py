"""relay/api/clients.py: the source address of a request, behind trusted proxies or not, and
what limits count it by."""

from __future__ import annotations

from ipaddress import ip_network
from unittest.mock import Mock

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from structlog.testing import capture_logs

from relay.api.clients import UNTRUSTED_PROXIES_SEEN, client_address, limit_key

PROXIES = (ip_network("10.0.0.0/8"),)


def request_from(peer: str, forwarded: str | None = None) -> web.Request:
    app = web.Application()
    app[UNTRUSTED_PROXIES_SEEN] = set()
    transport = Mock()
    transport.get_extra_info.return_value = (peer, 5555)
    headers = {"X-Forwarded-For": forwarded} if forwarded is not None else {}
    return make_mocked_request("GET", "/", headers=headers, transport=transport, app=app)


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        ("203.0.113.7", None, "203.0.113.7"),
        ("203.0.113.7", "198.51.100.1", "203.0.113.7"),  # not a proxy: its header means nothing
        ("10.0.0.2", "198.51.100.1", "198.51.100.1"),
        ("10.0.0.2", "198.51.100.1:5555", "198.51.100.1"),  # a hop with its port
        ("10.0.0.2", "[2001:db8::1]:443", "2001:db8::1"),
        ("10.0.0.2", "6.6.6.6, 198.51.100.1, 10.0.0.9", "198.51.100.1"),  # what the outer proxy saw
        ("10.0.0.2", "198.51.100.1, not-an-address", "10.0.0.2"),  # a hop no proxy wrote
        ("10.0.0.2", "10.0.0.3", "10.0.0.3"),  # proxies all the way
        ("::ffff:10.0.0.2", "198.51.100.1", "198.51.100.1"),
    ],
)
def test_the_source_address(peer: str, forwarded: str | None, expected: str) -> None:
    assert client_address(request_from(peer, forwarded), PROXIES) == expected


def test_limits_count_an_ipv6_host_by_its_64() -> None:
    assert limit_key("2001:db8:1:2::1") == limit_key("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert limit_key("2001:db8:1:3::1") != limit_key("2001:db8:1:2::1")
    assert limit_key("203.0.113.7") == "203.0.113.7"


def test_a_private_peer_that_forwards_without_being_trusted_is_named_once() -> None:
    request = request_from("172.18.0.5", "198.51.100.1")
    with capture_logs() as logs:
        for _ in range(3):
            assert client_address(request, PROXIES) == "172.18.0.5"
    warnings = [entry for entry in logs if entry["event"] == "untrusted_proxy"]
    assert [entry["peer"] for entry in warnings] == ["172.18.0.5"]
