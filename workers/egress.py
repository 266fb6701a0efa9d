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
from typing import Any

import aiohttp

MAX_RESPONSE_BYTES = 4096

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
NAT64 = ipaddress.ip_network("64:ff9b::/96")
NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")  # RFC 8215 local-use translation prefix
IPV4_COMPATIBLE = ipaddress.ip_network("::/96")  # deprecated ::a.b.c.d form


class BlockedTarget(OSError):
    """The webhook URL resolves to an address deliveries may not reach."""

    def __init__(self) -> None:
        super().__init__(
            errno.EACCES,
            "webhook URL resolves to a non-public address (loopback, private, link-local or reserved)",
        )


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address inside an IPv4-mapped, NAT64, 6to4 or Teredo IPv6 address."""
    if address.ipv4_mapped:
        return address.ipv4_mapped
    if address in IPV4_COMPATIBLE:
        return ipaddress.IPv4Address(int(address))
    if address in NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour:
        return address.sixtofour
    if address.teredo:
        return address.teredo[1]
    return None


def is_public(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        if address in NAT64_LOCAL or address.is_site_local:
            return False
        inner = embedded_ipv4(address)
        if inner is not None:
            return is_public(inner)
    return address.is_global and not address.is_multicast


def guarded_socket(addr_info: Any) -> socket.socket:
    family, type_, proto, _, sockaddr = addr_info
    host = sockaddr[0].split("%", 1)[0]
    if not is_public(ipaddress.ip_address(host)):
        raise BlockedTarget()
    return socket.socket(family=family, type=type_, proto=proto)


def create_session(*, allow_private: bool, max_connections: int) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(
        limit=max_connections,
        ttl_dns_cache=60,
        socket_factory=None if allow_private else guarded_socket,
    )
    return aiohttp.ClientSession(connector=connector, trust_env=False, auto_decompress=False)
