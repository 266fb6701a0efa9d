"""Acknowledged means replicated (RELAY_REDIS_MIN_REPLICAS_ACK, DESIGN.md "Failover without loss").

Redis replicates asynchronously: a write the primary took, and the relay acknowledged (a callback's
200, a created purchase, a rotated secret, a replay), is lost if the primary dies before sending it
on, and a gateway never resends what was answered 200. ``Replicas.confirm`` returns once the
writes made so far are on ``replicas`` replicas, and raises ``StoreUnavailable`` (503: the gateway
or client retries) when they are not within the timeout.

It asks with ``WAIT``, which waits for the replicas to reach the offset of the last write made on
*its own connection*. So each round writes a marker key first, on a connection of its own: the
offset after that write is past every write Redis took before it, whichever connection made it, and
the WAIT that follows covers them all. (WAIT blocks its connection, so it cannot ride the shared
pipelines.) Callers group-commit: everyone who asks while a round is out joins the next one, so a
burst of callbacks costs one SET and one WAIT per round trip, not one each.
"""

from __future__ import annotations

import asyncio
import math
import time

import structlog
from redis.asyncio import Redis

from relay.connections import pool_of_its_own
from relay.errors import StoreUnavailable
from relay.metrics import Metrics
from relay.schema import Keys
from relay.settings import Settings

log = structlog.get_logger("relay.replicas")

# What a round's callers get: the number of replicas that confirmed, or why Redis could not be asked.
Outcome = int | str
UNAVAILABLE = "the store is unavailable; retry later"


class Replicas:
    """Confirms writes on ``replicas`` replicas within ``timeout`` seconds, over ``client``'s
    pool's settings (a connection of its own, one round at a time). With ``replicas`` 0 it
    confirms at once and never talks to Redis."""

    def __init__(
        self,
        client: Redis,
        *,
        replicas: int,
        timeout: float,
        marker: str,
        metrics: Metrics | None = None,
    ) -> None:
        self.replicas = replicas
        self.timeout = timeout
        self.marker = marker
        self.metrics = metrics
        # The read of WAIT's reply may take the whole timeout: the round has its own deadline.
        self.pool, socket_timeout = pool_of_its_own(client.connection_pool, max_connections=1)
        self.deadline = timeout + max(socket_timeout or 0.0, 1.0)
        self.client = Redis(connection_pool=self.pool)
        self.rounds = 0
        self._next: asyncio.Future[Outcome] | None = None
        self._running: asyncio.Task[None] | None = None

    @classmethod
    def configured(cls, client: Redis, settings: Settings, *, metrics: Metrics | None = None) -> Replicas:
        """As RELAY_REDIS_MIN_REPLICAS_ACK and RELAY_REDIS_ACK_TIMEOUT say, over ``client``'s pool."""
        return cls(
            client,
            replicas=settings.redis_min_replicas_ack,
            timeout=settings.redis_ack_timeout,
            marker=Keys(settings.key_prefix).replicated,
            metrics=metrics,
        )

    async def aclose(self) -> None:
        if self._running is not None:
            await asyncio.wait({self._running})
        await self.client.aclose()
        await self.pool.aclose()

    async def confirm(self) -> None:
        """Return once every write Redis took before this call is on ``replicas`` replicas;
        ``StoreUnavailable`` when it is not within the timeout, or Redis cannot be asked."""
        if self.replicas == 0:
            return
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
        if self._running is None:
            self._running = asyncio.create_task(self._rounds())
        # A caller that goes away leaves the round to the others.
        outcome = await asyncio.shield(self._next)
        if isinstance(outcome, str):
            raise StoreUnavailable(outcome)
        if outcome < self.replicas:
            raise StoreUnavailable(
                f"the write was not confirmed by {self.replicas} Redis replica(s) within "
                f"{self.timeout:g}s; retry later"
            )

    async def _rounds(self) -> None:
        waiting: asyncio.Future[Outcome] | None = None
        try:
            while self._next is not None:
                # Who asked so far rides this round; who asks while it is out, the next.
                waiting, self._next = self._next, None
                waiting.set_result(await self._round())
        finally:
            self._running = None
            # Cancelled (the process stopping) mid-round: whoever waits gets a 503, not a hang,
            # and the next caller starts the rounds again.
            for left in (waiting, self._next):
                if left is not None and not left.done():
                    left.set_result(UNAVAILABLE)
            self._next = None

    async def _round(self) -> Outcome:
        self.rounds += 1
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.deadline), self.client.pipeline(transaction=False) as pipe:
                pipe.set(self.marker, self.rounds)
                # WAIT 0 would wait for ever: at least a millisecond.
                pipe.execute_command("WAIT", self.replicas, max(1, math.ceil(self.timeout * 1000)))
                _, confirmed = await pipe.execute()
        except Exception as error:  # Redis away, a demoted primary, WAIT refused by an ACL: a 503 each
            self._count("error", started)
            log.warning("replicas_unasked", error=type(error).__name__, reply=str(error)[:80])
            return UNAVAILABLE
        outcome = int(confirmed)
        if outcome < self.replicas:
            log.warning("replicas_unconfirmed", confirmed=outcome, wanted=self.replicas)
        self._count("confirmed" if outcome >= self.replicas else "timeout", started)
        return outcome

    def _count(self, result: str, started: float) -> None:
        if self.metrics is not None:
            self.metrics.replica_waits.labels(result).inc()
            self.metrics.replica_wait_seconds.observe(time.perf_counter() - started)
