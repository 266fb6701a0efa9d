"""Who is asking: the source address of a request, behind trusted proxies or not.

The peer's address, unless the peer is one of ``RELAY_TRUSTED_PROXIES``: then the address in
``X-Forwarded-For`` that the outermost trusted proxy saw (the last one, from the right, that is not
itself a trusted proxy). A client can write any ``X-Forwarded-For`` it likes, so it is read only
from proxies, and only up to the first hop that is not one. Limits count by ``limit_key``: an IPv6
address by its /64, which one host usually holds whole.

A peer on a private network sending ``X-Forwarded-For`` without being trusted is most likely a
proxy the operator forgot to name: every client behind it then counts as that one address. It is
logged once per peer, so the operator hears of it.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from functools import lru_cache

import structlog
from aiohttp import web
from pydantic import IPvAnyNetwork

from relay.errors import InvalidInput

log = structlog.get_logger("relay.http")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# "[2001:db8::1]:443" or "203.0.113.7:5555", as some load balancers write a hop.
WITH_PORT = re.compile(r"\[(?P<bracketed>[^\]]+)\](?::\d+)?|(?P<v4>\d{1,3}(?:\.\d{1,3}){3}):\d+")
WARNED_MAX = 64


@lru_cache(maxsize=4096)  # the same peers ask again and again: parse each once (a callback's hot path)
def _address(text: str) -> IPAddress | None:
    text = text.strip()
    with_port = WITH_PORT.fullmatch(text)
    if with_port:
        text = with_port.group("bracketed") or with_port.group("v4")
    try:
        address = ipaddress.ip_address(text)
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
        if peer.is_private and not peer.is_loopback and "X-Forwarded-For" in request.headers:
            _warn_untrusted_proxy(request, peer)
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


@lru_cache(maxsize=4096)
def limit_key(address: str) -> str:
    """What a limit counts by: an IPv4 address, or an IPv6 address's /64."""
    parsed = _address(address)
    if isinstance(parsed, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((parsed, 64), strict=False))
    return address


def _warn_untrusted_proxy(request: web.Request, peer: IPAddress) -> None:
    warned: set[str] = request.config_dict.get(UNTRUSTED_PROXIES_SEEN, set())
    if str(peer) in warned or len(warned) >= WARNED_MAX:
        return
    warned.add(str(peer))
    log.warning(
        "untrusted_proxy",
        peer=str(peer),
        detail="a private peer sends X-Forwarded-For but is not in RELAY_TRUSTED_PROXIES: every "
        "client behind it counts as one address for rate limits and login lockouts",
    )


# Peers already warned about, per process (a mutable set on the app, made by create_app).
UNTRUSTED_PROXIES_SEEN: web.AppKey[set[str]] = web.AppKey("untrusted_proxies_seen")


def own_base_url(request: web.Request) -> str:
    """The address this relay listens on, from the connection's socket (never the Host header,
    which the client chooses)."""
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    if not isinstance(sockname, tuple) or len(sockname) < 2:
        raise InvalidInput("a link to this relay needs it to listen on TCP, or RELAY_PUBLIC_BASE_URL set")
    host, port = str(sockname[0]), int(sockname[1])
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
