"""Endpoint health and the operator's webhooks, through ``workers.delivery.deliver`` called directly
with a fake clock, on a real Redis and a merchant on loopback (its ``/ops`` path is the operator's
webhook). An endpoint failing for RELAY_ENDPOINT_DISABLE_AFTER is disabled at its first failure
past it; a disabled endpoint is sent nothing; alerts are signed with the operator's secret and
verified with the public ``standardwebhooks`` library."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from redis.asyncio import Redis

from relay.endpoints import EndpointState
from relay.models import DeadReason, EventKind, EventRecord, Project, WebhookStatus
from relay.replay import Operations
from relay.stores import make_stores
from tests.helpers import (
    HOOK,
    FakeClock,
    Merchant,
    delivery_deps,
    make_settings,
    paid_delivery,
    put_shop,
    reread,
    verify,
)
from workers.delivery import Deps, Outcome, deliver

OPS = "/ops"
WINDOW = 60.0  # RELAY_ENDPOINT_DISABLE_AFTER, seconds
OPERATOR_SECRET = "whsec_" + base64.b64encode(os.urandom(24)).decode()


@pytest.fixture
def clock() -> FakeClock:
    # Near the wall clock (standardwebhooks refuses a timestamp five minutes off it), in whole seconds.
    return FakeClock(datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=2))


@pytest.fixture
async def deps(redis: Redis, redis_url: str, clock: FakeClock, merchant: Merchant) -> AsyncIterator[Deps]:
    settings = make_settings(
        redis_url=redis_url,
        retry_schedule=(10.0, 20.0),
        endpoint_disable_after=WINDOW,
        operator_webhook_url=f"{merchant.url}{OPS}",
        operator_webhook_secret=OPERATOR_SECRET,
    )
    async with delivery_deps(redis, settings, clock) as deps:
        yield deps


@pytest.fixture
async def shop(deps: Deps, merchant: Merchant) -> Project:
    return await put_shop(deps, f"{merchant.url}{HOOK}")


async def outbox_alerts(deps: Deps) -> list[EventRecord]:
    """The operator's events waiting in the outbox."""
    ids = [
        event_id for event_id, _ in await deps.events.due(until=deps.clock() + timedelta(days=1), limit=100)
    ]
    return [event for event in await deps.events.get_many(ids) if event.kind is EventKind.OPERATOR]


async def send_alerts(deps: Deps, merchant: Merchant) -> list[dict[str, Any]]:
    """Deliver every alert waiting, as the worker would; what the operator received, verified."""
    for alert in await outbox_alerts(deps):
        await deliver(alert.id, alert.seq, deps=deps)
    return [verify(hit, OPERATOR_SECRET) for hit in merchant.hits(OPS)]


async def test_an_endpoint_failing_past_the_window_is_disabled_at_its_next_failure(
    deps: Deps, clock: FakeClock, merchant: Merchant, shop: Project
) -> None:
    merchant.script[HOOK] = [500]
    url = f"{merchant.url}{HOOK}"
    first = await paid_delivery(deps, "order-1")
    started = clock()
    assert await deliver(first.id, 0, deps=deps) is Outcome.RETRYING
    health = await deps.endpoints.get(shop.id, url)
    assert health is not None
    assert (health.state, health.failing_since) == (EndpointState.FAILING, started)

    clock.advance(WINDOW - 1)
    assert await deliver(first.id, 1, deps=deps) is Outcome.RETRYING  # inside the window
    health = await deps.endpoints.get(shop.id, url)
    assert health is not None
    assert health.state is EndpointState.FAILING
    clock.advance(1)
    assert await deliver(first.id, 2, deps=deps) is Outcome.DEAD  # past it: disabled, and dead
    health = await deps.endpoints.get(shop.id, url)
    assert health is not None
    assert (health.state, health.disabled_at) == (EndpointState.DISABLED, clock())

    received = await send_alerts(deps, merchant)
    by_type = {message["type"]: message for message in received}
    assert set(by_type) == {"message.attempt.exhausted", "endpoint.disabled"}
    disabled = by_type["endpoint.disabled"]
    assert set(disabled) == {"type", "timestamp", "data"}
    assert disabled["data"]["project_id"] == shop.id
    assert disabled["data"]["url"] == url
    assert datetime.fromisoformat(disabled["data"]["failing_since"]) == started
    exhausted = by_type["message.attempt.exhausted"]["data"]
    assert (exhausted["project_id"], exhausted["order_id"], exhausted["event_id"]) == (
        shop.id,
        "order-1",
        first.id,
    )
    assert (exhausted["last_error"], exhausted["last_status_code"], exhausted["reason"]) == (
        "HTTP 500",
        500,
        "exhausted",
    )
    assert deps.metrics.registry.get_sample_value("relay_endpoints_disabled_total") == 1


async def test_a_disabled_endpoint_is_sent_nothing_until_enabled_and_its_dead_letters_replay(
    deps: Deps, clock: FakeClock, merchant: Merchant, shop: Project
) -> None:
    merchant.script[HOOK] = [500]
    first = await paid_delivery(deps, "order-1")
    await deliver(first.id, 0, deps=deps)
    clock.advance(WINDOW)
    await deliver(first.id, 1, deps=deps)  # disables it
    await send_alerts(deps, merchant)
    sent = len(merchant.hits(HOOK))
    alerts_before = len(merchant.hits(OPS))

    second = await paid_delivery(deps, "order-2")
    assert await deliver(second.id, 0, deps=deps) is Outcome.DEAD
    assert len(merchant.hits(HOOK)) == sent  # no request
    dead = await reread(deps, second)
    assert (dead.state, dead.dead_reason) == (WebhookStatus.FAILED, DeadReason.ENDPOINT_DISABLED)
    [attempt] = (await deps.events.attempts([second.id]))[second.id]
    assert attempt.error is not None
    assert attempt.error.startswith("endpoint_disabled")
    await send_alerts(deps, merchant)
    assert len(merchant.hits(OPS)) == alerts_before  # endpoint.disabled said it once

    merchant.script[HOOK] = [200]
    url = f"{merchant.url}{HOOK}"
    enabled = await deps.endpoints.enable(shop.id, url)
    assert enabled is not None
    assert (enabled.state, enabled.failing_since) == (EndpointState.HEALTHY, None)
    operations = Operations(make_stores(deps.store.redis, deps.settings), deps.arq, clock=deps.clock)
    assert (await operations.replay([second.id])).count == 1
    replayed = await reread(deps, second)
    assert await deliver(second.id, replayed.seq, deps=deps) is Outcome.DELIVERED
    assert json.loads(merchant.hits(HOOK)[-1].body)["order_id"] == "order-2"


async def test_a_success_clears_the_failing_streak(
    deps: Deps, clock: FakeClock, merchant: Merchant, shop: Project
) -> None:
    merchant.script[HOOK] = [500, 200, 500]
    event = await paid_delivery(deps, "order-1")
    await deliver(event.id, 0, deps=deps)
    clock.advance(WINDOW - 5)
    assert await deliver(event.id, 1, deps=deps) is Outcome.DELIVERED
    url = f"{merchant.url}{HOOK}"
    health = await deps.endpoints.get(shop.id, url)
    assert health is not None
    assert (health.state, health.last_success_at, health.failing_since) == (
        EndpointState.HEALTHY,
        clock(),
        None,
    )

    clock.advance(10)  # the old streak would be past the window now; a new one starts
    other = await paid_delivery(deps, "order-2")
    assert await deliver(other.id, 0, deps=deps) is Outcome.RETRYING
    health = await deps.endpoints.get(shop.id, url)
    assert health is not None
    assert (health.state, health.failing_since) == (EndpointState.FAILING, clock())


async def test_an_alert_that_cannot_be_delivered_raises_no_alert_of_its_own(
    deps: Deps, clock: FakeClock, merchant: Merchant, shop: Project
) -> None:
    merchant.script[HOOK] = [410]
    merchant.script[OPS] = [410]
    event = await paid_delivery(deps, "order-1")
    assert await deliver(event.id, 0, deps=deps) is Outcome.DEAD
    [alert] = await outbox_alerts(deps)
    assert await deliver(alert.id, 0, deps=deps) is Outcome.DEAD

    assert await outbox_alerts(deps) == []
    dead_alert = await reread(deps, alert)
    assert (dead_alert.state, dead_alert.project_id) == (WebhookStatus.FAILED, "_operator")
    # The merchant's endpoint health knows nothing of the operator's endpoint.
    assert [health.url for health in await deps.endpoints.of_project(shop.id)] == [f"{merchant.url}{HOOK}"]
    assert await deps.endpoints.of_project("_operator") == []


async def test_without_an_operator_webhook_no_alert_is_made(
    redis: Redis, redis_url: str, clock: FakeClock, merchant: Merchant
) -> None:
    settings = make_settings(redis_url=redis_url, retry_schedule=(10.0,))
    async with delivery_deps(redis, settings, clock) as deps:
        merchant.script[HOOK] = [410]
        await put_shop(deps, f"{merchant.url}{HOOK}")
        event = await paid_delivery(deps, "order-1")
        assert await deliver(event.id, 0, deps=deps) is Outcome.DEAD
        assert await outbox_alerts(deps) == []
