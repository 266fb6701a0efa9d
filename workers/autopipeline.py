"""A Redis client that pipelines concurrent commands automatically (ioredis calls it "auto
pipelining").

A worker runs up to ``max_jobs`` deliveries at once and each makes a few small Redis calls. Sent
alone, a command costs redis-py about 50 us of CPU (a pooled connection, a health check, one
write, one read); riding in a pipeline with others it costs about 9 us. ``AutoPipelineRedis`` is a
``redis.asyncio.Redis`` whose commands issued during one turn of the event loop go to Redis
together as one non-transactional pipeline. Every caller still awaits its own reply, parsed
exactly as a direct call parses it, or its own error; a command never waits for more than the
current loop turn, so at light load a batch holds one command and costs what a direct call costs.

Each command keeps its own atomicity (a Lua script is still one atomic step) and one caller's
commands stay in order (it awaits each reply before sending the next); commands of different
callers were independent before and are now. Not for WATCH, blocking commands or pub/sub, which
need a connection of their own: use ``pipeline()`` or the plain client for those.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import ConnectionPool, Redis

MAX_BATCH = 256
Pending = tuple[tuple[Any, ...], dict[str, Any], "asyncio.Future[Any]"]


class AutoPipelineRedis(Redis):
    """Shares ``connection_pool`` with the client it was made from; closing it leaves the pool open.

    One batch is in flight at a time: commands issued meanwhile wait for it and then go together,
    so batches grow with the load (and with the time the event loop takes to come back to them)
    with no timer; when nothing is in flight a command goes at the end of the current loop turn.
    """

    def __init__(self, connection_pool: ConnectionPool, *, max_batch: int = MAX_BATCH) -> None:
        super().__init__(connection_pool=connection_pool)
        self.max_batch = max_batch
        self._pending: list[Pending] = []
        self._sending: asyncio.Task[None] | None = None
        self._scheduled = False

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((args, options, future))
        self._schedule()
        return await future

    def _schedule(self) -> None:
        if not self._scheduled and self._sending is None:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        # A caller cancelled before its command left has it dropped, as if never called.
        pending = [entry for entry in self._pending if not entry[2].done()]
        batch, self._pending = pending[: self.max_batch], pending[self.max_batch :]
        if batch:
            self._sending = asyncio.create_task(self._send(batch))
            self._sending.add_done_callback(self._sent)

    def _sent(self, _: asyncio.Task[None]) -> None:
        self._sending = None
        if self._pending:
            self._schedule()

    async def _send(self, batch: list[Pending]) -> None:
        try:
            async with self.pipeline(transaction=False) as pipe:
                for args, options, _ in batch:
                    pipe.execute_command(*args, **options)
                replies = await pipe.execute(raise_on_error=False)
        except asyncio.CancelledError:
            for *_, future in batch:
                future.cancel()
            raise
        except Exception as error:  # the connection failed: every caller gets the error, raised
            for *_, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        for (*_, future), reply in zip(batch, replies, strict=True):
            if future.done():  # the caller was cancelled
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)
