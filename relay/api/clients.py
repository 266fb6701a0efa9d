"""Who is asking: the source address of a request, behind trusted proxies or not.

The peer's address, unless the peer is one of ``RELAY_TRUSTED_PROXIES``: then the address in
``X-Forwarded-For`` that the outermost trusted proxy saw (the last one, from the right, that is not
itself a trusted proxy). A client can write any ``X-Forwarded-For`` it likes, so it is read only
from proxies, and only up to the first hop that is not one.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from aiohttp import web
from pydantic import IPvAnyNetwork

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _address(text: str) -> IPAddress | None:
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(address: IPAddress, proxies: Sequence[IPvAnyNetwork]) -> bool:
    return any(address.version == network.version and address in network for network in proxies)


def client_address(request: web.Request, proxies: Sequence[IPvAnyNetwork]) -> str:
    peer = _address(request.remote or "")
    if peer is None:
        return request.remote or "unknown"
    if not proxies or not _trusted(peer, proxies):
        return str(peer)
    hops = ",".join(request.headers.getall("X-Forwarded-For", [])).split(",")
    found = peer
    for hop in reversed([hop for hop in hops if hop.strip()]):
        address = _address(hop)
        if address is None:  # a hop no proxy wrote: trust nothing before it
            return str(found)
        found = address
        if not _trusted(address, proxies):
            return str(address)
    return str(found)
