"""``workers.delivery.deliver`` and ``sweep`` called directly, with a fake clock and no jitter
(``rng`` 0.5): every way an attempt ends, with exact times, on a real Redis and a merchant on
loopback. No arq worker runs: the jobs an attempt enqueues are read from arq's queue."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from arq.connections import ArqRedis
from arq.constants import default_queue_name, job_key_prefix
from arq.jobs import deserialize_job
from pydantic import SecretStr
from redis.asyncio import Redis

from relay.crypto import generate_key
from relay.models import (
    RESPONSE_EXCERPT_BYTES,
    Attempt,
    DeadReason,
    EventRecord,
    WebhookStatus,
    response_headers,
    to_ms,
)
from relay.stores import make_stores
from tests.helpers import (
    HOOK,
    T0,
    FakeClock,
    Merchant,
    delivery_deps,
    make_settings,
    paid_delivery,
    put_shop,
    reread,
    verify,
)
from workers.delivery import Deps, Outcome, deliver, sweep

SCHEDULE = (10.0, 20.0)  # three attempts in all


@pytest.fixture
def clock() -> FakeClock:
    # Near the wall clock, as standardwebhooks rejects a timestamp five minutes off it, but not on
    # it, so a webhook's timestamp tells which clock stamped it. Whole seconds: times are stored
    # to the millisecond.
    return FakeClock(datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=2))


@pytest.fixture
async def deps(redis: Redis, redis_url: str, clock: FakeClock) -> AsyncIterator[Deps]:
    settings = make_settings(redis_url=redis_url, retry_schedule=SCHEDULE)
    async with delivery_deps(redis, settings, clock) as found:
        yield found


@pytest.fixture
async def event(deps: Deps, merchant: Merchant) -> EventRecord:
    """A paid event of a shop whose webhook URL is the merchant's ``HOOK``."""
    await put_shop(deps, f"{merchant.url}{HOOK}")
    return await paid_delivery(deps)


async def test_a_2xx_delivers_a_webhook_signed_and_stamped_with_the_clock(
    deps: Deps, clock: FakeClock, merchant: Merchant
) -> None:
    project = await put_shop(deps, f"{merchant.url}{HOOK}")
    event = await paid_delivery(deps)
    clock.advance(3)
    assert await deliver(event.id, 0, deps=deps) is Outcome.DELIVERED

    [hit] = merchant.hits(HOOK)
    assert verify(hit, project.webhook_secret) == json.loads(event.body)
    headers = {name.lower(): value for name, value in hit.headers.items()}
    assert headers["webhook-id"] == event.id
    assert headers["webhook-timestamp"] == str(int(clock().timestamp()))
    [attempt] = (await deps.events.attempts([event.id]))[event.id]
    assert (attempt.at, attempt.url, attempt.status_code, attempt.error, attempt.next_attempt_at) == (
        clock(),
        f"{merchant.url}{HOOK}",
        200,
        None,
        None,
    )
    delivered = await reread(deps, event)
    assert (delivered.state, delivered.seq, delivered.attempts) == (WebhookStatus.DELIVERED, 0, 1)
    assert await deps.events.outbox_size() == 0


async def test_a_500_schedules_the_next_attempt_exactly_one_step_later(
    deps: Deps, clock: FakeClock, merchant: Merchant, event: EventRecord, redis: Redis
) -> None:
    merchant.script[HOOK] = [500]
    assert await deliver(event.id, 0, deps=deps) is Outcome.RETRYING

    due = clock() + timedelta(seconds=SCHEDULE[0])
    retrying = await reread(deps, event)
    assert (retrying.state, retrying.seq, retrying.attempts) == (WebhookStatus.RETRYING, 1, 1)
    assert retrying.next_attempt_at == due
    [attempt] = (await deps.events.attempts([event.id]))[event.id]
    assert (attempt.status_code, attempt.error, attempt.next_attempt_at) == (500, "HTTP 500", due)
    assert await redis.zscore(deps.events.keys.outbox, event.id) == to_ms(due)
    job_id = f"{event.id}:1"
    assert await redis.zscore(default_queue_name, job_id) == to_ms(due)
    assert deserialize_job(await deps.arq.get(job_key_prefix + job_id)).args == (event.id, 1)


async def test_an_attempt_keeps_the_first_bytes_of_the_answer_cut_visibly(
    deps: Deps, merchant: Merchant, event: EventRecord
) -> None:
    answer = "é" * 2100  # 4,200 bytes of two-byte characters: the cut falls inside one

    async def long_error(request: web.Request) -> web.Response:
        return web.Response(status=503, text=answer)

    merchant.script[HOOK] = [long_error]
    assert await deliver(event.id, 0, deps=deps) is Outcome.RETRYING
    [attempt] = (await deps.events.attempts([event.id]))[event.id]
    assert attempt.response == "é" * (RESPONSE_EXCERPT_BYTES // 2) + "…"


async def test_after_the_schedule_is_spent_the_event_is_dead_lettered(
    deps: Deps, clock: FakeClock, merchant: Merchant, event: EventRecord, redis: Redis
) -> None:
    merchant.script[HOOK] = [500]
    start = clock()
    assert await deliver(event.id, 0, deps=deps) is Outcome.RETRYING
    clock.advance(SCHEDULE[0])
    assert await deliver(event.id, 1, deps=deps) is Outcome.RETRYING
    clock.advance(SCHEDULE[1])
    assert await deliver(event.id, 2, deps=deps) is Outcome.DEAD

    attempts = (await deps.events.attempts([event.id]))[event.id]
    assert [attempt.at for attempt in attempts] == [start, start + timedelta(seconds=10), clock()]
    assert [attempt.next_attempt_at for attempt in attempts] == [
        start + timedelta(seconds=10),
        start + timedelta(seconds=30),
        None,
    ]
    dead = await reread(deps, event)
    assert (dead.state, dead.seq, dead.attempts, dead.dead_at) == (WebhookStatus.FAILED, 2, 3, clock())
    await assert_dead_lettered(deps, redis, event, at=clock())
    assert await redis.zscore(default_queue_name, f"{event.id}:3") is None


async def test_a_410_dead_letters_at_once(
    deps: Deps, clock: FakeClock, merchant: Merchant, event: EventRecord, redis: Redis
) -> None:
    merchant.script[HOOK] = [410]
    assert await deliver(event.id, 0, deps=deps) is Outcome.DEAD

    [attempt] = (await deps.events.attempts([event.id]))[event.id]
    assert (attempt.status_code, attempt.next_attempt_at) == (410, None)
    dead = await reread(deps, event)
    assert (dead.state, dead.attempts, dead.dead_at) == (WebhookStatus.FAILED, 1, clock())
    await assert_dead_lettered(deps, redis, event, at=clock())
    assert await redis.zscore(default_queue_name, f"{event.id}:1") is None


async def test_abort_message_dead_letters_this_message_at_once(
    deps: Deps, clock: FakeClock, merchant: Merchant, event: EventRecord, redis: Redis
) -> None:
    """``webhook-delivery: abort-message`` on a failing answer: the endpoint asks to stop this one
    message (410 stops every message; a plain failure is retried)."""
    merchant.script[HOOK] = [(422, {"Webhook-Delivery": "Abort-Message", "X-Reason": "order unknown here"})]
    assert await deliver(event.id, 0, deps=deps) is Outcome.DEAD

    [attempt] = (await deps.events.attempts([event.id]))[event.id]
    assert (attempt.status_code, attempt.error_class, attempt.next_attempt_at) == (422, "aborted", None)
    assert attempt.error is not None
    assert "abort-message" in attempt.error
    assert attempt.response_headers is not None
    assert attempt.response_headers["x-reason"] == "order unknown here"
    dead = await reread(deps, event)
    assert (dead.state, dead.dead_reason) == (WebhookStatus.FAILED, DeadReason.PERMANENT)
    await assert_dead_lettered(deps, redis, event, at=clock())


async def test_each_failure_says_its_class(deps: Deps) -> None:
    """A refused connection: no answer, so no status, body or headers; its class says why."""
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now
    await put_shop(deps, f"http://127.0.0.1:{port}/hook")
    event = await paid_delivery(deps, "order-closed")
    assert await deliver(event.id, 0, deps=deps) is Outcome.RETRYING
    [attempt] = (await deps.events.attempts([event.id]))[event.id]
    assert (attempt.status_code, attempt.error_class, attempt.response, attempt.response_headers) == (
        None,
        "connection",
        None,
        None,
    )


async def assert_dead_lettered(deps: Deps, redis: Redis, event: EventRecord, *, at: datetime) -> None:
    keys = deps.events.keys
    assert await redis.zscore(keys.dead_letters, event.id) == to_ms(at)
    assert await redis.zscore(keys.project_dead_letters(event.project_id), event.id) == to_ms(at)
    assert await redis.zscore(keys.outbox, event.id) is None


@pytest.mark.parametrize(
    ("retry_after", "delay"),
    [
        ("15", 15),  # longer than the step: honoured
        ("3600", 20),  # longer than twice the step: clamped to twice
        ("5", 10),  # shorter than the step: the step
    ],
)
async def test_retry_after_is_honoured_up_to_twice_the_step(
    deps: Deps,
    clock: FakeClock,
    merchant: Merchant,
    event: EventRecord,
    redis: Redis,
    retry_after: str,
    delay: int,
) -> None:
    merchant.script[HOOK] = [(503, {"Retry-After": retry_after})]
    assert await deliver(event.id, 0, deps=deps) is Outcome.RETRYING

    due = clock() + timedelta(seconds=delay)
    assert (await reread(deps, event)).next_attempt_at == due
    assert await redis.zscore(default_queue_name, f"{event.id}:1") == to_ms(due)


async def test_no_webhook_url_is_no_endpoint(deps: Deps, merchant: Merchant, redis: Redis) -> None:
    await put_shop(deps, None)
    event = await paid_delivery(deps)
    assert await deliver(event.id, 0, deps=deps) is Outcome.NO_ENDPOINT

    finished = await reread(deps, event)
    assert (finished.state, finished.attempts) == (WebhookStatus.NO_ENDPOINT, 0)
    assert (await deps.events.attempts([event.id]))[event.id] == []
    assert await redis.zscore(deps.events.keys.outbox, event.id) is None
    assert merchant.received == []


async def snapshot(arq: ArqRedis) -> dict[bytes, bytes]:
    """Every key of the database and its serialised value."""
    return {key: await arq.dump(key) for key in await arq.keys("*")}


@pytest.mark.parametrize("seq", [0, 2], ids=["older", "newer"])
async def test_a_job_of_another_seq_is_stale_and_writes_nothing(
    deps: Deps, merchant: Merchant, event: EventRecord, seq: int
) -> None:
    merchant.script[HOOK] = [500]
    assert await deliver(event.id, 0, deps=deps) is Outcome.RETRYING  # the event is now at seq 1
    before = await snapshot(deps.arq)

    assert await deliver(event.id, seq, deps=deps) is Outcome.STALE
    assert await snapshot(deps.arq) == before
    assert len(merchant.hits()) == 1


async def test_sweep_enqueues_a_lost_job_and_leaves_a_queued_one(deps: Deps, merchant: Merchant) -> None:
    await put_shop(deps, f"{merchant.url}{HOOK}")
    lost = await paid_delivery(deps, "order-lost")
    queued = await paid_delivery(deps, "order-queued")
    await deps.arq.delete(job_key_prefix + lost.id)  # what a failover can lose
    await deps.arq.zrem(default_queue_name, lost.id)
    queued_job = await job_of(deps.arq, queued.id)

    assert await sweep(deps) == 1
    payload, score = await job_of(deps.arq, lost.id)
    assert deserialize_job(payload).args == (lost.id, 0)
    assert score is not None
    assert await job_of(deps.arq, queued.id) == queued_job
    assert await sweep(deps) == 0


async def job_of(arq: ArqRedis, job_id: str) -> tuple[bytes, float | None]:
    """A job's serialised bytes and its score in arq's queue."""
    return await arq.get(job_key_prefix + job_id), await arq.zscore(default_queue_name, job_id)


async def test_a_secret_no_key_decrypts_dead_letters_the_event_with_its_reason(
    deps: Deps, event: EventRecord, merchant: Merchant, redis: Redis
) -> None:
    # The worker runs with other encryption keys than the ones the project's secret was stored under.
    other_keys = deps.settings.model_copy(update={"encryption_keys": SecretStr(generate_key())})
    rekeyed = replace(deps, store=make_stores(redis, other_keys).store)
    assert await deliver(event.id, 0, deps=rekeyed) is Outcome.DEAD
    assert merchant.hits(HOOK) == []
    [attempt] = (await deps.events.attempts([event.id]))[event.id]
    assert attempt.error is not None
    assert attempt.error.startswith("secret_undecryptable")
    assert (attempt.url, attempt.status_code, attempt.next_attempt_at) == (None, None, None)
    assert (await reread(deps, event)).state is WebhookStatus.FAILED
    assert await redis.zscore(deps.store.keys.dead_letters, event.id) is not None
    assert await redis.zscore(deps.store.keys.outbox, event.id) is None  # the sweeper has nothing to re-run


class Broken:
    """A store whose reads fail with a bug's exception (not a store or network failure)."""

    async def delivery_target(self, event: Any) -> Any:
        raise KeyError("a bug")


async def test_an_unforeseen_failure_follows_the_schedule_and_ends_dead_lettered(
    deps: Deps, event: EventRecord, clock: FakeClock
) -> None:
    broken = replace(deps, store=Broken())  # type: ignore[arg-type]
    assert await deliver(event.id, 0, deps=broken) is Outcome.RETRYING
    clock.advance(SCHEDULE[0])
    assert await deliver(event.id, 1, deps=broken) is Outcome.RETRYING
    clock.advance(SCHEDULE[1])
    assert await deliver(event.id, 2, deps=broken) is Outcome.DEAD
    attempts = (await deps.events.attempts([event.id]))[event.id]
    assert [attempt.error for attempt in attempts] == ["internal_error: KeyError"] * 3
    assert (await reread(deps, event)).state is WebhookStatus.FAILED


async def test_per_project_delivery_counters_only_when_asked(deps: Deps, event: EventRecord) -> None:
    assert await deliver(event.id, 0, deps=deps) is Outcome.DELIVERED
    counted = replace(deps, settings=deps.settings.model_copy(update={"metrics_per_project": True}))
    second = await paid_delivery(counted, "order-2")
    assert await deliver(second.id, 0, deps=counted) is Outcome.DELIVERED
    samples = {
        (sample.labels["project"], sample.labels["outcome"]): sample.value
        for metric in deps.metrics.project_deliveries.collect()
        for sample in metric.samples
    }
    assert samples == {(event.project_id, "delivered"): 1.0}


def test_kept_headers_are_bounded_storable_and_never_credentials() -> None:
    """An answer's headers as an attempt keeps them: a byte that is not UTF-8 (aiohttp hands it over
    as a surrogate) is replaced, so the attempt can always be stored; names, values and the whole
    are cut; cookies and challenges are not kept."""
    latin1 = b"caf\xe9".decode("utf-8", "surrogateescape")
    many = [(f"X-{'n' * 100}-{number}", "v" * 500) for number in range(40)]
    kept = response_headers(
        [("X-Name", latin1), ("Set-Cookie", "session=1"), ("WWW-Authenticate", "Basic"), *many]
    )
    assert kept["x-name"] == "caf\ufffd"
    assert "set-cookie" not in kept
    assert "www-authenticate" not in kept
    assert all(len(name) <= 64 and len(value) <= 200 for name, value in kept.items())
    assert sum(len(name) + len(value) for name, value in kept.items()) <= 2048
    attempt = Attempt(
        at=T0, url="https://merchant.example/hook", status_code=200, duration_ms=1, response_headers=kept
    )
    assert Attempt.model_validate_json(attempt.model_dump_json()).response_headers == kept
