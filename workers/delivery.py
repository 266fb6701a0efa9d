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
from relay.errors import (
    DeliveryError,
    PermanentDelivery,
    RetryableDelivery,
    SecretUndecryptable,
    StoreUnavailable,
)
from relay.events import Alert, EventStore
from relay.metrics import Metrics
from relay.models import (
    Attempt,
    DeadReason,
    ErrorClass,
    EventKind,
    EventRecord,
    WebhookStatus,
    response_excerpt,
    response_headers,
)
from relay.replicas import Replicas
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
    # Confirms an event is on RELAY_REDIS_MIN_REPLICAS_ACK replicas before it is sent (None: none).
    replicas: Replicas | None = None

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
        replicas: Replicas | None = None,
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
            replicas=replicas,
        )


@dataclass(frozen=True)
class Answer:
    """A 2xx answer: its status, the first bytes of its body and its first headers
    (``relay.models.response_excerpt``, ``response_headers``)."""

    status: int
    response: str | None
    headers: dict[str, str]


# The Standard Webhooks convention for "stop retrying this message" (not the endpoint: 410 is that).
ABORT_HEADER = "webhook-delivery"
ABORT_VALUE = "abort-message"


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
    bytes and headers of the answer when there was one). Only what arrives with the first read of
    the body is kept: an endpoint that trickles it out costs no extra wait."""
    try:
        async with http.post(
            url,
            data=body.encode(),
            headers=headers,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=timeout_s),
        ) as response:
            excerpt = response_excerpt(await response.content.read(MAX_RESPONSE_BYTES))
            status, kept = response.status, response_headers(response.headers.items())
            if 200 <= status < 300:
                return Answer(status, excerpt, kept)
            aborted = response.headers.get(ABORT_HEADER, "").strip().lower() == ABORT_VALUE
            if aborted or status == 410:  # the endpoint asks to stop: this message, or all (410)
                raise PermanentDelivery(
                    f"HTTP {status}, {ABORT_HEADER}: {ABORT_VALUE}: the endpoint asked to stop this message"
                    if aborted
                    else "410 Gone: the endpoint asked to stop",
                    error_class=ErrorClass.ABORTED if aborted else ErrorClass.GONE,
                    status_code=status,
                    response=excerpt,
                    headers=kept,
                )
            retry_after = parse_retry_after(response.headers.get("retry-after"), now=now)
            raise RetryableDelivery(
                f"HTTP {status}",
                error_class=ErrorClass.HTTP_STATUS,
                retry_after=retry_after,
                status_code=status,
                response=excerpt,
                headers=kept,
            )
    except aiohttp.ClientConnectorError as error:
        if isinstance(error.os_error, BlockedTarget):
            raise PermanentDelivery(
                f"refused target: {error.os_error.strerror}", error_class=ErrorClass.REFUSED_TARGET
            ) from None
        raise RetryableDelivery(
            f"connection failed: {error.os_error.strerror or error.os_error}",
            error_class=ErrorClass.CONNECTION,
        ) from None
    except TimeoutError:
        raise RetryableDelivery(f"timed out after {timeout_s:g}s", error_class=ErrorClass.TIMEOUT) from None
    except aiohttp.InvalidURL:
        raise PermanentDelivery("invalid webhook URL", error_class=ErrorClass.INVALID_URL) from None
    except (aiohttp.ClientError, OSError) as error:
        raise RetryableDelivery(
            f"{type(error).__name__}: {str(error)[:200]}", error_class=ErrorClass.TRANSPORT
        ) from None


async def deliver(event_id: str, seq: int, *, deps: Deps) -> Outcome:
    events = deps.events
    event = await events.get(event_id)
    if event is None or event.seq != seq or event.state in FINISHED:
        return Outcome.STALE
    structlog.contextvars.bind_contextvars(event_id=event.id, order_id=event.order_id)
    try:
        if deps.replicas is not None:
            # Never send an event a failover could take back: its callback was answered 503 if the
            # replicas did not confirm it, and the gateway's resend makes an event of another id.
            await deps.replicas.confirm()
        return await _attempt(event, seq, deps)
    except SecretUndecryptable:
        return await _record(
            event,
            seq,
            deps,
            url=None,
            error="secret_undecryptable: no configured key decrypts the project's signing secret",
            error_class=ErrorClass.SECRET_UNDECRYPTABLE,
            permanent=True,
            reason=DeadReason.SECRET_UNDECRYPTABLE,
            now=deps.clock(),
        )
    except (RedisError, OSError, StoreUnavailable):
        raise  # the store failed: the task logs it, the outbox keeps the event for the sweeper
    except Exception as error:  # the edge of a delivery: a bug must not loop forever through arq
        log.exception("delivery_failed", error=type(error).__name__)
        return await _record(
            event,
            seq,
            deps,
            url=None,
            error=f"internal_error: {type(error).__name__}",
            error_class=ErrorClass.INTERNAL,
            now=deps.clock(),
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
    failure: DeliveryError | None = None
    answer: Answer | None = None
    try:
        answer = await send(
            deps.http,
            url,
            body=event.body,
            headers=headers,
            timeout_s=deps.settings.delivery_timeout,
            now=now,
        )
    except DeliveryError as failed:
        failure = failed
    duration = time.perf_counter() - started
    if answer is not None:
        return await _record(
            event,
            seq,
            deps,
            url=url,
            error=None,
            status_code=answer.status,
            answer=(answer.response, answer.headers),
            duration=duration,
            now=now,
        )
    assert failure is not None
    return await _record(
        event,
        seq,
        deps,
        url=url,
        status_code=failure.status_code,
        error=failure.reason,
        error_class=ErrorClass(failure.error_class),
        answer=(failure.response, failure.headers) if failure.headers is not None else None,
        permanent=isinstance(failure, PermanentDelivery),
        retry_after=failure.retry_after if isinstance(failure, RetryableDelivery) else None,
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
    error_class: ErrorClass | None = None,
    answer: tuple[str | None, dict[str, str] | None] | None = None,
    permanent: bool = False,
    retry_after: float | None = None,
    duration: float = 0.0,
    reason: DeadReason | None = None,
    track: bool = True,
) -> Outcome:
    """Log the attempt and move the event on: delivered, the next attempt, or the dead-letter
    queue when the schedule is spent or the failure is permanent. ``answer``: the first bytes and
    headers of the endpoint's answer, when it answered. ``track``: the attempt counts for the
    health of its endpoint (it was sent to a merchant's endpoint)."""
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
        response=answer[0] if answer else None,
        response_headers=answer[1] if answer else None,
        error_class=error_class if error is not None else None,
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
