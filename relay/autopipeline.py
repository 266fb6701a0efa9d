"""Redis clients that pipeline concurrent calls automatically (ioredis calls it "auto pipelining").

A worker runs up to ``max_jobs`` jobs at once and each makes a few small Redis calls. Sent alone, a
command costs redis-py about 50 us of CPU (a pooled connection, a health check, one write, one
read); riding in a pipeline with others it costs about 9 us. So:

- ``AutoPipelineRedis`` is a ``redis.asyncio.Redis`` whose commands go to Redis together with the
  others issued meanwhile, as one non-transactional pipeline.
- ``Batcher`` does the sending for it, and for ``workers.arq_compat.MergedTransactionsArqRedis``,
  which merges arq's transactions the same way into one MULTI/EXEC.

Every caller still awaits its own replies, parsed exactly as a direct call parses them, or its own
error. At most ``in_flight`` batches are out at a time (one by default): what is issued meanwhile
waits and then goes together, so batches grow with the load (and with the time the event loop
takes to come back to them) with no timer; when a slot is free, a call goes at the end of the
current loop turn, so at light load a batch holds one call and costs what a direct call costs.
One caller's calls stay in order (it awaits each reply before making the next); calls of
different callers were independent before and still are. Not for WATCH, blocking commands or
pub/sub: those keep their own connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import TimeoutError as RedisTimeoutError

from relay.connections import pool_of_its_own

MAX_BATCH = 256
Command = tuple[tuple[Any, ...], Mapping[str, Any]]
Pending = tuple[list[Command], "asyncio.Future[list[Any]]"]


class Batcher:
    """Sends the command lists submitted while ``in_flight`` batches are out together, as one
    pipeline (one transaction when ``transaction``); each list gets its own replies back."""

    def __init__(
        self, client: Redis, *, transaction: bool, max_batch: int = MAX_BATCH, in_flight: int = 1
    ) -> None:
        self.response_callbacks = client.response_callbacks
        self.transaction = transaction
        self.max_batch = max_batch
        self.in_flight = in_flight
        # A connection of its own, with one deadline per batch: on the shared pool's connections
        # redis-py arms a timer (socket_timeout) for every reply it reads, which cost more than
        # reading the reply. This pool holds one connection per batch in flight.
        self.pool, self.deadline = pool_of_its_own(client.connection_pool)
        self.batches_sent = 0
        self._closed = False
        self._pending: list[Pending] = []
        self._sending: set[asyncio.Task[None]] = set()
        self._scheduled = False

    async def aclose(self) -> None:
        """Disconnect, after the batches in flight and those already due (a finishing batch
        schedules the next). A call made later still works (arq shields a job's last writes from
        cancellation, so they may come after the worker closed): its batch disconnects again when
        done, so no connection outlives it."""
        self._closed = True
        while self._sending or self._scheduled:
            if self._sending:
                await asyncio.wait(self._sending)
            else:
                await asyncio.sleep(0)  # a flush is due at the end of this turn
        await self.pool.aclose()

    async def execute(self, commands: list[Command]) -> list[Any]:
        """One reply per command, in order; a command's error reply is its ``ResponseError``,
        returned, not raised. A failed connection raises for every caller of the batch."""
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._pending.append((commands, future))
        self._schedule()
        return await future

    def _schedule(self) -> None:
        if not self._scheduled and len(self._sending) < self.in_flight:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        # A caller cancelled before its commands left has them dropped, as if never called.
        pending = [entry for entry in self._pending if not entry[1].done()]
        batch, self._pending = pending[: self.max_batch], pending[self.max_batch :]
        if batch:
            self.batches_sent += 1
            task = asyncio.create_task(self._send(batch))
            self._sending.add(task)
            task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._sending.discard(task)
        if self._pending:
            self._schedule()

    async def _send(self, batch: list[Pending]) -> None:
        try:
            await self._send_batch(batch)
        finally:
            if self._closed:
                await self.pool.aclose()

    async def _send_batch(self, batch: list[Pending]) -> None:
        try:
            async with (
                asyncio.timeout(self.deadline),
                Pipeline(self.pool, self.response_callbacks, self.transaction, None) as pipe,
            ):
                for commands, _ in batch:
                    for args, options in commands:
                        pipe.execute_command(*args, **options)
                replies = await pipe.execute(raise_on_error=False)
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        except Exception as error:  # the connection failed: every caller gets the error, raised
            if isinstance(error, TimeoutError):  # the deadline (redis-py has disconnected)
                error = RedisTimeoutError(f"no reply from Redis within {self.deadline}s")
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        start = 0
        for commands, future in batch:
            if not future.done():  # else the caller was cancelled
                future.set_result(replies[start : start + len(commands)])
            start += len(commands)


class AutoPipelineRedis(Redis):
    """Over ``connection_pool`` (its settings, plus a connection of its own for the batches);
    ``aclose`` closes that connection and leaves the pool open."""

    def __init__(
        self, connection_pool: ConnectionPool, *, max_batch: int = MAX_BATCH, in_flight: int = 1
    ) -> None:
        super().__init__(connection_pool=connection_pool)
        self.commands = Batcher(self, transaction=False, max_batch=max_batch, in_flight=in_flight)

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await self.commands.aclose()
        await super().aclose(close_connection_pool)

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        [reply] = await self.commands.execute([(args, options)])
        if isinstance(reply, Exception):
            raise reply
        return reply
