"""relay/events.py on each backend (the embedded store and a real Redis): finishing an attempt,
requeue, postpone, purging dead letters (finish.lua, requeue.lua, postpone.lua,
purge_dead_letter.lua), dead-letter pages and the outbox."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from relay.errors import InvalidInput
from relay.models import Attempt, EventRecord, WebhookStatus, to_ms
from tests.helpers import T0, Backend, outbox_scores, paid_event, zset


def attempt(*, at: datetime = T0, next_attempt_at: datetime | None = None) -> Attempt:
    return Attempt(
        at=at,
        url="https://merchant.example.com/hook",
        status_code=503,
        error="HTTP 503",
        duration_ms=12,
        next_attempt_at=next_attempt_at,
    )


async def attempt_log(stores: Backend, event_id: str) -> list[Attempt]:
    logs = await stores.events.attempts([event_id])
    assert list(logs) == [event_id]
    return logs[event_id]


# --- finish_attempt, requeue, postpone, purge_dead_letter --------------------------------------


async def test_finish_attempt_with_a_stale_seq_writes_nothing(stores: Backend) -> None:
    event = await paid_event(stores, "order-1")
    due = T0 + timedelta(seconds=5)
    applied = await stores.events.finish_attempt(
        event, seq=1, attempt=attempt(next_attempt_at=due), state=WebhookStatus.RETRYING, now=T0
    )
    assert not applied
    assert await stores.events.get(event.id) == event
    assert await attempt_log(stores, event.id) == []
    assert await outbox_scores(stores) == {event.id: to_ms(T0)}
    purchase = await stores.store.get_purchase("order-1")
    assert purchase is not None
    assert purchase.webhook_status is WebhookStatus.PENDING


async def test_finish_attempt_retrying_moves_the_outbox_and_bumps_seq(stores: Backend) -> None:
    event = await paid_event(stores, "order-1")
    due = T0 + timedelta(seconds=5)
    logged = attempt(next_attempt_at=due)

    assert await stores.events.finish_attempt(
        event, seq=0, attempt=logged, state=WebhookStatus.RETRYING, now=T0
    )

    stored = await stores.events.get(event.id)
    assert stored is not None
    assert (stored.seq, stored.attempts, stored.state) == (1, 1, WebhookStatus.RETRYING)
    assert stored.next_attempt_at == due
    assert stored.dead_at is None
    assert await attempt_log(stores, event.id) == [logged]
    assert await outbox_scores(stores) == {event.id: to_ms(due)}
    purchase = await stores.store.get_purchase("order-1")
    assert purchase is not None
    assert purchase.webhook_status is WebhookStatus.RETRYING
    # The job that just ran (seq 0) is now stale.
    again = await stores.events.finish_attempt(
        event, seq=0, attempt=logged, state=WebhookStatus.DELIVERED, now=T0
    )
    assert not again
    assert await attempt_log(stores, event.id) == [logged]


async def test_finish_attempt_failed_dead_letters(stores: Backend) -> None:
    event = await paid_event(stores, "order-1")
    dead_at = T0 + timedelta(seconds=30)

    assert await stores.events.finish_attempt(
        event, seq=0, attempt=attempt(at=dead_at), state=WebhookStatus.FAILED, now=dead_at
    )

    stored = await stores.events.get(event.id)
    assert stored is not None
    assert (stored.seq, stored.attempts, stored.state) == (0, 1, WebhookStatus.FAILED)
    assert stored.dead_at == dead_at
    assert await outbox_scores(stores) == {}
    keys = stores.events.keys
    assert await zset(stores, keys.dead_letters) == {event.id: to_ms(dead_at)}
    assert await zset(stores, keys.project_dead_letters("shop")) == {event.id: to_ms(dead_at)}
    purchase = await stores.store.get_purchase("order-1")
    assert purchase is not None
    assert purchase.webhook_status is WebhookStatus.FAILED


async def test_finish_attempt_delivered_leaves_the_outbox(stores: Backend) -> None:
    event = await paid_event(stores, "order-1")
    ok = Attempt(at=T0, url="https://merchant.example.com/hook", status_code=200, duration_ms=3)
    assert await stores.events.finish_attempt(event, seq=0, attempt=ok, state=WebhookStatus.DELIVERED, now=T0)
    stored = await stores.events.get(event.id)
    assert stored is not None
    assert (stored.seq, stored.attempts, stored.state) == (0, 1, WebhookStatus.DELIVERED)
    assert await outbox_scores(stores) == {}
    assert await zset(stores, stores.events.keys.dead_letters) == {}


async def test_requeue_resets_the_budget(stores: Backend) -> None:
    event = await paid_event(stores, "order-1")
    retry_at = T0 + timedelta(seconds=5)
    await stores.events.finish_attempt(
        event, seq=0, attempt=attempt(next_attempt_at=retry_at), state=WebhookStatus.RETRYING, now=T0
    )
    await stores.events.finish_attempt(
        event, seq=1, attempt=attempt(at=retry_at), state=WebhookStatus.FAILED, now=retry_at
    )
    replayed_at = T0 + timedelta(hours=1)

    assert await stores.events.requeue(event, now=replayed_at) == 2

    stored = await stores.events.get(event.id)
    assert stored is not None
    assert (stored.seq, stored.attempts, stored.state) == (2, 0, WebhookStatus.PENDING)
    assert stored.next_attempt_at is None
    assert stored.dead_at is None
    assert len(await attempt_log(stores, event.id)) == 2  # the history stays
    assert await outbox_scores(stores) == {event.id: to_ms(replayed_at)}
    assert await zset(stores, stores.events.keys.dead_letters) == {}
    assert await zset(stores, stores.events.keys.project_dead_letters("shop")) == {}
    purchase = await stores.store.get_purchase("order-1")
    assert purchase is not None
    assert purchase.webhook_status is WebhookStatus.PENDING


async def test_attempt_logs_for_several_events(stores: Backend) -> None:
    first = await paid_event(stores, "order-1")
    second = await paid_event(stores, "order-2")
    logged = attempt(next_attempt_at=T0 + timedelta(seconds=5))
    await stores.events.finish_attempt(first, seq=0, attempt=logged, state=WebhookStatus.RETRYING, now=T0)
    logs = await stores.events.attempts([first.id, second.id, "evt_missing"])
    assert logs == {first.id: [logged], second.id: [], "evt_missing": []}
    assert await stores.events.attempts([]) == {}


async def test_requeue_of_a_missing_event(stores: Backend) -> None:
    event = EventRecord(
        id="evt_gone", project_id="shop", order_id="order-gone", item_id="tmpl", body="{}", created_at=T0
    )
    assert await stores.events.requeue(event, now=T0) is None
    assert await outbox_scores(stores) == {}


async def test_postpone_moves_the_next_attempt_without_making_one(stores: Backend) -> None:
    event = await paid_event(stores, "order-1")
    until = T0 + timedelta(seconds=7)

    assert await stores.events.postpone(event, seq=0, until=until) is True

    stored = await stores.events.get(event.id)
    assert stored is not None
    assert (stored.seq, stored.attempts, stored.state) == (1, 0, WebhookStatus.PENDING)
    assert stored.next_attempt_at == until
    assert await attempt_log(stores, event.id) == []
    assert await outbox_scores(stores) == {event.id: to_ms(until)}
    # The job that was postponed (seq 0) is now stale: it cannot postpone the event again.
    assert await stores.events.postpone(event, seq=0, until=until + timedelta(minutes=1)) is False
    assert await stores.events.get(event.id) == stored
    assert await outbox_scores(stores) == {event.id: to_ms(until)}


async def test_purge_dead_letter(stores: Backend) -> None:
    event = await paid_event(stores, "order-1")
    await stores.events.finish_attempt(event, seq=0, attempt=attempt(), state=WebhookStatus.FAILED, now=T0)
    assert await stores.events.purge_dead_letter(event, now=T0) is True
    assert await stores.events.purge_dead_letter(event, now=T0) is False
    assert await zset(stores, stores.events.keys.dead_letters) == {}
    assert await zset(stores, stores.events.keys.project_dead_letters("shop")) == {}
    assert await stores.events.get(event.id) is not None


# --- dead-letter pagination ------------------------------------------------------------------

# (event id, dead-lettered at): inserted out of id order, four sharing one millisecond.
DEAD = [
    ("evt_g", T0),
    ("evt_c", T0),
    ("evt_a", T0),
    ("evt_f", T0),
    ("evt_b", T0 + timedelta(milliseconds=1)),
    ("evt_e", T0 + timedelta(milliseconds=1)),
    ("evt_d", T0 + timedelta(seconds=1)),
]
DEAD_ORDER = ["evt_a", "evt_c", "evt_f", "evt_g", "evt_b", "evt_e", "evt_d"]


async def dead_letters(stores: Backend) -> None:
    for number, (event_id, dead_at) in enumerate(DEAD):
        project_id = "shop" if number % 2 == 0 else "other"
        event = await paid_event(stores, f"order-{event_id}", project_id, event_id=event_id)
        applied = await stores.events.finish_attempt(
            event, seq=0, attempt=attempt(at=dead_at), state=WebhookStatus.FAILED, now=dead_at
        )
        assert applied


async def test_dead_letter_pages_yield_each_once_in_order(stores: Backend) -> None:
    await dead_letters(stores)
    seen: list[str] = []
    sizes: list[int] = []
    cursor = None
    for _ in range(10):
        page = await stores.events.dead_letters(limit=3, cursor=cursor)
        seen += [event.id for event in page.events]
        sizes.append(len(page.events))
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == DEAD_ORDER
    assert sizes == [3, 3, 1]


@pytest.mark.parametrize("limit", [1, 2, 4, 6, 7, 8])
async def test_dead_letter_pages_for_any_limit(stores: Backend, limit: int) -> None:
    await dead_letters(stores)
    seen: list[str] = []
    cursor = None
    for _ in range(20):
        page = await stores.events.dead_letters(limit=limit, cursor=cursor)
        assert len(page.events) <= limit
        seen += [event.id for event in page.events]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == DEAD_ORDER


async def test_dead_letters_by_project_and_since(stores: Backend) -> None:
    await dead_letters(stores)
    shop = await stores.events.dead_letters(project_id="shop")
    assert [event.id for event in shop.events] == ["evt_a", "evt_g", "evt_b", "evt_d"]
    assert shop.next_cursor is None
    later = await stores.events.dead_letters(since=T0 + timedelta(milliseconds=1))
    assert [event.id for event in later.events] == ["evt_b", "evt_e", "evt_d"]


@pytest.mark.parametrize(
    "cursor", ["nonsense", "1778061600000", "abc:evt_a", ":evt_a", "1778061600000:", "-1:evt_a"]
)
async def test_bad_cursor_is_invalid_input(stores: Backend, cursor: str) -> None:
    await dead_letters(stores)
    with pytest.raises(InvalidInput):
        await stores.events.dead_letters(limit=3, cursor=cursor)


async def test_due_lists_the_outbox_oldest_first(stores: Backend) -> None:
    first = await paid_event(stores, "order-1")
    second = await paid_event(stores, "order-2")
    later = T0 + timedelta(minutes=5)
    await stores.events.finish_attempt(
        first, seq=0, attempt=attempt(next_attempt_at=later), state=WebhookStatus.RETRYING, now=T0
    )
    assert await stores.events.due(until=T0, limit=10) == [(second.id, to_ms(T0))]
    assert await stores.events.due(until=later, limit=10) == [
        (second.id, to_ms(T0)),
        (first.id, to_ms(later)),
    ]
    assert await stores.events.outbox_size() == 2
