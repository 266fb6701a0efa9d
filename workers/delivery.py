"""One delivery attempt: ``deliver(event_id, seq, deps)``, callable without arq.

Every way an attempt can end becomes one of: delivered, next attempt scheduled, dead-lettered,
no endpoint, or stale (a newer job owns the event). A failure is recorded with its reason in the
attempt log: a secret no configured key decrypts dead-letters at once (``secret_undecryptable``),
anything unforeseen is retried on the schedule and then dead-lettered (``internal_error``), so no
event loops forever. Nothing here raises into arq except a store failure, which the task wrapper
logs and the sweeper repairs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from urllib.parse import urlsplit

import aiohttp
import structlog
from arq.connections import ArqRedis
from redis.exceptions import RedisError

from relay import alerts
from relay.endpoints import Endpoints
from relay.errors import PermanentDelivery, RetryableDelivery, SecretUndecryptable
from relay.events import Alert, EventStore
from relay.metrics import Metrics
from relay.models import Attempt, DeadReason, EventKind, EventRecord, WebhookStatus, response_excerpt
from relay.schema import Keys
from relay.settings import Settings
from relay.signing import webhook_headers
from relay.store import Store
from relay.stores import Stores
from workers.arq_compat import enqueue_delivery
from workers.backoff import next_delay, parse_retry_after
from workers.egress import MAX_RESPONSE_BYTES, BlockedTarget
from workers.isolation import HostLimiter, endpoint

log = structlog.get_logger("relay.delivery")

FINISHED = {WebhookStatus.DELIVERED, WebhookStatus.FAILED, WebhookStatus.NO_ENDPOINT}


class Outcome(StrEnum):
    DELIVERED = "delivered"
    RETRYING = "retrying"
    DEAD = "dead_lettered"
    NO_ENDPOINT = "no_endpoint"
    STALE = "stale"
    POSTPONED = "postponed"


@dataclass(frozen=True)
class Deps:
    """What a delivery needs; tests build one with a fake clock and a fixed jitter."""

    store: Store
    events: EventStore
    endpoints: Endpoints
    arq: ArqRedis
    http: aiohttp.ClientSession
    settings: Settings
    metrics: Metrics
    clock: Callable[[], datetime]
    rng: Callable[[], float]
    limiter: HostLimiter

    @classmethod
    def over(
        cls,
        stores: Stores,
        *,
        arq: ArqRedis,
        http: aiohttp.ClientSession,
        settings: Settings,
        metrics: Metrics,
        clock: Callable[[], datetime],
        rng: Callable[[], float],
    ) -> Deps:
        """A delivery's dependencies over ``stores``, its endpoint limits from ``settings``."""
        return cls(
            store=stores.store,
            events=stores.events,
            endpoints=stores.endpoints,
            arq=arq,
            http=http,
            settings=settings,
            metrics=metrics,
            clock=clock,
            rng=rng,
            limiter=HostLimiter(settings.worker_host_concurrency, stuck_slots=settings.stuck_slots),
        )


@dataclass(frozen=True)
class Answer:
    """A 2xx answer: its status and the first bytes of its body (``relay.models.response_excerpt``)."""

    status: int
    response: str | None


async def send(
    http: aiohttp.ClientSession,
    url: str,
    *,
    body: str,
    headers: dict[str, str],
    timeout_s: float,
    now: datetime,
) -> Answer:
    """POST once; the answer on 2xx, else RetryableDelivery or PermanentDelivery (with the first
    bytes of the answer's body when there was one). Only what arrives with the first read of the
    body is kept: an endpoint that trickles it out costs no extra wait."""
    try:
        async with http.post(
            url,
            data=body.encode(),
            headers=headers,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=timeout_s),
        ) as response:
            excerpt = response_excerpt(await response.content.read(MAX_RESPONSE_BYTES))
            status = response.status
            if 200 <= status < 300:
                return Answer(status, excerpt)
            if status == 410:
                raise PermanentDelivery(
                    "410 Gone: the endpoint asked to stop", status_code=status, response=excerpt
                )
            retry_after = parse_retry_after(response.headers.get("retry-after"), now=now)
            raise RetryableDelivery(
                f"HTTP {status}", status_code=status, retry_after=retry_after, response=excerpt
            )
    except aiohttp.ClientConnectorError as error:
        if isinstance(error.os_error, BlockedTarget):
            raise PermanentDelivery(f"refused target: {error.os_error.strerror}") from None
        raise RetryableDelivery(f"connection failed: {error.os_error.strerror or error.os_error}") from None
    except TimeoutError:
        raise RetryableDelivery(f"timed out after {timeout_s:g}s") from None
    except aiohttp.InvalidURL:
        raise PermanentDelivery("invalid webhook URL") from None
    except (aiohttp.ClientError, OSError) as error:
        raise RetryableDelivery(f"{type(error).__name__}: {str(error)[:200]}") from None


async def deliver(event_id: str, seq: int, *, deps: Deps) -> Outcome:
    events = deps.events
    event = await events.get(event_id)
    if event is None or event.seq != seq or event.state in FINISHED:
        return Outcome.STALE
    structlog.contextvars.bind_contextvars(event_id=event.id, order_id=event.order_id)
    try:
        return await _attempt(event, seq, deps)
    except SecretUndecryptable:
        return await _record(
            event,
            seq,
            deps,
            url=None,
            error="secret_undecryptable: no configured key decrypts the project's signing secret",
            permanent=True,
            reason=DeadReason.SECRET_UNDECRYPTABLE,
            now=deps.clock(),
        )
    except (RedisError, OSError):
        raise  # the store failed: the task logs it, the outbox keeps the event for the sweeper
    except Exception as error:  # the edge of a delivery: a bug must not loop forever through arq
        log.exception("delivery_failed", error=type(error).__name__)
        return await _record(
            event, seq, deps, url=None, error=f"internal_error: {type(error).__name__}", now=deps.clock()
        )
    finally:
        structlog.contextvars.unbind_contextvars("event_id", "order_id")


async def _attempt(event: EventRecord, seq: int, deps: Deps) -> Outcome:
    if event.kind is EventKind.OPERATOR:
        return await _attempt_alert(event, seq, deps)
    target = await deps.store.delivery_target(event)
    project, url = target.project, target.url
    now = deps.clock()
    if project is None or url is None:
        return await _no_endpoint(event, seq, deps, now=now)
    if Keys.endpoint_digest(url) in target.disabled:
        return await _record(
            event,
            seq,
            deps,
            url=url,
            error="endpoint_disabled: every delivery to this endpoint failed for too long; enable it again",
            permanent=True,
            reason=DeadReason.ENDPOINT_DISABLED,
            track=False,
            now=now,
        )
    return await _send_in_turn(event, seq, deps, url=url, secrets_=project.signing_secrets(now))


async def _attempt_alert(event: EventRecord, seq: int, deps: Deps) -> Outcome:
    """An operator's alert (relay.alerts): to RELAY_OPERATOR_WEBHOOK_URL with its secret."""
    settings = deps.settings
    if settings.operator_webhook_url is None or settings.operator_webhook_secret is None:
        return await _no_endpoint(event, seq, deps, now=deps.clock())
    secret = settings.operator_webhook_secret.get_secret_value()
    return await _send_in_turn(event, seq, deps, url=settings.operator_webhook_url, secrets_=[secret])


async def _no_endpoint(event: EventRecord, seq: int, deps: Deps, *, now: datetime) -> Outcome:
    finished = await deps.events.finish_attempt(
        event, seq=seq, attempt=None, state=WebhookStatus.NO_ENDPOINT, now=now
    )
    log.info("delivery", outcome=Outcome.NO_ENDPOINT.value)
    return Outcome.NO_ENDPOINT if finished else Outcome.STALE


async def _send_in_turn(
    event: EventRecord,
    seq: int,
    deps: Deps,
    *,
    url: str,
    secrets_: list[str],
) -> Outcome:
    """Send once the endpoint has a free slot (else postpone), signed with ``secrets_``."""
    host = endpoint(url)
    slot = await deps.limiter.acquire(host)
    if slot is None:
        return await _postpone(event, seq, deps, host=host, now=deps.clock())
    try:
        now = deps.clock()  # it may have waited for the slot
        return await _send_and_record(event, seq, deps, url=url, secrets_=secrets_, now=now)
    finally:
        deps.limiter.release(host, slot)


async def _postpone(event: EventRecord, seq: int, deps: Deps, *, host: str, now: datetime) -> Outcome:
    """The endpoint is saturated (a slow or hanging merchant): try again a little later, without
    spending an attempt, instead of holding a worker slot behind it."""
    delay = max(1.0, deps.settings.delivery_timeout / 3) * (0.8 + 0.4 * deps.rng())
    until = now + timedelta(seconds=delay)
    deps.metrics.postponed.inc()
    log.info("delivery_postponed", host=urlsplit(host).hostname, until=until.isoformat())
    if not await deps.events.postpone(event, seq=seq, until=until):
        return Outcome.STALE
    await enqueue_delivery(deps.arq, event.id, seq + 1, at=until)
    return Outcome.POSTPONED


async def _send_and_record(
    event: EventRecord,
    seq: int,
    deps: Deps,
    *,
    url: str,
    secrets_: list[str],
    now: datetime,
) -> Outcome:
    headers = webhook_headers(secrets_, msg_id=event.id, timestamp=now, body=event.body)
    started = time.perf_counter()
    status_code: int | None = None
    error: str | None = None
    response: str | None = None
    retry_after: float | None = None
    permanent = False
    try:
        answer = await send(
            deps.http,
            url,
            body=event.body,
            headers=headers,
            timeout_s=deps.settings.delivery_timeout,
            now=now,
        )
        status_code, response = answer.status, answer.response
    except RetryableDelivery as failure:
        status_code, error, retry_after = failure.status_code, failure.reason, failure.retry_after
        response = failure.response
    except PermanentDelivery as failure:
        status_code, error, permanent, response = failure.status_code, failure.reason, True, failure.response
    duration = time.perf_counter() - started
    return await _record(
        event,
        seq,
        deps,
        url=url,
        status_code=status_code,
        error=error,
        response=response,
        permanent=permanent,
        retry_after=retry_after,
        duration=duration,
        now=now,
    )


async def _record(
    event: EventRecord,
    seq: int,
    deps: Deps,
    *,
    url: str | None,
    error: str | None,
    now: datetime,
    status_code: int | None = None,
    response: str | None = None,
    permanent: bool = False,
    retry_after: float | None = None,
    duration: float = 0.0,
    reason: DeadReason | None = None,
    track: bool = True,
) -> Outcome:
    """Log the attempt and move the event on: delivered, the next attempt, or the dead-letter
    queue when the schedule is spent or the failure is permanent. ``track``: the attempt counts
    for the health of its endpoint (it was sent to a merchant's endpoint)."""
    next_at = None
    if error is None:
        state, outcome = WebhookStatus.DELIVERED, Outcome.DELIVERED
    else:
        delay = None
        if not permanent:
            schedule = deps.settings.retry_schedule
            delay = next_delay(schedule, event.attempts + 1, rng=deps.rng, retry_after=retry_after)
        if delay is None:
            state, outcome = WebhookStatus.FAILED, Outcome.DEAD
            reason = reason or (DeadReason.PERMANENT if permanent else DeadReason.EXHAUSTED)
        else:
            state, outcome = WebhookStatus.RETRYING, Outcome.RETRYING
            next_at = now + timedelta(seconds=delay)
    attempt = Attempt(
        at=now,
        url=url,
        status_code=status_code,
        error=error,
        duration_ms=round(duration * 1000),
        next_attempt_at=next_at,
        response=response,
    )
    track = track and url is not None and event.kind is EventKind.MERCHANT
    exhausted, disabled = await _alerts(
        event,
        deps,
        state=state,
        reason=reason,
        url=url,
        error=error,
        status_code=status_code,
        track=track,
        now=now,
    )
    finished = await deps.events.finish_attempt(
        event,
        seq=seq,
        attempt=attempt,
        state=state,
        now=now,
        reason=reason,
        endpoint=url if track else None,
        alert=exhausted,
        disabled_alert=disabled,
    )
    status_class = f"{status_code // 100}xx" if status_code else "none"
    deps.metrics.deliveries.labels(outcome.value, status_class).inc()
    if deps.settings.metrics_per_project:
        deps.metrics.project_deliveries.labels(event.project_id, outcome.value).inc()
    if outcome in (Outcome.DELIVERED, Outcome.DEAD):
        deps.metrics.attempts_per_event.observe(event.attempts + 1)
    deps.metrics.delivery_seconds.observe(duration)
    log.info(
        "delivery",
        outcome=outcome.value,
        host=urlsplit(url).hostname if url else None,
        status_code=status_code,
        error=error,
        attempt=event.attempts + 1,
        duration_ms=attempt.duration_ms,
        next_attempt_at=attempt.model_dump(mode="json")["next_attempt_at"],
    )
    if not finished:
        return Outcome.STALE
    if finished.disabled_since is not None:
        deps.metrics.endpoints_disabled.inc()
        log.warning(
            "endpoint_disabled", host=urlsplit(url or "").hostname, failing_since=finished.disabled_since
        )
    if next_at is not None:
        await enqueue_delivery(deps.arq, event.id, seq + 1, at=next_at)
    created = [exhausted if state is WebhookStatus.FAILED else None]
    created.append(disabled if finished.disabled_since is not None else None)
    for alert in created:
        if alert is not None:  # the sweeper sends it if this is lost
            deps.metrics.alerts.inc()
            await enqueue_delivery(deps.arq, alert.event_id, 0)
    return outcome


async def _alerts(
    event: EventRecord,
    deps: Deps,
    *,
    state: WebhookStatus,
    reason: DeadReason | None,
    url: str | None,
    error: str | None,
    status_code: int | None,
    track: bool,
    now: datetime,
) -> tuple[Alert | None, Alert | None]:
    """The operator's alerts this attempt may raise, when the relay has an operator webhook: the
    event's exhaustion when it is dead-lettered (not for a disabled endpoint: endpoint.disabled
    said it once), and the endpoint's disabling, used if the finish step disables it."""
    if deps.settings.operator_webhook_url is None or event.kind is EventKind.OPERATOR:
        return None, None
    exhausted = None
    if state is WebhookStatus.FAILED and reason is not DeadReason.ENDPOINT_DISABLED:
        exhausted = alerts.attempt_exhausted(
            event, reason=str(reason), url=url, error=error, status_code=status_code, now=now
        )
    disabled = None
    if track and error is not None and url is not None:
        failing_since = await deps.endpoints.failing_since(event.project_id, url)
        disabled = alerts.endpoint_disabled(
            event.project_id, url=url, failing_since=failing_since, error=error, now=now
        )
    return exhausted, disabled


async def sweep(deps: Deps, *, limit: int = 1000) -> int:
    """Enqueue the job for every due outbox entry that has none (lost job, crash between write and
    enqueue, Redis failover). Idempotent: arq refuses a job id that is queued or running."""
    enqueued = 0
    now = deps.clock()
    for event_id, _ in await deps.events.due(until=now, limit=limit):
        event = await deps.events.get(event_id)
        if event is None or event.state in FINISHED:
            continue
        # Read after the scan: if an attempt was scheduled meanwhile, keep its backoff.
        later = event.next_attempt_at if event.next_attempt_at and event.next_attempt_at > now else None
        if await enqueue_delivery(deps.arq, event_id, event.seq, at=later):
            enqueued += 1
    if enqueued:
        log.warning("sweeper_enqueued", count=enqueued)
    return enqueued
