"""Redis clients for the stores (``str`` replies) and for arq (``bytes`` replies), real or embedded.

``Connections`` owns both pools: whoever calls ``open_connections`` closes them
(``Connections.close``), in the same place. Everything else borrows them: the auto-pipelined
clients, the stores, and arq's worker (``workers.arq_compat``) never close these pools.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from arq.connections import ArqRedis
from redis.asyncio import ConnectionPool, Redis

from relay.settings import Settings

# Fail fast when Redis is away, so ingress answers 503 promptly and the gateway retries.
CLIENT_OPTIONS: dict[str, Any] = {
    "socket_timeout": 5.0,
    "socket_connect_timeout": 2.0,
    "health_check_interval": 15,
    "max_connections": 256,
}


@dataclass
class Connections:
    redis: Redis
    arq: ArqRedis
    embedded: bool

    async def close(self) -> None:
        await self.redis.aclose(close_connection_pool=True)
        await self.arq.aclose(close_connection_pool=True)


def embedded_server() -> Any:
    """An in-process Redis (fakeredis with Lua). Not durable: it lives as long as the process."""
    import fakeredis

    return fakeredis.FakeServer()


def open_connections(settings: Settings, *, server: Any = None) -> Connections:
    """Clients for ``settings.redis_url``, or for the embedded ``server`` when the URL is unset."""
    if settings.redis_url is not None:
        store_pool = ConnectionPool.from_url(settings.redis_url, decode_responses=True, **CLIENT_OPTIONS)
        arq_pool = ConnectionPool.from_url(settings.redis_url, **CLIENT_OPTIONS)
        return Connections(Redis(connection_pool=store_pool), ArqRedis(arq_pool), embedded=False)
    if server is None:
        raise ValueError("RELAY_REDIS_URL is unset and no embedded server was given")
    from fakeredis.aioredis import FakeAsyncRedisConnection as Fake

    store_pool = ConnectionPool(connection_class=Fake, server=server, decode_responses=True)
    arq_pool = ConnectionPool(connection_class=Fake, server=server)
    return Connections(Redis(connection_pool=store_pool), ArqRedis(arq_pool), embedded=True)
