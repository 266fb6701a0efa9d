"""Which webhook targets deliveries may reach.

The authoritative check runs at connect time in ``workers.egress`` (it sees the exact address,
after DNS). ``check_webhook_url`` repeats what can be known at registration, so a merchant hears
about an unusable URL when saving it rather than from a dead letter. It checks the host as a
resolver would see it (``resolver_hosts``): full-width, circled and other compatibility characters
and ideographic dots become ASCII before DNS (``①②⑦.0.0.1`` is 127.0.0.1, ``ⓛⓞⓒⓐⓛⓗⓞⓢⓣ`` is
localhost), so each spelling is checked after that normalisation too.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from urllib.parse import urlsplit

from yarl import URL

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
NAT64 = ipaddress.ip_network("64:ff9b::/96")
NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")  # RFC 8215 local-use translation prefix
IPV4_COMPATIBLE = ipaddress.ip_network("::/96")  # deprecated ::a.b.c.d form
# Hosts that some resolvers read as IPv4 (2130706433, 0x7f000001, 127.1, 0177.0.0.1).
NUMERIC_HOST = re.compile(r"(0x[0-9a-f]+|[0-9]+)(\.(0x[0-9a-f]+|[0-9]+)){0,3}", re.IGNORECASE)
LOCAL_NAMES = ("localhost", ".localhost", ".local", ".internal")


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address inside an IPv4-mapped, IPv4-compatible, NAT64, 6to4 or Teredo address."""
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


Networks = tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]


def allowed(address: IPAddress, allowlist: Networks) -> bool:
    """Public, or inside an operator-allowed network (RELAY_ALLOWED_TARGET_CIDRS)."""
    return is_public(address) or any(address in network for network in allowlist)


def check_webhook_url(
    url: str, *, allow_private: bool, require_https: bool, allowlist: Networks = ()
) -> None:
    """Raise ValueError naming the problem with ``url`` as a delivery target."""
    parts = urlsplit(url)
    if require_https and parts.scheme != "https":
        raise ValueError("webhook_url must use https:// (RELAY_REQUIRE_HTTPS is set)")
    if allow_private:
        return
    for host in resolver_hosts(url):
        _check_host(host, allowlist)


def resolver_hosts(url: str) -> set[str]:
    """The host of ``url`` as written and as a resolver may see it: as aiohttp's client encodes it
    (yarl: IDNA with UTS 46 mapping), and after NFKC and Python's IDNA codec (nameprep), which
    ``socket.getaddrinfo`` applies to a non-ASCII name. ValueError when either cannot encode it."""
    written = urlsplit(url).hostname or ""
    try:
        client = URL(url).raw_host or ""
        compatible = unicodedata.normalize("NFKC", written)
        codec = compatible if compatible.isascii() else compatible.encode("idna").decode("ascii")
    except (ValueError, UnicodeError):
        raise ValueError("webhook_url host is not a valid host name") from None
    hosts = {host.rstrip(".").lower() for host in (written, client, codec)}
    if any(not host or ".." in host or host.startswith(".") for host in hosts):
        raise ValueError("webhook_url host is not a valid host name")
    return hosts


def _check_host(host: str, allowlist: Networks) -> None:
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        if NUMERIC_HOST.fullmatch(host):
            raise ValueError("webhook_url host is a numeric address in a non-standard form") from None
        if host == "localhost" or host.endswith(LOCAL_NAMES):
            raise ValueError("webhook_url points at a local host name") from None
        return  # a DNS name: checked again at connect time, after resolution
    if not allowed(address, allowlist):
        raise ValueError("webhook_url points at a loopback, private, link-local or reserved address")
