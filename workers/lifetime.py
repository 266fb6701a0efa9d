"""How a worker lives: supervised through Redis outages, stopped on request, and its /metrics.

arq's poll loop raises when Redis goes away, and its worker is then gone for good; arq's own signal
handlers belong to that dead worker. So the supervisor, not arq, owns the stop: it runs a worker,
starts a fresh one on the same connections (redis-py reconnects) after a backoff when Redis went
away, and when ``stop`` is set, at any moment (a worker running, starting, or a backoff between
two), it lets the deliveries in flight finish for up to ``drain`` seconds and returns.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import suppress

import structlog
from aiohttp import web
from arq.worker import Worker
from prometheus_client import CONTENT_TYPE_LATEST
from redis.asyncio import Redis
from redis.exceptions import RedisError

from relay.errors import REDIS_DOWN
from relay.metrics import Metrics
from relay.models import utcnow
from relay.schema import Keys

log = structlog.get_logger("relay.worker")

# Seconds between attempts to start a worker whose Redis went away.
RECONNECT_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0)
# How long closing a worker may take (it talks to Redis, which may not answer).
CLOSE_DEADLINE = 10.0


async def supervise_worker(make_worker: Callable[[], Worker], *, stop: asyncio.Event, drain: float) -> None:
    """Run workers made by ``make_worker`` until ``stop`` is set (or a burst worker ends)."""
    loop = asyncio.get_running_loop()
    failures = 0
    while not stop.is_set():
        worker, delay = make_worker(), 0.0
        started = loop.time()
        run = asyncio.ensure_future(worker.async_run())
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({run, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not run.done():
                await _drain(worker, run, drain)
                return
            error = None if run.cancelled() else run.exception()
            if error is None:
                return
            if not isinstance(error, REDIS_DOWN):
                raise error
            failures = 0 if loop.time() - started > 60 else failures
            delay = RECONNECT_DELAYS[min(failures, len(RECONNECT_DELAYS) - 1)]
            failures += 1
            log.error("worker_lost_redis", error=str(error)[:200], restart_in=delay)
        finally:
            stopping.cancel()
            if not run.done():  # we were cancelled ourselves
                await stop_task(run)
            with suppress(TimeoutError):
                async with asyncio.timeout(CLOSE_DEADLINE):
                    await close_worker(worker)
        with suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)


async def _drain(worker: Worker, run: asyncio.Future[None], drain: float) -> None:
    """Stop taking jobs, let the ones in flight finish for up to ``drain`` seconds, stop the poll
    loop. What is still running then is cancelled by ``close_worker`` (its bookkeeping is shielded;
    the sweeper repairs anything left half done)."""
    worker.allow_pick_jobs = False
    running = [task for task in worker.tasks.values() if not task.done()]
    log.info("worker_stopping", in_flight=len(running), drain=drain)
    if running and drain > 0:
        await asyncio.wait(running, timeout=drain)
    await stop_task(run)


async def stop_task(task: asyncio.Future[None], *, deadline: float = 30.0) -> None:
    """Cancel ``task`` and wait for it, cancelling again while it runs: a cancellation can be
    swallowed deep in a library (a timeout racing it), and one swallowed cancel must not hang the
    shutdown. Gives up loudly after ``deadline`` seconds."""
    loop = asyncio.get_running_loop()
    until = loop.time() + deadline
    while not task.done():
        if loop.time() > until:
            log.error("worker_stop_timeout", deadline=deadline)
            return
        task.cancel()
        await asyncio.wait({task}, timeout=5.0)
    if not task.cancelled() and task.exception() is not None and not isinstance(task.exception(), REDIS_DOWN):
        log.error("worker_failed", error=repr(task.exception()))


async def close_worker(worker: Worker) -> None:
    """arq's close() waits for the jobs and talks to Redis before it runs on_shutdown. When it
    stops short of that (Redis away, or the stop cancelling it), run on_shutdown ourselves so the
    worker's HTTP session and Redis batches are closed all the same (it is safe to run twice);
    a cancellation then goes on."""
    try:
        await worker.close()
    except (*REDIS_DOWN, RedisError, asyncio.CancelledError) as error:
        if worker.on_shutdown is not None:
            await worker.on_shutdown(worker.ctx)
        if isinstance(error, asyncio.CancelledError):
            raise


async def start_metrics_server(
    metrics: Metrics, redis: Redis, keys: Keys, *, host: str, port: int
) -> web.AppRunner:
    """The worker's own /metrics (and /healthz), on RELAY_WORKER_METRICS_PORT. A port that is
    taken is logged, not fatal: deliveries matter more than this endpoint."""

    async def scrape(request: web.Request) -> web.Response:
        body = await metrics.render(redis, keys, now=utcnow())
        return web.Response(body=body, headers={"content-type": CONTENT_TYPE_LATEST})

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_get("/metrics", scrape)
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as error:
        log.error("worker_metrics_unavailable", port=port, error=str(error))
    else:
        log.info("worker_metrics", address=runner.addresses[0])
    return runner
