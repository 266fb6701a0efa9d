"""The one HTTP client deliveries go through.

Unless RELAY_ALLOW_PRIVATE_TARGETS is set, the connector's ``socket_factory`` checks the exact
address being connected (after DNS, for IP literals too, and for every address a name resolves to),
so a webhook URL cannot reach loopback, private networks or cloud metadata endpoints. Redirects
are never followed (``allow_redirects=False`` at the call site) and the environment's proxies are
ignored (``trust_env=False``).
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Callable
from typing import Any

import aiohttp

from relay.models import RESPONSE_EXCERPT_BYTES
from relay.targets import Networks, allowed, embedded_ipv4, is_public

__all__ = ["BlockedTarget", "create_session", "embedded_ipv4", "guarded_socket_factory", "is_public"]

MAX_RESPONSE_BYTES = RESPONSE_EXCERPT_BYTES + 1  # what is kept, and one byte more to know it was cut


class BlockedTarget(OSError):
    """The webhook URL resolves to an address deliveries may not reach."""

    def __init__(self) -> None:
        super().__init__(
            errno.EACCES,
            "webhook URL resolves to a non-public address (loopback, private, link-local or reserved)",
        )


def guarded_socket_factory(allowlist: Networks = ()) -> Callable[[Any], socket.socket]:
    """A ``socket_factory`` that refuses every address ``allowed`` refuses."""

    def guarded_socket(addr_info: Any) -> socket.socket:
        family, type_, proto, _, sockaddr = addr_info
        host = sockaddr[0].split("%", 1)[0]
        if not allowed(ipaddress.ip_address(host), allowlist):
            raise BlockedTarget()
        return socket.socket(family=family, type=type_, proto=proto)

    return guarded_socket


def create_session(
    *, allow_private: bool, max_connections: int, allowlist: Networks = ()
) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(
        limit=max_connections,
        ttl_dns_cache=60,
        socket_factory=None if allow_private else guarded_socket_factory(allowlist),
    )
    return aiohttp.ClientSession(connector=connector, trust_env=False, auto_decompress=False)
