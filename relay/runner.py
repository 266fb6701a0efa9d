"""Process lifetimes: ``relay serve``, ``relay worker`` and ``relay run`` (both in one process)."""

from __future__ import annotations

import asyncio
import signal
from contextlib import AsyncExitStack
from typing import Any

import structlog
from aiohttp import web
from arq.worker import Worker
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import SecretStr
from redis.exceptions import RedisError

from relay.app import create_app
from relay.connections import REDIS_DOWN, Connections, embedded_server, open_connections
from relay.crypto import generate_key
from relay.metrics import Metrics
from relay.models import utcnow
from relay.settings import Settings
from relay.store import Keys
from workers.worker import create_worker, embedded_patch

log = structlog.get_logger("relay.runner")

# How long ingress waits for in-flight requests on shutdown.
SHUTDOWN_TIMEOUT = 20.0
KEEPALIVE_TIMEOUT = 30.0


async def start_ingress(
    settings: Settings, *, host: str, port: int, server: Any = None, metrics: Metrics | None = None
) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(
        create_app(settings, server=server, metrics=metrics),
        access_log=None,
        shutdown_timeout=SHUTDOWN_TIMEOUT,
        # Idle keep-alive connections are closed; request lines and headers are capped.
        keepalive_timeout=KEEPALIVE_TIMEOUT,
        max_line_size=8190,
        max_field_size=8190,
        max_headers=64,
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0]
    return runner, f"http://{bound[0]}:{bound[1]}"


async def start_metrics_server(
    settings: Settings, connections: Connections, metrics: Metrics, *, port: int
) -> web.AppRunner:
    """The worker's own /metrics (and /healthz), on RELAY_WORKER_METRICS_PORT."""
    keys = Keys(settings.key_prefix)

    async def scrape(request: web.Request) -> web.Response:
        body = await metrics.render(connections.redis, keys, now=utcnow())
        return web.Response(body=body, headers={"content-type": CONTENT_TYPE_LATEST})

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_get("/metrics", scrape)
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, settings.worker_metrics_host, port).start()
    except OSError as error:
        # Another worker on this host has the port: deliveries matter more than this endpoint.
        log.error("worker_metrics_unavailable", port=port, error=str(error))
    else:
        log.info("worker_metrics", address=runner.addresses[0])
    return runner


async def wait_for_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


# Seconds between attempts to restart a worker whose Redis went away.
RECONNECT_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0)


async def supervise_worker(settings: Settings, connections: Connections, **options: Any) -> None:
    """Run an arq worker until a signal or cancellation stops it. arq's poll loop raises when
    Redis goes away, and its worker is then gone for good; so wait and start a fresh worker on the
    same connections (redis-py reconnects), for as long as it takes: no limbo, no exit."""
    loop = asyncio.get_running_loop()
    failures = 0
    while True:
        arq_worker = create_worker(settings, connections, **options)
        started = loop.time()
        try:
            await arq_worker.async_run()
            return
        except asyncio.CancelledError:  # SIGTERM (arq cancels its main task) or our own stop
            return
        except REDIS_DOWN as error:
            if current_cancelling():  # a stop that reached us dressed as a Redis timeout
                return
            failures = 0 if loop.time() - started > 60 else failures
            delay = RECONNECT_DELAYS[min(failures, len(RECONNECT_DELAYS) - 1)]
            failures += 1
            log.error("worker_lost_redis", error=str(error)[:200], restart_in=delay)
        finally:
            await close_worker(arq_worker)
        await asyncio.sleep(delay)


def current_cancelling() -> int:
    task = asyncio.current_task()
    return task.cancelling() if task is not None else 0


async def stop_task(task: asyncio.Task[None], *, deadline: float = 30.0) -> None:
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
    if not task.cancelled() and task.exception() is not None:
        log.error("worker_failed", error=repr(task.exception()))


async def close_worker(arq_worker: Worker) -> None:
    """arq's close() waits for the jobs and talks to Redis before it runs on_shutdown. When it
    stops short of that (Redis away, or the stop cancelling it), run on_shutdown ourselves so the
    worker's HTTP session and Redis batches are closed all the same (it is safe to run twice);
    a cancellation then goes on."""
    try:
        await arq_worker.close()
    except (*REDIS_DOWN, RedisError, asyncio.CancelledError) as error:
        if arq_worker.on_shutdown is not None:
            await arq_worker.on_shutdown(arq_worker.ctx)
        if isinstance(error, asyncio.CancelledError):
            raise


class Relay:
    """Ingress and/or a worker sharing one store, started and stopped together (``relay run``,
    ``relay demo`` and the tests)."""

    def __init__(
        self, settings: Settings, *, server: Any = None, worker_options: dict[str, Any] | None = None
    ) -> None:
        if settings.embedded and not settings.fernet_keys:
            # The embedded store dies with the process, and so may its key.
            settings = settings.model_copy(update={"encryption_keys": SecretStr(generate_key())})
        self.settings = settings
        self.server = server if server is not None or not settings.embedded else embedded_server()
        self.worker_options = worker_options or {}
        self.metrics = Metrics()  # ingress and worker in one process share one registry
        self.url = ""
        self._stack = AsyncExitStack()

    async def start(self, *, host: str | None, port: int = 0, worker: bool = True) -> None:
        if host is not None:
            runner, self.url = await start_ingress(
                self.settings, host=host, port=port, server=self.server, metrics=self.metrics
            )
            self._stack.push_async_callback(runner.cleanup)
        if worker:
            connections = open_connections(self.settings, server=self.server)
            self._stack.push_async_callback(connections.close)
            self._stack.enter_context(embedded_patch(connections))
            options = {"handle_signals": False, "metrics": self.metrics} | self.worker_options
            task = asyncio.create_task(supervise_worker(self.settings, connections, **options))

            self._stack.push_async_callback(stop_task, task)

    async def stop(self) -> None:
        await self._stack.aclose()


async def serve_forever(settings: Settings, *, host: str, port: int, worker: bool) -> None:
    """``relay serve`` (worker=False) and ``relay run`` (worker=True), until SIGINT or SIGTERM."""
    relay = Relay(settings)
    await relay.start(host=host, port=port, worker=worker)
    log.info("listening", url=relay.url, worker=worker, embedded=settings.embedded, sandbox=settings.sandbox)
    if settings.sandbox:
        log.warning(
            "sandbox_gateway",
            detail="RELAY_MIDTRANS_SERVER_KEY is unset: purchases use the sandbox "
            "checkout and callbacks are verified with the sandbox key",
        )
    try:
        await wait_for_signal()
    finally:
        await relay.stop()


async def run_worker(settings: Settings) -> None:
    """``relay worker``: arq handles SIGINT/SIGTERM, letting in-flight deliveries finish first."""
    connections = open_connections(settings)
    metrics = Metrics()
    async with AsyncExitStack() as stack:
        stack.push_async_callback(connections.close)
        if settings.worker_metrics_port is not None:
            runner = await start_metrics_server(
                settings, connections, metrics, port=settings.worker_metrics_port
            )
            stack.push_async_callback(runner.cleanup)
        await supervise_worker(settings, connections, metrics=metrics)
