"""The relay's arq worker: its settings, and the thin tasks that call ``workers.delivery``.

Choices (see README, "The worker"):

- ``job_timeout`` = delivery timeout + 15 s. arq marks a job in progress for job_timeout + 10 s;
  if the worker is SIGKILLed, that mark expires and another worker (or the restarted one) runs the
  job again: about 40 s with the default 15 s delivery timeout, not arq's default five minutes.
- ``poll_delay`` 0.05 s: an idle poll is one ZRANGEBYSCORE, and the default 0.5 s would add up to
  half a second of latency.
- ``max_jobs`` 100: deliveries wait on the network, not the CPU; 100 in flight per process.
- ``keep_result`` 0: results are never read, and a kept result would block the sweeper from
  re-enqueueing a lost job under the same id.
- ``max_tries`` 10: only crash recovery re-runs a job (the task never raises for a failed
  delivery); fencing by ``seq`` makes a re-run harmless.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import datetime
from typing import Any

import aiohttp
import structlog
from arq import cron
from arq.worker import func
from redis.exceptions import RedisError

from relay.autopipeline import AutoPipelineRedis
from relay.connections import Connections
from relay.errors import StoreUnavailable
from relay.metrics import Metrics
from relay.models import utcnow
from relay.replicas import Replicas
from relay.settings import Settings
from relay.stores import make_stores
from relay.subscriptions import Timers
from workers.arq_compat import DELIVER, SWEEP, BatchWorker
from workers.delivery import Deps, deliver, sweep
from workers.egress import create_session
from workers.renewals import make_invoicer

log = structlog.get_logger("relay.worker")

DEPS = "relay_deps"
RETENTION = "relay_retention"
TIMERS = "relay_subscription_timers"
GATEWAY_HTTP = "relay_gateway_http"
PIPELINED = "relay_pipelined_redis"
REPLICAS = "relay_replicas"
# Gateways' invoice APIs (Midtrans Snap) answer within this, or the renewal waits for the next sweep.
GATEWAY_TIMEOUT = aiohttp.ClientTimeout(total=20)


async def deliver_task(ctx: dict[str, Any], event_id: str, seq: int) -> str:
    try:
        return (await deliver(event_id, seq, deps=ctx[DEPS])).value
    except (RedisError, OSError, StoreUnavailable) as error:
        # The store failed mid-bookkeeping, or the replicas did not confirm the event: the outbox
        # still holds it, the sweeper retries it.
        log.warning("delivery_bookkeeping_failed", event_id=event_id, error=type(error).__name__)
        return "store_unavailable"


async def sweep_task(ctx: dict[str, Any]) -> int:
    """The timed work, every RELAY_SWEEP_INTERVAL: re-enqueue what lost its job, expire unpaid
    purchases and delete finished orders (relay.retention), and fire the subscriptions' timers
    (relay.subscriptions), each in bounded batches."""
    deps: Deps = ctx[DEPS]
    enqueued = 0
    try:
        enqueued = await sweep(deps)
    except (RedisError, OSError) as error:
        log.warning("sweep_failed", error=type(error).__name__)
    try:
        swept = await ctx[RETENTION].sweep(now=deps.clock())
    except (RedisError, OSError) as error:
        log.warning("retention_sweep_failed", error=type(error).__name__)
    else:
        deps.metrics.expired.inc(swept.expired)
        deps.metrics.deleted.labels("order").inc(swept.deleted_orders)
        deps.metrics.deleted.labels("alert").inc(swept.deleted_alerts)
        deps.metrics.deleted.labels("subscription").inc(swept.deleted_subscriptions)
    try:
        await ctx[TIMERS].sweep(now=deps.clock())
    except (RedisError, OSError) as error:
        log.warning("subscription_sweep_failed", error=type(error).__name__)
    return enqueued


def arq_settings(settings: Settings) -> dict[str, Any]:
    """arq's tuning of the relay's worker (the module docstring says why each)."""
    return {
        "max_jobs": settings.worker_max_jobs,
        "poll_delay": settings.worker_poll_delay,
        "job_timeout": settings.delivery_timeout + 15,
        "keep_result": 0,
        "max_tries": 10,
        "job_completion_wait": int(settings.delivery_timeout) + 5,
        "health_check_interval": 60,
    }


def create_worker(
    settings: Settings,
    connections: Connections,
    *,
    metrics: Metrics,
    clock: Callable[[], datetime] = utcnow,
    rng: Callable[[], float] = random.random,
    handle_signals: bool = False,
    burst: bool = False,
) -> BatchWorker:
    """A delivery worker over ``connections`` (borrowed: the caller closes them). ``clock`` and
    ``rng`` reach every delivery (tests fix them); ``handle_signals`` lets arq catch SIGINT and
    SIGTERM itself, which ``workers.lifetime`` does instead."""

    async def startup(ctx: dict[str, Any]) -> None:
        log.info(
            "worker_started",
            embedded=connections.embedded,
            max_jobs=settings.worker_max_jobs,
            poll_delay=settings.worker_poll_delay,
            retry_schedule=settings.retry_schedule,
        )
        http = create_session(
            allow_private=settings.allow_private_targets,
            max_connections=settings.worker_max_jobs,
            allowlist=settings.allowed_target_cidrs,
        )
        # Up to max_jobs deliveries make their small reads and writes at once: pipeline them.
        ctx[PIPELINED] = redis = AutoPipelineRedis(connections.redis.connection_pool)
        stores = make_stores(redis, settings)
        ctx[RETENTION] = stores.retention
        ctx[GATEWAY_HTTP] = gateway_http = aiohttp.ClientSession(timeout=GATEWAY_TIMEOUT, trust_env=False)
        invoicer = await make_invoicer(settings, connections.redis, gateway_http)
        ctx[TIMERS] = Timers(stores.subscriptions, arq=connections.arq, invoicer=invoicer, metrics=metrics)
        ctx[REPLICAS] = replicas = Replicas.configured(connections.redis, settings, metrics=metrics)
        ctx[DEPS] = Deps.over(
            stores,
            arq=connections.arq,
            http=http,
            settings=settings,
            metrics=metrics,
            clock=clock,
            rng=rng,
            replicas=replicas if settings.redis_min_replicas_ack else None,
        )

    async def shutdown(ctx: dict[str, Any]) -> None:
        deps: Deps | None = ctx.get(DEPS)
        if deps is not None:
            await deps.http.close()
        if GATEWAY_HTTP in ctx:
            await ctx[GATEWAY_HTTP].close()
        if PIPELINED in ctx:
            await ctx[PIPELINED].aclose()
        if REPLICAS in ctx:
            await ctx[REPLICAS].aclose()

    step = max(1, int(settings.sweep_interval))
    return BatchWorker(
        functions=[func(deliver_task, name=DELIVER)],
        cron_jobs=[cron(sweep_task, name=SWEEP, second=set(range(0, 60, step)), run_at_startup=True)],
        redis_pool=connections.arq,
        embedded=connections.embedded,
        on_startup=startup,
        on_shutdown=shutdown,
        handle_signals=handle_signals,
        burst=burst,
        **arq_settings(settings),
    )
