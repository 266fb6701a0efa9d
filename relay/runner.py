"""Process lifetimes: ``relay serve``, ``relay worker`` and ``relay run`` (both in one process).

With ``relay.cli``, this is where the relay is put together: the settings become the connections,
the ingress (``relay.app.create_app``, which opens its own pools for its lifetime) and the worker
(``workers.worker.create_worker``, over connections opened here); both build their stores with
``relay.stores.make_stores``.
"""

from __future__ import annotations

import asyncio
import random
import signal
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any

import structlog
from aiohttp import web
from pydantic import SecretStr

from relay.api.context import SANDBOX_KEY
from relay.app import create_app
from relay.connections import embedded_server, open_connections
from relay.crypto import generate_key
from relay.errors import StoreUnavailable
from relay.metrics import Metrics
from relay.schema import Keys
from relay.settings import Settings
from workers.lifetime import start_metrics_server, stop_task, supervise_worker
from workers.worker import arq_settings, create_worker

log = structlog.get_logger("relay.runner")

# How long ingress waits for in-flight requests on shutdown.
SHUTDOWN_TIMEOUT = 20.0
KEEPALIVE_TIMEOUT = 30.0
# How long `relay run` waits for its worker to stop before cancelling it.
STOP_DEADLINE = 15.0


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


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


class Relay:
    """Ingress and/or a worker sharing one store, started and stopped together (``relay run``,
    ``relay demo`` and the tests). ``rng`` is the workers' jitter (tests fix it)."""

    def __init__(
        self, settings: Settings, *, server: Any = None, rng: Callable[[], float] = random.random
    ) -> None:
        if settings.embedded and not settings.fernet_keys:
            # The embedded store dies with the process, and so may its key.
            settings = settings.model_copy(update={"encryption_keys": SecretStr(generate_key())})
        self.settings = settings
        self.server = server if server is not None or not settings.embedded else embedded_server()
        self.rng = rng
        self.metrics = Metrics()  # ingress and worker in one process share one registry
        self.url = ""
        self.ingress: web.AppRunner | None = None
        self._stack = AsyncExitStack()

    async def start(self, *, host: str | None, port: int = 0, worker: bool = True) -> None:
        if host is not None:
            self.ingress, self.url = await start_ingress(
                self.settings, host=host, port=port, server=self.server, metrics=self.metrics
            )
            self._stack.push_async_callback(self.ingress.cleanup)
        if worker:
            connections = open_connections(self.settings, server=self.server)
            self._stack.push_async_callback(connections.close)
            stop = asyncio.Event()

            # Renewal invoices in sandbox mode link to this relay's own checkout.
            worker_settings = self.settings
            if self.url and worker_settings.public_base_url is None:
                worker_settings = worker_settings.model_copy(update={"public_base_url": self.url})

            def make_worker() -> Any:
                return create_worker(worker_settings, connections, metrics=self.metrics, rng=self.rng)

            # In one process with the ingress, a stop cancels the deliveries in flight at once
            # (their bookkeeping is shielded; the sweeper repairs the rest).
            task = asyncio.create_task(supervise_worker(make_worker, stop=stop, drain=0))

            async def stop_worker() -> None:
                stop.set()
                await asyncio.wait({task}, timeout=STOP_DEADLINE)
                await stop_task(task)  # returns at once when the worker stopped by itself

            self._stack.push_async_callback(stop_worker)

    async def stop(self) -> None:
        await self._stack.aclose()

    @property
    def sandbox_key(self) -> str | None:
        """The key the ingress's sandbox checkout signs with (sandbox mode only)."""
        key = self.ingress.app.get(SANDBOX_KEY) if self.ingress is not None else None
        try:
            return key() if key is not None else None
        except StoreUnavailable:  # not loaded: Redis was away when the ingress started
            return None


async def serve_forever(settings: Settings, *, host: str, port: int, worker: bool) -> None:
    """``relay serve`` (worker=False) and ``relay run`` (worker=True), until SIGINT or SIGTERM."""
    relay = Relay(settings)
    await relay.start(host=host, port=port, worker=worker)
    log.info(
        "listening", url=relay.url, worker=worker, embedded=settings.embedded, sandbox=settings.sandbox_mode
    )
    if settings.sandbox_mode:
        log.warning(
            "sandbox_gateway",
            detail="RELAY_MIDTRANS_SERVER_KEY is unset: purchases use the sandbox "
            "checkout and callbacks are verified with the sandbox key",
        )
    try:
        await stop_on_signals().wait()
    finally:
        await relay.stop()


async def run_worker(settings: Settings) -> None:
    """``relay worker``: on SIGINT or SIGTERM it stops taking jobs and lets the deliveries in flight
    finish (up to arq's ``job_completion_wait``), whatever state Redis is in."""
    stop = stop_on_signals()
    connections = open_connections(settings)
    metrics = Metrics()
    async with AsyncExitStack() as stack:
        stack.push_async_callback(connections.close)
        if settings.worker_metrics_port is not None:
            runner = await start_metrics_server(
                metrics,
                connections.redis,
                Keys(settings.key_prefix),
                host=settings.worker_metrics_host,
                port=settings.worker_metrics_port,
            )
            stack.push_async_callback(runner.cleanup)

        def make_worker() -> Any:
            return create_worker(settings, connections, metrics=metrics)

        await supervise_worker(make_worker, stop=stop, drain=arq_settings(settings)["job_completion_wait"])
