"""Prometheus metrics, one registry per process (no import-time globals), after the Prometheus
naming conventions: counters end ``_total``, durations are ``_seconds`` histograms, no ``_created``
series (``disable_created_metrics``), and the process's and Python's own collectors."""

from __future__ import annotations

from datetime import datetime

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from redis.asyncio import Redis
from redis.exceptions import RedisError

from relay.models import to_ms
from relay.schema import Keys
from workers.arq_compat import SWEEP

HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
UNMATCHED = "unmatched"  # the route label of a request no route matched (bounded: never the path)
MAX_HTTP_CHILDREN = 4096
# arq enqueues a cron job when it is due (or a poll ahead): one still queued is within this of now.
CRON_WINDOW_MS = 120_000


class Metrics:
    def __init__(self) -> None:
        # Process-wide; a counter's start is process_start_time_seconds.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self._http_children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self.http_requests = Counter(
            "relay_http_requests_total",
            "HTTP requests answered, by route template, method and status code.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.http_seconds = Histogram(
            "relay_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template.",
            ["route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
            registry=self.registry,
        )
        self.callbacks = Counter(
            "relay_callbacks_total",
            "Gateway callbacks by gateway, result (what the order did: paid, unchanged, ...; refused "
            "for a callback answered with an error) and error (the error's name, empty when none).",
            ["gateway", "result", "error"],
            registry=self.registry,
        )
        self.events_created = Counter(
            "relay_events_created_total",
            "Merchant events created: a paid order's (every kind), a refund's, a subscription timer's.",
            registry=self.registry,
        )
        self.purchases_created = Counter(
            "relay_purchases_created_total",
            "Orders created through the API: item purchases, shop payments, subscriptions' first invoices.",
            registry=self.registry,
        )
        self.deliveries = Counter(
            "relay_deliveries_total",
            "Delivery attempts by outcome and HTTP status class.",
            ["outcome", "status_class"],
            registry=self.registry,
        )
        self.project_deliveries = Counter(
            "relay_project_deliveries_total",
            "Delivery attempts by project and outcome; only with RELAY_METRICS_PER_PROJECT.",
            ["project", "outcome"],
            registry=self.registry,
        )
        self.delivery_seconds = Histogram(
            "relay_delivery_duration_seconds",
            "Duration of one delivery attempt.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.replays = Counter(
            "relay_replays_total", "Events sent again by replay or retry-webhook.", registry=self.registry
        )
        self.postponed = Counter(
            "relay_deliveries_postponed_total",
            "Deliveries postponed because their endpoint had RELAY_WORKER_HOST_CONCURRENCY in flight.",
            registry=self.registry,
        )
        self.attempts_per_event = Histogram(
            "relay_attempts_per_event",
            "Attempts an event took to reach a final state (delivered or dead-lettered).",
            buckets=(1, 2, 3, 4, 5, 6, 8, 10, 15, 20),
            registry=self.registry,
        )
        self.oversold = Counter(
            "relay_purchases_oversold_total",
            "Purchases paid after they expired whose units had been sold again: honoured, and marked "
            "oversold on the purchase (its item's stock was short by its quantity).",
            registry=self.registry,
        )
        self.replica_waits = Counter(
            "relay_replica_waits_total",
            "Rounds that asked Redis replicas to confirm acknowledged writes (RELAY_REDIS_MIN_REPLICAS_ACK), "
            "by result: confirmed, timeout (fewer replicas within RELAY_REDIS_ACK_TIMEOUT: 503s), error "
            "(Redis could not be asked: 503s).",
            ["result"],
            registry=self.registry,
        )
        self.replica_wait_seconds = Histogram(
            "relay_replica_wait_duration_seconds",
            "Time one round took to have acknowledged writes confirmed by Redis replicas.",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=self.registry,
        )
        self.expired = Counter(
            "relay_purchases_expired_total",
            "Purchases that stayed pending for RELAY_PURCHASE_EXPIRY and expired.",
            registry=self.registry,
        )
        self.deleted = Counter(
            "relay_retention_deleted_total",
            "Records deleted by retention: finished orders (with their events and attempts), events "
            "about no one order (kind alert: the operator's alerts, subscriptions' timer events), and "
            "ended subscriptions.",
            ["kind"],
            registry=self.registry,
        )
        self.endpoints_disabled = Counter(
            "relay_endpoints_disabled_total",
            "Endpoints disabled after every delivery failed for RELAY_ENDPOINT_DISABLE_AFTER.",
            registry=self.registry,
        )
        self.alerts = Counter(
            "relay_operator_alerts_total",
            "Operator webhooks created (message.attempt.exhausted, endpoint.disabled).",
            registry=self.registry,
        )
        self.retained_orders = Gauge(
            "relay_retained_orders", "Orders (purchases) stored in Redis.", registry=self.registry
        )
        self.queue_depth = Gauge(
            "relay_queue_depth",
            "Delivery jobs waiting in the arq queue, due or deferred (not the sweeper's; running ones are "
            "in relay_jobs_running).",
            registry=self.registry,
        )
        self.jobs_running = Gauge(
            "relay_jobs_running",
            "Jobs claimed by a worker and not finished (their leases).",
            registry=self.registry,
        )
        self.outbox_size = Gauge(
            "relay_outbox_events", "Events waiting for a delivery attempt.", registry=self.registry
        )
        self.dead_letters = Gauge(
            "relay_dead_letters", "Events in the dead-letter queue.", registry=self.registry
        )
        self.oldest_pending_age = Gauge(
            "relay_oldest_pending_age_seconds",
            "How overdue the most overdue outbox event is (0 when none is due).",
            registry=self.registry,
        )

    def http_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """One answered request; ``route`` is its template (``/api/platform/projects/{project_id}``).
        Every request passes here, so each label set's children are kept (``labels()`` takes a lock
        and builds its key each time: a third of the cost)."""
        shown = method if method in HTTP_METHODS else "OTHER"
        key = (route, shown, status)
        children = self._http_children.get(key)
        if children is None:
            children = (self.http_requests.labels(route, shown, str(status)), self.http_seconds.labels(route))
            if len(self._http_children) < MAX_HTTP_CHILDREN:  # bounded: routes x methods x statuses
                self._http_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    async def render(self, redis: Redis, keys: Keys, *, now: datetime) -> bytes:
        """The exposition text, with the queue gauges read from Redis first (one round trip). With
        Redis away the gauges keep their last values: the counters are still worth scraping."""
        try:
            async with redis.pipeline(transaction=False) as pipe:
                pipe.zcard(keys.arq_queue)
                # The sweeper's own jobs ("sweep:<ms>", arq's cron) are due about now: look near now.
                now_ms = to_ms(now)
                pipe.zrangebyscore(keys.arq_queue, now_ms - CRON_WINDOW_MS, now_ms + CRON_WINDOW_MS, 0, 1000)
                pipe.zcard(keys.arq_leases(keys.arq_queue))
                pipe.zcard(keys.outbox)
                pipe.zcard(keys.dead_letters)
                pipe.zrange(keys.outbox, 0, 0, withscores=True)
                pipe.hget(keys.stats, "orders")
                queued, sweep, running, outbox, dead, oldest, orders = await pipe.execute()
        except (RedisError, OSError):
            return generate_latest(self.registry)
        sweeps = sum(1 for job in sweep if job.startswith(f"{SWEEP}:"))
        self.queue_depth.set(queued - sweeps)  # deliveries only, not the sweeper's own job
        self.jobs_running.set(running)
        self.outbox_size.set(outbox)
        self.dead_letters.set(dead)
        self.retained_orders.set(int(orders or 0))
        overdue = now.timestamp() - oldest[0][1] / 1000 if oldest else 0.0
        self.oldest_pending_age.set(max(0.0, overdue))
        return generate_latest(self.registry)
