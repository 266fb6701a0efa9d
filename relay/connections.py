"""Redis clients for the stores (``str`` replies) and for arq (``bytes`` replies), real or embedded.

``Connections`` owns both pools: whoever calls ``open_connections`` closes them
(``Connections.close``), in the same place. Everything else borrows them: the auto-pipelined
clients, the stores, and arq's worker (``workers.arq_compat``) never close these pools.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from arq.connections import ArqRedis
from redis.asyncio import ConnectionPool, Redis
from redis.connection import HiredisRespSerializer
from redis.exceptions import DataError
from redis.utils import HIREDIS_AVAILABLE

from relay.settings import Settings

# Fail fast when Redis is away, so ingress answers 503 promptly and the gateway retries.
CLIENT_OPTIONS: dict[str, Any] = {
    "socket_timeout": 5.0,
    "socket_connect_timeout": 2.0,
    "health_check_interval": 15,
    "max_connections": 256,
}


class HiredisPacking:
    """Commands packed into RESP by hiredis (C), where redis-py's asyncio connections run a Python
    loop: byte for byte the same (str as UTF-8, int and float as redis-py writes them, the same
    errors for None, bool and lone surrogates), and a callback's ingest script of 31 arguments
    packs in 9 us instead of 68 (measured; P1 in tests/perf/RESULTS.md). redis-py's own sync
    connections pack this way; its asyncio ones do not yet."""

    _packer = HiredisRespSerializer()

    def pack_command(self, *args: Any) -> list[bytes]:
        try:
            packed: list[bytes] = self._packer.pack(*args)
        except DataError:  # a type hiredis does not take (an int subclass): redis-py packs, or refuses
            packed = super().pack_command(*args)  # type: ignore[misc]
        return packed


def hiredis_packed(pool: ConnectionPool) -> ConnectionPool:
    """``pool``, its connections packing commands with hiredis (``HiredisPacking``) when it is
    installed (the ``redis[hiredis]`` dependency) and strings are UTF-8, strictly (the default; a
    URL may ask for another encoding, which only redis-py's packing applies)."""
    options = pool.connection_kwargs
    utf8 = str(options.get("encoding", "utf-8")).lower().replace("_", "-") in {"utf-8", "utf8"}
    strict = options.get("encoding_errors", "strict") == "strict"
    if HIREDIS_AVAILABLE and utf8 and strict and not issubclass(pool.connection_class, HiredisPacking):
        base = pool.connection_class
        pool.connection_class = type(f"Hiredis{base.__name__}", (HiredisPacking, base), {})
    return pool


def pool_of_its_own(shared: ConnectionPool, **options: Any) -> tuple[ConnectionPool, float | None]:
    """A new pool to the same server as ``shared`` (its connection class and settings, ``options``
    added), for a client that keeps its own connections (blocking ones, or with one deadline per
    batch), and ``shared``'s socket timeout, which the new pool leaves to that client to apply."""
    settings = dict(shared.connection_kwargs) | options
    socket_timeout: float | None = settings.pop("socket_timeout", None)
    return ConnectionPool(connection_class=shared.connection_class, **settings), socket_timeout


@dataclass
class Connections:
    redis: Redis
    arq: ArqRedis
    embedded: bool
    # Through Sentinel: the clients that ask the Sentinels, closed with the pools.
    sentinels: list[Redis] = field(default_factory=list)

    async def close(self) -> None:
        await self.redis.aclose(close_connection_pool=True)
        await self.arq.aclose(close_connection_pool=True)
        for sentinel in self.sentinels:
            await sentinel.aclose()


def embedded_server() -> Any:
    """An in-process Redis (fakeredis with Lua). Not durable: it lives as long as the process."""
    import fakeredis

    return fakeredis.FakeServer()


def open_connections(settings: Settings, *, server: Any = None) -> Connections:
    """Clients for the primary the Sentinels name (RELAY_REDIS_SENTINELS), else for
    ``settings.redis_url``, else for the embedded ``server``."""
    if settings.redis_sentinels is not None:
        return _through_sentinels(settings)
    if settings.redis_url is not None:
        store_pool = hiredis_packed(
            ConnectionPool.from_url(settings.redis_url, decode_responses=True, **CLIENT_OPTIONS)
        )
        arq_pool = hiredis_packed(ConnectionPool.from_url(settings.redis_url, **CLIENT_OPTIONS))
        return Connections(Redis(connection_pool=store_pool), ArqRedis(arq_pool), embedded=False)
    if server is None:
        raise ValueError("RELAY_REDIS_URL is unset and no embedded server was given")
    from fakeredis.aioredis import FakeAsyncRedisConnection as Fake

    store_pool = ConnectionPool(connection_class=Fake, server=server, decode_responses=True)
    arq_pool = ConnectionPool(connection_class=Fake, server=server)
    return Connections(Redis(connection_pool=store_pool), ArqRedis(arq_pool), embedded=True)


def _through_sentinels(settings: Settings) -> Connections:
    """Pools that ask the Sentinels where the primary is on every new connection, so after a
    promotion the next connection goes to the new primary without a restart (redis-py's
    SentinelConnectionPool; a connection to a primary that was demoted fails on its first write,
    READONLY, and is dropped). RELAY_REDIS_URL's user, password, db and TLS apply to the primary."""
    from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool

    server: dict[str, Any] = {}
    if settings.redis_url is not None:
        parts = urlsplit(settings.redis_url)
        server = {
            "username": unquote(parts.username) if parts.username else None,
            "password": unquote(parts.password) if parts.password else None,
            "db": int(parts.path.strip("/") or 0),
            "ssl": parts.scheme == "rediss",
        }
    sentinel_password = settings.redis_sentinel_password
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        settings.sentinels,
        sentinel_kwargs={
            "password": sentinel_password.get_secret_value() if sentinel_password else None,
            "socket_timeout": CLIENT_OPTIONS["socket_timeout"],
            "socket_connect_timeout": CLIENT_OPTIONS["socket_connect_timeout"],
        },
    )
    service = settings.redis_sentinel_service
    options = CLIENT_OPTIONS | {key: value for key, value in server.items() if value is not None}
    store_pool = hiredis_packed(SentinelConnectionPool(service, sentinel, decode_responses=True, **options))  # type: ignore[no-untyped-call]
    arq_pool = hiredis_packed(SentinelConnectionPool(service, sentinel, **options))  # type: ignore[no-untyped-call]
    return Connections(
        Redis(connection_pool=store_pool), ArqRedis(arq_pool), embedded=False, sentinels=sentinel.sentinels
    )
